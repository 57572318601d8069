"""A delete planned from the targets' neighbourhood is the delete planned from the whole graph.

:func:`ocigraph.neighbourhood` is what lets a delete in a million-blob layout read a few hundred
rows of ``io_adapters.store`` instead of building the graph; these tests pin its one promise --
same plan, same errors -- on generated layouts, and what a view refuses.
"""

from __future__ import annotations

import networkx as nx
import orjson
import pytest
from builder import Builder
from hypothesis import given, settings
from hypothesis import strategies as st

import ocigraph as og
from ocigraph.testing import (
    GeneratedLayout,
    delete_targets,
    generated_layouts,
    layout_and_targets,
    policies,
)


def _outcome(fn):
    """A plan as JSON, or the error a planning call raised (class and message)."""
    try:
        return fn().to_json()
    except og.OcigraphError as exc:
        return (type(exc).__name__, str(exc))


def _plan_from_view(graph: nx.DiGraph, refs: list[str], policy: og.Policy):
    source = og.WholeGraph(graph)
    digests = []
    for ref in refs:
        d = og.resolve_in(source, ref)
        if d not in digests:
            digests.append(d)
    view = og.neighbourhood(source, digests, policy, now=graph.graph["now"])
    return og.plan_delete(view, digests, policy)


@settings(max_examples=600)
@given(layout_and_targets(max_size=3), policies())
def test_a_view_plans_the_delete_the_whole_graph_plans(case, policy):
    layout, refs = case
    graph = og.build_graph(layout)
    whole = _outcome(lambda: og.plan_delete(graph, refs, policy))
    local = _outcome(lambda: _plan_from_view(graph, refs, policy))
    assert local == whole


def _with_an_unrelated_image(g: GeneratedLayout) -> og.Layout:
    """``g``'s layout plus a tagged image that shares nothing with it."""
    blobs = dict(g.blobs)

    def blob(data: bytes, media_type: str) -> dict:
        digest = og.digest_bytes(data)
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    marker = b"unrelated to any generated blob: " + og.digest_bytes(g.index_json).encode()
    manifest = orjson.dumps({
        "schemaVersion": 2, "mediaType": og.OCI_MANIFEST,
        "config": blob(marker + b" config", "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(marker + b" layer", "application/vnd.oci.image.layer.v1.tar")],
    })
    index = orjson.loads(g.index_json)
    index["manifests"].append(dict(blob(manifest, og.OCI_MANIFEST),
                                   annotations={og.REF_NAME: "unrelated"}))
    return og.layout_from_bytes(orjson.dumps(index), blobs)


def _expected_view(graph: nx.DiGraph, targets: set[str], keep_untagged: bool):
    """What the view of ``targets`` must hold, from _view.py's definition, computed here the
    plain way: the core, and each core node's predecessors in the view -- all of them for the
    targets and the core's referrers; for every other core node, those in the core and its
    named holders outside it (the smallest, the smallest tagged, the smallest live under each
    root rule).  Also the bound the definition gives: |core| + every predecessor outside the
    core counted, with at most four for the rest."""
    core, todo = set(), list(targets)
    while todo:
        n = todo.pop()
        if n not in core:
            core.add(n)
            todo += list(graph.succ[n])
            todo += [p for p in graph.pred[n] if "subject" in graph.edges[p, n]["roles"]]
    live = {rule: og.live_set(graph, og.Policy(keep_untagged=rule)) for rule in (False, True)}
    preds, bound = {}, len(core)
    for n in core:
        others = set(graph.pred[n]) - core
        preds[n] = set(graph.pred[n]) & core
        referrer = any("subject" in roles for _, _, roles in graph.out_edges(n, data="roles"))
        if n in targets or referrer:
            preds[n] |= others
            bound += len(others)
            continue
        for named in (others, {p for p in others if graph.nodes[p]["tags"]},
                      others & live[False], others & live[True]):
            if named:
                preds[n].add(min(named))
        bound += min(4, len(others))
    return core, preds, bound


@settings(max_examples=200)
@given(generated_layouts().filter(lambda g: bool(g.known)), st.booleans(), st.data())
def test_a_view_is_small_and_its_facts_are_the_whole_graphs(g, keep_untagged, data):
    refs = data.draw(delete_targets(g, max_size=2))
    graph = og.build_graph(_with_an_unrelated_image(g))
    policy = og.Policy(keep_untagged=keep_untagged)
    source = og.WholeGraph(graph)
    digests = sorted({og.resolve_in(source, r) for r in refs})
    view = og.neighbourhood(source, digests, policy)
    assert isinstance(view, og.NeighbourhoodView) and not isinstance(graph, og.NeighbourhoodView)
    core, preds, bound = _expected_view(graph, set(digests), keep_untagged)
    assert view.core == core
    assert set(view) == core.union(*preds.values()) and len(view) <= bound
    unrelated = og.resolve_ref(graph, "unrelated")
    assert not {unrelated, *graph.succ[unrelated]} & set(view)
    assert len(view) < len(graph)
    whole = og.liveness(graph, policy)
    facts = og.liveness(view, policy)
    assert facts.live == whole.live & set(view)
    assert facts.unusable == whole.unusable
    for n in view:  # attributes as built; every edge of the view is an edge of the graph
        assert view.nodes[n] == graph.nodes[n]
    for u, v, roles in view.edges(data="roles"):
        assert graph.edges[u, v]["roles"] == roles
    for n in core:  # every edge out of the core; of the edges in, those the definition names
        assert set(view.succ[n]) == set(graph.succ[n])
        assert set(view.pred[n]) == preds[n]


def _two_images():
    b = Builder()
    base = b.blob(b"base layer")
    one = b.manifest(layers=[base, b.blob(b"one")])
    two = b.manifest(layers=[base, b.blob(b"two")])
    b.entry(one, "one")
    b.entry(two, "two")
    return b, one["digest"], two["digest"]


def test_a_view_refuses_everything_but_delete():
    b, one, _ = _two_images()
    graph = og.build_graph(b.layout())
    view = og.neighbourhood(og.WholeGraph(graph), [one], og.Policy())
    assert len(view) < len(graph)
    for plan in (lambda: og.plan_gc(view), lambda: og.plan_remove(view, [one]),
                 lambda: og.plan_untag(view, [one])):
        with pytest.raises(ValueError, match="whole graph"):
            plan()
    with pytest.raises(ValueError, match="root rule"):
        og.plan_delete(view, [one], og.Policy(keep_untagged=True))
    with pytest.raises(ValueError, match="grace"):
        og.neighbourhood(og.WholeGraph(graph), [one], og.Policy(grace=60))
    with pytest.raises(ValueError, match="by digest"):  # its index holds its own entries only
        og.plan_delete(view, ["one"], og.Policy())


def test_a_view_keeps_the_shared_layer_and_says_who_shares_it():
    b, one, two = _two_images()
    graph = og.build_graph(b.layout())
    view = og.neighbourhood(og.WholeGraph(graph), [one], og.Policy())
    plan = og.plan_delete(view, [one], og.Policy())
    assert plan == og.plan_delete(graph, [one], og.Policy())
    shared = [k for k in plan.kept if k.kind == "shared"]
    # the base layer and the (identical) config, kept for the other image -- from the rim
    assert len(shared) == 2 and {k.via for k in shared} == {two}
    assert two in view and view.nodes[two]["tags"] == frozenset({"two"})
    # a rim node: only its edges into the core are the view's business
    assert set(view.succ[two]) < set(graph.succ[two])
    assert og.digest_bytes(b"two") not in view


def test_a_layer_under_many_images_brings_one_of_them_into_the_view():
    b = Builder()
    base = b.blob(b"base layer")
    images = [b.manifest(layers=[base, b.blob(f"own {i}")]) for i in range(50)]
    for i, img in enumerate(images):
        b.entry(img, f"img:{i}")
    graph = og.build_graph(b.layout())
    target = images[7]["digest"]
    view = og.neighbourhood(og.WholeGraph(graph), [target], og.Policy())
    others = sorted(img["digest"] for img in images if img["digest"] != target)
    held = set(view.pred[base["digest"]])
    assert held == {target, others[0]}  # itself, and the first of the 49 others
    plan = og.plan_delete(view, [target], og.Policy())
    assert plan == og.plan_delete(graph, [target], og.Policy())
    assert [k.via for k in plan.kept if k.digest == base["digest"]] == [others[0]]


@settings(max_examples=150, deadline=None)
@given(generated_layouts(), policies(), st.data())
def test_liveness_left_after_a_plans_deletions_is_liveness_recomputed(g, policy, data) -> None:
    """:func:`ocigraph.rows.lost_liveness` (how a store follows an apply without rebuilding):
    the live set before, less what a delete plan removes and less what it says stops being
    live, is the live set of the graph that is left, computed from scratch -- under both root
    rules, with the roots index.json keeps."""
    from ocigraph.rows import lost_liveness

    graph = og.build_graph(og.layout_from_bytes(g.index_json, g.blobs))
    policy = og.Policy.preset(policy.name, keep_untagged=policy.keep_untagged,
                              cascade_referrers=policy.cascade_referrers, force=policy.force)
    refs = data.draw(delete_targets(g, min_size=0, max_size=2), label="refs")
    if not refs:
        return  # (an empty layout: nothing to delete)
    try:
        plan = og.plan_delete(graph, refs, policy)
    except og.OcigraphError:
        return
    gone = plan.deleted_digests()
    if any(p not in gone for d in gone for p in graph.predecessors(d)):
        return  # a forced delete of a node still referenced: its node stays (no store follows)
    changes = {c.position: c.action for c in plan.index_changes}
    entries = [e for e in graph.graph["index"].entries if changes.get(e.position) != "drop"]
    left = nx.DiGraph(graph)
    left.remove_nodes_from(gone)

    def flows_to(n: str) -> list[str]:
        return [*graph.successors(n),
                *(p for p in graph.predecessors(n) if "subject" in graph.edges[p, n]["roles"])]

    def flows_from(n: str) -> list[str]:
        return [*graph.predecessors(n),
                *(s for s in graph.successors(n) if "subject" in graph.edges[n, s]["roles"])]

    for keep_untagged in (False, True):
        before = og.live_set(graph, og.Policy(keep_untagged=keep_untagged))
        was_root = og.roots(graph, og.Policy(keep_untagged=keep_untagged))
        now_root = {e.digest for e in entries if keep_untagged
                    or (e.tag is not None and changes.get(e.position) != "untag")} - gone
        seeds = {s for d in gone for s in graph.successors(d)} | (was_root - now_root)
        lost = lost_liveness(seeds, gone, before.__contains__, now_root.__contains__,
                             flows_to, flows_from)
        assert before - gone - lost == og.live_set(left, root_set=now_root)
