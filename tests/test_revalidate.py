"""``og.revalidate``: what of a plan still holds against the state it meets when applied (the
registry's stale-plan rule, in the core).  Examples by hand, then properties on generated
layouts, each checked against an independent computation: the live set of the new state after
the changes that still hold, by ``og.live_set`` on a layout built from edited index.json bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import assume, given, note, reject, settings
from hypothesis import strategies as st

import ocigraph as og
from ocigraph.testing import delete_targets, generated_layouts, policies

OCI_MANIFEST, OCI_INDEX = og.OCI_MANIFEST, og.OCI_INDEX
EMPTY = b"{}"


def blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def desc(digest: str, data: bytes, media: str = OCI_MANIFEST) -> dict[str, Any]:
    return {"mediaType": media, "digest": digest, "size": len(data)}


class Repo:
    """A small layout by hand: images (config + a layer), referrers, index.json entries."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.config = self.put(EMPTY)

    def put(self, data: bytes) -> str:
        d, _ = blob(data)
        self.blobs[d] = data
        return d

    def image(self, name: str, subject: str | None = None) -> str:
        layer = self.put(name.encode())
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": desc(self.config, EMPTY, "application/vnd.oci.empty.v1+json"),
                               "layers": [desc(layer, name.encode(), "application/octet-stream")]}
        if subject is not None:
            doc["subject"] = desc(subject, self.blobs[subject])
        return self.put(json.dumps(doc).encode())

    def layout(self, entries: Sequence[tuple[str | None, str]], spacing: str = "") -> og.Layout:
        listed = [{**desc(d, self.blobs[d]), **({"annotations": {og.REF_NAME: t}} if t else {})}
                  for t, d in entries]
        index = json.dumps({"schemaVersion": 2, "manifests": listed}) + spacing
        return og.layout_from_bytes(index.encode(), self.blobs)


def graph_of(layout: og.Layout) -> Any:
    return og.build_graph(layout)


# -- by hand -------------------------------------------------------------------------------------

def test_a_plan_against_its_own_state_holds_whole() -> None:
    r = Repo()
    a, b = r.image("a"), r.image("b")
    graph = graph_of(r.layout([("a", a), ("b", b)]))
    plan = og.plan_delete(graph, ["a"])
    assert og.revalidate(plan, graph) == og.Revalidated(plan.index_changes, plan.deletions, ())
    # the same entries in other bytes (another fingerprint): judged afresh, the same answer
    again = og.revalidate(plan, graph_of(r.layout([("a", a), ("b", b)], spacing=" ")))
    assert again == og.Revalidated(plan.index_changes, plan.deletions, ())


def test_a_tag_added_since_planning_keeps_the_image_and_its_referrer() -> None:
    r = Repo()
    x = r.image("x")
    sig = r.image("sig of x", subject=x)
    plan = og.plan_delete(graph_of(r.layout([("x", x), (None, sig)])), ["x"])
    assert {x, sig} <= plan.deleted_digests()
    got = og.revalidate(plan, graph_of(r.layout([("x", x), ("y", x), (None, sig)])))
    assert og.SkippedStep(x, "in use since planning: tag y names it") in got.skipped
    assert og.SkippedStep(sig, "in use since planning: a tag reaches it") in got.skipped
    assert not {x, sig} & {d.digest for d in got.deletions}
    # the shared config stays too; the tag x itself still goes (it still names x)
    assert got.index_changes == (og.IndexChange(0, x, "x", "drop"),)


def test_a_referrer_asked_for_still_goes_when_something_else_changed() -> None:
    r = Repo()
    x, other = r.image("x"), r.image("other")
    sig = r.image("sig of x", subject=x)
    plan = og.plan_delete(graph_of(r.layout([("x", x), (None, sig)])), [sig])
    got = og.revalidate(plan, graph_of(r.layout([("x", x), (None, sig), ("other", other)])))
    assert [d.digest for d in got.deletions] == [d.digest for d in plan.deletions]
    assert sig in {d.digest for d in got.deletions} and not got.skipped


def test_a_tag_moved_or_gone_since_planning_is_skipped_and_its_new_image_kept() -> None:
    r = Repo()
    a, b, c = r.image("a"), r.image("b"), r.image("c")
    plan = og.plan_remove(graph_of(r.layout([("a", a), ("b", b)])), ["a", "b"])
    assert {a, b} <= plan.deleted_digests()
    got = og.revalidate(plan, graph_of(r.layout([("a", c)])))
    assert got.skipped[:2] == (og.SkippedStep("tag a", f"moved since planning: now names {c}"),
                               og.SkippedStep("tag b", "gone since planning"))
    assert got.index_changes == ()
    assert {d.digest for d in got.deletions} >= {a, b} and c not in {d.digest for d in got.deletions}


def test_changes_that_hold_are_re_pointed_at_the_current_positions() -> None:
    r = Repo()
    a, b, new = r.image("a"), r.image("b"), r.image("new")
    plan = og.plan_delete(graph_of(r.layout([("a", a), ("b", b)])), ["b"])
    got = og.revalidate(plan, graph_of(r.layout([("new", new), ("a", a), ("b", b)])))
    assert got.index_changes == (og.IndexChange(2, b, "b", "drop"),) and not got.skipped


def test_under_keep_untagged_an_untagged_entry_added_keeps_its_image() -> None:
    r = Repo()
    a, b = r.image("a"), r.image("b")
    policy = og.Policy.preset("spec")
    plan = og.plan_delete(graph_of(r.layout([("a", a), ("b", b)])), ["a"], policy)
    got = og.revalidate(plan, graph_of(r.layout([("a", a), ("b", b), (None, a)])))
    assert og.SkippedStep(a, "in use since planning: an untagged entry lists it "
                             "(keep_untagged)") in got.skipped
    assert a not in {d.digest for d in got.deletions}


# -- properties ----------------------------------------------------------------------------------

def edited(index_json: bytes, changes: Sequence[og.IndexChange] = (),
           added: Sequence[Mapping[str, Any]] = ()) -> bytes:
    """index.json with ``changes`` applied (by position) and ``added`` entries at its end."""
    doc = json.loads(index_json)
    by_position = {c.position: c.action for c in changes}
    kept = []
    for i, entry in enumerate(doc["manifests"]):
        if by_position.get(i) == "drop":
            continue
        if by_position.get(i) == "untag":
            entry = {**entry, "annotations": {k: v for k, v in entry.get("annotations", {}).items()
                                              if k != og.REF_NAME}}
        kept.append(entry)
    doc["manifests"] = kept + list(added)
    return json.dumps(doc).encode()


def in_use(graph: Any, roots: set[str], asked: set[str]) -> set[str]:
    """SEMANTICS §2's live set from ``roots``, walked by hand (successors; referrers of what is
    live), where a node the plan names as a target is not live as a mere referrer (§3.4:
    ``subject`` is a weak link, and deleting it was asked for)."""
    seen, todo = set(roots), list(roots)
    while todo:
        n = todo.pop()
        for m in [*graph.successors(n), *(r for r in og.referrers_of(graph, n) if r not in asked)]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def live_after(index_json: bytes, blobs: Mapping[str, bytes], got: og.Revalidated,
               plan: og.Plan) -> set[str]:
    """What is in use once the changes that still hold are made: judged on its own layout."""
    after = og.build_graph(og.layout_from_bytes(edited(index_json, got.index_changes), blobs))
    roots = {e.digest for e in after.graph["index"].entries
             if e.tag is not None or plan.policy.keep_untagged}
    return in_use(after, roots, asked(plan))


def asked(plan: og.Plan) -> set[str]:
    return {d.digest for d in plan.deletions if d.reason.kind == "target"}


@st.composite
def planned(draw: st.DrawFn) -> tuple[Any, og.Plan]:
    """A generated layout and a gc or a delete planned on it, under any policy."""
    g = draw(generated_layouts())
    policy = draw(policies())
    graph = og.build_graph(g.layout())
    if draw(st.booleans()) or not g.known:
        return g, og.plan_gc(graph, policy)
    refs = draw(delete_targets(g))
    try:
        return g, og.plan_delete(graph, refs, policy)
    except og.OcigraphError:  # refused by the guard, an ambiguous ref: no plan to judge
        reject()


@settings(max_examples=150, deadline=None)
@given(planned())
def test_a_plan_revalidated_against_its_own_state_applies_whole(case: tuple[Any, og.Plan]) -> None:
    g, plan = case
    graph = og.build_graph(g.layout())
    assert og.revalidate(plan, graph) == og.Revalidated(plan.index_changes, plan.deletions, ())
    # the same state in other bytes is judged afresh (its fingerprint differs): what a guarded
    # plan deletes is not in use once its own changes are made, so it still applies whole
    respaced = og.layout_from_bytes(g.index_json + b" ", g.blobs)
    got = og.revalidate(plan, og.build_graph(respaced))
    going = {d.digest for d in plan.deletions}
    dangling = any(p not in going and "subject" in graph.edges[p, d]["roles"]
                   for d in going for p in graph.pred[d])
    if plan.policy.guard and not plan.policy.force and not dangling:
        assert got == og.Revalidated(plan.index_changes, plan.deletions, ())
    else:  # without it, or when a referrer the plan keeps names a deleted subject (cascade
        # off: a weak link when planning), judged afresh a target something live still
        # references is kept -- on a changed state, skipping is the safe side
        assert not {d.digest for d in got.deletions} & live_after(
            g.index_json, g.blobs, got, plan)


@settings(max_examples=150, deadline=None)
@given(planned(), st.data())
def test_a_tag_added_naming_a_planned_deletion_skips_it_and_what_it_reaches(
        case: tuple[Any, og.Plan], data: st.DataObject) -> None:
    g, plan = case
    graph = og.build_graph(g.layout())
    manifests = sorted(d.digest for d in plan.deletions if d.present and d.digest in g.blobs
                       and graph.nodes[d.digest]["status"] == "ok"
                       and any(og.is_manifest_type(m) for m in d.media_types))
    assume(manifests)
    target = data.draw(st.sampled_from(manifests))
    media = next(m for m in plan.deletions if m.digest == target).media_types[0]
    note(f"tagging {target} ({media}) 'added-since'")
    entry = {"mediaType": media, "digest": target, "size": len(g.blobs[target]),
             "annotations": {og.REF_NAME: "added-since"}}
    index_json = edited(g.index_json, added=[entry])
    now = og.build_graph(og.layout_from_bytes(index_json, g.blobs))
    got = og.revalidate(plan, now)

    going = {d.digest for d in got.deletions}
    skipped = {s.what for s in got.skipped}
    assert og.SkippedStep(target, "in use since planning: tag added-since names it") in got.skipped
    reached = in_use(now, {target}, asked(plan))
    assert not going & reached  # the deletion and everything it reaches stay
    assert not going & live_after(index_json, g.blobs, got, plan)  # nothing in use goes
    assert going | (skipped & plan.deleted_digests()) == plan.deleted_digests()  # none lost
    assert [d.digest for d in got.deletions] == [d.digest for d in plan.deletions
                                                 if d.digest in going]  # in the plan's order
