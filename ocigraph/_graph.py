"""The layout's graph as types, and the queries people ask of it.

:func:`~ocigraph.build_graph` makes a :class:`LayoutGraph`; :func:`~ocigraph.neighbourhood`
makes a :class:`NeighbourhoodView`, a small graph of the nodes a delete can touch that carries
the whole graph's :class:`Liveness` with it.  Every walk here is iterative (no recursion limit
on deep nestings), linear in nodes + edges, and visits each node once, so no cycle can hang it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import networkx as nx

from ._errors import UnknownRefError
from ._policy import Policy

__all__ = [
    "LayoutGraph",
    "NeighbourhoodView",
    "Liveness",
    "referrers_of",
    "successors_of",
    "tags_of",
    "roots",
    "live_set",
    "why_live",
    "is_young",
    "young_nodes",
]


class LayoutGraph(nx.DiGraph):  # type: ignore[misc]
    """The frozen graph :func:`~ocigraph.build_graph` returns: a plain networkx ``DiGraph``
    that also shows itself in Jupyter (a summary table, and a Mermaid picture when it is
    small)."""

    def _repr_mimebundle_(self, include: Iterable[str] | None = None,
                          exclude: Iterable[str] | None = None) -> dict[str, str]:
        from .render import graph_mimebundle

        bundle: dict[str, str] = graph_mimebundle(self, include, exclude)
        return bundle


class Liveness(NamedTuple):
    """The two global facts a plan needs about a whole graph under one root rule (grace 0).

    ``live``: the live nodes (SEMANTICS §2) -- of a neighbourhood view, those of its own nodes.
    ``unusable``: every live manifest that cannot be read or parsed, as sorted
    ``(digest, error, why live)`` -- what stops a plan (SEMANTICS §5) unless the plan deletes
    it.  *Why live* is a live node that references it (or, for a referrer, its live subject);
    ``None`` when it is a root itself (tagged, say).

    Everything else :func:`~ocigraph.plan_delete` asks is local to the targets, so a graph
    that carries these (see :func:`ocigraph.neighbourhood`) needs only the targets'
    surroundings.
    """

    keep_untagged: bool
    live: frozenset[str]
    unusable: tuple[tuple[str, str, str | None], ...]


class NeighbourhoodView(LayoutGraph):
    """A small graph of the nodes a delete of some targets can touch (see
    :func:`ocigraph.neighbourhood`), with the whole graph's facts: :attr:`liveness` under the
    root rule it was made for, and :attr:`core`, the nodes whose adjacency it holds.

    It plans deletes only (gc, remove and untag need the whole graph), and names its nodes by
    digest only (its index holds its own index.json entries).
    """

    def __init__(self, incoming_graph_data: Any = None, *, liveness: Liveness | None = None,
                 core: frozenset[str] = frozenset(), **attr: Any) -> None:
        super().__init__(incoming_graph_data, **attr)
        self._liveness = liveness
        self._core = core

    @property
    def liveness(self) -> Liveness:
        """The whole graph's :class:`Liveness`, its ``live`` cut down to this view's nodes."""
        if self._liveness is None:  # e.g. a copy networkx made of a view
            raise ValueError("this neighbourhood view carries no liveness; make it with "
                             "ocigraph.neighbourhood")
        return self._liveness

    @property
    def core(self) -> frozenset[str]:
        """The nodes whose every successor (and referrer) the view holds."""
        return self._core


def referrers_of(graph: nx.DiGraph, digest: str) -> tuple[str, ...]:
    """Nodes whose ``subject`` is ``digest`` (direct referrers only), sorted.

    Predecessors whose edge carries the ``subject`` role; an index merely listing the node is not
    a referrer.
    """
    pred = graph.pred[digest]
    return tuple(sorted(p for p, a in pred.items() if "subject" in a["roles"]))


def successors_of(graph: nx.DiGraph, digest: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """``(successor, roles)`` pairs of ``digest``, sorted by successor."""
    return tuple(sorted((s, a["roles"]) for s, a in graph.succ[digest].items()))


def tags_of(graph: nx.DiGraph, digest: str) -> frozenset[str]:
    """The tags index.json gives ``digest``."""
    tags: frozenset[str] = graph.nodes[digest]["tags"]
    return tags


def roots(graph: nx.DiGraph, policy: Policy) -> frozenset[str]:
    """GC roots: tagged nodes; every index.json entry under ``keep_untagged``; young blobs.

    >>> from ocigraph import build_graph, layout_from_bytes
    >>> roots(build_graph(layout_from_bytes(b'{"schemaVersion":2,"manifests":[]}', {})), Policy())
    frozenset()
    """
    key = "indexed" if policy.keep_untagged else "tags"
    out = {n for n, v in graph.nodes(data=key) if v}
    return frozenset(out | young_nodes(graph, policy)) if policy.grace > 0 else frozenset(out)


def _walk_live(graph: nx.DiGraph, start: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    """Yield ``(node, parent)`` in BFS order over successors and, to a fixpoint, referrers."""
    succ, pred = graph._succ, graph._pred
    seen = set()
    queue: deque[tuple[str, str | None]] = deque()
    for r in sorted(start):
        seen.add(r)
        queue.append((r, None))
    while queue:
        n, parent = queue.popleft()
        yield n, parent
        for s in succ[n]:
            if s not in seen:
                seen.add(s)
                queue.append((s, n))
        for p, attrs in pred[n].items():
            if p not in seen and "subject" in attrs["roles"]:
                seen.add(p)
                queue.append((p, n))


def live_set(graph: nx.DiGraph, policy: Policy | None = None,
             root_set: Iterable[str] | None = None) -> frozenset[str]:
    """Everything live: the successor closure of the roots, plus every referrer of a live node.

    Referrers are followed to a fixpoint, however long the chain (``sig -> sbom -> image``),
    and every node is visited once, so a cycle cannot hang it.
    """
    start = roots(graph, policy or Policy()) if root_set is None else root_set
    return frozenset(n for n, _ in _walk_live(graph, start))


def why_live(graph: nx.DiGraph, digest: str, policy: Policy | None = None) -> tuple[str, ...] | None:
    """A shortest path from a root to ``digest`` (root first), or ``None`` when it is garbage.

    A step from a subject to its referrer appears as is: the referrer is live *because* its
    subject is.
    """
    if digest not in graph:
        raise UnknownRefError(digest)
    parents: dict[str, str | None] = {}
    for n, parent in _walk_live(graph, roots(graph, policy or Policy())):
        parents[n] = parent
        if n == digest:
            path = [n]
            while (p := parents[path[-1]]) is not None:
                path.append(p)
            return tuple(reversed(path))
    return None


def young_nodes(graph: nx.DiGraph, policy: Policy) -> frozenset[str]:
    """The blobs ``policy.grace`` protects: younger than grace at the graph's snapshot time
    (none without grace, or when the layout had no clock reading).

    The modification times come from a graph built with ``build_graph(layout, mtimes=True)``;
    asking with grace of a graph built without them is a :class:`ValueError`, not a silent "no
    blob is young".
    """
    if policy.grace <= 0:
        return frozenset()
    if isinstance(graph, NeighbourhoodView):
        raise ValueError("a neighbourhood view cannot plan with grace (young blobs are roots, "
                         "and which are young is a fact about the whole layout)")
    mtimes = graph.graph.get("mtimes")
    if mtimes is None:
        raise ValueError(f"a policy with grace ({policy.grace:g} s) needs the blobs' modification "
                         "times: build the graph with build_graph(layout, mtimes=True)")
    now = graph.graph.get("now")
    if now is None:
        return frozenset()
    grace = policy.grace
    return frozenset(d for d, mtime in mtimes.items() if now - mtime < grace)


def is_young(graph: nx.DiGraph, digest: str, policy: Policy) -> bool:
    """True when ``policy.grace`` protects the blob ``digest`` (see :func:`young_nodes`)."""
    if policy.grace <= 0:
        return False
    mtimes = graph.graph.get("mtimes")
    if mtimes is None or isinstance(graph, NeighbourhoodView):
        return digest in young_nodes(graph, policy)  # which says why it cannot answer
    now = graph.graph.get("now")
    mtime = mtimes.get(digest)
    return now is not None and mtime is not None and now - mtime < policy.grace
