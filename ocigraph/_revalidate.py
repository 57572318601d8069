"""What of a plan still holds against the state it meets when it is applied.

A layout is locked and its index.json compared byte for byte, so a stale plan is refused
whole.  A registry has no lock and no compare-and-swap: its adapter reads the repository again
just before applying and asks :func:`revalidate` what may still be done.  The rules:

* if the index is the one the plan was made from, the plan holds whole;
* a planned index change holds while its tag still names the digest it named at planning
  (a tagless one while an untagged entry of that digest is still listed and its deletion
  holds); the changes that hold are re-pointed at the positions of the current index;
* every entry the plan does not change is a root as the plan's policy says (and, with
  ``keep_untagged``, one it only untags), and a planned deletion goes only if nothing live
  from those roots reaches it now -- where a target the plan names is not made live by being
  a referrer of a live subject (deleting it was asked for).  A plan made without the guard
  (or with ``force``) is judged as strictly as any other once the state has changed: a
  target a live node now references is skipped.

What is left out is returned with why.  Nothing here reads or writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ._graph import young_nodes
from ._model import IndexEntry
from ._plan import Deletion, IndexChange, Plan

__all__ = ["SkippedStep", "Revalidated", "revalidate"]


@dataclass(frozen=True, slots=True)
class SkippedStep:
    """A step of a plan left out: ``what`` (a digest, or ``tag NAME``) and why."""

    what: str
    reason: str


@dataclass(frozen=True, slots=True)
class Revalidated:
    """The part of a plan that may still be applied: ``index_changes`` (at the current
    index's positions), ``deletions`` (in the plan's order), and the steps ``skipped``."""

    index_changes: tuple[IndexChange, ...]
    deletions: tuple[Deletion, ...]
    skipped: tuple[SkippedStep, ...] = ()


def revalidate(plan: Plan, graph: nx.DiGraph) -> Revalidated:
    """``plan`` judged against ``graph``, the graph of the state as it is now (see the module).

    >>> import ocigraph as og
    >>> empty = og.build_graph(og.layout_from_bytes(b'{"schemaVersion":2,"manifests":[]}', {}))
    >>> revalidate(og.plan_gc(empty), empty).skipped
    ()
    """
    if graph.graph["fingerprint"] == plan.index_fingerprint:
        return Revalidated(plan.index_changes, plan.deletions)
    entries = graph.graph["index"].entries
    actions: dict[tuple[str | None, str], IndexChange] = {}
    for c in plan.index_changes:
        if actions.get((c.tag, c.digest)) is None or c.action == "untag":
            actions[(c.tag, c.digest)] = c
    skipped: list[SkippedStep] = []
    for tag, digest in sorted((t, d) for t, d in actions if t is not None):
        now = sorted({e.digest for e in entries if e.tag == tag})
        if digest not in now:
            skipped.append(SkippedStep(f"tag {tag}", "moved since planning: now names "
                                       + ", ".join(now) if now else "gone since planning"))
    keep_untagged = plan.policy.keep_untagged
    # an entry the plan leaves alone is a root as the policy says; one it untags stays, untagged
    root_entries = [e for e in entries if (e.tag is not None or keep_untagged) and (
        (e.tag, e.digest) not in actions
        or (keep_untagged and actions[(e.tag, e.digest)].action == "untag"))]
    young = young_nodes(graph, plan.policy) if "mtimes" in graph.graph else frozenset()
    targets = {d.digest for d in plan.deletions if d.reason.kind == "target"}
    live = _in_use(graph, {e.digest for e in root_entries} | young, targets)
    deletions = []
    for d in plan.deletions:
        if d.digest in live:
            skipped.append(SkippedStep(d.digest, "in use since planning: "
                                       + _why_live(d.digest, root_entries, young, keep_untagged)))
        else:
            deletions.append(d)
    kept = {d.digest for d in plan.deletions} - {d.digest for d in deletions}
    changes = tuple(IndexChange(e.position, e.digest, e.tag, actions[(e.tag, e.digest)].action)
                    for e in entries if (e.tag, e.digest) in actions
                    and (e.tag is not None or e.digest not in kept))
    return Revalidated(changes, tuple(deletions), tuple(skipped))


def _in_use(graph: nx.DiGraph, roots: set[str], targets: set[str]) -> set[str]:
    """The live set from ``roots`` (successors and, to a fixpoint, referrers), except that a
    target the plan names is never live as a referrer of a live subject: deleting one was asked
    for, and ``subject`` is a weak link (SEMANTICS §3.4)."""
    succ, pred = graph._succ, graph._pred
    seen = {r for r in roots if r in succ}
    stack = list(seen)
    while stack:
        n = stack.pop()
        nxt = list(succ[n])
        nxt += [p for p, a in pred[n].items() if "subject" in a["roles"] and p not in targets]
        for m in nxt:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return seen


def _why_live(digest: str, root_entries: list[IndexEntry], young: frozenset[str],
              keep_untagged: bool) -> str:
    tags = sorted(e.tag for e in root_entries if e.digest == digest and e.tag is not None)
    if tags:
        return f"tag {tags[0]} names it"
    if any(e.digest == digest for e in root_entries):
        return "an untagged entry lists it (keep_untagged)"
    if digest in young:
        return "younger than the grace"
    return "a root reaches it" if keep_untagged else "a tag reaches it"
