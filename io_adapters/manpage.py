"""The ``ocigraph(1)`` manual page, ``python -m io_adapters.manpage > ocigraph.1``: what click
says of the commands (so it cannot drift from them), for :mod:`ocigraph.manpage` to write."""

from __future__ import annotations

import os
from importlib import metadata

import click

from ocigraph.manpage import ManCommand, ManParam, manual_page, page_date

__all__ = ["render_man"]


def _params(cmd: click.Command, ctx: click.Context) -> tuple[ManParam, ...]:
    """Each argument and visible option of ``cmd``, as its help says it."""
    out = []
    for param in cmd.params:
        if isinstance(param, click.Argument):
            name = param.human_readable_name
            out.append(ManParam(name, "", getattr(param, "help", None) or "", is_argument=True))
        elif (record := param.get_help_record(ctx)) is not None:
            names, _, metavar = record[0].partition(" ")
            out.append(ManParam(names, metavar, record[1]))
    return tuple(out)


def _commands(group: click.Group, ctx: click.Context) -> list[ManCommand]:
    """Every visible command of ``group``, subcommands after their group."""
    out = []
    for name in group.list_commands(ctx):
        if (cmd := group.get_command(ctx, name)) is not None and not cmd.hidden:
            sub = click.Context(cmd, info_name=name, parent=ctx)
            usage = " ".join([sub.command_path, *cmd.collect_usage_pieces(sub)])
            out.append(ManCommand(usage, cmd.help, _params(cmd, sub)))
            if isinstance(cmd, click.Group):
                out += _commands(cmd, sub)
    return out


def render_man(group: click.Group, prog: str = "ocigraph") -> str:
    """``group``'s :func:`~ocigraph.manpage.manual_page`, dated by ``$SOURCE_DATE_EPOCH`` if set."""
    ctx = click.Context(group, info_name=prog, **group.context_settings)
    version = next((d.version for d in metadata.distributions(name=prog)), "")
    date = page_date(os.environ.get("SOURCE_DATE_EPOCH", ""))
    return manual_page(prog, version, date, group.get_short_help_str(limit=200), group.help,
                       ctx.help_option_names, _params(group, ctx), _commands(group, ctx))


if __name__ == "__main__":
    from .cli import cli
    click.echo(render_man(cli), nl=False)
