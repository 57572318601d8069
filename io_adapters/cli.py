"""The ``ocigraph`` command line: parse the options, dispatch to a target
(:mod:`io_adapters.targets`), print what :mod:`ocigraph.present` renders (docs/cli.md).

stdout carries the answer, stderr warnings, prompts, progress and errors; every error is ONE
line ``ocigraph: error: ...``, exit 1 (2: usage; 130: Ctrl-C), never a traceback unless
``OCIGRAPH_DEBUG=1``.  The one-shot commands (:data:`VERBS`) lock the layout before reading it
and plan and apply under that one lock; ``apply`` refuses a stale plan."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson
from click.shell_completion import CompletionItem

import ocigraph as og
from ocigraph import present

from . import background, quarantine
from .cachedir import cache_document, cache_info, clear_cache
from .fsck import format_fsck_text, fsck
from .layout import LayoutDir, printable
from .progress import ProgressReporter, deletion_progress, is_terminal, reporting
from .store import default_cache_dir
from .targets import LayoutTarget, Prune, RegistryTarget

__all__ = ["cli", "main", "run", "complete_refs", "VERBS", "ProgressReporter"]

DEBUG_ENV = "OCIGRAPH_DEBUG"
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

F = TypeVar("F", bound=Callable[..., Any])
Target = LayoutTarget | RegistryTarget


# --- errors: one line, exit 1 -------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"ocigraph: error: {present.one_line(message)}", err=True)
    raise click.exceptions.Exit(code)


def _usage(message: str) -> NoReturn:
    """Options that do not go together: one line, exit 2, before anything is read."""
    _fail(message, EXIT_USAGE)


#: what the running command is doing, for the line Ctrl-C gets when the interruption does not
#: carry apply's exact state (``ApplyInterrupted``): the progress counted here
_INTERRUPT_STATE: dict[str, Any] = {"applying": False, "total": 0, "done": 0}


def _count(done: int) -> None:
    _INTERRUPT_STATE["done"] = done


class OcigraphGroup(click.Group):
    """The top-level group: turns every error below into one line on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        _INTERRUPT_STATE.update(applying=False, total=0, done=0)
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as exc:  # apply's exact state when it carries it, else counted
            state = _INTERRUPT_STATE
            click.echo("ocigraph: " + present.interrupted_line(
                applying=state["applying"], index_written=getattr(exc, "index_written", None),
                deleted=getattr(exc, "deleted", state["done"]),
                total=getattr(exc, "total", state["total"])), err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            closed_pipe = isinstance(exc, OSError) and exc.errno == errno.EPIPE  # click quietens it
            if closed_pipe or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
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
    """LAYOUT: a folder; ``oci:FOLDER[:REF]`` as skopeo and umoci users type it (the REF joins
    the command's refs); or a registry repository ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``
    (kept as text, prefix included).  A folder that exists but cannot be read is one line,
    exit 1."""

    name = "LAYOUT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        text = os.fspath(value)
        if text.startswith("docker://") and not os.path.lexists(text):
            if ctx is not None:
                self._registry(text, param, ctx)
            return Path(text)
        if text.startswith("oci:") and not os.path.lexists(text):
            rest = text[4:]
            # the folder is the shortest prefix before a colon that exists (a ref such as
            # app:1 has colons of its own); as skopeo, the whole text when none does
            text, ref = next(((rest[:at], rest[at + 1:]) for at, c in enumerate(rest)
                              if c == ":" and os.path.isdir(rest[:at])), (rest, ""))
            if ctx is not None and ref:
                ctx.meta["ocigraph.ref"] = ref
        if ctx is not None and not ctx.resilient_parsing:
            try:
                os.close(os.open(text, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            except PermissionError as exc:
                _fail(f"{printable(text)}: cannot read ({exc.strerror})")
            except OSError:
                pass  # missing, or not a folder: the command says so in its own words
        return Path(text)

    def _registry(self, text: str, param: click.Parameter | None, ctx: click.Context) -> None:
        from .registry import parse_reference

        try:
            named = parse_reference(text)
        except og.OcigraphError as exc:
            self.fail(str(exc), param, ctx)
        ctx.meta["ocigraph.registry"] = text
        if named.digest or named.tag:
            ctx.meta["ocigraph.ref"] = named.digest or named.tag


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """The decorators as one, the first outermost (as if written one above the other)."""
    def apply(f: F) -> F:
        for decorate in reversed(decorators):
            f = decorate(f)
        return f
    return apply


_layout_argument = click.argument("layout", metavar="LAYOUT", type=LayoutType())
_DRY_RUN = click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
_YES = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
_OUTPUT = click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
                       default=None, metavar="PLAN.json", help="Also write the plan JSON here.")
_KEEP_DELETED = click.option(
    "--keep-deleted", type=DurationType(), default=None, metavar="DURATION",
    help="Keep the deleted blobs this long in the layout's quarantine (`ocigraph restore` "
         "undoes the apply until then; the next gc after it purges them).  Layouts only.")
_lock_timeout_option = click.option(
    "--lock-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
    metavar="SECONDS", help="How long to wait for another ocigraph working on the layout.")
_verbosity_options = _stack(
    click.option("-v", "--verbose", "verbosity", flag_value=1, default=0,
                 help="List every deletion (text lists 50 per reason)."),
    click.option("-q", "--quiet", "verbosity", flag_value=-1,
                 help="Print only errors and the one-line result."))
_registry_options = _stack(
    click.option("--tls-verify", type=click.BOOL, default=True, show_default=True,
                 help="For docker:// targets: verify TLS (false also allows plain HTTP)."),
    click.option("--creds", metavar="USER:PASS", default=None,
                 help="For docker:// targets: credentials."),
    click.option("--authfile", type=click.Path(path_type=Path), default=None,
                 help="For docker:// targets: an auth.json (else $REGISTRY_AUTH_FILE, ...)."))
_prune_options = _stack(
    click.option("--keep-last", type=click.IntRange(min=0), default=None, metavar="N",
                 help="Keep the tags of the N most recently pushed images per repository."),
    click.option("--keep-within", default=None, metavar="DURATION",
                 help="Keep tags whose image was pushed within DURATION (30d, 12h, 2w)."),
    click.option("--keep-tag", "keep_tags", multiple=True, metavar="GLOB",
                 help="Keep tags whose tag part matches GLOB (repeatable)."),
    click.option("--only", multiple=True, metavar="GLOB",
                 help="Judge only ref names matching GLOB; keep every other (repeatable)."),
    click.option("--max-size", default=None, metavar="SIZE",
                 help="Then expire the oldest images until live blobs fit (500M, 10G)."),
    click.option("--policy-file", type=click.Path(path_type=Path, dir_okay=False),
                 default=None, help="An ECR lifecycle policy document (JSON)."),
    click.option("--age-from", type=click.Choice(["push", "created"]), default=None,
                 help="An image's age: from its push (the manifest blob's mtime; the default "
                      "on a layout) or its own created date (the default on a registry)."),
    click.option("--now", "now_text", default=None, metavar="RFC3339",
                 help="Judge as of this time (reproducible plans)."))


def _format_option(*choices: str) -> Callable[[F], F]:
    return click.option("--format", "fmt", type=click.Choice(choices), default=choices[0],
                        show_default=True, help="Output format.")


_POLICY = click.option("--policy", "preset", type=click.Choice(sorted(og.PRESETS)),
                       default="default", show_default=True,
                       help="Policy preset: what is live (see docs/cli.md).")
_KEEP_UNTAGGED = click.option("--keep-untagged", is_flag=True,
                              help="Every index.json entry is a root, tagged or not.")
_GRACE = click.option("--grace", type=DurationType(), default=None,
                      help="Blobs younger than this are live (30s, 10m, 1h, 2d, or seconds).")


def _policy_options(force: bool) -> Callable[[F], F]:
    referrers = click.option("--keep-referrers", is_flag=True, hidden=not force,
                             help="Do not cascade a delete to the target's referrers.")
    forcing = click.option("--force", is_flag=True, help="Delete even when a live index or "
                           "manifest still references the target.")
    return _stack(_POLICY, _KEEP_UNTAGGED, referrers, _GRACE, *([forcing] if force else []))


def _policy(kw: dict[str, Any], can_force: bool = False) -> og.Policy:
    """The policy from the policy options in ``kw`` (popped)."""
    referrers = kw.pop("keep_referrers", False)
    if referrers and not can_force:
        _usage("--keep-referrers applies to delete and remove: a gc or prune deletes what is "
               "not live, and a referrer of a live image is live")
    overrides = {"keep_untagged": kw.pop("keep_untagged") or None, "grace": kw.pop("grace", None),
                 "cascade_referrers": False if referrers else None,
                 "force": kw.pop("force", False) or None}
    return og.Policy.preset(kw.pop("preset"), **{k: v for k, v in overrides.items() if v is not None})


def _prune_rules(kw: dict[str, Any], on_registry: bool) -> Prune:
    """The retention rules and ``now`` from the prune options in ``kw`` (popped); exit 2 with
    one line for invalid rules.  ``--age-from`` defaults to push on a layout, created on a
    registry (whose API does not say when an image was pushed)."""
    policy_file, now_text = kw.pop("policy_file"), kw.pop("now_text")
    flags = {k: kw.pop(k) for k in ("keep_last", "keep_within", "keep_tags", "only", "max_size",
                                    "age_from")}
    if on_registry and flags["age_from"] == "push":
        _usage("--age-from push: push time is not exposed by the registry API; use --age-from "
               "created (the image's own date, the default on a registry)")
    flags["age_from"] = flags["age_from"] or ("created" if on_registry else "push")
    try:
        if policy_file is not None and any(flags[k] not in (None, ()) for k in
                                           ("keep_last", "keep_within", "keep_tags")):
            raise og.RetentionRuleError("--policy-file", None, "cannot be mixed with "
                                        "--keep-last, --keep-within or --keep-tag")
        document = policy_file.read_bytes() if policy_file is not None else None
        rules = og.retention_rules(policy=document, **flags)
        now = og.parse_time(now_text) if now_text is not None else time.time()
    except og.RetentionRuleError as exc:
        _usage(str(exc))
    except OSError as exc:
        _usage(present.error_line(exc))
    return rules, now


def _refs_with_layout_ref(refs: Sequence[str]) -> tuple[str, ...]:
    """The refs typed, after the one an ``oci:FOLDER:REF`` or ``docker://...:TAG`` named."""
    named = click.get_current_context().meta.get("ocigraph.ref")
    return (named, *refs) if named else tuple(refs)


def _required_refs(refs: Sequence[str]) -> tuple[str, ...]:
    out = _refs_with_layout_ref(refs)
    if not out:
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


# --- layouts and registries -----------------------------------------------------------------------


def _stdin_is_terminal() -> bool:
    return is_terminal(sys.stdin)


def _is_registry(layout: Path | str) -> bool:
    return str(click.get_current_context().meta.get("ocigraph.registry", "")).startswith(
        "docker://") and str(layout).startswith("docker:/")


def _layouts_only(layout: Path, what: str) -> None:
    if _is_registry(layout):
        _usage(f"{what} applies to layouts: a registry keeps no deleted manifests to restore")


@contextlib.contextmanager
def _target(layout: Path, options: dict[str, Any]) -> Iterator[Target]:
    """What LAYOUT names, with the registry options in ``options`` (popped); closed after."""
    registry = {k: options.pop(k) for k in ("tls_verify", "creds", "authfile")}
    target: Target = (RegistryTarget(click.get_current_context().meta["ocigraph.registry"],
                                     **registry)
                      if _is_registry(layout) else LayoutTarget(layout, printable(str(layout))))
    try:
        yield target
    finally:
        target.close()


def _warn_junk(n: int, fmt: str) -> None:
    if n and fmt == "text":
        click.echo(f"ocigraph: warning: {present.junk_warning(n)}", err=True)


def _plan(target: Target, operation: str, refs: Sequence[str], policy: og.Policy, fmt: str,
          prune: Prune | None) -> tuple[og.Plan, dict[str, list[str]]]:
    with reporting() as reporter:
        planned = target.plan(operation, refs, policy, prune, reporter)
    _warn_junk(planned.junk, fmt)
    return planned.plan, planned.tags


# --- what the commands print ----------------------------------------------------------------------


def _echo_lines(*lines: str | None) -> None:
    click.echo("\n".join(line for line in lines if line is not None))


def _echo(doc: Any, fmt: str = "json", text: Callable[[Any], str] | None = None) -> None:
    """A report: its JSON document, or the text rendered from that same document."""
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() if fmt == "json"
               or text is None else text(doc))


def _show_plan(plan: og.Plan, tags: dict[str, list[str]] | None, fmt: str, verbosity: int) -> None:
    if fmt == "json":
        for chunk in present.plan_json_chunks(plan):  # streamed: never the whole text at once
            sys.stdout.write(chunk)
    else:
        click.echo(present.format_plan_output(plan, tags, verbosity))


def _shown_and_confirmed(plan: og.Plan, tags: dict[str, list[str]], name: str, fmt: str,
                         verbosity: int, dry_run: bool, ask: bool) -> bool:
    """Print the plan as a one-shot command does, and ask; whether to apply it."""
    if dry_run:
        _show_plan(plan, tags, fmt, verbosity)
        if fmt == "text" and verbosity >= 0:
            click.echo("dry run: nothing was changed")
        return False
    if fmt == "text" and (verbosity >= 0 or plan.is_empty):
        click.echo(present.format_plan_output(plan, tags, verbosity))
    if plan.is_empty:
        return fmt == "json"  # the text said "nothing to do"; JSON still gets its report
    if ask and not click.confirm(present.confirm_question(plan, name),
                                 default=False, err=True):
        click.echo("nothing was changed")
        raise click.exceptions.Exit(EXIT_FAILED)
    return True


def _apply(target: Target, plan: og.Plan, fmt: str, **options: Any) -> None:
    total = sum(1 for d in plan.deletions if d.present)
    _INTERRUPT_STATE.update(applying=not target.is_registry, total=total, done=0)
    with deletion_progress(total, _count) as progress:
        doc = target.apply(plan, progress=progress, **options)
    _INTERRUPT_STATE["applying"] = False
    _echo(doc, fmt, target.report_text)


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


@dataclass(frozen=True, slots=True)
class Verb:
    """An operation as commands: ``ocigraph NAME`` (lock, plan, confirm, apply) and, with a
    ``plan_help``, ``ocigraph plan NAME``."""

    name: str
    refs: str | None  # the REF arguments' metavar; None: the command takes none
    help: str
    plan_help: str | None
    force: bool | None  # policy options with --force (True), without (False); None: none
    confirm: bool = True  # asks (or needs --yes) before it changes anything
    prune: bool = False  # judges tags by prune's keep rules


VERBS = (
    Verb("delete", "TARGET...", "Delete TARGETs (tags or digests) with their referrers and the "
         "blobs only they used.", "Plan deleting TARGETs (tags or digests) with their "
         "referrers and orphans.", force=True),
    Verb("gc", None, "Delete every blob that is not live, and index.json entries of deleted "
         "manifests (and first the quarantined blobs whose keep time is up).",
         "Plan deleting every blob that is not live.", force=False),
    Verb("remove", "REF...", "Untag REFs like `docker rmi`; delete an image left untagged "
         "that nothing live uses.", "Plan `docker rmi`: untag REFs; delete what is left "
         "untagged and not live.", force=True),
    Verb("untag", "REF...", "Remove tags (REF: a tag, or a digest for all its tags); deletes "
         "no blob.", None, force=None, confirm=False),
    Verb("prune", None, "Let go of the tags no keep rule keeps (and images over a space "
         "budget), then gc.", "Plan a prune: which tags the keep rules let go, and the gc "
         "that follows.", force=False, prune=True),
)


def _verb_command(verb: Verb, one_shot: bool) -> click.Command:
    """``ocigraph NAME`` (``one_shot``) or ``ocigraph plan NAME``: one body for every verb."""
    def command(layout: Path, fmt: str, verbosity: int, refs: tuple[str, ...] = (),
                **kw: Any) -> None:
        prune = _prune_rules(kw, _is_registry(layout)) if verb.prune else None
        policy = _policy(kw, verb.force) if verb.force is not None else og.Policy()
        refs = _required_refs(refs) if verb.refs else ()
        if one_shot:
            _one_shot(verb, layout, refs, policy, fmt, verbosity, prune, kw)
        else:
            _plan_only(verb.name, layout, refs, policy, fmt, verbosity, prune, kw)

    mode = ([_DRY_RUN, *([_YES] if verb.confirm else []), _lock_timeout_option, _KEEP_DELETED]
            if one_shot else [_OUTPUT])
    return click.command(verb.name, help=verb.help if one_shot else verb.plan_help)(_stack(
        _layout_argument,
        *([click.argument("refs", metavar=verb.refs, nargs=-1, shell_complete=complete_refs)]
          if verb.refs else []),
        *([_prune_options] if verb.prune else []),
        *([_policy_options(verb.force)] if verb.force is not None else []),
        _format_option("text", "json"), *mode, _verbosity_options, _registry_options,
    )(command))


def _plan_only(operation: str, layout: Path, refs: Sequence[str], policy: og.Policy, fmt: str,
               verbosity: int, prune: Prune | None, kw: dict[str, Any]) -> None:
    output = kw.pop("output")
    with _target(layout, kw) as target:
        plan, tags = _plan(target, operation, refs, policy, fmt, prune)
    if output is not None:
        data = plan.to_json() + b"\n"
        if str(output) == "-":
            sys.stdout.buffer.write(data)
        else:
            output.write_bytes(data)
    _show_plan(plan, tags, fmt, verbosity)
    if output is not None and fmt == "text" and verbosity >= 0:
        click.echo(f"plan written to {printable(str(output))}; apply it with "
                   f"`ocigraph apply {target.name} {printable(str(output))}`")


def _one_shot(verb: Verb, layout: Path, refs: Sequence[str], policy: og.Policy, fmt: str,
              verbosity: int, prune: Prune | None, kw: dict[str, Any]) -> None:
    """Lock, read, plan, (confirm), apply -- all under one lock, on one directory handle."""
    dry_run, keep, lock_timeout = kw.pop("dry_run"), kw.pop("keep_deleted"), kw.pop("lock_timeout")
    ask = verb.confirm and not kw.pop("yes", False)
    if keep is not None:
        _layouts_only(layout, "--keep-deleted")
    if ask and not dry_run and not _stdin_is_terminal():
        _usage(f"`ocigraph {verb.name}` changes the layout: pass --yes to confirm (stdin is not "
               "a terminal, so ocigraph cannot ask), or --dry-run to only see the plan")
    with _target(layout, kw) as target, (
            target.locked(lock_timeout) if not dry_run else contextlib.nullcontext()):
        if not dry_run:  # first what earlier applies left (gc: and what their time is up for)
            purged, size = target.settle(purge=verb.name == "gc")
            if purged and fmt == "text" and verbosity >= 0:
                click.echo(f"purged {purged} quarantined blob(s) ({og.format_bytes(size)}) "
                           "whose keep time was up")
        plan, tags = _plan(target, verb.name, refs, policy, fmt, prune)
        if _shown_and_confirmed(plan, tags, target.name, fmt, verbosity, dry_run, ask):
            _apply(target, plan, fmt, keep=keep)


for _verb in VERBS:
    cli.add_command(_verb_command(_verb, one_shot=True))
    if _verb.plan_help is not None:
        plan_group.add_command(_verb_command(_verb, one_shot=False))


@cli.command()
@_layout_argument
@click.argument("refs", metavar="[REF]", nargs=-1, shell_complete=complete_refs)
@_format_option("text", "json", "mermaid", "dot")
@_POLICY
@_KEEP_UNTAGGED
@_registry_options
def show(layout: Path, refs: tuple[str, ...], fmt: str, **kw: Any) -> None:
    """Show the layout's graph: index.json entries, what they reference, what is garbage.
    With REF (a tag or digest), only that image's tree."""
    policy = _policy(kw)
    refs = _refs_with_layout_ref(refs)
    with _target(layout, kw) as target, reporting() as reporter:
        read = target.read(reporter)
    _warn_junk(len(read.junk), fmt)
    graph, entries = read.graph, read.entries
    if refs:
        start = og.resolve_refs(graph, refs)
        entries = [e for e in entries if e.digest in start] or [
            og.IndexEntry(-1, og.Descriptor("", d, 0), None) for d in start]
    if fmt == "json":
        _echo(present.show_document(target.name, graph, policy, read.junk, read.quarantined))
    elif fmt == "text":
        _echo_lines(present.format_show_text(target.name, graph, policy, entries, rest=not refs),
                    present.format_quarantined(read.quarantined, target.name))
    else:
        click.echo((og.to_mermaid if fmt == "mermaid" else og.to_dot)(graph))


@cli.command()
@_layout_argument
@click.argument("plan_file", metavar="PLAN.json", type=click.Path(path_type=Path, dir_okay=False,
                                                                   allow_dash=True))
@_format_option("text", "json")
@_lock_timeout_option
@_KEEP_DELETED
@_verbosity_options
@_registry_options
def apply(layout: Path, plan_file: Path, fmt: str, lock_timeout: float, keep_deleted: float | None,
          verbosity: int, **registry: Any) -> None:
    """Apply a saved plan (PLAN.json, or - for stdin).  Refuses a stale plan."""
    if keep_deleted is not None:
        _layouts_only(layout, "--keep-deleted")
    data = sys.stdin.buffer.read() if str(plan_file) == "-" else plan_file.read_bytes()
    plan = og.Plan.from_json(data)
    with _target(layout, registry) as target:
        _apply(target, plan, fmt, lock_timeout=lock_timeout, keep=keep_deleted, verify=True)


@cli.command()
@_layout_argument
@click.argument("apply_id", metavar="[APPLY_ID]", required=False)
@_format_option("text", "json")
@_lock_timeout_option
def restore(layout: Path, apply_id: str | None, fmt: str, lock_timeout: float) -> None:
    """Undo the last apply made with --keep-deleted (or APPLY_ID's): its blobs and index.json
    entries come back.  Refused, changing nothing, where a later change makes that unsafe."""
    _layouts_only(layout, "restore")
    done = quarantine.restore(LayoutDir(layout), apply_id, lock_timeout=lock_timeout)
    _echo(present.restore_document(printable(str(layout)), done.id, done.blobs, done.entries),
          fmt, present.format_restore_text)


@cli.command("fsck")
@_layout_argument
@_format_option("text", "json")
def fsck_cmd(layout: Path, fmt: str) -> None:
    """Check the layout: missing or corrupt blobs, size mismatches, broken manifests, junk.

    Exit status 0 when clean, 1 when a problem was found.
    """
    with reporting() as reporter:
        report = fsck(layout, reporter=reporter)
    _echo(report.to_dict(), fmt, lambda _: format_fsck_text(report))
    if not report.ok:
        raise click.exceptions.Exit(EXIT_FAILED)


@cli.command()
@_layout_argument
@_format_option("text", "json")
@_POLICY
@_KEEP_UNTAGGED
@_GRACE
@click.option("--sort", type=click.Choice(["tag", "total", "unique", "shared"]), default="tag",
              show_default=True, help="Order of the tag lines (sizes: largest first).")
@click.option("--bytes", "in_bytes", is_flag=True, help="Sizes in bytes, not KiB/MiB/GiB.")
@_registry_options
def du(layout: Path, fmt: str, sort: str, in_bytes: bool, **kw: Any) -> None:
    """Disk use by tag: what each tag holds, what only it holds, what gc would free; and what
    quarantines hold for undo, apart."""
    from ocigraph import space

    policy = _policy(kw)
    with _target(layout, kw) as target, reporting() as reporter:
        read = target.read(reporter, mtimes=policy.grace > 0)
    _warn_junk(len(read.junk), fmt)
    report = space.space_by_tag(read.graph, policy)
    if fmt == "json":
        _echo({**report.to_dict(), "quarantined": read.quarantined})
    else:
        _echo_lines(space.format_space_text(report, sort=sort, human=not in_bytes),
                    present.format_quarantined(read.quarantined, target.name))


@cli.group("cache", invoke_without_command=True)
@_format_option("text", "json")
@click.pass_context
def cache_group(ctx: click.Context, fmt: str) -> None:
    """Show the cache folder: an entry per layout, its size, last use and layout."""
    if ctx.invoked_subcommand is None:
        local = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))  # noqa: E731
        _echo(cache_document(cache_info(default_cache_dir())), fmt,
              lambda doc: present.format_cache_text(doc, local))


@cache_group.command("clear")
@click.argument("layout", metavar="[LAYOUT]", required=False, type=click.Path(path_type=Path))
def cache_clear(layout: Path | None) -> None:
    """Remove the cache's entries, or only LAYOUT's; never touches a layout."""
    click.echo(f"freed {og.format_bytes(clear_cache(default_cache_dir(), layout))}")


# --- the process ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``ocigraph`` command line; returns or raises ``SystemExit`` like any click
    program (for callers in Python).  Work a command leaves for after its answer
    (:mod:`io_adapters.background`) is done before it returns -- in a child process that
    outlives this one when :func:`run` asked for that."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="ocigraph")


def run() -> None:
    """:func:`main`, made for a process of its own.

    The cyclic garbage collector is off for the run: it would only walk the graph's millions
    of objects again and again.  And when the command is done the process leaves at once
    (``os._exit``, after flushing output): freeing a graph of a million nodes object by object
    takes longer than building it.  Nothing is left undone by then -- files are closed, the
    lock is released, apply has synced what it wrote -- except what was left for a detached
    child (:mod:`io_adapters.background`).
    """
    gc.disable()
    background.detach = True
    try:
        main()
        code = 0
    except OSError as exc:  # writing --help or --version output, before any command runs
        code = 1
        _say_last(f"ocigraph: error: cannot write the output ({exc.strerror or exc})")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # sys.exit("message"), as Python itself would print it
            code = 1
            _say_last(str(exc.code))
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:  # started with that descriptor closed: nothing was written to it
            continue
        try:
            stream.flush()
        except Exception as exc:  # output was lost: that is a failure, and says so if it can
            if name == "stdout" and code == 0:
                code = 1
                _say_last(f"ocigraph: error: cannot write the output ({exc})")
    os._exit(code)


def _say_last(line: str) -> None:
    """A last line on stderr, if there is a stderr that still takes one."""
    with contextlib.suppress(Exception):
        if sys.stderr is not None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
