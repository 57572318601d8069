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
import errno
import gc as _gc  # the name gc is the command
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import networkx as nx
import orjson

import ocigraph as og

from . import background
from .apply import ApplyReport, apply_plan
from .fsck import format_fsck_text, fsck
from .layout import DiskLayout, Junk, LayoutDir, printable, read_layout
from .lock import LayoutLock
from .planner import Planned, plan_layout, restore_later

__all__ = ["cli", "main", "parse_duration", "REPORT_FORMAT_VERSION", "SHOW_FORMAT_VERSION"]

#: Version of the JSON report printed by apply/delete/gc/remove/untag (``ocigraphReport``).
REPORT_FORMAT_VERSION = 1
#: Version of the JSON printed by ``show --format json`` (``ocigraphShow``).
SHOW_FORMAT_VERSION = 1

DEBUG_ENV = "OCIGRAPH_DEBUG"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

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


def _layout_argument(f: F) -> F:
    return click.argument("layout", metavar="LAYOUT", type=click.Path(path_type=Path))(f)


def _policy_options(*, force: bool) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        opts = [
            click.option("--policy", "preset", type=click.Choice(sorted(og.PRESETS)),
                         default="default", show_default=True,
                         help="Policy preset (see docs/cli.md)."),
            click.option("--keep-untagged", is_flag=True,
                         help="Every index.json entry is a root, tagged or not."),
            click.option("--keep-referrers", is_flag=True,
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
    """Drives a tqdm bar on stderr while the core reads manifests (only on a terminal)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = _stderr_is_terminal() if enabled is None else enabled
        self._bar: Any = None

    def manifests_read(self, count: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(desc="reading manifests", unit=" manifests", file=sys.stderr,
                             leave=False)
        self._bar.update(count)

    def phase_finished(self, phase: str) -> None:
        if phase == "read":
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


def _read(root: Path, fmt: str) -> tuple[DiskLayout, nx.DiGraph]:
    """The layout and its graph, for ``show`` and ``du``: reports of disk use, so every
    blob's size is its file's (planning commands go through :func:`_planned`)."""
    disk = read_layout(LayoutDir(root))
    reporter = ProgressReporter()
    try:
        graph = og.build_graph(disk.layout, reporter, file_sizes=True)
    finally:
        reporter.close()
    _warn_junk(disk.junk, fmt)
    return disk, graph


def _warn_junk(junk: Sequence[Junk], fmt: str) -> None:
    if junk and fmt == "text":
        n = len(junk)
        _warn(f"{n} item{'s' if n != 1 else ''} under blobs/ {'are' if n != 1 else 'is'} not "
              "blobs and will be left alone (`ocigraph fsck` lists them)")


def _planned(layout: Path | LayoutDir, operation: str, refs: Sequence[str], policy: og.Policy,
             fmt: str) -> Planned:
    """Read and plan (or recall the same plan made before on the unchanged layout)."""
    reporter = ProgressReporter()
    try:
        planned = plan_layout(layout, operation, refs, policy, reporter=reporter,
                              defer=background.defer)
    finally:
        reporter.close()
    _warn_junk(planned.junk, fmt)
    return planned


# --- rendering ------------------------------------------------------------------------------------

_KIND_OF_MEDIA_TYPE = {
    og.OCI_MANIFEST: "manifest",
    og.OCI_INDEX: "index",
    og.OCI_ARTIFACT: "artifact",
    og.DOCKER_MANIFEST: "docker-manifest",
    og.DOCKER_LIST: "docker-list",
    "application/vnd.oci.image.config.v1+json": "config",
    "application/vnd.docker.container.image.v1+json": "config",
    "application/vnd.oci.empty.v1+json": "empty",
}


def short(digest: str | None) -> str:
    """``sha256:0123456789ab`` -- enough to recognise a digest; JSON output has them whole.

    >>> short("sha256:" + "0123456789abcdef" * 4)
    'sha256:0123456789ab'
    """
    if digest is None:
        return "-"
    alg, _, encoded = digest.partition(":")
    return f"{alg}:{encoded[:12]}"


def _kind(media_types: Sequence[str] | frozenset[str]) -> str:
    kinds = sorted({_KIND_OF_MEDIA_TYPE.get(m, "layer" if ".layer." in m or "tar" in m else "blob")
                    for m in media_types})
    return "/".join(kinds) if kinds else "blob"


def _tags_by_digest(plan: og.Plan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in plan.index_changes:
        if c.tag is not None:
            out.setdefault(c.digest, []).append(c.tag)
    return out


def _with_tags(digest: str | None, tags: dict[str, list[str]]) -> str:
    text = short(digest)
    if digest is not None and tags.get(digest):
        text += f" ({', '.join(tags[digest])})"
    return text


def format_plan_text(plan: og.Plan, graph_tags: dict[str, list[str]] | None = None) -> str:
    """The plan for people: what goes, why, how many bytes, and the index.json edits."""
    tags = dict(graph_tags or {})
    for digest, names in _tags_by_digest(plan).items():
        tags.setdefault(digest, names)
    lines = [plan.summary()]
    if plan.deletions:
        lines.append("")
        lines.append("delete:")
        for d in plan.deletions:
            size = og.format_bytes(d.size) if d.present else "absent"
            why = d.reason.kind if d.reason.via is None else f"{d.reason.kind} {_with_tags(d.reason.via, tags)}"
            lines.append(f"  {_with_tags(d.digest, tags):<40} {_kind(d.media_types):<10} {size:>10}  {why}")
    if plan.index_changes:
        lines.append("")
        lines.append("index.json:")
        for c in plan.index_changes:
            what = f"tag {c.tag}" if c.tag is not None else "untagged entry"
            verb = "untag" if c.action == "untag" else "drop"
            lines.append(f"  {verb:<6} entry {c.position:<4} {short(c.digest)}  {what}")
    shared = [k for k in plan.kept if k.kind != "shared" or k.via is not None]
    if shared:
        lines.append("")
        lines.append("kept:")
        for k in shared:
            via = f" via {_with_tags(k.via, tags)}" if k.via is not None else ""
            lines.append(f"  {_with_tags(k.digest, tags):<40} {k.kind}{via}")
    if plan.is_empty:
        lines.append("nothing to do")
    return "\n".join(lines)


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
        lines.append(f"skipped {short(digest)}: {why}")
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


def show_document(root: Path, disk: DiskLayout, graph: nx.DiGraph, policy: og.Policy) -> dict[str, Any]:
    """The JSON of ``show --format json``: index entries, nodes, edges, junk."""
    live = og.live_set(graph, policy)
    index = disk.layout.index
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
        "junk": [{"path": j.path, "why": j.why} for j in disk.junk],
    }


def format_show_text(root: Path, disk: DiskLayout, graph: nx.DiGraph, policy: og.Policy) -> str:
    """A tree per index.json entry (successors below, referrers marked ``<-``), then the rest."""
    live = og.live_set(graph, policy)
    nodes = graph.nodes
    present = [n for n, p in graph.nodes(data="present") if p]
    total = sum(nodes[n]["size"] for n in present)
    garbage = [n for n in present if n not in live]
    entries = disk.layout.index.entries
    lines = [
        f"{printable(str(root))}: {len(entries)} index.json entr{'ies' if len(entries) != 1 else 'y'}, "
        f"{len(present)} blob(s) ({og.format_bytes(total)}); not live under policy "
        f"{policy.name}: {len(garbage)} blob(s) "
        f"({og.format_bytes(sum(nodes[n]['size'] for n in garbage))})"
    ]

    def label(n: str) -> str:
        a = nodes[n]
        bits = [short(n), _kind(a["media_types"])]
        bits.append(og.format_bytes(a["size"]) if a["present"] else "MISSING")
        if a["tags"]:
            bits.append("tags: " + ", ".join(sorted(a["tags"])))
        if a["status"] == "broken":
            bits.append(f"BROKEN: {a['error']}")
        if a["artifact_type"]:
            bits.append(f"artifactType {a['artifact_type']}")
        if a["present"] and n not in live:
            bits.append("[garbage]")
        return "  ".join(bits)

    shown: set[str] = set()

    def tree(start: str) -> None:
        # Iterative depth-first walk: no recursion limit, every node expanded once.
        stack: list[tuple[str, int, str]] = [(start, 0, "")]
        while stack:
            n, depth, role = stack.pop()
            pad = "    " * depth
            prefix = f"{pad}{role} " if role else pad
            if n in shown:
                lines.append(f"{prefix}{short(n)}  (shown above)")
                continue
            shown.add(n)
            lines.append(f"{prefix}{label(n)}")
            children: list[tuple[str, int, str]] = []
            for s, roles in og.successors_of(graph, n):
                children.append((s, depth + 1, "/".join(sorted(roles - {"subject"})) or "subject"))
            for r in og.referrers_of(graph, n):
                children.append((r, depth + 1, "<- referrer"))
            stack.extend(reversed(children))

    for e in entries:
        if e.digest not in shown:
            tree(e.digest)
    rest = sorted(n for n in graph if n not in shown and (nodes[n]["present"] or not graph.pred[n]))
    if rest:
        lines.append("")
        lines.append("not reachable from index.json:")
        for n in rest:
            if n not in shown:
                tree(n)
    return "\n".join(lines)


# --- the commands ---------------------------------------------------------------------------------


@click.group(cls=OcigraphGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(og.__version__, prog_name="ocigraph")
def cli() -> None:
    """Plan and apply garbage collection on OCI image layouts.

    Plan first, look, then apply: `ocigraph plan gc LAYOUT -o plan.json`, then
    `ocigraph apply LAYOUT plan.json`; or in one go with a confirmation: `ocigraph gc LAYOUT`.
    Exit status: 0 done, 1 refused or failed, 2 usage.  Reference: docs/cli.md.
    """


@cli.command()
@_layout_argument
@_format_option("text", "json", "mermaid", "dot")
@click.option("--policy", "preset", type=click.Choice(sorted(og.PRESETS)), default="default",
              show_default=True, help="Policy used to mark what is live.")
@click.option("--keep-untagged", is_flag=True, help="Every index.json entry is a root.")
def show(layout: Path, fmt: str, preset: str, keep_untagged: bool) -> None:
    """Show the layout's graph: index.json entries, what they reference, what is garbage."""
    disk, graph = _read(layout, fmt)
    policy = _make_policy(preset, keep_untagged, False, None)
    if fmt == "json":
        _echo_json(show_document(layout, disk, graph, policy))
    elif fmt == "text":
        click.echo(format_show_text(layout, disk, graph, policy))
    else:
        from ocigraph import render

        draw = render.to_mermaid if fmt == "mermaid" else render.to_dot
        click.echo(draw(graph))


@cli.group("plan", cls=click.Group)
def plan_group() -> None:
    """Compute a plan and print it (or save it with -o); changes nothing, takes no lock."""


def _plan_command(operation: str) -> Callable[..., None]:
    def run(layout: Path, refs: tuple[str, ...], preset: str, keep_untagged: bool,
            keep_referrers: bool, grace: float | None, fmt: str, output: Path | None,
            force: bool = False) -> None:
        planned = _planned(layout, operation, refs,
                           _make_policy(preset, keep_untagged, keep_referrers, grace, force), fmt)
        plan = planned.plan
        if output is not None:
            _write_plan_file(output, plan)
        if fmt == "json":
            click.echo(plan.to_json().decode())
        else:
            click.echo(format_plan_text(plan, planned.tags))
            if output is not None:
                click.echo(f"plan written to {printable(str(output))}; apply it with "
                           f"`ocigraph apply {printable(str(layout))} {printable(str(output))}`")
    return run


def _write_plan_file(path: Path, plan: og.Plan) -> None:
    data = plan.to_json() + b"\n"
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        return
    path.write_bytes(data)


_OUTPUT = click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
                       default=None, metavar="PLAN.json", help="Also write the plan JSON here.")


@plan_group.command("delete")
@_layout_argument
@click.argument("refs", metavar="TARGET...", nargs=-1, required=True)
@_policy_options(force=True)
@_format_option("text", "json")
@_OUTPUT
def plan_delete_cmd(**kw: Any) -> None:
    """Plan deleting TARGETs (tags or digests) with their referrers and orphans."""
    _plan_command("delete")(**kw)


@plan_group.command("gc")
@_layout_argument
@_policy_options(force=False)
@_format_option("text", "json")
@_OUTPUT
def plan_gc_cmd(**kw: Any) -> None:
    """Plan deleting every blob that is not live."""
    _plan_command("gc")(refs=(), **kw)


@plan_group.command("remove")
@_layout_argument
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@_policy_options(force=True)
@_format_option("text", "json")
@_OUTPUT
def plan_remove_cmd(**kw: Any) -> None:
    """Plan `docker rmi`: untag REFs; delete what is left untagged and not live."""
    _plan_command("remove")(**kw)


@cli.command()
@_layout_argument
@click.argument("plan_file", metavar="PLAN.json", type=click.Path(path_type=Path, dir_okay=False,
                                                                   allow_dash=True))
@_format_option("text", "json")
@_lock_timeout_option
def apply(layout: Path, plan_file: Path, fmt: str, lock_timeout: float) -> None:
    """Apply a saved plan (PLAN.json, or - for stdin).  Refuses a stale plan."""
    data = sys.stdin.buffer.read() if str(plan_file) == "-" else plan_file.read_bytes()
    plan = og.Plan.from_json(data)
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


def _run_one_shot(operation: str, layout: Path, refs: Sequence[str], policy: og.Policy,
                  *, fmt: str, dry_run: bool, yes: bool, lock_timeout: float,
                  confirm: bool = True) -> None:
    """Lock, read, plan, (confirm), apply -- all under one lock."""
    if confirm and not dry_run and not yes and not _stdin_is_terminal():
        _fail(f"`ocigraph {operation}` changes the layout: pass --yes to confirm (stdin is not "
              "a terminal, so ocigraph cannot ask), or --dry-run to only see the plan",
              EXIT_USAGE)
    layout_dir = LayoutDir(layout)
    lock = LayoutLock(layout_dir, lock_timeout) if not dry_run else None
    if lock is not None:
        lock.acquire()
    try:
        planned = _planned(layout_dir, operation, refs, policy, fmt)
        plan = planned.plan
        if dry_run:
            if fmt == "json":
                click.echo(plan.to_json().decode())
            else:
                click.echo(format_plan_text(plan, planned.tags))
                click.echo("dry run: nothing was changed")
            return
        if fmt == "text":
            click.echo(format_plan_text(plan, planned.tags))
        if confirm and not yes and not plan.is_empty:
            n = sum(1 for d in plan.deletions if d.present)
            question = (f"Delete {n} blob(s) ({og.format_bytes(plan.bytes_freed)}) and make "
                        f"{len(plan.index_changes)} index.json change(s) in "
                        f"{printable(str(layout))}?")
            if not click.confirm(question, default=False, err=True):
                _fail("not confirmed; nothing was changed")
        with _deletion_progress(sum(1 for d in plan.deletions if d.present)) as progress:
            report = apply_plan(layout_dir, plan, lock=lock, progress=progress)
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
@click.argument("refs", metavar="TARGET...", nargs=-1, required=True)
@_policy_options(force=True)
@_format_option("text", "json")
@_DRY_RUN
@_YES
@_lock_timeout_option
def delete(layout: Path, refs: tuple[str, ...], preset: str, keep_untagged: bool,
           keep_referrers: bool, grace: float | None, force: bool, fmt: str, dry_run: bool,
           yes: bool, lock_timeout: float) -> None:
    """Delete TARGETs (tags or digests) with their referrers and the blobs only they used."""
    policy = _make_policy(preset, keep_untagged, keep_referrers, grace, force)
    _run_one_shot("delete", layout, refs, policy, fmt=fmt, dry_run=dry_run, yes=yes,
                  lock_timeout=lock_timeout)


@cli.command()
@_layout_argument
@_policy_options(force=False)
@_format_option("text", "json")
@_DRY_RUN
@_YES
@_lock_timeout_option
def gc(layout: Path, preset: str, keep_untagged: bool, keep_referrers: bool,
       grace: float | None, fmt: str, dry_run: bool, yes: bool, lock_timeout: float) -> None:
    """Delete every blob that is not live, and index.json entries of deleted manifests."""
    policy = _make_policy(preset, keep_untagged, keep_referrers, grace)
    _run_one_shot("gc", layout, (), policy, fmt=fmt, dry_run=dry_run, yes=yes,
                  lock_timeout=lock_timeout)


@cli.command()
@_layout_argument
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@_policy_options(force=True)
@_format_option("text", "json")
@_DRY_RUN
@_YES
@_lock_timeout_option
def remove(layout: Path, refs: tuple[str, ...], preset: str, keep_untagged: bool,
           keep_referrers: bool, grace: float | None, force: bool, fmt: str, dry_run: bool,
           yes: bool, lock_timeout: float) -> None:
    """Untag REFs like `docker rmi`; delete an image left untagged that nothing live uses."""
    policy = _make_policy(preset, keep_untagged, keep_referrers, grace, force)
    _run_one_shot("remove", layout, refs, policy, fmt=fmt, dry_run=dry_run, yes=yes,
                  lock_timeout=lock_timeout)


@cli.command()
@_layout_argument
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@_format_option("text", "json")
@_DRY_RUN
@_lock_timeout_option
def untag(layout: Path, refs: tuple[str, ...], fmt: str, dry_run: bool,
          lock_timeout: float) -> None:
    """Remove tags (REF: a tag, or a digest for all its tags); deletes no blob."""
    _run_one_shot("untag", layout, refs, og.Policy(), fmt=fmt, dry_run=dry_run, yes=True,
                  lock_timeout=lock_timeout, confirm=False)


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

    _, graph = _read(layout, fmt)
    report = space.space_by_tag(graph, _make_policy(preset, keep_untagged, False, grace))
    if fmt == "json":
        click.echo(report.to_json().decode())
    else:
        click.echo(space.format_space_text(report, sort=sort, human=not in_bytes))


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
