"""Plans and layouts as text for people: what the command line prints, as pure functions.

Values in, one string out: no terminal, no file, no clock.  Digests are shortened by
:func:`ocigraph.short_digest` and kinds named by :func:`ocigraph.media_kind`, as everywhere
else; JSON (``Plan.to_json``) keeps them whole.

>>> import ocigraph as og
>>> g = og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {}))
>>> print(format_plan_text(og.plan_gc(g)))
gc plan (policy default): 0 blob(s) to delete, 0 B freed, 0 index.json change(s)
nothing to do
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import networkx as nx

from ._digest import short_digest
from ._graph import live_set, referrers_of, successors_of
from ._mediatypes import media_kind
from ._model import IndexEntry
from ._plan import REASON_KINDS, Kept, Plan, format_bytes
from ._policy import Policy

__all__ = ["PLAN_TEXT_LIMIT", "format_plan_text", "format_show_text"]

#: How many deletions of each reason :func:`format_plan_text` lists by default.
PLAN_TEXT_LIMIT = 50


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
