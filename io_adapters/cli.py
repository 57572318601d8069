"""The ``ocigraph`` command line (docs/cli.md): parse the options, dispatch to a target
(:mod:`io_adapters.targets`), print what :mod:`ocigraph.present` renders; the options, and
what they decide, are :mod:`ocigraph.commandline`'s.  See docs/design.md."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from click.shell_completion import CompletionItem

import ocigraph as og
from ocigraph import commandline, present
from ocigraph.commandline import COMMAND_OPTIONS, VERBS, OptionError, Verb

from . import background, quarantine
from .cachedir import cache_info, clear_cache
from .fsck import format_fsck_text, fsck
from .layout import LayoutDir
from .progress import ProgressReporter, is_terminal
from .store import default_cache_dir
from .targets import LayoutTarget, Prune, RegistryTarget

__all__ = ["cli", "main", "run", "complete_refs", "ProgressReporter"]

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

F = TypeVar("F", bound=Callable[..., Any])
Target = LayoutTarget | RegistryTarget


# --- errors: one line, exit 1 -------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"ocigraph: error: {present.one_line(message)}", err=True)
    raise click.exceptions.Exit(code)


class OcigraphGroup(click.Group):
    """The top-level group: turns every error below into one line on stderr and exit 1 (2:
    options that do not go together; 130: Ctrl-C, saying what the apply had done)."""

    def invoke(self, ctx: click.Context) -> Any:
        applying = ctx.meta["ocigraph.interrupt"] = commandline.ApplyProgress()
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as exc:
            click.echo(f"ocigraph: {applying.interrupted_line(exc)}", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except OptionError as exc:
            _fail(str(exc), EXIT_USAGE)
        except Exception as exc:
            closed_pipe = isinstance(exc, OSError) and exc.errno == errno.EPIPE  # click quietens it
            if closed_pipe or os.environ.get("OCIGRAPH_DEBUG", "") not in ("", "0"):
                raise
            _fail(present.error_line(exc))
        finally:  # what the command left for after its answer (io_adapters.background)
            background.finish()


# --- option parsing -------------------------------------------------------------------------------


class DurationType(click.ParamType):  # type: ignore[type-arg]  # (generic in newer click stubs only)
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return present.parse_option_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class LayoutType(click.ParamType):  # type: ignore[type-arg]
    """LAYOUT, as :func:`ocigraph.commandline.layout_argument` reads it (a REF it names joins
    the command's refs).  A folder that exists but cannot be read is one line, exit 1."""

    name = "LAYOUT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        try:
            text, ref, registry = commandline.layout_argument(os.fspath(value), os.path.lexists,
                                                              os.path.isdir)
        except og.OcigraphError as exc:
            self.fail(str(exc), param, ctx)
        if ctx is not None:
            ctx.meta.update({"ocigraph.ref": ref, "ocigraph.registry": text if registry else None})
        if not registry and ctx is not None and not ctx.resilient_parsing:
            try:
                os.close(os.open(text, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            except PermissionError as exc:
                _fail(f"{og.printable(text)}: cannot read ({exc.strerror})")
            except OSError:
                pass  # missing, or not a folder: the command says so in its own words
        return Path(text)


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """The decorators as one, the first outermost (as if written one above the other)."""
    def apply(f: F) -> F:
        for decorate in reversed(decorators):
            f = decorate(f)
        return f
    return apply


_layout_argument = click.argument("layout", metavar="LAYOUT", type=LayoutType())
# each option kind's click type (None: a flag's, or text)
_CLICK_TYPES: dict[commandline.OptionKind, Callable[[commandline.Option], Any]] = {
    "flag": lambda o: None, "text": lambda o: None, "bool": lambda o: click.BOOL,
    "choice": lambda o: click.Choice(list(o.choices)), "count": lambda o: click.IntRange(min=0),
    "seconds": lambda o: click.FloatRange(min=0), "duration": lambda o: DurationType(),
    "path": lambda o: click.Path(path_type=Path),
    "file": lambda o: click.Path(path_type=Path, dir_okay=False),
}


def _click_option(o: commandline.Option) -> Callable[[F], F]:
    """``o`` as a click option.  What the table leaves unsaid is not passed: click's own
    defaults differ from an explicit None or False (a flag defaulting to None is None, not
    False; ``is_flag=False`` makes an option's value optional)."""
    given: dict[str, Any] = {} if o.flag_value is None else {"flag_value": o.flag_value}
    if o.default is not None or not (o.kind == "flag" or o.multiple):
        given["default"] = o.default
    return click.option(
        *o.flags, o.dest, type=_CLICK_TYPES[o.kind](o), metavar=o.metavar, help=o.help,
        multiple=o.multiple, hidden=o.hidden, is_flag=o.kind == "flag" or None,
        show_default=o.show_default or None, **given)


def _pop(kw: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The options of ``names`` that ``kw`` holds, taken out of it."""
    return {k: kw.pop(k) for k in names if k in kw}


def _policy(kw: dict[str, Any], can_force: bool = False) -> og.Policy:
    """The policy from the policy options in ``kw`` (popped)."""
    return commandline.option_policy(can_force=can_force, **_pop(kw, commandline.POLICY_OPTIONS))


def _prune_rules(kw: dict[str, Any], on_registry: bool) -> Prune:
    """The retention rules and ``now`` from the prune options in ``kw`` (popped)."""
    policy_file = kw.pop("policy_file")
    return commandline.prune_rules(
        _pop(kw, commandline.PRUNE_OPTIONS), on_registry=on_registry, now=kw.pop("now_text"),
        clock=time.time(), policy=None if policy_file is None else policy_file.read_bytes)


def _refs(refs: Sequence[str], required: bool = False) -> tuple[str, ...]:
    """The refs typed, after the one an ``oci:FOLDER:REF`` or ``docker://...:TAG`` named; a
    usage error when ``required`` and there are none."""
    named = click.get_current_context().meta.get("ocigraph.ref")
    out = (named, *refs) if named else tuple(refs)
    if required and not out:
        raise click.UsageError("name at least one REF (a tag or a digest), or use oci:LAYOUT:REF")
    return out


def complete_refs(ctx: click.Context, param: click.Parameter,
                  incomplete: str) -> list[CompletionItem]:
    """Shell completion of TARGET and REF (click completes the rest by itself): the tags and
    digests (:func:`ocigraph.present.ref_completions`) of the layout named earlier on the
    command line, read from its index.json alone.  Any error: no completions."""
    try:
        with LayoutDir(Path(os.path.expanduser(ctx.params["layout"]))) as layout_dir:
            entries = layout_dir.read_index().entries
    except Exception:  # never a traceback in the middle of the user's prompt
        return []
    given = ctx.params.get(param.name or "") or ()
    return [CompletionItem(value, help=help_text)
            for value, help_text in present.ref_completions(entries, incomplete, given)]


# --- targets: read, plan, show, confirm, apply ----------------------------------------------------


def _registry() -> str | None:
    """The ``docker://`` text of a LAYOUT that names a registry repository."""
    return click.get_current_context().meta.get("ocigraph.registry")


def _layouts_only(what: str, given: object = True) -> None:
    """A usage error when ``what`` is ``given`` (not ``None``) for a registry repository."""
    if given is not None and _registry():
        raise OptionError(f"{what} applies to layouts: a registry keeps no deleted manifests to "
                          "restore")


def _target(layout: Path, options: dict[str, Any]) -> contextlib.closing[Target]:
    """What LAYOUT names, with the registry options in ``options`` (popped); closed after."""
    registry, client = _registry(), _pop(options, commandline.REGISTRY_OPTIONS)
    return contextlib.closing(RegistryTarget(registry, **client) if registry
                              else LayoutTarget(layout, og.printable(str(layout))))


def _warn_junk(n: int, fmt: str) -> None:
    if n and fmt == "text":
        click.echo(f"ocigraph: warning: {present.junk_warning(n)}", err=True)


def _plan(target: Target, operation: str, refs: Sequence[str], policy: og.Policy, fmt: str,
          prune: Prune | None) -> tuple[og.Plan, dict[str, list[str]]]:
    with contextlib.closing(ProgressReporter()) as reporter:
        planned = target.plan(operation, refs, policy, prune, reporter)
    _warn_junk(planned.junk, fmt)
    return planned.plan, planned.tags


def _show_plan(plan: og.Plan, tags: dict[str, list[str]], fmt: str, verbosity: int,
               last: str | None) -> None:
    """Print the plan in ``fmt``; in text, then the ``last`` line (unless -q)."""
    if fmt == "json":
        for chunk in present.plan_json_chunks(plan):  # streamed: never the whole text at once
            sys.stdout.write(chunk)
    else:
        click.echo(present.format_plan_output(plan, tags, verbosity))
        if last is not None and verbosity >= 0:
            click.echo(last)


def _shown_and_confirmed(plan: og.Plan, tags: dict[str, list[str]], name: str, fmt: str,
                         verbosity: int, ask: bool) -> bool:
    """Print the plan as a one-shot command does before it applies, and ask; whether to apply."""
    if fmt == "text" and (verbosity >= 0 or plan.is_empty):
        click.echo(present.format_plan_output(plan, tags, verbosity))
    if plan.is_empty:
        return fmt == "json"  # the text said "nothing to do"; JSON still gets its report
    if ask and not click.confirm(present.confirm_question(plan, name), default=False, err=True):
        click.echo("nothing was changed")
        raise click.exceptions.Exit(EXIT_FAILED)
    return True


def _apply(target: Target, plan: og.Plan, fmt: str, **options: Any) -> None:
    state = click.get_current_context().meta["ocigraph.interrupt"]  # what Ctrl-C would say
    state.start(plan, applying=not target.is_registry)
    with contextlib.closing(ProgressReporter()) as bar:
        doc = target.apply(plan, progress=bar.deleting(state.total, state.count), **options)
    state.applying = False
    click.echo(present.rendered(doc, fmt, target.report_text))


# --- the commands ---------------------------------------------------------------------------------


@click.group(cls=OcigraphGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(og.__version__, prog_name="ocigraph")
def cli() -> None:
    """Plan and apply garbage collection on OCI image layouts.

    Plan first, look, then apply: `ocigraph plan gc LAYOUT -o plan.json`, then
    `ocigraph apply LAYOUT plan.json`; or in one go with a confirmation: `ocigraph gc LAYOUT`.
    LAYOUT is a folder, `oci:FOLDER[:REF]` as skopeo and umoci write it, or a registry
    repository `docker://HOST[:PORT]/REPO`.  Exit status: 0 done, 1 refused or failed,
    2 usage, 130 interrupted.  Reference: docs/cli.md.
    """


@cli.group("plan", cls=click.Group)
def plan_group() -> None:
    """Compute a plan and print it (or save it with -o); changes nothing, takes no lock."""


def _verb_command(verb: Verb, one_shot: bool) -> click.Command:
    """``ocigraph NAME`` (``one_shot``) or ``ocigraph plan NAME``: one body for every verb."""
    def command(layout: Path, fmt: str, verbosity: int, refs: tuple[str, ...] = (),
                **kw: Any) -> None:
        prune = _prune_rules(kw, _registry() is not None) if verb.prune else None
        policy = _policy(kw, verb.force) if verb.force is not None else og.Policy()
        refs = _refs(refs, required=True) if verb.refs else ()
        run = _one_shot if one_shot else _plan_only
        run(verb, layout, refs, policy, fmt, verbosity, prune, kw)

    return click.command(verb.name, help=verb.help if one_shot else verb.plan_help)(_stack(
        _layout_argument,
        *([click.argument("refs", metavar=verb.refs, nargs=-1, shell_complete=complete_refs)]
          if verb.refs else []),
        *map(_click_option, commandline.verb_options(verb, one_shot)),
    )(command))


def _plan_only(verb: Verb, layout: Path, refs: Sequence[str], policy: og.Policy, fmt: str,
               verbosity: int, prune: Prune | None, kw: dict[str, Any]) -> None:
    output = kw.pop("output")
    with _target(layout, kw) as target:
        plan, tags = _plan(target, verb.name, refs, policy, fmt, prune)
    if output is not None:
        data = plan.to_json() + b"\n"
        if str(output) == "-":
            sys.stdout.buffer.write(data)
        else:
            output.write_bytes(data)
    written = None if output is None else present.plan_written_line(str(output), target.name)
    _show_plan(plan, tags, fmt, verbosity, written)


def _one_shot(verb: Verb, layout: Path, refs: Sequence[str], policy: og.Policy, fmt: str,
              verbosity: int, prune: Prune | None, kw: dict[str, Any]) -> None:
    """Lock, read, plan, (confirm), apply -- all under one lock, on one directory handle."""
    dry_run, keep, lock_timeout = kw.pop("dry_run"), kw.pop("keep_deleted"), kw.pop("lock_timeout")
    _layouts_only("--keep-deleted", keep)
    ask = commandline.asks(verb, yes=kw.pop("yes", False), dry_run=dry_run,
                           can_ask=is_terminal(sys.stdin))
    with _target(layout, kw) as target, (
            target.locked(lock_timeout) if not dry_run else contextlib.nullcontext()):
        if not dry_run:  # first what earlier applies left (gc: and what their time is up for)
            purged, size = target.settle(purge=verb.name == "gc")
            if purged and fmt == "text" and verbosity >= 0:
                click.echo(present.purged_line(purged, size))
        plan, tags = _plan(target, verb.name, refs, policy, fmt, prune)
        if dry_run:
            _show_plan(plan, tags, fmt, verbosity, "dry run: nothing was changed")
        elif _shown_and_confirmed(plan, tags, target.name, fmt, verbosity, ask):
            _apply(target, plan, fmt, keep=keep)


for _verb in VERBS:
    cli.add_command(_verb_command(_verb, one_shot=True))
    if _verb.plan_help is not None:
        plan_group.add_command(_verb_command(_verb, one_shot=False))


def _layout_command(name: str, *arguments: Callable[[Any], Any]) -> Callable[[Any], click.Command]:
    """``ocigraph NAME LAYOUT ...``: LAYOUT, then ``arguments``, then ``COMMAND_OPTIONS[name]``."""
    return lambda f: cli.command(name)(_stack(_layout_argument, *arguments,
                                              *map(_click_option, COMMAND_OPTIONS[name]))(f))


@_layout_command("show", click.argument("refs", metavar="[REF]", nargs=-1,
                                        shell_complete=complete_refs))
def show(layout: Path, refs: tuple[str, ...], fmt: str, **kw: Any) -> None:
    """Show the layout's graph: index.json entries, what they reference, what is garbage.
    With REF (a tag or digest), only that image's tree."""
    policy, refs = _policy(kw), _refs(refs)
    with _target(layout, kw) as target, contextlib.closing(ProgressReporter()) as reporter:
        read = target.read(reporter)
    _warn_junk(len(read.junk), fmt)
    click.echo(present.show_output(fmt, target.name, read.graph, policy, read.entries, refs,
                                   read.junk, read.quarantined))


@_layout_command("apply", click.argument("plan_file", metavar="PLAN.json", type=click.Path(
    path_type=Path, dir_okay=False, allow_dash=True)))
def apply(layout: Path, plan_file: Path, fmt: str, lock_timeout: float, keep_deleted: float | None,
          verbosity: int, **registry: Any) -> None:
    """Apply a saved plan (PLAN.json, or - for stdin).  Refuses a stale plan."""
    _layouts_only("--keep-deleted", keep_deleted)
    data = sys.stdin.buffer.read() if str(plan_file) == "-" else plan_file.read_bytes()
    plan = og.Plan.from_json(data)
    with _target(layout, registry) as target:
        _apply(target, plan, fmt, lock_timeout=lock_timeout, keep=keep_deleted, verify=True)


@_layout_command("restore", click.argument("apply_id", metavar="[APPLY_ID]", required=False))
def restore(layout: Path, apply_id: str | None, fmt: str, lock_timeout: float) -> None:
    """Undo the last apply made with --keep-deleted (or APPLY_ID's): its blobs and index.json
    entries come back.  Refused, changing nothing, where a later change makes that unsafe."""
    _layouts_only("restore")
    done = quarantine.restore(LayoutDir(layout), apply_id, lock_timeout=lock_timeout)
    doc = present.restore_document(og.printable(str(layout)), done.id, done.blobs, done.entries)
    click.echo(present.rendered(doc, fmt, present.format_restore_text))


@_layout_command("fsck")
def fsck_cmd(layout: Path, fmt: str) -> None:
    """Check the layout: missing or corrupt blobs, size mismatches, broken manifests, junk.

    Exit status 0 when clean, 1 when a problem was found.
    """
    with contextlib.closing(ProgressReporter()) as reporter:
        report = fsck(layout, reporter=reporter)
    click.echo(present.rendered(report.to_dict(), fmt, lambda _: format_fsck_text(report)))
    if not report.ok:
        raise click.exceptions.Exit(EXIT_FAILED)


@_layout_command("du")
def du(layout: Path, fmt: str, sort: str, in_bytes: bool, **kw: Any) -> None:
    """Disk use by tag: what each tag holds, what only it holds, what gc would free; and what
    quarantines hold for undo, apart."""
    policy = _policy(kw)
    with _target(layout, kw) as target, contextlib.closing(ProgressReporter()) as reporter:
        read = target.read(reporter, mtimes=policy.grace > 0)
    _warn_junk(len(read.junk), fmt)
    click.echo(present.du_output(fmt, target.name, og.space_by_tag(read.graph, policy),
                                 read.quarantined, sort=sort, human=not in_bytes))


@cli.group("cache", invoke_without_command=True)
@_stack(*map(_click_option, COMMAND_OPTIONS["cache"]))
@click.pass_context
def cache_group(ctx: click.Context, fmt: str) -> None:
    """Show the cache folder: an entry per layout, its size, last use and layout."""
    if ctx.invoked_subcommand is None:
        local = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))  # noqa: E731
        click.echo(present.rendered(present.cache_document(cache_info(default_cache_dir())), fmt,
                                    lambda doc: present.format_cache_text(doc, local)))


@cache_group.command("clear")
@click.argument("layout", metavar="[LAYOUT]", required=False, type=click.Path(path_type=Path))
def cache_clear(layout: Path | None) -> None:
    """Remove the cache's entries, or only LAYOUT's; never touches a layout."""
    click.echo(f"freed {og.format_bytes(clear_cache(default_cache_dir(), layout))}")


# --- the process ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``ocigraph`` command line for callers in Python: returns or raises ``SystemExit``
    as click does, once the work a command left for after its answer is done (in a detached
    child when :func:`run` asked for one: :mod:`io_adapters.background`)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="ocigraph")


def run() -> None:
    """:func:`main` in a process of its own: the cyclic collector off (it would only walk the
    graph's millions of objects), and ``os._exit`` once output is flushed (freeing a big graph
    object by object takes longer than building it), with nothing left undone but what a
    detached child does: files are closed, the lock released, apply's writes synced."""
    gc.disable()
    background.detach = True
    code, said = 0, None
    try:
        main()
    except (OSError, SystemExit) as exc:  # OSError: writing --help or --version output
        code, said = commandline.exit_status(exc)
    try:  # sys.stdout, sys.stderr None: started with that descriptor closed, nothing written
        if sys.stdout is not None:
            sys.stdout.flush()
    except Exception as exc:  # output was lost: that is a failure, and says so if it can
        if code == 0:
            code, said = 1, f"ocigraph: error: cannot write the output ({exc})"
    with contextlib.suppress(Exception):  # a last line, if there is a stderr that still takes one
        if sys.stderr is not None:
            if said is not None:
                sys.stderr.write(said + "\n")
            sys.stderr.flush()
    os._exit(code)
