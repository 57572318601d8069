"""A delete planned from the targets' neighbourhood is the delete planned from the whole graph.

:func:`ocigraph.neighbourhood` is what lets a delete in a million-blob layout read a few hundred
rows of ``io_adapters.store`` instead of building the graph; these tests pin its one promise --
same plan, same errors -- on generated layouts, and what a view refuses.
"""

from __future__ import annotations

import networkx as nx
import pytest
from builder import Builder
from hypothesis import given, settings
from hypothesis import strategies as st

import ocigraph as og
from ocigraph.testing import layout_and_targets, policies


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


@settings(max_examples=200)
@given(layout_and_targets(max_size=2), st.booleans())
def test_a_view_is_small_and_its_facts_are_the_whole_graphs(case, keep_untagged):
    layout, refs = case
    graph = og.build_graph(layout)
    policy = og.Policy(keep_untagged=keep_untagged)
    source = og.WholeGraph(graph)
    digests = sorted({og.resolve_in(source, r) for r in refs})
    view = og.neighbourhood(source, digests, policy)
    assert set(view) <= set(graph)
    whole = og.liveness(graph, policy)
    facts = og.liveness(view, policy)
    assert facts.live == whole.live & set(view)
    assert facts.unusable == whole.unusable
    for n in view:  # attributes as built; every edge of the view is an edge of the graph
        assert view.nodes[n] == graph.nodes[n]
    for u, v, roles in view.edges(data="roles"):
        assert graph.edges[u, v]["roles"] == roles
    for t in digests:  # a target's whole adjacency is there
        assert set(view.pred[t]) == set(graph.pred[t])
        assert set(view.succ[t]) == set(graph.succ[t])
    core = view.graph["core"]
    assert set(digests) <= core
    for n in core:  # every edge out; predecessors: those in the core, and the first other one
        assert set(view.succ[n]) == set(graph.succ[n])
        inside = set(graph.pred[n]) & core
        others = set(graph.pred[n]) - core
        assert inside <= set(view.pred[n]) <= set(graph.pred[n])
        assert not others or min(others) in view.pred[n]


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
