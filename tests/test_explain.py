"""Plans and refusals say the true reason: why a successor is kept, who holds what the guard
protects, why a broken manifest matters.  A tagged node is explained as tagged, never as "live
via" its own signature."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from builder import CONFIG, Builder
from hypothesis import event, given, note, settings

import ocigraph as og
from ocigraph.present import format_plan_text
from ocigraph.testing import delete_targets, generated_layouts, policies

ORAS = og.Policy.preset("oras")


def image(b: Builder, name: str, *layers: dict) -> dict:
    return b.manifest(b.blob(f"config of {name}", CONFIG), [b.blob(f"layer of {name}"), *layers])


def kept(plan: og.Plan, digest: str) -> og.Kept:
    (k,) = [k for k in plan.kept if k.digest == digest]
    return k


def ordered_names(count: int, key, make):
    """``make(name)`` for names ``n0, n1, ...`` until ``key`` of the results is increasing:
    content addressing picks digests, so a test that needs one smaller than another tries."""
    for i in itertools.count():
        made = [make(f"try {i} #{j}") for j in range(count)]
        if all(key(a) < key(b) for a, b in itertools.pairwise(made)):
            return made
    raise AssertionError("unreachable")


# -- (i) a tagged successor is kept as a root; a shared one names a live, preferably tagged, holder --


def test_a_tagged_successor_is_kept_as_root_not_as_shared_via_its_own_signature():
    b = Builder()
    app = image(b, "app")
    sig = b.manifest(layers=[b.blob("signature")], subject=app)  # listed nowhere
    bundle = b.index([app])
    b.entry(app, "app")
    b.entry(bundle, "bundle")
    g = b.graph()
    assert sig["digest"] in g.pred[app["digest"]]  # the signature is a predecessor of app
    plan = og.plan_delete(g, ["bundle"])
    assert plan.deleted_digests() == {bundle["digest"]}
    assert kept(plan, app["digest"]) == og.Kept(app["digest"], "root")
    assert "shared via" not in format_plan_text(plan)


def test_a_shared_layer_names_a_tagged_holder_before_a_smaller_untagged_one():
    def build(name: str):
        b = Builder()
        shared = b.blob("the shared layer")
        target = image(b, "target", shared)
        garbage, untagged, tagged = ordered_names(
            3, lambda m: m["digest"], lambda n: image(b, f"{name} {n}", shared))
        b.entry(target, "target")
        b.entry(b.index([untagged]), "bundle")  # untagged, live through a tagged index
        b.entry(tagged, "tagged")
        return b, shared, garbage, untagged, tagged

    b, shared, garbage, untagged, tagged = build("holder")
    plan = og.plan_delete(b.graph(), ["target"])
    assert kept(plan, shared["digest"]) == og.Kept(shared["digest"], "shared", tagged["digest"])
    b.entries.pop()  # no tagged holder left: the smallest live one, not the smaller garbage
    plan = og.plan_delete(b.graph(), ["target"])
    assert garbage["digest"] < untagged["digest"]
    assert kept(plan, shared["digest"]) == og.Kept(shared["digest"], "shared", untagged["digest"])


# -- (ii) a successor only garbage holds says so, and the next gc removes both --------------------


def test_a_successor_held_only_by_garbage_says_so_and_the_next_gc_removes_both():
    b = Builder()
    shared = b.blob("the shared layer")
    target = image(b, "target", shared)
    garbage = image(b, "an old push nobody lists", shared)
    b.entry(target, "target")
    g = b.graph()
    plan = og.plan_delete(g, ["target"])
    k = kept(plan, shared["digest"])
    assert k == og.Kept(shared["digest"], "held-by-garbage", garbage["digest"])
    line = next(line for line in format_plan_text(plan).splitlines()
                if line.lstrip().startswith(og.short_digest(shared["digest"])))
    assert line.endswith(f"held by garbage {og.short_digest(garbage['digest'])}; "
                         "the next gc removes both")
    after = og.simulate(b.layout(), plan)
    assert og.plan_gc(og.build_graph(after)).deleted_digests() >= {shared["digest"],
                                                                   garbage["digest"]}


def test_a_holder_live_only_through_the_deleted_target_counts_as_garbage():
    # tagged index T lists P and N; garbage index Q lists P too; P and N share layer L.
    # Deleting T leaves P held by Q alone, so L, held by P, is garbage after the delete too.
    b = Builder()
    layer = b.blob("L")
    p, n = image(b, "P", layer), image(b, "N", layer)
    t = b.index([p, n])
    q = b.index([dict(p, annotations={"why": "an old index nobody lists"})])
    b.entry(t, "T")
    g = b.graph()
    assert p["digest"] in og.live_set(g)  # before the delete P is live, through T
    plan = og.plan_delete(g, ["T"])
    assert kept(plan, p["digest"]) == og.Kept(p["digest"], "held-by-garbage", q["digest"])
    assert kept(plan, layer["digest"]) == og.Kept(layer["digest"], "held-by-garbage", p["digest"])


def test_a_kept_referrer_of_garbage_is_held_by_garbage():
    b = Builder()
    old = image(b, "an old image nobody lists")
    sig = b.manifest(layers=[b.blob("its signature")], subject=old)
    bundle = b.index([sig])
    b.entry(bundle, "bundle")
    plan = og.plan_delete(b.graph(), ["bundle"])
    assert kept(plan, sig["digest"]) == og.Kept(sig["digest"], "held-by-garbage", old["digest"])
    b.entry(old, "old")  # once its subject is tagged, the signature lives as its referrer
    plan = og.plan_delete(b.graph(), ["bundle"])
    assert kept(plan, sig["digest"]) == og.Kept(sig["digest"], "referrer", old["digest"])


def test_a_forced_delete_of_a_manifest_an_index_still_lists_keeps_its_referrers_alive():
    # Found by the property below: with --force the target stays in the graph as a missing node
    # that the live index lists, so it is live, and so is a referrer of it and what that holds.
    b = Builder()
    img = image(b, "an image")
    shared = b.blob("a blob both signatures use")
    sig = b.manifest(layers=[shared], subject=img)
    b.entry(sig, "sig")
    sig_of_sig = b.manifest(layers=[shared, b.blob("its own")], subject=sig)
    b.entry(sig_of_sig)  # untagged: live only as a referrer
    b.entry(b.index([sig]), "bundle")
    policy = og.Policy.preset("default", cascade_referrers=False, force=True)
    plan = og.plan_delete(b.graph(), ["sig"], policy)
    after = og.build_graph(og.simulate(b.layout(), plan))
    assert sig["digest"] in {d.digest for d in plan.deletions}
    assert sig_of_sig["digest"] in og.live_set(after, policy)
    assert kept(plan, shared["digest"]) == og.Kept(shared["digest"], "shared", sig_of_sig["digest"])


@settings(max_examples=300)
@given(generated_layouts().filter(lambda g: bool(g.known)).flatmap(
    lambda g: delete_targets(g).map(lambda refs: (g, refs))), policies(force=True))
def test_kept_successors_are_live_after_the_plan_exactly_unless_held_by_garbage(case, policy):
    g, refs = case
    layout = g.layout()
    try:
        plan = og.plan_delete(og.build_graph(layout), refs, policy)
    except og.BrokenManifestError:
        return
    after = og.build_graph(og.simulate(layout, plan))
    live = og.live_set(after, policy)
    for k in plan.kept:
        note(f"{g.label_of(k.digest)}: {k.kind} via {k.via and g.label_of(k.via)}")
        event(f"kept {k.kind}")
        assert (k.digest in live) == (k.kind != "held-by-garbage"), k
        if k.kind == "shared":
            assert k.via in live and k.via in after.pred[k.digest]
            if any(after.nodes[p]["tags"] for p in after.pred[k.digest]):
                assert after.nodes[k.via]["tags"], "a tagged holder is named first"
        if k.kind == "held-by-garbage" and k.via is not None:
            assert k.via not in live
        if k.kind == "root":
            assert after.nodes[k.digest]["tags"] or policy.keep_untagged


# -- (iii) the guard says --force, and how many hold the target ------------------------------------


def test_the_guard_names_its_one_holder_and_says_pass_force():
    b = Builder()
    layer = b.blob("layer")
    app = image(b, "app", layer)
    b.entry(app, "app")
    with pytest.raises(og.GuardError) as err:
        og.plan_delete(b.graph(), [layer["digest"]])
    message = str(err.value)
    assert message == (f"refusing to delete {layer['digest']}: live {app['digest']} (tagged app) "
                       f"still references it (as layer); delete {app['digest']} too, or pass --force")


def test_the_guard_counts_several_holders_and_names_the_first_three_tagged_first():
    b = Builder()
    layer = b.blob("a base layer")
    apps = [image(b, f"app {i}", layer) for i in range(5)]
    for i, app in enumerate(apps[1:], 1):
        b.entry(app, f"app-{i}")
    b.entry(b.index([apps[0]]), "bundle")  # apps[0] is live but untagged
    with pytest.raises(og.GuardError) as err:
        og.plan_delete(b.graph(), [layer["digest"]])
    e = err.value
    tagged = sorted(a["digest"] for a in apps[1:])
    assert e.holders == (*tagged, apps[0]["digest"]) and e.holder == tagged[0]
    message = str(e)
    assert f"5 live manifests or indexes still reference it: {tagged[0]} (tagged " in message
    assert f"(as layer), {tagged[1]}, {tagged[2]} and 2 more; " in message
    assert message.endswith("delete them too, or pass --force")
    assert tagged[3] not in message and apps[0]["digest"] not in message
    assert og.plan_delete(b.graph(), [layer["digest"]], dataclasses.replace(og.Policy(), force=True))


# -- (iv) a tagged node is tagged, not live via its own signature ----------------------------------


def test_a_tagged_broken_manifest_is_not_explained_by_its_signature():
    b = Builder()
    app = image(b, "app")
    sig = b.manifest(layers=[b.blob("signature")], subject=app)
    b.blobs[app["digest"]] += b" "  # no longer hashes to its digest: broken
    b.entry(app, "app")
    g = b.graph()
    assert g.nodes[app["digest"]]["status"] == "broken" and sig["digest"] in og.live_set(g)
    assert og.why_live(g, app["digest"]) == (app["digest"],)
    assert og.liveness(g).unusable == ((app["digest"], g.nodes[app["digest"]]["error"], None),)
    with pytest.raises(og.BrokenManifestError) as err:
        og.plan_gc(g)
    assert sig["digest"] not in str(err.value) and "live via" not in str(err.value)


def test_a_broken_manifest_names_a_tagged_holder_first_and_no_holder_when_it_is_a_root():
    b = Builder()
    inner = image(b, "inner")
    untagged_index, tagged_index = ordered_names(
        2, lambda m: m["digest"], lambda n: b.index([dict(inner, annotations={"n": n})]))
    b.blobs[inner["digest"]] += b" "
    b.entry(tagged_index, "v1")
    b.entry(untagged_index)
    g = b.graph()
    for policy in (og.Policy(), og.Policy(keep_untagged=True)):
        unusable = og.liveness(g, policy).unusable
        assert unusable == ((inner["digest"], g.nodes[inner["digest"]]["error"],
                             tagged_index["digest"]),)  # tagged before the smaller untagged
    b.entry(inner)  # listed itself: under keep_untagged it is a root, live for no other reason
    g = b.graph()
    assert og.liveness(g, og.Policy(keep_untagged=True)).unusable[0][2] is None
    assert og.liveness(g).unusable[0][2] == tagged_index["digest"]
