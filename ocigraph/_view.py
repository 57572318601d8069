"""Plan a delete from the targets' neighbourhood instead of the whole graph.

Delete (SEMANTICS §3) looks at few nodes: the targets, their referrers, what they orphan, and
the predecessors of those.  Only two of its questions are about the whole graph -- which nodes
are live, and which live manifests cannot be used -- and a :class:`~ocigraph.Liveness` answers
both ahead of time.  So :func:`neighbourhood` gathers, from any :class:`GraphSource`, the nodes
a delete of the targets can touch, with their complete adjacency and their liveness, into a
small frozen graph; :func:`ocigraph.plan_delete` on that view makes exactly the plan it makes
on the whole graph (``tests/test_view.py`` checks this on generated layouts).

What a view holds, for targets ``T``:

* the *core*: every node reachable from ``T`` over successor edges and, backwards, over
  ``subject`` edges (referrers) -- a superset of whatever the deletion closure can reach --
  with its attributes and every edge out of it;
* the core's predecessors, as nodes with their attributes (the *rim*: their own edges are not
  the view's business) and edges into the core: *all* predecessors of the targets and of the
  core's referrers (nodes with a ``subject``) -- they can be planned whoever holds them, so
  the guard asks about every holder -- and of any other core node, those in the core and, of
  the others, the *named holders*: the smallest, the smallest tagged one, and the smallest
  live one under each root rule.  Such a node can only be planned as an orphan, which it is
  only when every predecessor is planned, and every planned node is in the core: one
  predecessor outside says "kept" as well as thousands would, and the named holders are the
  ones a plan may name when it says why (:class:`~ocigraph.Kept`: a tagged holder first, else a
  live one, else the garbage that holds it).  A base layer under forty thousand images costs
  at most four predecessors, not forty thousand;
* the whole graph's :class:`~ocigraph.Liveness` (its ``live`` cut down to the view's nodes) and
  the core's digests, as the view's :attr:`~ocigraph.NeighbourhoodView.liveness` and
  :attr:`~ocigraph.NeighbourhoodView.core`; graph attributes ``fingerprint`` and ``now`` as
  :func:`~ocigraph.build_graph` gives them, and ``index``: an :class:`~ocigraph.Index` whose
  ``entries`` hold the view's own index.json entries at their positions and ``None`` at every
  other, with no ``raw`` bytes.

So a view has at most as many nodes as its core plus, for each core node, its predecessors
outside the core -- all of them for a target or a referrer, at most four for any other node.

A view is a :class:`~ocigraph.NeighbourhoodView`; it plans deletes only: gc, remove and untag
refuse one.  :class:`WholeGraph` is the reference source (a built graph); ``io_adapters.store``
answers the same questions from a database on disk, so that a delete in a million-blob layout
reads a few hundred rows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import networkx as nx

from ._errors import UnknownRefError
from ._graph import Liveness, NeighbourhoodView
from ._model import Index, IndexEntry
from ._planning import liveness
from ._policy import Policy
from ._refs import resolve_in, tagged_digests

__all__ = ["NodeRecord", "GraphSource", "WholeGraph", "neighbourhood", "resolve_in"]


class NodeRecord(NamedTuple):
    """One node as a source knows it: its attributes (as :func:`~ocigraph.build_graph` sets
    them), its successors and its referrers (the predecessors whose edge has the ``subject``
    role), each as ``{neighbour: roles}``."""

    attrs: Mapping[str, Any]
    succ: Mapping[str, frozenset[str]]
    referrers: Mapping[str, frozenset[str]]


class GraphSource(Protocol):
    """What :func:`neighbourhood` and :func:`resolve_in` ask of a graph, node by node.

    Batches (``digests``) let a database answer in one query; digests a source does not know
    are left out of the answer.
    """

    fingerprint: str
    entry_count: int

    def records(self, digests: Collection[str]) -> Mapping[str, NodeRecord]: ...

    def predecessors(self, digest: str, core: Collection[str],
                     whole: bool) -> Mapping[str, frozenset[str]]:
        """``{predecessor: roles}`` of ``digest``: all of them when ``whole``; otherwise those
        in ``core`` and, of the others (by digest, when there are any): the smallest, the
        smallest tagged one, the smallest live one with ``keep_untagged`` false and the
        smallest live one with it true -- the holders a plan may name."""
        ...

    def attributes(self, digests: Collection[str]) -> Mapping[str, Mapping[str, Any]]: ...

    def live(self, digests: Collection[str], keep_untagged: bool) -> Collection[str]: ...

    def unusable(self, keep_untagged: bool) -> tuple[tuple[str, str, str | None], ...]: ...

    def entries(self, positions: Collection[int]) -> Mapping[int, IndexEntry]: ...

    def tagged(self, tag: str) -> Sequence[str]:
        """The digests index.json gives ``tag``, in index.json order."""
        ...

    def has(self, digest: str) -> bool: ...

    def with_prefix(self, prefix: str) -> Sequence[str]:
        """The nodes whose digest starts with ``prefix``, sorted."""
        ...


class WholeGraph:
    """A :class:`GraphSource` over a graph built by :func:`~ocigraph.build_graph`."""

    def __init__(self, graph: nx.DiGraph) -> None:
        self.graph = graph
        self.fingerprint: str = graph.graph["fingerprint"]
        self.entry_count = len(graph.graph["index"].entries)
        self._facts: dict[bool, Liveness] = {}

    def facts(self, keep_untagged: bool) -> Liveness:
        if keep_untagged not in self._facts:
            self._facts[keep_untagged] = liveness(self.graph, Policy(keep_untagged=keep_untagged))
        return self._facts[keep_untagged]

    def records(self, digests: Collection[str]) -> dict[str, NodeRecord]:
        g = self.graph
        return {d: NodeRecord(g._node[d], {s: a["roles"] for s, a in g._succ[d].items()},
                              {p: a["roles"] for p, a in g._pred[d].items()
                               if "subject" in a["roles"]})
                for d in digests if d in g._node}

    def predecessors(self, digest: str, core: Collection[str],
                     whole: bool) -> dict[str, frozenset[str]]:
        pred = self.graph._pred[digest]
        if whole:
            return {p: a["roles"] for p, a in pred.items()}
        out = {p: a["roles"] for p, a in pred.items() if p in core}
        others = [p for p in pred if p not in core]
        if others:
            nodes = self.graph._node
            live, live_untagged = self.facts(False).live, self.facts(True).live
            for named in (others,
                          [p for p in others if nodes[p]["tags"]],
                          [p for p in others if p in live],
                          [p for p in others if p in live_untagged]):
                if named:
                    first = min(named)
                    out[first] = pred[first]["roles"]
        return out

    def attributes(self, digests: Collection[str]) -> dict[str, Mapping[str, Any]]:
        nodes = self.graph._node
        return {d: nodes[d] for d in digests if d in nodes}

    def live(self, digests: Collection[str], keep_untagged: bool) -> set[str]:
        live = self.facts(keep_untagged).live
        return {d for d in digests if d in live}

    def unusable(self, keep_untagged: bool) -> tuple[tuple[str, str, str | None], ...]:
        return self.facts(keep_untagged).unusable

    def entries(self, positions: Collection[int]) -> dict[int, IndexEntry]:
        entries = self.graph.graph["index"].entries
        return {p: entries[p] for p in positions}

    def tagged(self, tag: str) -> list[str]:
        return tagged_digests(self.graph, tag)

    def has(self, digest: str) -> bool:
        return digest in self.graph._node

    def with_prefix(self, prefix: str) -> list[str]:
        return sorted(n for n in self.graph._node if n.startswith(prefix))


def neighbourhood(source: GraphSource, targets: Sequence[str], policy: Policy,
                  now: float | None = None) -> NeighbourhoodView:
    """The view of ``source`` that :func:`~ocigraph.plan_delete` needs to delete ``targets``
    (digests of nodes) under ``policy`` -- see the module's docstring.  ``now``: the snapshot
    time the plan will carry.

    Linear in the size of the view: each node is fetched once, level by level.
    """
    if policy.grace > 0:
        raise ValueError("a neighbourhood view cannot plan with grace (young blobs are roots, "
                         "and which are young is a fact about the whole layout)")
    core: dict[str, NodeRecord] = {}
    level = sorted(set(targets))
    while level:
        got = source.records(level)
        missing = [d for d in level if d not in got]
        if missing:
            raise UnknownRefError(missing[0])
        nxt: set[str] = set()
        for d in level:
            rec = core[d] = got[d]
            nxt.update(s for s in rec.succ if s not in core)
            nxt.update(p for p in rec.referrers if p not in core)
        level = sorted(nxt - core.keys())
    wanted = set(targets)
    preds = {d: source.predecessors(d, core, d in wanted or _is_referrer(rec))
             for d, rec in sorted(core.items())}
    rim = sorted({p for ps in preds.values() for p in ps if p not in core})
    rim_attrs = source.attributes(rim)
    if len(rim_attrs) != len(rim):
        raise UnknownRefError(next(p for p in rim if p not in rim_attrs))
    everyone = sorted(core.keys() | rim_attrs.keys())
    positions = sorted({p for d in core for p in core[d].attrs["entries"]}
                       | {p for a in rim_attrs.values() for p in a["entries"]})
    known = source.entries(positions)
    entries: list[IndexEntry | None] = [None] * source.entry_count
    for p in positions:
        entries[p] = known[p]
    facts = Liveness(policy.keep_untagged,
                     frozenset(source.live(everyone, policy.keep_untagged)),
                     source.unusable(policy.keep_untagged))
    g = NeighbourhoodView(liveness=facts, core=frozenset(core),
                          index=Index(entries=tuple(entries), raw=b"",  # type: ignore[arg-type]
                                      fingerprint=source.fingerprint),
                          fingerprint=source.fingerprint, now=now)
    for d in everyone:
        g.add_node(d, **(core[d].attrs if d in core else rim_attrs[d]))
    for d, rec in core.items():
        for s, roles in rec.succ.items():
            g.add_edge(d, s, roles=roles)
        for p, roles in preds[d].items():
            if p not in core:
                g.add_edge(p, d, roles=roles)
    nx.freeze(g)
    return g


def _is_referrer(rec: NodeRecord) -> bool:
    return any("subject" in roles for roles in rec.succ.values())
