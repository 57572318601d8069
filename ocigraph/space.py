"""Account for space: what each tag holds, what it alone holds, and what GC would free.

Definitions (sizes are those of *present* blobs; an absent blob occupies nothing):

``total``
    bytes of every blob reachable from the tag as liveness reaches it (SEMANTICS §2): the
    successor closure of the tag's digest plus, to a fixpoint, the referrers of what it reaches.
``unique``
    bytes of the blobs that the tag reaches and no other root reaches -- what removing the tag
    frees (``plan_remove``, then a ``plan_gc`` for what only garbage still held: the plan's
    ``held-by-garbage`` successors).
``shared``
    ``total - unique``.

Per layout: ``present`` (every blob file), ``live`` (reachable from the policy's roots),
``reclaimable`` (present and not live: what :func:`ocigraph.plan_gc` frees).

How it stays fast with thousands of tags.  Each root is an *owner*: each tag, and one anonymous
owner for every untagged entry (under ``keep_untagged``) and every blob young enough for
``grace``.  Instead of one walk per tag for ``unique``, one label propagation gives every live
node the single owner that reaches it, or *shared* once two do.  A label only rises (none ->
owner -> shared), so each node is processed at most twice: O(V + E) for ``unique``, ``live`` and
``reclaimable`` together.  ``total`` needs each tag's own closure; tags naming the same digest
share one walk, and so do digests in one strongly connected component of the liveness graph (a
subject and its referrers reach each other, so a thousand tagged signatures of one image are one
walk, not a thousand).  That costs O(V + E) plus the sum of the closure sizes of the distinct
components tags name -- O(T * (V + E)) only in the worst case of many tags on distinct nodes that
each reach most of the layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import orjson

from ._errors import UnknownRefError
from ._graph import young_nodes
from ._plan import format_bytes
from ._policy import Policy

__all__ = ["TagSpace", "LayoutSpace", "SpaceReport", "space_by_tag", "format_space_text"]

_ANON = -1  # owner of an untagged root or a young blob: reaches nodes, frees no tag's bytes
_SHARED = -2  # reached by two or more owners


@dataclass(frozen=True, slots=True)
class TagSpace:
    """The space one tag accounts for.

    ``digests`` are the digests the tag names, in index.json order; more than one makes the tag
    ambiguous (every one of them is a root; ``remove`` refuses the tag), and its numbers then
    cover all of them.  ``blobs`` and ``unique_blobs`` count present blobs.
    """

    tag: str
    digests: tuple[str, ...]
    total_bytes: int
    unique_bytes: int
    blobs: int
    unique_blobs: int

    @property
    def shared_bytes(self) -> int:
        return self.total_bytes - self.unique_bytes

    @property
    def ambiguous(self) -> bool:
        return len(self.digests) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "digests": list(self.digests),
            "totalBytes": self.total_bytes,
            "uniqueBytes": self.unique_bytes,
            "sharedBytes": self.shared_bytes,
            "blobs": self.blobs,
            "uniqueBlobs": self.unique_blobs,
            "ambiguous": self.ambiguous,
        }


@dataclass(frozen=True, slots=True)
class LayoutSpace:
    """The space of the whole layout under a policy.

    ``present_bytes == live_bytes + reclaimable_bytes``.  ``untagged_live_bytes`` is the live
    part no tag reaches (held by untagged entries under ``keep_untagged``, or by ``grace``).
    ``absent`` counts referenced blobs that have no file.
    """

    present_bytes: int
    present_blobs: int
    live_bytes: int
    live_blobs: int
    reclaimable_bytes: int
    reclaimable_blobs: int
    untagged_live_bytes: int
    absent: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "presentBytes": self.present_bytes,
            "presentBlobs": self.present_blobs,
            "liveBytes": self.live_bytes,
            "liveBlobs": self.live_blobs,
            "reclaimableBytes": self.reclaimable_bytes,
            "reclaimableBlobs": self.reclaimable_blobs,
            "untaggedLiveBytes": self.untagged_live_bytes,
            "absent": self.absent,
        }


@dataclass(frozen=True, slots=True)
class SpaceReport:
    """Space by tag (sorted by tag) and for the layout, under ``policy``.

    Also what the layout's graph fingerprint was, so a report can be matched to its index.json.
    """

    policy: Policy
    index_fingerprint: str | None
    layout: LayoutSpace
    tags: tuple[TagSpace, ...]

    def tag(self, name: str) -> TagSpace:
        """The :class:`TagSpace` of ``name``; :class:`UnknownRefError` if the layout has no such tag."""
        for t in self.tags:
            if t.tag == name:
                return t
        raise UnknownRefError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_dict(),
            "indexFingerprint": self.index_fingerprint,
            "layout": self.layout.to_dict(),
            "tags": [t.to_dict() for t in self.tags],
        }

    def to_json(self, *, indent: bool = True) -> bytes:
        """Stable JSON: same report, same bytes."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 if indent else 0)


def _tag_digests(graph: nx.DiGraph) -> dict[str, list[str]]:
    """tag -> the digests it names, in index.json order."""
    out: dict[str, list[str]] = {}
    for e in graph.graph["index"].entries:
        if e.tag is not None and e.digest not in out.setdefault(e.tag, []):
            out[e.tag].append(e.digest)
    return out


def _referrers(graph: nx.DiGraph) -> dict[str, list[str]]:
    """subject -> its direct referrers, for the nodes that have any.  Built once in O(E), so
    that no walk scans the (possibly hundreds of) predecessors of a shared layer for
    ``subject`` edges it does not have."""
    out: dict[str, list[str]] = {}
    for u, v, roles in graph.edges(data="roles"):
        if "subject" in roles:
            out.setdefault(v, []).append(u)
    return out


def _owners(graph: nx.DiGraph, policy: Policy, referrers: dict[str, list[str]],
            tag_digests: Iterable[tuple[str, list[str]]]) -> dict[str, int]:
    """The least fixpoint of label propagation: live node -> the one owner that reaches it
    (the tag's position in ``tag_digests``, or :data:`_ANON`), or :data:`_SHARED`.  Nodes that
    are not live are left out."""
    succ = graph._succ
    no_referrers: list[str] = []
    label: dict[str, int] = {}
    work: list[str] = []

    def offer(node: str, owner: int) -> None:
        cur = label.get(node)
        new = owner if cur is None or cur == owner else _SHARED
        if new != cur:
            label[node] = new
            work.append(node)

    for i, (_, digests) in enumerate(tag_digests):
        for d in digests:
            offer(d, i)
    if policy.keep_untagged:
        for e in graph.graph["index"].entries:
            if e.tag is None:
                offer(e.digest, _ANON)
    for n in sorted(young_nodes(graph, policy)):
        offer(n, _ANON)
    while work:
        n = work.pop()
        owner = label[n]
        for s in succ[n]:
            offer(s, owner)
        for p in referrers.get(n, no_referrers):
            offer(p, owner)
    return label


def _liveness_components(graph: nx.DiGraph, referrers: dict[str, list[str]],
                         nodes: Iterable[str]) -> dict[str, int]:
    """node -> its strongly connected component in the liveness graph restricted to ``nodes``
    (edges: successors, and subject -> referrer).  Members of one component reach the same set."""
    succ = graph._succ
    keep = set(nodes)
    walk = nx.DiGraph()
    walk.add_nodes_from(keep)
    walk.add_edges_from((n, s) for n in keep for s in succ[n] if s in keep)
    walk.add_edges_from((n, p) for n in keep for p in referrers.get(n, ()) if p in keep)
    out: dict[str, int] = {}
    for i, comp in enumerate(nx.strongly_connected_components(walk)):
        for n in comp:
            out[n] = i
    return out


def _closure_space(graph: nx.DiGraph, referrers: dict[str, list[str]],
                   start: Iterable[str]) -> tuple[int, int]:
    """(bytes, blobs) of present nodes live from ``start``: successors and, to a fixpoint,
    referrers."""
    succ, nodes = graph._succ, graph.nodes
    no_referrers: list[str] = []
    seen = set(start)
    stack = list(seen)
    size = count = 0
    while stack:
        n = stack.pop()
        attrs = nodes[n]
        if attrs["present"]:
            size += attrs["size"]
            count += 1
        for s in succ[n]:
            if s not in seen:
                seen.add(s)
                stack.append(s)
        for p in referrers.get(n, no_referrers):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return size, count


def space_by_tag(graph: nx.DiGraph, policy: Policy | None = None) -> SpaceReport:
    """Space per tag and for the layout (see the module docstring for the definitions and the
    cost).

    Under ordinary conditions a tag's ``unique_bytes`` equals
    ``plan_remove(graph, [tag], policy).bytes_freed``, and ``layout.reclaimable_bytes`` always
    equals ``plan_gc(graph, policy).bytes_freed``.  ``unique_bytes`` is larger than what
    ``plan_remove`` alone frees when removing the tag leaves blobs that only garbage still
    references (a blob both the tag and an unreachable manifest use is kept by ``remove`` as
    ``held-by-garbage``, then freed by the next GC), or with ``cascade_referrers=False`` (the tag's untagged
    referrers then wait for GC too): it counts what the tag alone keeps alive.  Unlike the
    planners this never raises: a broken manifest simply has no successors here.

    >>> import ocigraph as og
    >>> space_by_tag(og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {}))).tags
    ()
    """
    policy = policy or Policy()
    nodes = graph.nodes
    tag_digests = sorted(_tag_digests(graph).items())
    referrers = _referrers(graph)
    label = _owners(graph, policy, referrers, tag_digests)

    unique_bytes = [0] * len(tag_digests)
    unique_blobs = [0] * len(tag_digests)
    present_bytes = present_blobs = live_bytes = live_blobs = anon_bytes = absent = 0
    for n, attrs in nodes.items():
        if not attrs["present"]:
            absent += 1
            continue
        size = attrs["size"]
        present_bytes += size
        present_blobs += 1
        owner = label.get(n)
        if owner is None:
            continue
        live_bytes += size
        live_blobs += 1
        if owner >= 0:
            unique_bytes[owner] += size
            unique_blobs[owner] += 1
        elif owner == _ANON:
            anon_bytes += size

    component = _liveness_components(graph, referrers, label)
    by_start: dict[tuple[Any, ...], tuple[int, int]] = {}
    tags = []
    for i, (tag, digests) in enumerate(tag_digests):
        starts = sorted(set(digests))
        key: tuple[Any, ...] = (component[starts[0]],) if len(starts) == 1 else tuple(starts)
        if key not in by_start:
            by_start[key] = _closure_space(graph, referrers, starts)
        total, count = by_start[key]
        tags.append(TagSpace(tag, tuple(digests), total, unique_bytes[i], count, unique_blobs[i]))

    return SpaceReport(
        policy=policy,
        index_fingerprint=graph.graph.get("fingerprint"),
        layout=LayoutSpace(
            present_bytes=present_bytes,
            present_blobs=present_blobs,
            live_bytes=live_bytes,
            live_blobs=live_blobs,
            reclaimable_bytes=present_bytes - live_bytes,
            reclaimable_blobs=present_blobs - live_blobs,
            untagged_live_bytes=anon_bytes,
            absent=absent,
        ),
        tags=tuple(tags),
    )


_SORT_KEYS = {
    "tag": lambda t: (t.tag,),
    "total": lambda t: (-t.total_bytes, t.tag),
    "unique": lambda t: (-t.unique_bytes, t.tag),
    "shared": lambda t: (-t.shared_bytes, t.tag),
}


def _printable(text: str) -> str:
    """A tag as one terminal-safe line: control characters shown as escapes."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def format_space_text(report: SpaceReport, *, sort: str = "tag", human: bool = True,
                      limit: int | None = None) -> str:
    """A ``du``-style table of ``report``: one line per tag, then the layout totals.

    ``sort`` is ``tag`` (A-Z) or ``total``, ``unique``, ``shared`` (largest first); ``human``
    prints binary units instead of bytes; ``limit`` keeps the first lines only.

    >>> import ocigraph as og
    >>> r = space_by_tag(og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {})))
    >>> print(format_space_text(r))
    no tags
    layout: 0 blobs present (0 B); live 0 B; reclaimable by gc 0 B (0 blobs)
    """
    if sort not in _SORT_KEYS:
        raise ValueError(f"unknown sort {sort!r}; choose from {', '.join(_SORT_KEYS)}")

    def size(n: int) -> str:
        return format_bytes(n) if human else str(n)

    lines = []
    rows = sorted(report.tags, key=_SORT_KEYS[sort])
    shown = rows if limit is None else rows[:limit]
    if shown:
        table = [("TAG", "TOTAL", "UNIQUE", "SHARED", "BLOBS")]
        table += [(_printable(t.tag) + (" *" if t.ambiguous else ""), size(t.total_bytes),
                   size(t.unique_bytes), size(t.shared_bytes), str(t.blobs)) for t in shown]
        width = [max(len(r[i]) for r in table) for i in range(5)]
        for r in table:
            lines.append("  ".join([r[0].ljust(width[0])] + [c.rjust(w) for c, w in zip(r[1:], width[1:], strict=True)]).rstrip())
    if len(rows) > len(shown):
        lines.append(f"... {len(rows) - len(shown)} more tag(s)")
    if not rows:
        lines.append("no tags")
    if any(t.ambiguous for t in shown):
        lines.append("* ambiguous: the tag names more than one digest; its numbers cover them all")
    lay = report.layout
    lines.append(
        f"layout: {lay.present_blobs} blobs present ({size(lay.present_bytes)}); "
        f"live {size(lay.live_bytes)}; reclaimable by gc {size(lay.reclaimable_bytes)} "
        f"({lay.reclaimable_blobs} blobs)"
        + (f"; {lay.absent} referenced blob(s) absent" if lay.absent else "")
        + (f"; {size(lay.untagged_live_bytes)} held by no tag" if lay.untagged_live_bytes else "")
    )
    return "\n".join(lines)
