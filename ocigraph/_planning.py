"""Planning: Delete, GC, Untag and Remove as pure functions from a graph to a :class:`Plan`.

Every operation is one closure computation followed by one ordering pass; both are linear in
nodes + edges of what they touch, deterministic (queues seeded in a fixed order, ties broken by
discovery rank), and visit each node once, so no input -- a referrer chain of any length, a
``subject`` cycle, a manifest listing itself -- can make them loop or plan a node twice.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import networkx as nx

from ._errors import BrokenManifestError, GuardError, StalePlanError, UnknownRefError
from ._graph import Liveness, NeighbourhoodView, live_set, roots, young_nodes
from ._model import Index, Layout, Manifest, Reporter
from ._parse import parse_index, render_index
from ._plan import Deletion, IndexChange, Kept, Operation, Plan, Reason
from ._policy import Policy
from ._refs import named, resolve_refs

__all__ = [
    "Liveness",
    "liveness",
    "deletion_closure",
    "plan_delete",
    "plan_gc",
    "plan_untag",
    "plan_remove",
    "simulate",
    "describe_index_drift",
]

_NULL_REPORTER = Reporter()
_UNUSABLE = ("missing", "broken")
_SUBJECT_ONLY = frozenset({"subject"})


def _kept_subject(succ: Any, s: str, planned: Collection[str]) -> str | None:
    """A subject of ``s`` that is not planned, if any.

    A referrer lives as long as its subject (SEMANTICS §2), so losing every predecessor does
    not orphan it while its subject stays: a signature listed by an index that is deleted still
    belongs to its image.
    """
    for x, attrs in succ[s].items():
        if x != s and x not in planned and "subject" in attrs["roles"]:
            return str(x)
    return None


def deletion_closure(
    graph: nx.DiGraph,
    targets: Sequence[str],
    policy: Policy,
    protected: Collection[str] | None = None,
    *,
    live: Collection[str] | None = None,
) -> tuple[dict[str, Reason], tuple[Kept, ...]]:
    """SEMANTICS §3 steps 1-2: the targets, their referrers (recursively, unless
    ``cascade_referrers`` is off) and every successor they orphan, to a fixpoint.

    ``protected`` are nodes never orphaned (default: the policy's roots); ``live``, what is
    live with those roots (default: computed).  Returns ``{digest: reason}`` in discovery
    order, and the successors that were kept with why (see :class:`~ocigraph.Kept`).

    A successor is orphaned when every one of its predecessors is in the set and its subject (if
    it is a referrer) is too; a counter per successor makes the first check O(1) per edge
    instead of a rescan of its predecessors.
    """
    succ, pred = graph._succ, graph._pred
    root_set = roots(graph, policy) if protected is None else protected
    young = young_nodes(graph, policy)
    reasons: dict[str, Reason] = {}
    outside: dict[str, int] = {}  # successor -> predecessors not yet in the set
    queue: deque[str] = deque()
    for t in targets:
        if t not in reasons:
            reasons[t] = Reason("target")
            queue.append(t)
    while queue:
        n = queue.popleft()
        if policy.cascade_referrers:
            for p in sorted(pred[n]):
                if p not in reasons and p not in young and "subject" in pred[n][p]["roles"]:
                    reasons[p] = Reason("referrer-of", n)
                    queue.append(p)
        for s in sorted(succ[n]):
            if s in reasons:
                continue
            left = outside.get(s)
            left = (len(pred[s]) if left is None else left) - 1
            outside[s] = left
            if left == 0 and s not in root_set and _kept_subject(succ, s, reasons) is None:
                reasons[s] = Reason("orphaned-by", n)
                queue.append(s)
    kept = [s for s in sorted(outside) if s not in reasons]
    if not kept:
        return reasons, ()
    if live is None:
        live = liveness(graph, policy, None if protected is None else root_set).live
    alive = _alive_after(graph, reasons, root_set, live)
    return reasons, tuple(_why_kept(graph, s, reasons, root_set, young, alive) for s in kept)


def _alive_after(graph: nx.DiGraph, planned: Collection[str], root_set: Collection[str],
                 live: Collection[str]) -> Callable[[str], bool]:
    """Whether a node outside ``planned`` is live once the plan is applied.

    Only what the planned nodes reach over liveness edges (successors, and referrers of what
    is reached) can lose its liveness: this *region* is walked again from its own roots and
    from the nodes live outside it that reference it.  Everything else keeps the liveness it
    has.  A neighbourhood view answers exactly as the whole graph: the region lies in its core,
    and of the predecessors outside the core it holds the smallest live one.
    """
    succ, pred = graph._succ, graph._pred
    region: set[str] = set()
    stack = list(planned)
    while stack:
        n = stack.pop()
        for x in succ[n]:
            if x not in region and x not in planned:
                region.add(x)
                stack.append(x)
        for x, attrs in pred[n].items():
            if x not in region and x not in planned and "subject" in attrs["roles"]:
                region.add(x)
                stack.append(x)
    # A planned node that a node live after the plan still references (``force``) stays in
    # the graph as a missing node, live: it keeps nothing below it, but its referrers live on.
    reached = {x for x in (*region, *planned) if (x in region and x in root_set) or any(
        p in live for p in pred[x] if p not in region and p not in planned)}
    stack = list(reached)
    while stack:
        n = stack.pop()
        for x in () if n in planned else succ[n]:
            if (x in region or x in planned) and x not in reached:
                reached.add(x)
                stack.append(x)
        for x, attrs in pred[n].items():
            if x in region and x not in reached and "subject" in attrs["roles"]:
                reached.add(x)
                stack.append(x)

    def alive(n: str) -> bool:
        return n in reached if n in region or n in planned else n in live

    return alive


def _why_kept(graph: nx.DiGraph, s: str, planned: Collection[str], root_set: Collection[str],
              young: Collection[str], alive: Callable[[str], bool]) -> Kept:
    """Why successor ``s`` of a planned node stays (the kinds of :class:`~ocigraph.Kept`, in
    their order of precedence).  A holder named is a tagged one if any, else the smallest."""
    if s in root_set and s not in young:
        return Kept(s, "root")
    if s in young:
        return Kept(s, "young")
    holders = sorted(p for p in graph._pred[s] if p not in planned and p != s)
    nodes = graph._node
    live_holders = [p for p in holders if alive(p)]
    if live_holders:
        tagged = [p for p in live_holders if nodes[p]["tags"]]
        return Kept(s, "shared", (tagged or live_holders)[0])
    subject = _kept_subject(graph._succ, s, planned)
    if subject is not None and alive(subject):
        return Kept(s, "referrer", subject)
    return Kept(s, "held-by-garbage", holders[0] if holders else subject)


def liveness(graph: nx.DiGraph, policy: Policy | None = None,
             root_set: Collection[str] | None = None) -> Liveness:
    """The :class:`Liveness` of a whole graph: its live set, and the live manifests that
    cannot be used, each with why it is live (a live node referencing it, tagged ones first;
    for a referrer, its live subject; ``None`` for a root).

    One exception makes a manifest usable though unreadable: a *missing* manifest that live
    nodes reach only as a ``subject`` (a signature whose image was deleted, or pushed before
    it) is an ordinary dangling subject -- the distribution spec allows it -- not a manifest
    whose successors matter.
    """
    policy = policy or Policy()
    if isinstance(graph, NeighbourhoodView):  # its facts came with it
        own = graph.liveness
        if own.keep_untagged != policy.keep_untagged or policy.grace > 0 or root_set is not None:
            raise ValueError("a neighbourhood view knows liveness only for the root rule it "
                             "was made for, without grace")
        return own
    start = roots(graph, policy) if root_set is None else root_set
    live = live_set(graph, policy, start)
    nodes, succ, pred = graph._node, graph._succ, graph._pred  # no view per lookup
    bad = []
    for n in live:
        attrs = nodes[n]
        if attrs["status"] not in _UNUSABLE:
            continue
        holders = sorted(p for p in pred[n] if p in live and p != n)
        if attrs["status"] == "missing" and not attrs["indexed"] and all(
            pred[n][p]["roles"] == _SUBJECT_ONLY for p in holders
        ):
            continue
        why: str | None = None
        if n not in start:
            tagged = [p for p in holders if nodes[p]["tags"]]
            subjects = sorted(x for x, a in succ[n].items()
                              if x in live and x != n and "subject" in a["roles"])
            why = next(iter(tagged or holders or subjects), None)
        bad.append((n, attrs["error"], why))
    return Liveness(policy.keep_untagged, live, tuple(sorted(bad)))


def _check_usable(facts: Liveness, exclude: Collection[str]) -> None:
    """SEMANTICS §5: a live manifest that cannot be read or parsed stops the plan, unless the
    plan deletes it."""
    for n, error, holder in facts.unusable:
        if n not in exclude:
            raise BrokenManifestError(n, error, holder)


def _whole(graph: nx.DiGraph, operation: str) -> None:
    if isinstance(graph, NeighbourhoodView):
        raise ValueError(f"{operation} needs the whole graph; a neighbourhood view plans "
                         "deletes only")


def _guard(graph: nx.DiGraph, doomed: Mapping[str, Reason], live: Collection[str]) -> None:
    """SEMANTICS §3.4, applied to every planned node (targets and cascaded referrers alike):
    no live node outside the plan may keep a non-``subject`` reference to a planned node.  The
    refusal names every such holder of the first planned node that has one, tagged ones first."""
    pred, nodes = graph._pred, graph._node
    for n in doomed:
        holders = {}
        for p, attrs in pred[n].items():
            if p not in doomed and p in live and (strong := attrs["roles"] - _SUBJECT_ONLY):
                holders[p] = strong
        if holders:
            order = sorted(holders, key=lambda p: (not nodes[p]["tags"], p))
            first = order[0]
            raise GuardError(n, first, tuple(sorted(holders[first])), tuple(order),
                             tuple(sorted(nodes[first]["tags"])))

def _order(graph: nx.DiGraph, reasons: Mapping[str, Reason]) -> list[str]:
    """Predecessors first (a manifest before its children), ties by discovery rank.

    Kahn's algorithm on the planned nodes; on a cycle (crafted ``subject`` loops) the
    lowest-ranked waiting node is released, so the order is total and deterministic.
    """
    pred, succ = graph._pred, graph._succ
    rank = {n: i for i, n in enumerate(reasons)}
    waiting = {n: sum(1 for p in pred[n] if p in rank and p != n) for n in rank}
    heap = [rank[n] for n, w in waiting.items() if w == 0]
    heapq.heapify(heap)
    names = list(rank)
    done: set[str] = set()
    out: list[str] = []
    cursor = 0
    while len(out) < len(names):
        if not heap:  # a cycle: release the lowest-ranked node still waiting
            while names[cursor] in done:
                cursor += 1
            heap.append(cursor)
        n = names[heapq.heappop(heap)]
        if n in done:
            continue
        done.add(n)
        out.append(n)
        for s in succ[n]:
            if s in rank and s not in done and s != n:
                waiting[s] -= 1
                if waiting[s] == 0:
                    heapq.heappush(heap, rank[s])
    return out


def _drops(graph: nx.DiGraph, nodes: Iterable[str]) -> list[IndexChange]:
    entries = graph.graph["index"].entries
    out = []
    attrs = graph._node
    for n in nodes:
        for pos in attrs[n]["entries"]:
            out.append(IndexChange(pos, n, entries[pos].tag, "drop"))
    return out


def _plan(
    graph: nx.DiGraph,
    operation: Operation,
    targets: Sequence[str],
    policy: Policy,
    reasons: Mapping[str, Reason],
    changes: Iterable[IndexChange],
    kept: tuple[Kept, ...] = (),
) -> Plan:
    nodes = graph._node
    deletions = []
    for n in _order(graph, reasons):
        a = nodes[n]
        deletions.append(Deletion(n, reasons[n], a["size"], a["present"], tuple(sorted(a["media_types"]))))
    by_pos = {c.position: c for c in changes}
    return Plan(
        operation=operation,
        targets=tuple(targets),
        policy=policy,
        index_fingerprint=graph.graph["fingerprint"],
        deletions=tuple(deletions),
        index_changes=tuple(by_pos[p] for p in sorted(by_pos)),
        kept=kept,
        snapshot_time=graph.graph.get("now"),
    )


def plan_delete(
    graph: nx.DiGraph,
    targets: Iterable[str],
    policy: Policy | None = None,
    reporter: Reporter | None = None,
    *,
    given: Liveness | None = None,
) -> Plan:
    """Delete ``targets`` with their referrers and orphans (SEMANTICS §3).

    ``targets`` are tags, digests or digest prefixes (:func:`~ocigraph.resolve_refs`).  Raises
    :class:`GuardError` when a live index or manifest outside the plan still references a
    planned node (unless the policy has no guard, or ``force``), and
    :class:`BrokenManifestError` when a live manifest outside the plan cannot be read.

    ``graph`` may be a neighbourhood view of the targets (:func:`ocigraph.neighbourhood`): the
    plan is the same.  ``given``: the graph's :func:`liveness` under this policy, when the
    caller has it already.
    """
    policy = policy or Policy()
    rep = reporter or _NULL_REPORTER
    digests = resolve_refs(graph, targets)
    rep.phase_started("close")
    facts = liveness(graph, policy) if given is None else given
    reasons, kept = deletion_closure(graph, digests, policy, roots(graph, policy),
                                     live=facts.live)
    rep.phase_finished("close")
    rep.phase_started("plan")
    _check_usable(facts, reasons)
    if policy.guarded:
        _guard(graph, reasons, facts.live)
    plan = _plan(graph, "delete", digests, policy, reasons, _drops(graph, reasons), kept)
    rep.phase_finished("plan")
    return plan


def plan_gc(graph: nx.DiGraph, policy: Policy | None = None,
            reporter: Reporter | None = None, *, given: Liveness | None = None) -> Plan:
    """Sweep everything not live (SEMANTICS §2): present blobs and index.json entries alike.

    ``given``: the graph's :func:`liveness` under this policy, when the caller has it already.
    """
    policy = policy or Policy()
    _whole(graph, "gc")
    rep = reporter or _NULL_REPORTER
    rep.phase_started("close")
    facts = liveness(graph, policy) if given is None else given
    live = facts.live
    rep.phase_finished("close")
    rep.phase_started("plan")
    _check_usable(facts, ())
    unreachable = Reason("unreachable")  # an immutable value: one for every node
    reasons = dict.fromkeys(
        sorted(n for n, a in graph._node.items() if n not in live and (a["present"] or a["indexed"])),
        unreachable,
    )
    plan = _plan(graph, "gc", (), policy, reasons, _drops(graph, reasons), _spared(graph, policy, live))
    rep.phase_finished("plan")
    return plan


def _spared(graph: nx.DiGraph, policy: Policy, live: Collection[str]) -> tuple[Kept, ...]:
    """What a gc keeps only because of ``grace``: the present blobs that are live with it and
    would not be without it (young blobs, and what only young blobs hold), as ``young``."""
    if policy.grace <= 0:
        return ()
    without = live_set(graph, Policy(keep_untagged=policy.keep_untagged))
    nodes = graph._node
    return tuple(Kept(n, "young") for n in sorted(live) if n not in without and nodes[n]["present"])


def _tag_positions(graph: nx.DiGraph, refs: Iterable[str]) -> tuple[list[int], list[str], list[str]]:
    """What ``refs`` name for untag and remove: the index.json positions of the tagged entries
    named (a tag; or a digest or digest prefix, meaning all its tags), the refs as a plan
    records them (a tag as is, a digest whole), and the digests named by digest.  Unknown
    tags and ambiguous refs are errors."""
    entries = graph.graph["index"].entries
    positions: list[int] = []
    spelled: list[str] = []
    by_digest: list[str] = []
    for ref, d, is_digest in named(graph, refs):
        mine = [p for p in graph._node[d]["entries"]
                if entries[p].tag is not None and (is_digest or entries[p].tag == ref)]
        if not mine and not is_digest:
            raise UnknownRefError(ref)
        positions.extend(p for p in mine if p not in positions)
        spelled.append(d if is_digest else ref)
        if is_digest:
            by_digest.append(d)
    return positions, spelled, by_digest


def _untag_changes(graph: nx.DiGraph, positions: Collection[int]) -> list[IndexChange]:
    """Drop the tagged entries at ``positions``, except that a digest left with no entry at all
    keeps its first one, untagged -- so the image stays in index.json, as oras-go's ``Untag``."""
    entries = graph.graph["index"].entries
    changes = []
    for d in sorted({entries[p].digest for p in positions}):
        mine = graph.nodes[d]["entries"]
        keep_one = all(p in positions for p in mine)
        for p in mine:
            if p in positions:
                untag = keep_one and p == mine[0]
                changes.append(IndexChange(p, d, entries[p].tag, "untag" if untag else "drop"))
    return changes


def plan_untag(graph: nx.DiGraph, refs: Iterable[str]) -> Plan:
    """Remove tags; delete nothing.  ``refs`` are tags, or digests (or digest prefixes)
    meaning all their tags."""
    _whole(graph, "untag")
    positions, spelled, _ = _tag_positions(graph, refs)
    return _plan(graph, "untag", spelled, Policy(), {}, _untag_changes(graph, set(positions)))


def plan_remove(graph: nx.DiGraph, refs: Iterable[str], policy: Policy | None = None) -> Plan:
    """``docker rmi``: untag each ref; a digest left with no tag and not live is deleted as by
    :func:`plan_delete` (with its referrers and orphans); one still live is only untagged,
    exactly as :func:`plan_untag` would.

    Liveness is judged as if the removed tag entries were gone altogether, so that under
    ``keep_untagged`` the untagged entry an untag would leave does not keep the image alive.
    """
    policy = policy or Policy()
    _whole(graph, "remove")
    positions, spelled, by_digest = _tag_positions(graph, refs)
    removed = set(positions)
    entries = graph.graph["index"].entries
    remaining = [e for e in entries if e.position not in removed]
    root_set = {e.digest for e in remaining if e.tag is not None or policy.keep_untagged}
    root_set |= young_nodes(graph, policy)
    facts = liveness(graph, policy, root_set)
    live = facts.live
    affected = []
    for p in sorted(removed):
        d = entries[p].digest
        if d not in affected:
            affected.append(d)
    # an untagged digest named directly is a delete target too
    affected += [d for d in dict.fromkeys(by_digest) if d not in affected]
    doomed = [d for d in affected if d not in live]
    reasons, kept = (deletion_closure(graph, doomed, policy, root_set, live=live) if doomed
                     else ({}, ()))
    _check_usable(facts, reasons)
    if policy.guarded:
        _guard(graph, reasons, live)
    changes = _drops(graph, reasons)
    changes += _untag_changes(graph, [p for p in removed if entries[p].digest not in reasons])
    return _plan(graph, "remove", spelled, policy, reasons, changes, kept)


class _WithoutDeleted:
    """A manifest source that answers "missing" for the blobs a plan deleted."""

    __slots__ = ("_gone", "_inner")

    def __init__(self, inner: object, gone: frozenset[str]) -> None:
        self._inner = inner
        self._gone = gone

    def read_manifests(self, digests: Sequence[str]) -> Mapping[str, Manifest]:
        keep = [d for d in digests if d not in self._gone]
        got = dict(self._inner.read_manifests(keep)) if keep else {}  # type: ignore[attr-defined]
        for d in digests:
            if d in self._gone:
                got[d] = Manifest(digest=d, error="blob is missing", missing=True)
        return got


def describe_index_drift(plan: Plan, index: Index) -> tuple[str, ...]:
    """What in ``index`` no longer fits ``plan``, in words: the entries it would edit that have
    moved or changed, and the blobs it would delete that index.json now lists.

    The plan keeps only a fingerprint of the index.json it came from, so a change elsewhere is
    reported as such.
    """
    out = []
    entries = index.entries
    for c in plan.index_changes:
        if c.position >= len(entries):
            out.append(f"entry {c.position} ({c.tag or 'untagged'}) is gone")
        elif entries[c.position].digest != c.digest or entries[c.position].tag != c.tag:
            now = entries[c.position]
            out.append(f"entry {c.position} was {c.tag or 'untagged'} {c.digest}, "
                       f"now {now.tag or 'untagged'} {now.digest}")
    planned = {d.digest for d in plan.deletions}
    for e in entries:
        if e.digest in planned and not any(c.position == e.position for c in plan.index_changes):
            out.append(f"{e.digest} (planned for deletion) is now listed"
                       + (f" as tag {e.tag}" if e.tag else ""))
    if not out:
        out.append("entries elsewhere in index.json were added, removed or edited")
    return tuple(out)


def simulate(layout: Layout, plan: Plan) -> Layout:
    """The layout as it will be after ``plan`` is applied -- the pure model of ``apply``.

    Raises :class:`StalePlanError` if the plan was made from another index.json.
    """
    if layout.index.fingerprint != plan.index_fingerprint:
        raise StalePlanError(plan.index_fingerprint, layout.index.fingerprint,
                             describe_index_drift(plan, layout.index))
    index = parse_index(render_index(layout.index, plan.index_changes))
    gone = frozenset(d.digest for d in plan.deletions)
    blobs = {d: info for d, info in layout.blobs.items() if d not in gone}
    return Layout(index=index, blobs=blobs, manifests=_WithoutDeleted(layout.manifests, gone),
                  now=layout.now)
