"""The ``ocigraph`` command line: read a layout, show it, plan, confirm, apply.

Rules that keep this module honest (docs/cli.md is the reference for users):

* rendering lives here; the core returns values and ``apply_plan`` returns a report;
* stdout carries the answer (text or JSON), stderr everything else: warnings, prompts,
  progress bars (only when stderr is a terminal) and errors;
* every error ocigraph raises on purpose, and every ``OSError``/``UnicodeError``, is ONE line
  ``ocigraph: error: ...`` and exit status 1 -- never a traceback (``OCIGRAPH_DEBUG=1`` re-raises);
* exit status: 0 done, 1 refused or failed, 2 usage (including "would change the layout but
  --yes was not given and stdin is not a terminal");
* the one-shot commands that change a layout (``delete``, ``gc``, ``remove``, ``untag``) take
  the layout lock *before* reading it, and plan and apply under that one lock, so nothing can
  change in between; ``plan ...`` reads without the lock and ``apply`` relies on the plan's
  index.json fingerprint to refuse a stale plan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc as _gc  # the name gc is the command
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import click
import networkx as nx
import orjson

import ocigraph as og
from ocigraph import present

from . import background
from .apply import ApplyReport, apply_plan
from .cachedir import cache_document, cache_info, clear_cache, format_cache_text
from .collector import collector_paused
from .completion import complete_refs
from .fsck import format_fsck_text, fsck
from .layout import Junk, LayoutDir, printable, read_layout
from .lock import LayoutLock
from .planner import (
    Planned,
    plan_graph,
    plan_layout,
    plan_prune_layout,
    plan_tags,
    restore_later,
)
from .store import default_cache_dir

__all__ = ["cli", "main", "parse_duration", "REPORT_FORMAT_VERSION", "SHOW_FORMAT_VERSION"]

#: Version of the JSON report printed by apply/delete/gc/remove/untag (``ocigraphReport``).
REPORT_FORMAT_VERSION = 1
#: Version of the JSON printed by ``show --format json`` (``ocigraphShow``).
SHOW_FORMAT_VERSION = 1

DEBUG_ENV = "OCIGRAPH_DEBUG"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

F = TypeVar("F", bound=Callable[..., Any])


# --- errors: one line, exit 1 -------------------------------------------------------------------


def _one_line(message: str) -> str:
    text = " ".join(str(message).split())
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"ocigraph: error: {_one_line(message)}", err=True)
    raise click.exceptions.Exit(code)


def _warn(message: str) -> None:
    click.echo(f"ocigraph: warning: {_one_line(message)}", err=True)


def _describe_os_error(exc: OSError) -> str:
    why = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)
    where = exc.filename if exc.filename is not None else ""
    return f"{printable(os.fsdecode(where))}: {why}" if where else why


class OcigraphGroup(click.Group):
    """The top-level group: turns every error below into one line on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return self._invoke(ctx)
        except KeyboardInterrupt:
            click.echo(f"ocigraph: {_interrupted_line()}", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        finally:  # what the command left for after its answer (io_adapters.background)
            background.finish()

    def _invoke(self, ctx: click.Context) -> Any:
        debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except og.OcigraphError as exc:
            if debug:
                raise
            _fail(str(exc))
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # click quietens a closed pipe (``ocigraph show L | head``)
            if debug:
                raise
            _fail(_describe_os_error(exc))
        except UnicodeError as exc:
            if debug:
                raise
            _fail(f"cannot encode or decode text: {exc}")
        except Exception as exc:
            if debug:
                raise
            _fail(f"internal error ({type(exc).__name__}: {exc}); "
                  f"set {DEBUG_ENV}=1 for a traceback and please report it")
        return None  # pragma: no cover  (_fail raises)


# --- option parsing -------------------------------------------------------------------------------

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+|\d+(?:\.\d+)?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: plain seconds or a number with a unit, combinable.

    >>> parse_duration("90"), parse_duration("10m"), parse_duration("1h30m"), parse_duration("2d")
    (90.0, 600.0, 5400.0, 172800.0)
    >>> parse_duration("soon")
    Traceback (most recent call last):
    ...
    ValueError: not a duration: 'soon' (use seconds, or e.g. 30s, 10m, 1h, 2d)
    """
    s = text.strip().lower()
    if not _DURATION.fullmatch(s):
        raise ValueError(f"not a duration: {text!r} (use seconds, or e.g. 30s, 10m, 1h, 2d)")
    if s[-1].isdigit():
        return float(s)
    return float(sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(s)))


class DurationType(click.ParamType):  # type: ignore[type-arg]  # (generic in newer click stubs only)
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class LayoutType(click.ParamType):  # type: ignore[type-arg]
    """LAYOUT: a folder; ``oci:FOLDER[:REF]`` as skopeo and umoci users type it (the REF joins
    the command's refs); or a registry repository ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``
    (kept as text, prefix included)."""

    name = "LAYOUT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        text = os.fspath(value)
        if text.startswith("oci:") and not os.path.lexists(text):
            rest = text[4:]
            # the folder is the shortest prefix before a colon that exists (a ref such as
            # app:1 has colons of its own); as skopeo, the whole text when none does
            folder, ref = rest, ""
            for at in (i for i, c in enumerate(rest) if c == ":"):
                if os.path.isdir(rest[:at]):
                    folder, ref = rest[:at], rest[at + 1:]
                    break
            if ctx is not None and ref:
                ctx.meta["ocigraph.ref"] = ref
            return Path(folder)
        if text.startswith("docker://") and ctx is not None:
            from .registry import parse_reference

            try:
                named = parse_reference(text)
            except og.OcigraphError as exc:
                self.fail(str(exc), param, ctx)
            ctx.meta["ocigraph.registry"] = text
            if named.digest or named.tag:
                ctx.meta["ocigraph.ref"] = named.digest or named.tag
        return Path(text)


def _layout_argument(f: F) -> F:
    return click.argument("layout", metavar="LAYOUT", type=LayoutType())(f)


def _refs_with_layout_ref(refs: Sequence[str]) -> tuple[str, ...]:
    """The refs typed, after the one an ``oci:FOLDER:REF`` LAYOUT named."""
    ctx = click.get_current_context()
    named = ctx.meta.get("ocigraph.ref")
    return (named, *refs) if named else tuple(refs)


def _required_refs(refs: Sequence[str]) -> tuple[str, ...]:
    out = _refs_with_layout_ref(refs)
    if not out:
        raise click.UsageError("name at least one REF (a tag or a digest), or use oci:LAYOUT:REF")
    return out


def _policy_options(*, force: bool, referrers: bool = True) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        opts = [
            click.option("--policy", "preset", type=click.Choice(sorted(og.PRESETS)),
                         default="default", show_default=True,
                         help="Policy preset (see docs/cli.md)."),
            click.option("--keep-untagged", is_flag=True,
                         help="Every index.json entry is a root, tagged or not."),
            click.option("--keep-referrers", is_flag=True, hidden=not referrers,
                         help="Do not cascade a delete to the target's referrers."),
            click.option("--grace", type=DurationType(), default=None,
                         help="Keep blobs younger than this (30s, 10m, 1h, 2d, or seconds)."),
        ]
        if force:
            opts.append(click.option("--force", is_flag=True,
                                     help="Delete even when a live index or manifest still "
                                          "references the target."))
        for opt in reversed(opts):
            f = opt(f)
        return f
    return decorate


def _policy_and_registry(kw: dict[str, Any]) -> tuple[og.Policy, dict[str, Any]]:
    """The policy from the policy options in ``kw``; what is left are registry options."""
    if kw.get("keep_referrers") and "force" not in kw:
        raise click.UsageError("--keep-referrers applies to delete and remove: a gc or prune "
                               "deletes what is not live, and a referrer of a live image is live")
    policy = _make_policy(kw.pop("preset"), kw.pop("keep_untagged"), kw.pop("keep_referrers"),
                          kw.pop("grace"), kw.pop("force", False))
    return policy, kw


def _verbosity_options(f: F) -> F:
    f = click.option("-q", "--quiet", "verbosity", flag_value=-1,
                     help="Print only errors and the one-line result.")(f)
    return click.option("-v", "--verbose", "verbosity", flag_value=1, default=0,
                        help="List every deletion (text lists 50 per reason).")(f)


def _registry_options(f: F) -> F:
    opts = [
        click.option("--tls-verify", type=click.BOOL, default=True, show_default=True,
                     help="For docker:// targets: verify TLS (false also allows plain HTTP)."),
        click.option("--creds", metavar="USER:PASS", default=None,
                     help="For docker:// targets: credentials."),
        click.option("--authfile", type=click.Path(path_type=Path), default=None,
                     help="For docker:// targets: an auth.json (else $REGISTRY_AUTH_FILE, ...)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _prune_options(f: F) -> F:
    opts = [
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
        click.option("--age-from", type=click.Choice(["push", "created"]), default="push",
                     show_default=True, help="Push time: the manifest blob's mtime, or the "
                                              "image's own created date."),
        click.option("--now", "now_text", default=None, metavar="RFC3339",
                     help="Judge as of this time (reproducible plans)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _prune_rules(kw: dict[str, Any]) -> tuple[og.RetentionRules, float]:
    """The retention rules and ``now`` from the prune options in ``kw`` (popped); exit 2 with
    one line for invalid rules."""
    policy_file = kw.pop("policy_file")
    now_text = kw.pop("now_text")
    flags = {k: kw.pop(k) for k in ("keep_last", "keep_within", "keep_tags", "only", "max_size",
                                    "age_from")}
    try:
        if policy_file is not None and any(flags[k] not in (None, ()) for k in
                                           ("keep_last", "keep_within", "keep_tags")):
            raise og.RetentionRuleError("--policy-file", None, "cannot be mixed with "
                                        "--keep-last, --keep-within or --keep-tag")
        document = policy_file.read_bytes() if policy_file is not None else None
        rules = og.retention_rules(policy=document, **flags)
        now = og.parse_time(now_text) if now_text is not None else time.time()
    except og.RetentionRuleError as exc:
        _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        _fail(_describe_os_error(exc), EXIT_USAGE)
    return rules, now


def _format_option(*choices: str) -> Callable[[F], F]:
    return click.option("--format", "fmt", type=click.Choice(choices), default=choices[0],
                        show_default=True, help="Output format.")


def _lock_timeout_option(f: F) -> F:
    return click.option("--lock-timeout", type=click.FloatRange(min=0), default=10.0,
                        show_default=True, metavar="SECONDS",
                        help="How long to wait for another ocigraph working on the layout.")(f)


def _make_policy(preset: str, keep_untagged: bool, keep_referrers: bool, grace: float | None,
                 force: bool = False) -> og.Policy:
    overrides: dict[str, Any] = {}
    if keep_untagged:
        overrides["keep_untagged"] = True
    if keep_referrers:
        overrides["cascade_referrers"] = False
    if grace is not None:
        overrides["grace"] = grace
    if force:
        overrides["force"] = True
    return og.Policy.preset(preset, **overrides)


# --- progress -------------------------------------------------------------------------------------


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressReporter(og.Reporter):
    """Shows each phase of a plan on stderr (only on a terminal): listing the blobs, reading
    manifests (a count), building the graph, planning -- a bar with the elapsed time, so a
    long silence is never unexplained."""

    _NAMES: ClassVar[dict[str, str]] = {
        "list": "listing blobs", "read": "reading manifests", "build": "building the graph",
        "close": "walking what is live", "plan": "planning"}

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = _stderr_is_terminal() if enabled is None else enabled
        self._bar: Any = None

    def phase_started(self, phase: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self.close()
        unit = " manifests" if phase == "read" else ""
        self._bar = tqdm(desc=self._NAMES.get(phase, phase), unit=unit, file=sys.stderr,
                         leave=False, bar_format="{desc}: {n_fmt}{unit} [{elapsed}]"
                         if phase == "read" else "{desc} [{elapsed}]")

    def manifests_read(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def phase_finished(self, phase: str) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def _deletion_progress(total: int) -> Iterator[Callable[[int], None] | None]:
    """A ``progress`` callback for :func:`apply_plan` showing a bar on a terminal stderr."""
    if total == 0 or not _stderr_is_terminal():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc="deleting", unit=" blobs", file=sys.stderr, leave=False)

    def advance(done: int) -> None:
        if done > bar.n:
            bar.update(done - bar.n)

    try:
        yield advance
    finally:
        bar.close()


# --- reading and planning -------------------------------------------------------------------------


def _graph_for_show(layout: Path, fmt: str, registry: dict[str, Any], *,
                    mtimes: bool = False) -> tuple[nx.DiGraph, Sequence[Junk], list[og.IndexEntry]]:
    """The graph of a layout (or registry repository) for ``show`` and ``du``: reports of disk
    use, so every blob's size is its file's."""
    if _is_registry(layout):
        from . import registry as reg

        snapshot = reg.read_repository(
            reg.parse_reference(click.get_current_context().meta["ocigraph.registry"]),
            **_client_options(registry))
        graph = og.build_graph(snapshot.layout)
        return graph, (), list(snapshot.layout.index.entries)
    disk = read_layout(LayoutDir(layout))
    reporter = ProgressReporter()
    try:
        with collector_paused():
            graph = og.build_graph(disk.layout, reporter, file_sizes=True, mtimes=mtimes)
    finally:
        reporter.close()
    _warn_junk(disk.junk, fmt)
    return graph, disk.junk, list(disk.layout.index.entries)


def _warn_junk(junk: Sequence[Junk], fmt: str) -> None:
    if junk and fmt == "text":
        n = len(junk)
        _warn(f"{n} item{'s' if n != 1 else ''} under blobs/ {'are' if n != 1 else 'is'} not "
              "blobs and will be left alone (`ocigraph fsck` lists them)")


def _planned(layout: Path | LayoutDir, operation: str, refs: Sequence[str], policy: og.Policy,
             fmt: str, prune: tuple[og.RetentionRules, float] | None = None) -> Planned:
    """Plan on a layout: from its store when it describes it, else by reading it."""
    reporter = ProgressReporter()
    try:
        if prune is not None:
            planned = plan_prune_layout(layout, prune[0], policy, prune[1], reporter=reporter)
        else:
            planned = plan_layout(layout, operation, refs, policy, reporter=reporter,
                                  defer=background.defer)
    finally:
        reporter.close()
    _warn_junk(planned.junk, fmt)
    return planned


# --- registries (docker://) -----------------------------------------------------------------------


def _layout_name(layout: Path | str) -> str:
    """How to name LAYOUT back to the user: a registry reference as typed, a folder printable."""
    if _is_registry(layout):
        return str(click.get_current_context().meta["ocigraph.registry"])
    return printable(str(layout))


def _is_registry(layout: Path | str) -> bool:
    return str(click.get_current_context().meta.get("ocigraph.registry", "")).startswith(
        "docker://") and str(layout).startswith("docker:/")


def _client_options(registry: dict[str, Any]) -> dict[str, Any]:
    return {"tls_verify": registry.get("tls_verify", True), "credentials": registry.get("creds"),
            "auth_file": registry.get("authfile")}


def _registry_plan(layout: Path, operation: str, refs: Sequence[str], policy: og.Policy,
                   registry: dict[str, Any]) -> tuple[Any, Any, og.Plan, nx.DiGraph]:
    """Read a registry repository and plan on it: (reference, client, plan, graph)."""
    from . import registry as reg

    text = click.get_current_context().meta["ocigraph.registry"]
    ref = reg.parse_reference(text)
    client = reg.RegistryClient(ref.host, **_client_options(registry))
    try:
        snapshot = reg.read_repository(ref, client=client)
    except BaseException:
        client.close()
        raise
    graph = og.build_graph(snapshot.layout)
    plan = plan_graph(graph, operation, list(refs), policy, og.WholeGraph(graph))
    return ref, client, dataclasses.replace(plan, origin=ref.origin), graph


def _registry_report(result: Any, fmt: str) -> None:
    if fmt == "json":
        _echo_json({"ocigraphRegistryReport": 1, "deleted": list(result.deleted),
                    "untagged": list(result.untagged),
                    "skipped": [{"what": k.what, "why": k.reason} for k in result.skipped],
                    "bytesUnreferenced": result.bytes_unreferenced, "gcHint": result.gc_hint})
        return
    click.echo(f"deleted {len(result.deleted)} manifest(s), untagged {len(result.untagged)}; "
               f"{og.format_bytes(result.bytes_unreferenced)} of blobs now unreferenced")
    for k in result.skipped:
        click.echo(f"skipped {k.what}: {k.reason}")
    click.echo(result.gc_hint)


def _one_shot_on_registry(operation: str, layout: Path, refs: Sequence[str], policy: og.Policy,
                          *, fmt: str, dry_run: bool, yes: bool, verbosity: int,
                          registry: dict[str, Any]) -> None:
    from . import registry as reg

    ref, client, plan, graph = _registry_plan(layout, operation, refs, policy, registry)
    try:
        if dry_run or fmt == "text":
            _show_plan(Planned(None, plan, plan_tags(graph, plan), "built", graph, None, ()),  # type: ignore[arg-type]
                       fmt if dry_run else "text", verbosity)
        if dry_run:
            return
        if not yes and not plan.is_empty and not _confirm(operation, layout, plan):
            click.echo("nothing was changed")
            raise click.exceptions.Exit(EXIT_FAILED)
        _registry_report(reg.apply_plan(ref, plan, client=client), fmt)
    finally:
        client.close()


def _apply_to_registry(layout: Path, plan: og.Plan, fmt: str, registry: dict[str, Any]) -> None:
    from . import registry as reg

    ref = reg.parse_reference(click.get_current_context().meta["ocigraph.registry"])
    client = reg.RegistryClient(ref.host, **_client_options(registry))
    try:
        _registry_report(reg.apply_plan(ref, plan, client=client), fmt)
    finally:
        client.close()


def _plan_any(layout: Path, operation: str, refs: Sequence[str], policy: og.Policy, fmt: str,
              registry: dict[str, Any],
              prune: tuple[og.RetentionRules, float] | None = None) -> Planned:
    if _is_registry(layout):
        if prune is not None:
            raise click.UsageError("prune on a registry is not supported yet; use a layout")
        _, client, plan, graph = _registry_plan(layout, operation, refs, policy, registry)
        client.close()
        return Planned(None, plan, plan_tags(graph, plan), "built", graph, None, ())  # type: ignore[arg-type]
    return _planned(layout, operation, refs, policy, fmt, prune)


def _echo_plan_json(plan: og.Plan) -> None:
    """A plan's JSON on stdout, written as it is made: a million-blob plan is tens of MB, and
    one deletion at a time never holds them all as text."""
    doc = plan.to_dict()
    deletions = doc.pop("deletions")
    head = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    out = sys.stdout
    out.write(head[:-2].decode() + ',\n  "deletions": [')
    for i, d in enumerate(deletions):
        out.write(("," if i else "") + "\n    " + orjson.dumps(d).decode())
    out.write("\n  ]\n}\n" if deletions else "]\n}\n")


# --- interruptions --------------------------------------------------------------------------------

#: what the running command is doing, for the line Ctrl-C gets
_INTERRUPT_STATE: dict[str, Any] = {"applying": False, "total": 0, "done": 0}


def _counting(progress: Callable[[int], None] | None) -> Callable[[int], None]:
    def count(done: int) -> None:
        _INTERRUPT_STATE["done"] = done
        if progress is not None:
            progress(done)
    return count


def _interrupted_line() -> str:
    state = _INTERRUPT_STATE
    if not state["applying"]:
        return "interrupted: nothing was changed"
    return (f"interrupted while applying: index.json may already be updated, at least "
            f"{state['done']:,} of {state['total']:,} blobs deleted; the layout is valid; run "
            "the same command again to finish")


# --- rendering (plans and layouts: ocigraph.present; apply's report: here) ------------------------


def format_report_text(plan: og.Plan, report: ApplyReport) -> str:
    parts = [f"deleted {len(report.deleted)} blob(s), freed {og.format_bytes(report.bytes_freed)}"]
    if report.index_written:
        drops = sum(1 for c in plan.index_changes if c.action == "drop")
        untags = len(plan.index_changes) - drops
        edits = []
        if drops:
            edits.append(f"{drops} entr{'ies' if drops != 1 else 'y'} dropped")
        if untags:
            edits.append(f"{untags} untagged")
        parts.append(f"index.json updated ({', '.join(edits)})")
    lines = ["; ".join(parts)]
    if report.already_gone:
        lines.append(f"{len(report.already_gone)} blob(s) were already gone")
    for digest, why in report.skipped:
        lines.append(f"skipped {og.short_digest(digest)}: {why}")
    return "\n".join(lines)


def _untagged_note(plan: og.Plan) -> str | None:
    """One line when a gc or prune would drop untagged index.json entries under a policy that
    does not keep them: skopeo and umoci users often keep such entries on purpose."""
    if plan.operation not in ("gc", "prune") or plan.policy.keep_untagged:
        return None
    n = sum(1 for c in plan.index_changes if c.action == "drop" and c.tag is None)
    if not n:
        return None
    return (f"{n} untagged index.json entr{'ies are' if n != 1 else 'y is'} garbage under policy "
            f"{plan.policy.name} (--keep-untagged or --policy spec keep them)")


def plan_text(plan: og.Plan, tags: dict[str, list[str]] | None, verbosity: int) -> str:
    """The plan as the commands print it: all of it with ``-v`` (verbosity 1), the summary
    alone with ``-q`` (-1), else at most ``PLAN_TEXT_LIMIT`` deletions per reason."""
    if verbosity < 0:
        lines = [plan.summary()]
    else:
        lines = [present.format_plan_text(plan, tags, limit=None if verbosity > 0 else
                                          present.PLAN_TEXT_LIMIT)]
    if plan.retention is not None and verbosity >= 0:
        lines += ["", *plan.retention.lines()]
    elif plan.retention is not None:
        lines.append(plan.retention.summary())
    note = _untagged_note(plan)
    if note is not None:
        lines.append(note)
    return "\n".join(lines)


def report_document(root: Path, plan: og.Plan, report: ApplyReport) -> dict[str, Any]:
    """The JSON report of a command that changed (or tried to change) a layout."""
    return {
        "ocigraphReport": REPORT_FORMAT_VERSION,
        "layout": str(root),
        "plan": plan.to_dict(),
        "result": report.to_dict(),
    }


def _echo_json(doc: Any) -> None:
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


def show_document(root: Path, graph: nx.DiGraph, policy: og.Policy,
                  junk: Sequence[Junk]) -> dict[str, Any]:
    """The JSON of ``show --format json``: index entries, nodes, edges, junk."""
    live = og.live_set(graph, policy)
    index = graph.graph["index"]
    return {
        "ocigraphShow": SHOW_FORMAT_VERSION,
        "layout": str(root),
        "indexFingerprint": index.fingerprint,
        "policy": policy.to_dict(),
        "entries": [
            {"position": e.position, "digest": e.digest, "mediaType": e.descriptor.media_type,
             "size": e.descriptor.size, "tag": e.tag}
            for e in index.entries
        ],
        "nodes": [
            {
                "digest": n,
                "mediaTypes": sorted(a["media_types"]),
                "size": a["size"],
                "present": a["present"],
                "tags": sorted(a["tags"]),
                "indexed": a["indexed"],
                "artifactType": a["artifact_type"],
                "status": a["status"],
                "error": a["error"],
                "live": n in live,
            }
            for n, a in sorted(graph.nodes(data=True))
        ],
        "edges": [
            {"from": u, "to": v, "roles": sorted(r)}
            for u, v, r in sorted(graph.edges(data="roles"))
        ],
        "junk": [{"path": j.path, "why": j.why} for j in junk],
    }


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


@cli.command()
@_layout_argument
@click.argument("refs", metavar="[REF]", nargs=-1, shell_complete=complete_refs)
@_format_option("text", "json", "mermaid", "dot")
@click.option("--policy", "preset", type=click.Choice(sorted(og.PRESETS)), default="default",
              show_default=True, help="Policy used to mark what is live.")
@click.option("--keep-untagged", is_flag=True, help="Every index.json entry is a root.")
@_registry_options
def show(layout: Path, refs: tuple[str, ...], fmt: str, preset: str, keep_untagged: bool,
         **registry: Any) -> None:
    """Show the layout's graph: index.json entries, what they reference, what is garbage.
    With REF (a tag or digest), only that image's tree."""
    policy = _make_policy(preset, keep_untagged, False, None)
    refs = _refs_with_layout_ref(refs)
    graph, junk, entries = _graph_for_show(layout, fmt, registry)
    if refs:
        start = og.resolve_refs(graph, refs)
        entries = [e for e in entries if e.digest in start] or [
            og.IndexEntry(-1, og.Descriptor("", d, 0), None) for d in start]
    if fmt == "json":
        _echo_json(show_document(Path(_layout_name(layout)), graph, policy, junk))
    elif fmt == "text":
        click.echo(present.format_show_text(_layout_name(layout), graph, policy, entries,
                                            rest=not refs))
    else:
        draw = og.to_mermaid if fmt == "mermaid" else og.to_dot
        click.echo(draw(graph))


@cli.group("plan", cls=click.Group)
def plan_group() -> None:
    """Compute a plan and print it (or save it with -o); changes nothing, takes no lock."""


def _write_plan_file(path: Path, plan: og.Plan) -> None:
    data = plan.to_json() + b"\n"
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        return
    path.write_bytes(data)


_OUTPUT = click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
                       default=None, metavar="PLAN.json", help="Also write the plan JSON here.")


def _show_plan(planned: Planned, fmt: str, verbosity: int) -> None:
    if fmt == "json":
        _echo_plan_json(planned.plan)
    elif verbosity >= 0 or planned.plan.is_empty:
        click.echo(plan_text(planned.plan, planned.tags, verbosity))
    else:
        click.echo(plan_text(planned.plan, planned.tags, verbosity))


def _plan_only(operation: str, layout: Path, refs: Sequence[str], policy: og.Policy, fmt: str,
               output: Path | None, verbosity: int, registry: dict[str, Any],
               prune: tuple[og.RetentionRules, float] | None = None) -> None:
    planned = _plan_any(layout, operation, refs, policy, fmt, registry, prune)
    if output is not None:
        _write_plan_file(output, planned.plan)
    _show_plan(planned, fmt, verbosity)
    if output is not None and fmt == "text" and verbosity >= 0:
        click.echo(f"plan written to {printable(str(output))}; apply it with "
                   f"`ocigraph apply {_layout_name(layout)} {printable(str(output))}`")


@plan_group.command("delete")
@_layout_argument
@click.argument("refs", metavar="TARGET...", nargs=-1, shell_complete=complete_refs)
@_policy_options(force=True)
@_format_option("text", "json")
@_OUTPUT
@_verbosity_options
@_registry_options
def plan_delete_cmd(layout: Path, refs: tuple[str, ...], fmt: str, output: Path | None,
                    verbosity: int, **kw: Any) -> None:
    """Plan deleting TARGETs (tags or digests) with their referrers and orphans."""
    policy, registry = _policy_and_registry(kw)
    _plan_only("delete", layout, _required_refs(refs), policy, fmt, output, verbosity, registry)


@plan_group.command("gc")
@_layout_argument
@_policy_options(force=False, referrers=False)
@_format_option("text", "json")
@_OUTPUT
@_verbosity_options
@_registry_options
def plan_gc_cmd(layout: Path, fmt: str, output: Path | None, verbosity: int, **kw: Any) -> None:
    """Plan deleting every blob that is not live."""
    policy, registry = _policy_and_registry(kw)
    _plan_only("gc", layout, (), policy, fmt, output, verbosity, registry)


@plan_group.command("remove")
@_layout_argument
@click.argument("refs", metavar="REF...", nargs=-1, shell_complete=complete_refs)
@_policy_options(force=True)
@_format_option("text", "json")
@_OUTPUT
@_verbosity_options
@_registry_options
def plan_remove_cmd(layout: Path, refs: tuple[str, ...], fmt: str, output: Path | None,
                    verbosity: int, **kw: Any) -> None:
    """Plan `docker rmi`: untag REFs; delete what is left untagged and not live."""
    policy, registry = _policy_and_registry(kw)
    _plan_only("remove", layout, _required_refs(refs), policy, fmt, output, verbosity, registry)


@plan_group.command("prune")
@_layout_argument
@_prune_options
@_policy_options(force=False, referrers=False)
@_format_option("text", "json")
@_OUTPUT
@_verbosity_options
def plan_prune_cmd(layout: Path, fmt: str, output: Path | None, verbosity: int,
                   **kw: Any) -> None:
    """Plan a prune: which tags the keep rules let go, and the gc that follows."""
    rules, now = _prune_rules(kw)
    policy, registry = _policy_and_registry(kw)
    _plan_only("prune", layout, (), policy, fmt, output, verbosity, registry, (rules, now))


@cli.command()
@_layout_argument
@click.argument("plan_file", metavar="PLAN.json", type=click.Path(path_type=Path, dir_okay=False,
                                                                   allow_dash=True))
@_format_option("text", "json")
@_lock_timeout_option
@_verbosity_options
@_registry_options
def apply(layout: Path, plan_file: Path, fmt: str, lock_timeout: float, verbosity: int,
          **registry: Any) -> None:
    """Apply a saved plan (PLAN.json, or - for stdin).  Refuses a stale plan."""
    data = sys.stdin.buffer.read() if str(plan_file) == "-" else plan_file.read_bytes()
    plan = og.Plan.from_json(data)
    if _is_registry(layout):
        _apply_to_registry(layout, plan, fmt, registry)
        return
    layout_dir = LayoutDir(layout)
    with _deletion_progress(sum(1 for d in plan.deletions if d.present)) as progress:
        report = apply_plan(layout_dir, plan, lock_timeout=lock_timeout, progress=progress,
                            verify=True)
    _print_report(layout, plan, report, fmt)
    restore_later(layout_dir, defer=background.defer, applied=(plan, report))


def _print_report(root: Path, plan: og.Plan, report: ApplyReport, fmt: str) -> None:
    if fmt == "json":
        _echo_json(report_document(root, plan, report))
    else:
        click.echo(format_report_text(plan, report))


def _confirm(operation: str, layout: Path, plan: og.Plan) -> bool:
    n = sum(1 for d in plan.deletions if d.present)
    question = (f"Delete {n} blob(s) ({og.format_bytes(plan.bytes_freed)}) and make "
                f"{len(plan.index_changes)} index.json change(s) in {_layout_name(layout)}?")
    return bool(click.confirm(question, default=False, err=True))


def _run_one_shot(operation: str, layout: Path, refs: Sequence[str], policy: og.Policy,
                  *, fmt: str, dry_run: bool, yes: bool, lock_timeout: float, verbosity: int = 0,
                  registry: dict[str, Any] | None = None, confirm: bool = True,
                  prune: tuple[og.RetentionRules, float] | None = None) -> None:
    """Lock, read, plan, (confirm), apply -- all under one lock, on one directory handle."""
    if confirm and not dry_run and not yes and not _stdin_is_terminal():
        _fail(f"`ocigraph {operation}` changes the layout: pass --yes to confirm (stdin is not "
              "a terminal, so ocigraph cannot ask), or --dry-run to only see the plan",
              EXIT_USAGE)
    if _is_registry(layout):
        if prune is not None:
            raise click.UsageError("prune on a registry is not supported yet; use a layout")
        _one_shot_on_registry(operation, layout, refs, policy, fmt=fmt, dry_run=dry_run,
                              yes=yes or not confirm, verbosity=verbosity, registry=registry or {})
        return
    layout_dir = LayoutDir(layout)
    lock = LayoutLock(layout_dir, lock_timeout) if not dry_run else None
    if lock is not None:
        lock.acquire()
    try:
        planned = _planned(layout_dir, operation, refs, policy, fmt, prune)
        plan = planned.plan
        if dry_run:
            _show_plan(planned, fmt, verbosity)
            if fmt == "text" and verbosity >= 0:
                click.echo("dry run: nothing was changed")
            return
        if fmt == "text" and (verbosity >= 0 or plan.is_empty):
            click.echo(plan_text(plan, planned.tags, verbosity if verbosity >= 0 else 0)
                       if verbosity >= 0 else plan.summary())
        if confirm and not yes and not plan.is_empty and not _confirm(operation, layout, plan):
            click.echo("nothing was changed")
            raise click.exceptions.Exit(EXIT_FAILED)
        _INTERRUPT_STATE.update(applying=True, total=sum(1 for d in plan.deletions if d.present))
        with _deletion_progress(_INTERRUPT_STATE["total"]) as progress:
            report = apply_plan(layout_dir, plan, lock=lock, progress=_counting(progress))
        _INTERRUPT_STATE.update(applying=False)
        if fmt == "json":
            _echo_json(report_document(layout, plan, report))
        elif not plan.is_empty:
            click.echo(format_report_text(plan, report))
        restore_later(layout_dir, defer=background.defer, applied=(plan, report))
    finally:
        if lock is not None:
            lock.release()


_DRY_RUN = click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
_YES = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


@cli.command()
@_layout_argument
@click.argument("refs", metavar="TARGET...", nargs=-1, shell_complete=complete_refs)
@_policy_options(force=True)
@_format_option("text", "json")
@_DRY_RUN
@_YES
@_lock_timeout_option
@_verbosity_options
@_registry_options
def delete(layout: Path, refs: tuple[str, ...], fmt: str, dry_run: bool, yes: bool,
           lock_timeout: float, verbosity: int, **kw: Any) -> None:
    """Delete TARGETs (tags or digests) with their referrers and the blobs only they used."""
    policy, registry = _policy_and_registry(kw)
    _run_one_shot("delete", layout, _required_refs(refs), policy, fmt=fmt, dry_run=dry_run,
                  yes=yes, lock_timeout=lock_timeout, verbosity=verbosity, registry=registry)


@cli.command()
@_layout_argument
@_policy_options(force=False, referrers=False)
@_format_option("text", "json")
@_DRY_RUN
@_YES
@_lock_timeout_option
@_verbosity_options
@_registry_options
def gc(layout: Path, fmt: str, dry_run: bool, yes: bool, lock_timeout: float, verbosity: int,
       **kw: Any) -> None:
    """Delete every blob that is not live, and index.json entries of deleted manifests."""
    policy, registry = _policy_and_registry(kw)
    _run_one_shot("gc", layout, (), policy, fmt=fmt, dry_run=dry_run, yes=yes,
                  lock_timeout=lock_timeout, verbosity=verbosity, registry=registry)


@cli.command()
@_layout_argument
@click.argument("refs", metavar="REF...", nargs=-1, shell_complete=complete_refs)
@_policy_options(force=True)
@_format_option("text", "json")
@_DRY_RUN
@_YES
@_lock_timeout_option
@_verbosity_options
@_registry_options
def remove(layout: Path, refs: tuple[str, ...], fmt: str, dry_run: bool, yes: bool,
           lock_timeout: float, verbosity: int, **kw: Any) -> None:
    """Untag REFs like `docker rmi`; delete an image left untagged that nothing live uses."""
    policy, registry = _policy_and_registry(kw)
    _run_one_shot("remove", layout, _required_refs(refs), policy, fmt=fmt, dry_run=dry_run,
                  yes=yes, lock_timeout=lock_timeout, verbosity=verbosity, registry=registry)


@cli.command()
@_layout_argument
@click.argument("refs", metavar="REF...", nargs=-1, shell_complete=complete_refs)
@_format_option("text", "json")
@_DRY_RUN
@_lock_timeout_option
@_verbosity_options
@_registry_options
def untag(layout: Path, refs: tuple[str, ...], fmt: str, dry_run: bool,
          lock_timeout: float, verbosity: int, **registry: Any) -> None:
    """Remove tags (REF: a tag, or a digest for all its tags); deletes no blob."""
    _run_one_shot("untag", layout, _required_refs(refs), og.Policy(), fmt=fmt, dry_run=dry_run,
                  yes=True, lock_timeout=lock_timeout, verbosity=verbosity, registry=registry,
                  confirm=False)


@cli.command()
@_layout_argument
@_prune_options
@_policy_options(force=False, referrers=False)
@_format_option("text", "json")
@_DRY_RUN
@_YES
@_lock_timeout_option
@_verbosity_options
def prune(layout: Path, fmt: str, dry_run: bool, yes: bool, lock_timeout: float,
          verbosity: int, **kw: Any) -> None:
    """Let go of the tags no keep rule keeps (and images over a space budget), then gc."""
    rules, now = _prune_rules(kw)
    policy, registry = _policy_and_registry(kw)
    _run_one_shot("prune", layout, (), policy, fmt=fmt, dry_run=dry_run, yes=yes,
                  lock_timeout=lock_timeout, verbosity=verbosity, registry=registry,
                  prune=(rules, now))


@cli.command("fsck")
@_layout_argument
@_format_option("text", "json")
def fsck_cmd(layout: Path, fmt: str) -> None:
    """Check the layout: missing or corrupt blobs, size mismatches, broken manifests, junk.

    Exit status 0 when clean, 1 when a problem was found.
    """
    reporter = ProgressReporter()
    try:
        report = fsck(layout, reporter=reporter)
    finally:
        reporter.close()
    if fmt == "json":
        _echo_json(report.to_dict())
    else:
        click.echo(format_fsck_text(report))
    if not report.ok:
        raise click.exceptions.Exit(EXIT_FAILED)


@cli.command()
@_layout_argument
@_format_option("text", "json")
@click.option("--policy", "preset", type=click.Choice(sorted(og.PRESETS)), default="default",
              show_default=True, help="Policy used to decide what is live.")
@click.option("--keep-untagged", is_flag=True, help="Every index.json entry is a root.")
@click.option("--grace", type=DurationType(), default=None,
              help="Blobs younger than this count as live.")
@click.option("--sort", type=click.Choice(["tag", "total", "unique", "shared"]), default="tag",
              show_default=True, help="Order of the tag lines (sizes: largest first).")
@click.option("--bytes", "in_bytes", is_flag=True, help="Sizes in bytes, not KiB/MiB/GiB.")
def du(layout: Path, fmt: str, preset: str, keep_untagged: bool, grace: float | None,
       sort: str, in_bytes: bool) -> None:
    """Disk use by tag: what each tag holds, what only it holds, what gc would free."""
    from ocigraph import space

    graph, _, _ = _graph_for_show(layout, fmt, {}, mtimes=bool(grace))
    report = space.space_by_tag(graph, _make_policy(preset, keep_untagged, False, grace))
    if fmt == "json":
        click.echo(report.to_json().decode())
    else:
        click.echo(space.format_space_text(report, sort=sort, human=not in_bytes))


@cli.group("cache", invoke_without_command=True)
@_format_option("text", "json")
@click.pass_context
def cache_group(ctx: click.Context, fmt: str) -> None:
    """Show the cache folder: an entry per layout, its size, last use and layout."""
    if ctx.invoked_subcommand is None:
        info = cache_info(default_cache_dir())
        if fmt == "json":
            _echo_json(cache_document(info))
        else:
            click.echo(format_cache_text(info))


@cache_group.command("clear")
@click.argument("layout", metavar="[LAYOUT]", required=False, type=click.Path(path_type=Path))
def cache_clear(layout: Path | None) -> None:
    """Remove the cache's entries, or only LAYOUT's; never touches a layout."""
    click.echo(f"freed {og.format_bytes(clear_cache(default_cache_dir(), layout))}")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``ocigraph`` command line; returns or raises ``SystemExit`` like any click
    program (for callers in Python; the installed script is :func:`run`).

    Work a command leaves for after its answer (:mod:`io_adapters.background`) is done before
    it returns -- in a child process that outlives this one when :func:`run` asked for that."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="ocigraph")


def run() -> None:
    """The ``ocigraph`` script and ``python -m io_adapters``: :func:`main`, made for a process
    of its own.

    The cyclic garbage collector is off for the run: it would only walk the graph's millions
    of objects again and again (the core pauses it while building; this is one short run with
    few reference cycles).  And when the command is done the process leaves at once
    (``os._exit``, after flushing output): freeing a graph of a million nodes object by object
    takes longer than building it, and the operating system reclaims the memory in one go.
    Nothing is left undone by then -- files are closed, the lock is released, apply has synced
    what it wrote -- except what was left for a detached child (:mod:`io_adapters.background`).
    """
    _gc.disable()
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
