"""The command line's options as click builds them from the core's table
(:mod:`ocigraph.commandline`): every command has exactly the table's options, each kind has its
click type, and the values a command gets when no option is typed are the table's."""

from __future__ import annotations

import inspect
from pathlib import Path

import click
import pytest

from io_adapters.cli import DurationType, cli
from io_adapters.targets import RegistryTarget
from ocigraph.commandline import COMMAND_OPTIONS, REGISTRY_OPTIONS, VERBS, Option, verb_options


def commands() -> list[tuple[click.Command, tuple[Option, ...]]]:
    plan = cli.commands["plan"]
    assert isinstance(plan, click.Group)
    out = [(cli.commands[name], options) for name, options in COMMAND_OPTIONS.items()]
    for verb in VERBS:
        out.append((cli.commands[verb.name], verb_options(verb, one_shot=True)))
        if verb.plan_help is not None:
            out.append((plan.commands[verb.name], verb_options(verb, one_shot=False)))
    return out


def test_every_command_has_exactly_the_tables_options_in_its_order() -> None:
    for command, options in commands():
        built = [p for p in command.params if isinstance(p, click.Option)]
        assert len(built) == len(options), command.name
        for param, option in zip(built, options, strict=True):
            assert (param.name, *param.opts, *param.secondary_opts) == (option.dest,
                                                                          *option.flags)
            assert (param.help, param.metavar, param.hidden, param.multiple) == (
                option.help, option.metavar, option.hidden, option.multiple)
            assert param.is_flag == (option.kind == "flag")
            assert param.show_default == (True if option.show_default else None)


KIND_TYPES = {"bool": click.types.BoolParamType, "text": click.types.StringParamType,
              "choice": click.Choice, "count": click.IntRange, "seconds": click.FloatRange,
              "duration": DurationType, "path": click.Path, "file": click.Path}


def test_each_kind_is_its_click_type() -> None:
    for command, options in commands():
        built = {p.name: p for p in command.params if isinstance(p, click.Option)}
        for option in options:
            kind = built[option.dest].type
            if option.kind == "flag":  # a switch, or one of several setting an int
                flag_type = (click.types.BoolParamType if option.flag_value is None
                             else click.types.IntParamType)
                assert isinstance(kind, flag_type), option
                continue
            assert isinstance(kind, KIND_TYPES[option.kind]), option
            if isinstance(kind, click.Choice):
                assert tuple(kind.choices) == option.choices
            if isinstance(kind, click.Path):
                assert kind.dir_okay == (option.kind == "path") and kind.type is Path
            if isinstance(kind, (click.IntRange, click.FloatRange)):
                assert (kind.min, kind.max) == (0, None)


@pytest.mark.parametrize("name", ["gc", "prune", "du", "apply"])
def test_a_command_given_no_option_gets_the_tables_defaults(name: str) -> None:
    command = cli.commands[name]
    ctx = command.make_context(name, ["/nonexistent", *(["p.json"] if name == "apply" else [])])
    options: dict[str, Option] = {}
    for o in COMMAND_OPTIONS.get(name) or verb_options(next(v for v in VERBS if v.name == name),
                                                       one_shot=True):
        if o.dest not in options or o.default is not None:  # -v's default, not -q's
            options[o.dest] = o
    for dest, option in options.items():
        unset = False if option.kind == "flag" else () if option.multiple else None
        expected = unset if option.default is None else option.default
        assert repr(ctx.params[dest]) == repr(expected), dest  # repr: 0 is not False
    if name == "gc":
        assert repr((ctx.params["verbosity"], ctx.params["dry_run"])) == "(0, False)"
    if name == "prune":
        assert ctx.params["keep_tags"] == () and ctx.params["keep_last"] is None


def test_the_registry_options_are_a_registry_targets_keywords() -> None:
    keywords = inspect.signature(RegistryTarget.__init__).parameters
    assert set(REGISTRY_OPTIONS) == {k for k, p in keywords.items() if p.kind == p.KEYWORD_ONLY}
