"""What the command line prints, as pure functions: plans, layouts and reports.

Values in, text or a JSON document (a plain dict) out: no terminal, no file, no clock.  Each
report is built once as its JSON document, and its text is rendered from that document, so the
two formats cannot disagree.  Digests are shortened by :func:`ocigraph.short_digest` and kinds
named by :func:`ocigraph.media_kind`, as everywhere else; JSON keeps them whole.

>>> import ocigraph as og
>>> g = og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {}))
>>> print(format_plan_text(og.plan_gc(g)))
gc plan (policy default): 0 blob(s) to delete, 0 B freed, 0 index.json change(s)
nothing to do
"""

from __future__ import annotations

import errno
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import networkx as nx
import orjson

from ._digest import printable, short_digest
from ._errors import OcigraphError
from ._graph import live_set, referrers_of, successors_of
from ._mediatypes import media_kind
from ._model import Descriptor, IndexEntry
from ._plan import REASON_KINDS, Kept, Plan, format_bytes
from ._policy import Policy
from ._refs import resolve_refs
from .cachedir import MAX_AGE, CacheInfo
from .render import to_dot, to_mermaid
from .space import SpaceReport, format_space_text

__all__ = ["PLAN_TEXT_LIMIT", "REPORT_FORMAT_VERSION", "SHOW_FORMAT_VERSION",
           "format_plan_text", "format_plan_output", "untagged_note", "plan_json_chunks",
           "confirm_question", "report_document", "format_report_text", "show_document",
           "format_show_text", "format_quarantined", "interrupted_line",
           "registry_report_document", "format_registry_report_text", "restore_document",
           "format_restore_text", "one_line", "error_line", "SHORT_HEX", "ref_completions",
           "parse_option_duration", "format_cache_text", "held_clauses",
           "junk_warning", "show_output", "du_output", "rendered", "PHASE_NAMES",
           "cache_document", "purged_line", "plan_written_line"]

#: How many deletions of each reason :func:`format_plan_text` lists by default.
PLAN_TEXT_LIMIT = 50
#: Version of the JSON report of a command that applied a plan (``ocigraphReport``).
REPORT_FORMAT_VERSION = 1
#: Version of the JSON printed by ``show --format json`` (``ocigraphShow``).
SHOW_FORMAT_VERSION = 1


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _plan_tags(plan: Plan) -> dict[str, list[str]]:
    """digest -> the tags the plan's index.json changes name for it."""
    out: dict[str, list[str]] = {}
    for c in plan.index_changes:
        if c.tag is not None:
            out.setdefault(c.digest, []).append(c.tag)
    return out


def _with_tags(digest: str | None, tags: Mapping[str, Sequence[str]]) -> str:
    text = short_digest(digest)
    if digest is not None and tags.get(digest):
        text += f" ({', '.join(tags[digest])})"
    return text


def _kept_text(k: Kept, tags: Mapping[str, Sequence[str]]) -> str:
    if k.kind == "held-by-garbage":
        holder = f" {_with_tags(k.via, tags)}" if k.via is not None else ""
        return f"held by garbage{holder}; the next gc removes both"
    return k.kind + (f" via {_with_tags(k.via, tags)}" if k.via is not None else "")


def _more_line(hidden: Counter[str]) -> str:
    """The line that stands for the deletions a limit left out."""
    total = sum(hidden.values())
    if len(hidden) == 1:
        return f"  \u2026 and {total} more (-v lists all)"
    each = ", ".join(f"{hidden[kind]} {kind}" for kind in REASON_KINDS if hidden[kind])
    return f"  \u2026 and {total} more: {each} (-v lists all)"


def format_plan_text(plan: Plan, tags: Mapping[str, Sequence[str]] | None = None, *,
                     limit: int | None = PLAN_TEXT_LIMIT) -> str:
    """``plan`` for people: the summary, what goes and why, the index.json edits, and the
    successors kept with why.

    ``tags``: digest -> tags to show beside digests (the tags of the graph the plan came
    from; the plan's own index.json changes name tags too).  At most ``limit`` deletions of
    each reason are listed, in apply order, then one line counts the rest; ``None`` lists all.

    >>> p = Plan(operation="gc", targets=(), policy=Policy(), index_fingerprint="sha256:" + "0" * 64)
    >>> format_plan_text(p).splitlines()[-1]
    'nothing to do'
    """
    names: dict[str, Sequence[str]] = dict(tags or {})
    for digest, found in _plan_tags(plan).items():
        names.setdefault(digest, found)
    lines = [plan.summary()]
    if plan.deletions:
        lines += ["", "delete:"]
        listed: Counter[str] = Counter()
        hidden: Counter[str] = Counter()
        for d in plan.deletions:
            kind = d.reason.kind
            if limit is not None and listed[kind] >= limit:
                hidden[kind] += 1
                continue
            listed[kind] += 1
            size = format_bytes(d.size) if d.present else "absent"
            why = kind if d.reason.via is None else f"{kind} {_with_tags(d.reason.via, names)}"
            lines.append(f"  {_with_tags(d.digest, names):<40} {media_kind(d.media_types):<10} "
                         f"{size:>10}  {why}")
        if hidden:
            lines.append(_more_line(hidden))
    if plan.index_changes:
        lines += ["", "index.json:"]
        for c in plan.index_changes:
            what = f"tag {c.tag}" if c.tag is not None else "untagged entry"
            lines.append(f"  {c.action:<6} entry {c.position:<4} {short_digest(c.digest)}  {what}")
    kept = [k for k in plan.kept if k.kind != "shared" or k.via is not None]
    if kept:
        lines += ["", "kept:"]
        lines += [f"  {_with_tags(k.digest, names):<40} {_kept_text(k, names)}" for k in kept]
    if plan.is_empty:
        lines.append("nothing to do")
    return "\n".join(lines)


def format_show_text(title: str, graph: nx.DiGraph, policy: Policy,
                     entries: Sequence[IndexEntry] | None = None, *, rest: bool = True) -> str:
    """A layout for people: a first line titled ``title`` with counts and what is not live
    under ``policy``, then a tree per index.json entry (successors below, referrers marked
    ``<-``), then what index.json does not reach.

    ``entries``: the index.json entries to start from (default: those of ``graph``);
    ``rest``: also show what they do not reach (off to show one image).  The first line says
    how many trees the entries make: an entry of a referrer shows under its subject.

    >>> import ocigraph as og
    >>> g = og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {}))
    >>> format_show_text("store", g, og.Policy())
    'store: 0 index.json entries (0 images), 0 blob(s) (0 B); not live under policy default: 0 blob(s) (0 B)'
    """
    live = live_set(graph, policy)
    nodes = graph.nodes
    entries = graph.graph["index"].entries if entries is None else entries
    present = [n for n, p in nodes(data="present") if p]
    garbage = [n for n in present if n not in live]
    trees: list[str] = []
    shown: set[str] = set()
    images = nested = 0
    for e in entries:
        if e.digest in shown:
            nested += 1
            continue
        images += 1
        trees += _tree(graph, e.digest, live, shown)
    counted = f"{images} image{'s' if images != 1 else ''}"
    if nested:
        counted += f", {nested} more entr{'ies' if nested != 1 else 'y'} shown within them"
    lines = [
        f"{title}: {len(entries)} index.json entr{'ies' if len(entries) != 1 else 'y'} "
        f"({counted}), "
        f"{len(present)} blob(s) ({format_bytes(sum(nodes[n]['size'] for n in present))}); "
        f"not live under policy {policy.name}: {len(garbage)} blob(s) "
        f"({format_bytes(sum(nodes[n]['size'] for n in garbage))})",
        *trees,
    ]
    others = sorted(n for n in graph if n not in shown and (nodes[n]["present"] or not graph.pred[n]))
    if others and rest:
        lines += ["", "not reachable from index.json:"]
        for n in others:
            if n not in shown:
                lines += _tree(graph, n, live, shown)
    return "\n".join(lines)


def show_output(fmt: str, layout: str, graph: nx.DiGraph, policy: Policy,
                entries: Sequence[IndexEntry], refs: Sequence[str] = (),
                junk: Sequence[Mapping[str, str]] = (),
                quarantined: Sequence[Mapping[str, Any]] = ()) -> str:
    """What ``show`` prints in ``fmt`` (``text``, ``json``, ``mermaid`` or ``dot``).  With
    ``refs`` (resolved in ``graph``, raising as :func:`ocigraph.resolve_refs` does, whatever
    the format) the text shows only the trees of the ``entries`` they name -- or, when no entry
    lists one, of what they name.

    >>> import ocigraph as og
    >>> g = og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {}))
    >>> text = show_output("text", "L", g, og.Policy(), [], quarantined=[{"blobs": 1, "bytes": 2}])
    >>> text.splitlines()[-1]
    'quarantined: 1 blob, 2 B (`ocigraph restore L` brings them back)'
    """
    if refs:
        start = resolve_refs(graph, refs)
        entries = [e for e in entries if e.digest in start] or [
            IndexEntry(-1, Descriptor("", d, 0), None) for d in start]
    if fmt == "json":
        return rendered(show_document(layout, graph, policy, junk, quarantined))
    if fmt == "text":
        return _lines(format_show_text(layout, graph, policy, entries, rest=not refs),
                      format_quarantined(quarantined, layout))
    return (to_mermaid if fmt == "mermaid" else to_dot)(graph)


def du_output(fmt: str, layout: str, report: SpaceReport,
              quarantined: Sequence[Mapping[str, Any]], *, sort: str = "tag",
              human: bool = True) -> str:
    """What ``du`` prints in ``fmt`` (``text`` or ``json``): ``report``, and apart the blobs
    quarantines hold for undo."""
    if fmt == "json":
        return rendered({**report.to_dict(), "quarantined": quarantined})
    return _lines(format_space_text(report, sort=sort, human=human),
                  format_quarantined(quarantined, layout))


def rendered(doc: Any, fmt: str = "json", text: Callable[[Any], str] | None = None) -> str:
    """A report as the commands print it: its JSON document, indented; or in ``text`` format,
    the text ``text`` renders from that same document.

    >>> print(rendered({"a": [1]}))
    {
      "a": [
        1
      ]
    }
    >>> rendered({"a": [1]}, "text", lambda doc: f"a: {doc['a']}")
    'a: [1]'
    """
    if fmt == "json" or text is None:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    return text(doc)


def _lines(*lines: str | None) -> str:
    return "\n".join(line for line in lines if line is not None)


def _node_line(graph: nx.DiGraph, n: str, live: frozenset[str]) -> str:
    a = graph.nodes[n]
    bits = [short_digest(n), media_kind(a["media_types"])]
    bits.append(format_bytes(a["size"]) if a["present"] else "MISSING")
    if a["tags"]:
        bits.append("tags: " + ", ".join(sorted(a["tags"])))
    if a["status"] == "broken":
        bits.append(f"BROKEN: {a['error']}")
    if a["artifact_type"]:
        bits.append(f"artifactType {a['artifact_type']}")
    if a["present"] and n not in live:
        bits.append("[garbage]")
    return "  ".join(bits)


def _tree(graph: nx.DiGraph, start: str, live: frozenset[str], shown: set[str]) -> list[str]:
    """The lines of ``start``'s tree; nodes in ``shown`` already are named, not expanded
    again.  Iterative depth-first: no recursion limit, every node expanded once."""
    lines = []
    stack: list[tuple[str, int, str]] = [(start, 0, "")]
    while stack:
        n, depth, role = stack.pop()
        pad = "    " * depth
        prefix = f"{pad}{role} " if role else pad
        if n in shown:
            lines.append(f"{prefix}{short_digest(n)}  (shown above)")
            continue
        shown.add(n)
        lines.append(f"{prefix}{_node_line(graph, n, live)}")
        children = [(s, depth + 1, "/".join(sorted(roles - {"subject"})) or "subject")
                    for s, roles in successors_of(graph, n)]
        children += [(r, depth + 1, "<- referrer") for r in referrers_of(graph, n)]
        stack.extend(reversed(children))
    return lines


# --- the command line's plans and reports -----------------------------------------------------


def untagged_note(plan: Plan) -> str | None:
    """One line when a gc or prune drops untagged index.json entries under a policy that does
    not keep them: skopeo and umoci users often keep such entries on purpose."""
    if plan.operation not in ("gc", "prune") or plan.policy.keep_untagged:
        return None
    n = sum(1 for c in plan.index_changes if c.action == "drop" and c.tag is None)
    if not n:
        return None
    return (f"{n} untagged index.json entr{'ies are' if n != 1 else 'y is'} garbage under policy "
            f"{plan.policy.name} (--keep-untagged or --policy spec keep them)")


def format_plan_output(plan: Plan, tags: Mapping[str, Sequence[str]] | None,
                       verbosity: int) -> str:
    """The plan as the commands print it: all of it with ``-v`` (verbosity 1), the summary
    alone with ``-q`` (-1), else at most ``PLAN_TEXT_LIMIT`` deletions per reason."""
    if verbosity < 0:
        lines = [plan.summary()]
        if plan.retention is not None:
            lines.append(plan.retention.summary())
    else:
        lines = [format_plan_text(plan, tags, limit=None if verbosity > 0 else PLAN_TEXT_LIMIT)]
        if plan.retention is not None:
            lines += ["", *plan.retention.lines()]
    note = untagged_note(plan)
    return "\n".join(lines if note is None else [*lines, note])


def plan_json_chunks(plan: Plan) -> Iterator[str]:
    """``plan.to_json()`` indented, a deletion at a time: a million-blob plan is tens of MB,
    and its text is never held at once."""
    doc = plan.to_dict()
    deletions = doc.pop("deletions")
    yield orjson.dumps(doc, option=orjson.OPT_INDENT_2)[:-2].decode() + ',\n  "deletions": ['
    for i, d in enumerate(deletions):
        yield ("," if i else "") + "\n    " + orjson.dumps(d).decode()
    yield "\n  ]\n}\n" if deletions else "]\n}\n"


def plan_written_line(path: str, layout: str) -> str:
    """What ``plan -o PATH`` says after writing the plan of ``layout``.

    >>> plan_written_line("p.json", "L")
    'plan written to p.json; apply it with `ocigraph apply L p.json`'
    """
    path = printable(path)
    return f"plan written to {path}; apply it with `ocigraph apply {layout} {path}`"


def purged_line(blobs: int, size: int) -> str:
    """What a one-shot command says of the quarantined blobs it purged first.

    >>> purged_line(3, 2048)
    'purged 3 quarantined blob(s) (2.0 KiB) whose keep time was up'
    """
    return f"purged {blobs} quarantined blob(s) ({format_bytes(size)}) whose keep time was up"


def confirm_question(plan: Plan, layout: str) -> str:
    """What a one-shot command asks before it changes ``layout``."""
    n = sum(1 for d in plan.deletions if d.present)
    return (f"Delete {n} blob(s) ({format_bytes(plan.bytes_freed)}) and make "
            f"{len(plan.index_changes)} index.json change(s) in {layout}?")


def report_document(layout: str, plan: Plan, result: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON report of a command that applied ``plan`` (``result``: what apply did)."""
    return {"ocigraphReport": REPORT_FORMAT_VERSION, "layout": layout, "plan": plan.to_dict(),
            "result": dict(result)}


def format_report_text(doc: Mapping[str, Any]) -> str:
    """:func:`report_document`'s ``doc`` for people: what was deleted and freed, the
    index.json edits, blobs already gone or skipped; and, when apply met them, what the blobs
    moved back, the quarantine and a clock warning mean.

    >>> print(format_report_text({"layout": "L", "plan": {"indexChanges": [{"action": "drop"}]},
    ...     "result": {"deleted": ["sha256:" + "a" * 64], "bytesFreed": 2048, "indexWritten": True,
    ...                "quarantine": "20261203T101500.000000Z-7"}}))
    deleted 1 blob(s), freed 2.0 KiB; index.json updated (1 entry dropped)
    the deleted blobs are kept in quarantine 20261203T101500.000000Z-7: `ocigraph restore L` brings them back until their time is up
    """
    result = doc["result"]
    parts = [f"deleted {len(result['deleted'])} blob(s), freed "
             f"{format_bytes(result['bytesFreed'])}"]
    if result["indexWritten"]:
        changes = doc["plan"]["indexChanges"]
        drops = sum(1 for c in changes if c["action"] == "drop")
        edits = [_plural(drops, "entry dropped", "entries dropped")] if drops else []
        if len(changes) - drops:
            edits.append(f"{len(changes) - drops} untagged")
        parts.append(f"index.json updated ({', '.join(edits)})")
    lines = ["; ".join(parts)]
    if result.get("alreadyGone"):
        lines.append(f"{len(result['alreadyGone'])} blob(s) were already gone")
    lines += [f"skipped {short_digest(s['digest'])}: {s['why']}" for s in result.get("skipped", ())]
    if result.get("relisted"):
        lines.append(f"{len(result['relisted'])} planned blob(s) were left in place: index.json "
                     "was rewritten meanwhile (by another tool) and makes them live again")
    if result.get("quarantine"):
        lines.append(f"the deleted blobs are kept in quarantine {result['quarantine']}: "
                     f"`ocigraph restore {doc['layout']}` brings them back until their time is up")
    if result.get("clockWarning"):
        lines.append(f"warning: {result['clockWarning']}")
    return "\n".join(lines)


def show_document(layout: str, graph: nx.DiGraph, policy: Policy,
                  junk: Sequence[Mapping[str, str]] = (),
                  quarantined: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The JSON of ``show --format json``: index entries, nodes, edges, junk (``path``,
    ``why``) and the quarantines that hold deleted blobs for undo (not counted in nodes)."""
    live = live_set(graph, policy)
    index = graph.graph["index"]
    return {
        "ocigraphShow": SHOW_FORMAT_VERSION,
        "layout": layout,
        "indexFingerprint": index.fingerprint,
        "policy": policy.to_dict(),
        "entries": [{"position": e.position, "digest": e.digest, "mediaType": e.descriptor.media_type,
                     "size": e.descriptor.size, "tag": e.tag} for e in index.entries],
        "nodes": [{"digest": n, "mediaTypes": sorted(a["media_types"]), "size": a["size"],
                   "present": a["present"], "tags": sorted(a["tags"]), "indexed": a["indexed"],
                   "artifactType": a["artifact_type"], "status": a["status"], "error": a["error"],
                   "live": n in live}
                  for n, a in sorted(graph.nodes(data=True))],
        "edges": [{"from": u, "to": v, "roles": sorted(r)}
                  for u, v, r in sorted(graph.edges(data="roles"))],
        "junk": [dict(j) for j in junk],
        "quarantined": [dict(q) for q in quarantined],
    }


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")


def format_quarantined(quarantined: Sequence[Mapping[str, Any]], layout: str) -> str | None:
    """One line for the blobs quarantines hold (``QuarantineInfo.to_dict()`` each), or
    ``None`` when there are none.

    >>> format_quarantined([{"id": "x", "blobs": 3, "bytes": 1258291, "keepUntil": 1796464800.0}], "L")
    'quarantined: 3 blobs, 1.2 MiB, until 2026-12-05T10:00Z (`ocigraph restore L` brings them back)'
    """
    if not quarantined:
        return None
    blobs = sum(int(q["blobs"]) for q in quarantined)
    until = [float(q["keepUntil"]) for q in quarantined if q.get("keepUntil") is not None]
    line = (f"quarantined: {_plural(blobs, 'blob', 'blobs')}, "
            f"{format_bytes(sum(int(q['bytes']) for q in quarantined))}")
    if until:
        line += f", until {_utc(max(until))}"
    if len(quarantined) == 1:
        return line + f" (`ocigraph restore {layout}` brings them back)"
    return (line + f" in {len(quarantined)} applies (`ocigraph restore {layout} [APPLY_ID]` "
            "brings back the last one's, or APPLY_ID's)")


def interrupted_line(*, applying: bool, index_written: bool | None = None,
                     deleted: int = 0, total: int = 0) -> str:
    """What Ctrl-C leaves, in one line.  ``index_written`` ``None``: the exact state is
    unknown, ``deleted`` is a lower bound.

    >>> interrupted_line(applying=True, index_written=True, deleted=643, total=2788)
    'interrupted while applying: index.json already updated, 643 of 2,788 blobs deleted; the layout is valid; run the same command again to finish'
    """
    if not applying or (index_written is False and deleted == 0):
        return "interrupted: nothing was changed"
    if index_written is None:
        state = f"index.json may already be updated, at least {deleted:,} of {total:,}"
    else:
        state = f"index.json {'already' if index_written else 'not'} updated, {deleted:,} of {total:,}"
    return (f"interrupted while applying: {state} blobs deleted; the layout is valid; run the "
            "same command again to finish")


def registry_report_document(deleted: Sequence[str], untagged: Sequence[str],
                             skipped: Sequence[tuple[str, str]], bytes_unreferenced: int,
                             gc_hint: str) -> dict[str, Any]:
    """The JSON report of a plan applied to a registry (``skipped``: (what, why) pairs)."""
    return {"ocigraphRegistryReport": 1, "deleted": list(deleted), "untagged": list(untagged),
            "skipped": [{"what": what, "why": why} for what, why in skipped],
            "bytesUnreferenced": bytes_unreferenced, "gcHint": gc_hint}


def format_registry_report_text(doc: Mapping[str, Any]) -> str:
    """:func:`registry_report_document`'s ``doc`` for people."""
    return "\n".join([
        f"deleted {len(doc['deleted'])} manifest(s), untagged {len(doc['untagged'])}; "
        f"{format_bytes(doc['bytesUnreferenced'])} of blobs now unreferenced",
        *(f"skipped {s['what']}: {s['why']}" for s in doc["skipped"]),
        doc["gcHint"]])


def restore_document(layout: str, apply_id: str, blobs: Sequence[str], entries: int) -> dict[str, Any]:
    """The JSON of ``ocigraph restore``: the apply undone, the blobs moved back, and how many
    index.json entries were put back."""
    return {"ocigraphRestore": 1, "layout": layout, "apply": apply_id, "blobs": list(blobs),
            "entries": entries}


def format_restore_text(doc: Mapping[str, Any]) -> str:
    """:func:`restore_document`'s ``doc`` for people.

    >>> format_restore_text(restore_document("L", "20261203T101500.000000Z-7", ["sha256:a"], 2))
    'restored 1 blob(s) and 2 index.json entries in L (the apply 20261203T101500.000000Z-7 is undone)'
    """
    return (f"restored {len(doc['blobs'])} blob(s) and "
            f"{_plural(doc['entries'], 'index.json entry', 'index.json entries')} in "
            f"{doc['layout']} (the apply {doc['apply']} is undone)")


def one_line(message: str) -> str:
    """``message`` on one line, printable whatever bytes a file name brought in."""
    text = " ".join(str(message).split())
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def error_line(exc: BaseException) -> str:
    """What an error that reached the command line says (after ``ocigraph: error: ``).

    >>> error_line(PermissionError(13, "Permission denied", "/x/index.json"))
    '/x/index.json: Permission denied'
    >>> error_line(KeyError("k"))
    "internal error (KeyError: 'k'); set OCIGRAPH_DEBUG=1 for a traceback and please report it"
    """
    if isinstance(exc, OcigraphError):
        return str(exc)
    if isinstance(exc, OSError):
        why = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)
        where = exc.filename
        if isinstance(where, bytes):
            where = where.decode("utf-8", "surrogateescape")
        return f"{printable(str(where))}: {why}" if where is not None and where != "" else why
    if isinstance(exc, UnicodeError):
        return f"cannot encode or decode text: {exc}"
    return (f"internal error ({type(exc).__name__}: {exc}); set OCIGRAPH_DEBUG=1 for a "
            "traceback and please report it")


#: what the progress bar calls each phase of a plan (:meth:`ocigraph.Reporter.phase_started`)
PHASE_NAMES = {"list": "listing blobs", "read": "reading manifests", "build": "building the graph",
               "close": "walking what is live", "plan": "planning"}

#: hex characters of a short digest in completions (as the text output prints them)
SHORT_HEX = 12


def ref_completions(entries: Sequence[IndexEntry], incomplete: str,
                    given: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``(value, help)`` completing a TARGET or REF: the tags of ``entries`` (sorted, each's
    help the short digest it names), then their digests (help: their tags), that start with
    ``incomplete``, less those ``given``.  Digests are offered short, or whole once
    ``incomplete`` is longer than the short form.

    >>> from ocigraph import Descriptor
    >>> e = [IndexEntry(0, Descriptor("m", "sha256:" + "ab" * 32, 1), "app:1")]
    >>> ref_completions(e, "")
    [('app:1', 'sha256:abababababab'), ('sha256:abababababab', 'app:1')]
    """
    tags: dict[str, set[str]] = {}
    for e in entries:
        tags.setdefault(e.digest, set()).update(() if e.tag is None else (e.tag,))
    shorts = {d: d[:d.index(":") + 1 + SHORT_HEX] for d in tags}
    candidates = ([(t, shorts[d], False) for t, d in sorted((t, d) for d, ts in tags.items()
                                                            for t in ts)]
                  + [(d, ", ".join(sorted(tags[d])) or "untagged", True) for d in sorted(tags)])
    seen, out = set(given), []
    for value, help_text, is_digest in candidates:
        cut = value.find(":") + 1 + SHORT_HEX
        if is_digest and len(incomplete) <= cut:
            value = value[:cut]
        if value.startswith(incomplete) and value not in seen:
            seen.add(value)  # a tag two entries give to two digests is offered once
            out.append((value, help_text))
    return out


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+|\d+(?:\.\d+)?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_option_duration(text: str) -> float:
    """Seconds in ``text`` (``--grace``, ``--keep-deleted``): plain seconds or a number with a
    unit, combinable, any case.

    >>> [parse_option_duration(s) for s in ("90", "10m", "1h30m", "2D")]
    [90.0, 600.0, 5400.0, 172800.0]
    """
    s = text.strip().lower()
    if not _DURATION.fullmatch(s):
        raise ValueError(f"not a duration: {text!r} (use seconds, or e.g. 30s, 10m, 1h, 2d)")
    if s[-1].isdigit():
        return float(s)
    return float(sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(s)))


def cache_document(info: CacheInfo) -> dict[str, Any]:
    """``ocigraph cache --format json`` (its text: :func:`format_cache_text`)."""
    return {"ocigraphCache": 1, "folder": info.folder and printable(str(info.folder)),
            "totalBytes": info.total_bytes, "capBytes": info.cap_bytes, "maxAgeSeconds": MAX_AGE,
            "entries": [{"file": e.file.name, "bytes": e.bytes, "lastUsed": e.last_used,
                         "layout": e.layout, "layoutExists": e.layout_exists}
                        for e in info.entries],
            "leftovers": [{"file": e.file.name, "bytes": e.bytes, "lastUsed": e.last_used}
                          for e in info.leftovers]}


def format_cache_text(doc: Mapping[str, Any], minute: Callable[[float], str]) -> str:
    """``ocigraph cache``: the folder, the totals, an entry a line (most recently used first),
    from the JSON document; ``minute`` writes a last use as the user's clock reads it.

    >>> print(format_cache_text({"folder": "/c", "totalBytes": 2048, "capBytes": 1 << 30,
    ...     "maxAgeSeconds": 2592000, "leftovers": [], "entries": [{"file": "a.store",
    ...     "bytes": 2048, "lastUsed": 0.0, "layout": None, "layoutExists": None}]}, str))
    cache folder: /c
    1 layout(s), 0 leftover file(s) of old versions or killed writes: 2.0 KiB (cap 1.0 GiB)
    entries unused for 30 days or whose layout is gone are removed
      0.0     2.0 KiB  layout unknown (a.store)
    """
    size = format_bytes
    lines = [f"cache folder: {doc['folder'] or '(none)'}",
             f"{len(doc['entries'])} layout(s), {len(doc['leftovers'])} leftover file(s) of old "
             f"versions or killed writes: {size(doc['totalBytes'])} (cap {size(doc['capBytes'])})",
             f"entries unused for {doc['maxAgeSeconds'] // 86400} days or whose layout is gone "
             "are removed"]
    for e in doc["entries"]:
        where = printable(e["layout"]) if e["layout"] else f"layout unknown ({e['file']})"
        gone = " (gone)" if e["layoutExists"] is False else ""
        lines.append(f"  {minute(e['lastUsed'])}  {size(e['bytes']):>10}  {where}{gone}")
    return "\n".join(lines)


def held_clauses(quarantines: Iterable[tuple[str, str, float, Iterable[str]]]) -> dict[str, str]:
    """For each digest the quarantines hold (``(id, operation, created, digests)``, oldest
    first), the clause fsck adds to its missing blob, naming the newest apply that removed it.

    >>> held_clauses([("Q1", "gc", 0.0, ["sha256:a"])])["sha256:a"]
    '; the gc of 1970-01-01 00:00:00 UTC removed it: it is held in quarantine Q1 (`ocigraph restore` brings that apply back)'
    """
    held = {}
    for apply_id, operation, created, digests in quarantines:  # the newest apply wins
        when = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        for digest in digests:
            held[digest] = (f"; the {operation} of {when} removed it: it is held in quarantine "
                            f"{apply_id} (`ocigraph restore` brings that apply back)")
    return held


def junk_warning(n: int) -> str:
    """The warning for ``n`` items under blobs/ that are not blobs.

    >>> junk_warning(2)
    '2 items under blobs/ are not blobs and will be left alone (`ocigraph fsck` lists them)'
    """
    return (f"{n} item{'s' if n != 1 else ''} under blobs/ {'are' if n != 1 else 'is'} not "
            "blobs and will be left alone (`ocigraph fsck` lists them)")
