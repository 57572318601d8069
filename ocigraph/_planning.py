"""Planning: Delete, GC, Untag and Remove as pure functions from a graph to a :class:`Plan`.

Every operation is one closure computation followed by one ordering pass; both are linear in
nodes + edges of what they touch, deterministic (queues seeded in a fixed order, ties broken by
discovery rank), and visit each node once, so no input -- a referrer chain of any length, a
``subject`` cycle, a manifest listing itself -- can make them loop or plan a node twice.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import networkx as nx

from ._errors import BrokenManifestError, GuardError, StalePlanError, UnknownRefError
from ._graph import is_view, is_young, live_set, pauses_gc, resolve_ref, roots
from ._model import Index, Layout, Manifest, Reporter
from ._parse import parse_index, render_index
from ._plan import Deletion, IndexChange, Kept, Plan, Reason
from ._policy import Policy

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


def _young_set(graph: nx.DiGraph, policy: Policy) -> frozenset[str]:
    if policy.grace <= 0:
        return frozenset()
    return frozenset(n for n in graph if is_young(graph, n, policy))


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
) -> tuple[dict[str, Reason], tuple[Kept, ...]]:
    """SEMANTICS §3 steps 1-2: the targets, their referrers (recursively, unless
    ``cascade_referrers`` is off) and every successor they orphan, to a fixpoint.

    ``protected`` are nodes never orphaned (default: the policy's roots).  Returns
    ``{digest: reason}`` in discovery order, and the successors that were kept with why.

    A successor is orphaned when every one of its predecessors is in the set and its subject (if
    it is a referrer) is too; a counter per successor makes the first check O(1) per edge
    instead of a rescan of its predecessors.
    """
    succ, pred = graph._succ, graph._pred
    root_set = roots(graph, policy) if protected is None else protected
    young = _young_set(graph, policy)
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
    kept = []
    for s in sorted(outside):
        if s in reasons:
            continue
        if s in young:
            kept.append(Kept(s, "young"))
        elif s in root_set and outside[s] == 0:
            kept.append(Kept(s, "root"))
        elif outside[s] == 0:
            kept.append(Kept(s, "referrer", _kept_subject(succ, s, reasons)))
        else:
            via = min((p for p in pred[s] if p not in reasons), default=None)
            kept.append(Kept(s, "shared", via))
    return reasons, tuple(kept)


class Liveness(NamedTuple):
    """The two global facts a plan needs about a whole graph under one root rule (grace 0).

    ``live``: the live nodes (SEMANTICS §2) -- of a neighbourhood view, those of its own nodes.
    ``unusable``: every live manifest that cannot be read or parsed, as sorted
    ``(digest, error, live holder or None)`` -- what stops a plan (SEMANTICS §5) unless the plan
    deletes it.

    Everything else :func:`plan_delete` asks is local to the targets, so a graph that carries
    these (see :func:`ocigraph.neighbourhood`) needs only the targets' surroundings.
    """

    keep_untagged: bool
    live: frozenset[str]
    unusable: tuple[tuple[str, str, str | None], ...]


def liveness(graph: nx.DiGraph, policy: Policy | None = None,
             root_set: Collection[str] | None = None) -> Liveness:
    """The :class:`Liveness` of a whole graph: its live set, and the live manifests that
    cannot be used.

    One exception makes a manifest usable though unreadable: a *missing* manifest that live
    nodes reach only as a ``subject`` (a signature whose image was deleted, or pushed before
    it) is an ordinary dangling subject -- the distribution spec allows it -- not a manifest
    whose successors matter.
    """
    policy = policy or Policy()
    if is_view(graph):  # its facts came with it
        own = graph.graph["liveness"]
        if own.keep_untagged != policy.keep_untagged or policy.grace > 0 or root_set is not None:
            raise ValueError("a neighbourhood view knows liveness only for the root rule it "
                             "was made for, without grace")
        return own  # type: ignore[no-any-return]
    live = live_set(graph, policy, root_set)
    nodes, pred = graph._node, graph._pred  # the dicts behind graph.nodes: no view per lookup
    bad = []
    for n in live:
        attrs = nodes[n]
        if attrs["status"] not in _UNUSABLE:
            continue
        holders = [p for p in pred[n] if p in live]
        if attrs["status"] == "missing" and not attrs["indexed"] and all(
            pred[n][p]["roles"] == _SUBJECT_ONLY for p in holders
        ):
            continue
        bad.append((n, attrs["error"], min(holders, default=None)))
    return Liveness(policy.keep_untagged, live, tuple(sorted(bad)))


def _check_usable(facts: Liveness, exclude: Collection[str]) -> None:
    """SEMANTICS §5: a live manifest that cannot be read or parsed stops the plan, unless the
    plan deletes it."""
    for n, error, holder in facts.unusable:
        if n not in exclude:
            raise BrokenManifestError(n, error, holder)


def _whole(graph: nx.DiGraph, operation: str) -> None:
    if is_view(graph):
        raise ValueError(f"{operation} needs the whole graph; a neighbourhood view plans "
                         "deletes only")


def _guard(graph: nx.DiGraph, doomed: Mapping[str, Reason], live: Collection[str]) -> None:
    """SEMANTICS §3.4, applied to every planned node (targets and cascaded referrers alike):
    no live node outside the plan may keep a non-``subject`` reference to a planned node."""
    pred = graph._pred
    for n in doomed:
        for p in sorted(pred[n]):
            if p in doomed or p not in live:
                continue
            strong = pred[n][p]["roles"] - {"subject"}
            if strong:
                raise GuardError(n, p, tuple(sorted(strong)))


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
    operation: str,
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


def _resolve_all(graph: nx.DiGraph, refs: Iterable[str]) -> list[str]:
    out: list[str] = []
    for ref in refs:
        d = resolve_ref(graph, ref)
        if d not in out:
            out.append(d)
    return out


@pauses_gc
def plan_delete(
    graph: nx.DiGraph,
    targets: Iterable[str],
    policy: Policy | None = None,
    reporter: Reporter | None = None,
    *,
    given: Liveness | None = None,
) -> Plan:
    """Delete ``targets`` (tags or digests) with their referrers and orphans (SEMANTICS §3).

    Raises :class:`GuardError` when a live index or manifest outside the plan still references a
    planned node (unless the policy has no guard, or ``force``), and
    :class:`BrokenManifestError` when a live manifest outside the plan cannot be read.

    ``graph`` may be a neighbourhood view of the targets (:func:`ocigraph.neighbourhood`): the
    plan is the same.  ``given``: the graph's :func:`liveness` under this policy, when the
    caller has it already.
    """
    policy = policy or Policy()
    rep = reporter or _NULL_REPORTER
    refs = list(targets)
    digests = _resolve_all(graph, refs)
    rep.phase_started("close")
    root_set = roots(graph, policy)
    reasons, kept = deletion_closure(graph, digests, policy, root_set)
    facts = liveness(graph, policy) if given is None else given
    rep.phase_finished("close")
    rep.phase_started("plan")
    _check_usable(facts, reasons)
    if policy.guarded:
        _guard(graph, reasons, facts.live)
    plan = _plan(graph, "delete", digests, policy, reasons, _drops(graph, reasons), kept)
    rep.phase_finished("plan")
    return plan


@pauses_gc
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
    plan = _plan(graph, "gc", (), policy, reasons, _drops(graph, reasons))
    rep.phase_finished("plan")
    return plan


def _tag_positions(graph: nx.DiGraph, refs: Iterable[str], *, digests_allowed: bool) -> list[int]:
    """index.json positions of the tagged entries named by ``refs`` (a tag, or a digest meaning
    all its tags).  Unknown tags and ambiguous tags are errors."""
    entries = graph.graph["index"].entries
    positions: list[int] = []
    for ref in refs:
        d = resolve_ref(graph, ref)
        by_digest = d == ref
        if by_digest and not digests_allowed:
            raise UnknownRefError(ref)
        mine = [p for p in graph.nodes[d]["entries"]
                if entries[p].tag is not None and (by_digest or entries[p].tag == ref)]
        if not mine and not by_digest:
            raise UnknownRefError(ref)
        positions.extend(p for p in mine if p not in positions)
    return positions


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
    """Remove tags; delete nothing.  ``refs`` are tags, or digests meaning all their tags."""
    _whole(graph, "untag")
    refs = list(refs)
    positions = set(_tag_positions(graph, refs, digests_allowed=True))
    return _plan(graph, "untag", refs, Policy(), {}, _untag_changes(graph, positions))


@pauses_gc
def plan_remove(graph: nx.DiGraph, refs: Iterable[str], policy: Policy | None = None) -> Plan:
    """``docker rmi``: untag each ref; a digest left with no tag and not live is deleted as by
    :func:`plan_delete` (with its referrers and orphans); one still live is only untagged,
    exactly as :func:`plan_untag` would.

    Liveness is judged as if the removed tag entries were gone altogether, so that under
    ``keep_untagged`` the untagged entry an untag would leave does not keep the image alive.
    """
    policy = policy or Policy()
    _whole(graph, "remove")
    refs = list(refs)
    removed = set(_tag_positions(graph, refs, digests_allowed=True))
    entries = graph.graph["index"].entries
    remaining = [e for e in entries if e.position not in removed]
    root_set = {e.digest for e in remaining if e.tag is not None or policy.keep_untagged}
    root_set |= _young_set(graph, policy)
    facts = liveness(graph, policy, root_set)
    live = facts.live
    affected = []
    for p in sorted(removed):
        d = entries[p].digest
        if d not in affected:
            affected.append(d)
    for ref in refs:  # an untagged digest named directly is a delete target too
        d = resolve_ref(graph, ref)
        if d == ref and d not in affected:
            affected.append(d)
    doomed = [d for d in affected if d not in live]
    reasons, kept = deletion_closure(graph, doomed, policy, root_set) if doomed else ({}, ())
    _check_usable(facts, reasons)
    if policy.guarded:
        _guard(graph, reasons, live)
    changes = _drops(graph, reasons)
    changes += _untag_changes(graph, [p for p in removed if entries[p].digest not in reasons])
    return _plan(graph, "remove", refs, policy, reasons, changes, kept)


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
