"""Targeted tests of the core's rules (SEMANTICS §1-§6); the scenario cases live in cases/."""

from __future__ import annotations

import dataclasses

import networkx as nx
import orjson
import pytest
from builder import CONFIG, Builder

import ocigraph as og

ORAS = og.Policy.preset("oras")
SPEC = og.Policy.preset("spec")
DEFAULT = og.Policy.preset("default")


def image(b: Builder, name: str, *, shared: dict | None = None) -> dict:
    layers = [b.blob(f"layer of {name}")] + ([shared] if shared else [])
    return b.manifest(b.blob(f"config of {name}", CONFIG), layers)


# -- §1 the graph ------------------------------------------------------------------------------

def test_blob_referenced_under_two_media_types_is_one_node():
    b = Builder()
    shared = b.blob("shared")
    other_type = dict(shared, mediaType="application/octet-stream")
    m1 = b.manifest(layers=[shared])
    m2 = b.manifest(layers=[other_type], config=b.blob("c2", CONFIG))
    b.entry(m1, "one")
    b.entry(m2, "two")
    g = b.graph()
    node = g.nodes[shared["digest"]]
    assert node["media_types"] == {og.OCI_MANIFEST and "application/vnd.oci.image.layer.v1.tar",
                                   "application/octet-stream"}
    assert sorted(g.predecessors(shared["digest"])) == sorted([m1["digest"], m2["digest"]])
    plan = og.plan_delete(g, ["one"])
    assert shared["digest"] not in plan.deleted_digests()
    assert og.Kept(shared["digest"], "shared", m2["digest"]) in plan.kept


def test_subject_edge_runs_from_referrer_to_subject():
    b = Builder()
    img = image(b, "a")
    sig = b.manifest(layers=[b.blob("sig")], subject=img, artifact_type="application/sig")
    b.entry(img, "a")
    g = b.graph()
    assert g.edges[sig["digest"], img["digest"]]["roles"] == {"subject"}
    assert og.referrers_of(g, img["digest"]) == (sig["digest"],)
    assert g.nodes[sig["digest"]]["artifact_type"] == "application/sig"
    assert not g.nodes[sig["digest"]]["indexed"]


def test_docker_manifest_ignores_subject_and_oci_manifest_follows_it():
    b = Builder()
    target = image(b, "t")
    doc = {"schemaVersion": 2, "config": b.blob("cfg", CONFIG), "layers": [], "subject": target}
    as_docker = b.blob(orjson.dumps(doc), og.DOCKER_MANIFEST)
    b.entry(as_docker, "d")
    g = b.graph()
    assert not g.has_edge(as_docker["digest"], target["digest"])
    b2 = Builder()
    b2.blobs.update(b.blobs)
    b2.entry(dict(as_docker, mediaType=og.OCI_MANIFEST), "d")
    assert b2.graph().edges[as_docker["digest"], target["digest"]]["roles"] == {"subject"}


def test_absent_blob_is_a_node_not_an_error_and_graph_is_frozen_with_immutable_attrs():
    b = Builder()
    gone = b.blob("never written", present=False)
    m = b.manifest(layers=[gone])
    b.entry(m, "x")
    g = b.graph()
    assert g.nodes[gone["digest"]]["present"] is False
    assert nx.is_frozen(g)
    with pytest.raises(nx.NetworkXError):
        g.add_node("sha256:" + "0" * 64)
    for _, attrs in g.nodes(data=True):
        for v in attrs.values():
            assert isinstance(v, (str, int, float, bool, frozenset, tuple, type(None)))


def test_manifest_whose_bytes_do_not_hash_is_broken_not_a_crash():
    b = Builder()
    m = image(b, "a")
    b.blobs[m["digest"]] = b.blobs[m["digest"]] + b" "
    b.entry(m, "a")
    g = b.graph()
    assert g.nodes[m["digest"]]["status"] == "broken"
    with pytest.raises(og.BrokenManifestError, match=m["digest"]):
        og.plan_gc(g)


def test_garbage_broken_manifest_is_swept_and_broken_target_can_be_deleted():
    b = Builder()
    bad = b.blob(b"{not json", og.OCI_MANIFEST)
    b.entry(bad, "bad")
    g = b.graph()
    assert g.nodes[bad["digest"]]["error"] == "not valid JSON"
    assert og.plan_delete(g, ["bad"]).deleted_digests() == {bad["digest"]}
    b.entries.clear()
    b.entry(bad)  # untagged: not a root, so it is garbage and may go
    assert og.plan_gc(b.graph()).deleted_digests() == {bad["digest"]}


def test_live_missing_manifest_stops_gc_with_a_message_naming_it():
    b = Builder()
    gone = b.manifest(layers=[b.blob("l")], present=False)
    idx = b.index([gone])
    b.entry(idx, "v1")
    with pytest.raises(og.BrokenManifestError) as err:
        og.plan_gc(b.graph())
    assert gone["digest"] in str(err.value) and idx["digest"] in str(err.value)


# -- §2 roots and liveness -----------------------------------------------------------------------

def test_untagged_entries_are_roots_only_under_keep_untagged():
    b = Builder()
    m = image(b, "u")
    b.entry(m)
    g = b.graph()
    assert og.plan_gc(g, DEFAULT).deleted_digests() >= {m["digest"]}
    assert og.plan_gc(g, SPEC).is_empty


def test_referrer_chain_of_live_image_is_live_and_why_live_explains():
    b = Builder()
    img = image(b, "a")
    sbom = b.manifest(layers=[b.blob("sbom")], subject=img)
    sig = b.manifest(layers=[b.blob("sig of sbom")], subject=sbom)
    b.entry(img, "a")
    g = b.graph()
    live = og.live_set(g)
    assert {img["digest"], sbom["digest"], sig["digest"]} <= live
    assert og.why_live(g, sig["digest"]) == (img["digest"], sbom["digest"], sig["digest"])
    assert og.plan_gc(g).is_empty


class CraftedSource:
    """Manifests given as parsed values, for graphs whose bytes cannot exist: a ``subject``
    cycle would need a manifest to contain its own digest.  Other blobs parse as usual."""

    def __init__(self, crafted: dict, blobs: dict) -> None:
        self.crafted, self.blobs = crafted, blobs

    def read_manifests(self, digests):
        return {d: self.crafted.get(d) or og.parse_manifest(d, self.blobs.get(d)) for d in digests}


def subject_ring(b: Builder, size: int, first: int) -> tuple[list[str], list[str], dict]:
    """``size`` crafted manifests, each with its own layer and the next one as ``subject``;
    the last one's subject is the first (a ring; two of them: A subject B, B subject A)."""
    ring = [f"sha256:{first + i:064x}" for i in range(size)]
    layers = [b.blob(f"layer of ring {first} member {i}") for i in range(size)]
    crafted = {
        d: og.Manifest(digest=d, media_type=og.OCI_MANIFEST, size=10, refs=(
            ("subject", og.Descriptor(og.OCI_MANIFEST, ring[(i + 1) % size], 10)),
            ("layers", og.Descriptor(layers[i]["mediaType"], layers[i]["digest"], layers[i]["size"])),
        ))
        for i, d in enumerate(ring)
    }
    return ring, [layer["digest"] for layer in layers], crafted


def test_long_referrer_chain_and_subject_cycle_terminate():
    b = Builder()
    prev = image(b, "base")
    b.entry(prev, "base")
    for i in range(3000):
        prev = b.manifest(layers=[b.blob(f"r{i}")], subject=prev)
    g = b.graph()
    assert len(og.live_set(g)) == g.number_of_nodes()  # everything hangs off the tag
    plan = og.plan_delete(g, ["base"])
    assert len(plan.deletions) == g.number_of_nodes()
    assert len(set(plan.deleted_digests())) == len(plan.deletions)

    # real subject cycles: A subject B and B subject A; and a ring of 500
    b = Builder()
    pair, pair_layers, crafted = subject_ring(b, 2, 1)
    ring, ring_layers, more = subject_ring(b, 500, 1000)
    crafted |= more
    entries = [{"mediaType": og.OCI_MANIFEST, "digest": pair[0], "size": 10,
                "annotations": {og.REF_NAME: "a"}},
               {"mediaType": og.OCI_MANIFEST, "digest": ring[0], "size": 10}]  # untagged
    index = og.parse_index(orjson.dumps({"schemaVersion": 2, "manifests": entries}))
    blobs = {d: og.BlobInfo(10) for d in crafted} | {d: og.BlobInfo(len(data))
                                                    for d, data in b.blobs.items()}
    g = og.build_graph(og.Layout(index, blobs, CraftedSource(crafted, b.blobs)))
    assert g.has_edge(pair[0], pair[1]) and g.has_edge(pair[1], pair[0])
    assert g.has_edge(ring[-1], ring[0]) and og.referrers_of(g, ring[0]) == (ring[-1],)
    live = og.live_set(g)
    assert set(pair) | set(pair_layers) <= live  # B is A's subject, so live; A is tagged
    assert not live & (set(ring) | set(ring_layers))  # the ring is untagged: garbage
    assert og.why_live(g, pair[1]) == (pair[0], pair[1])
    assert og.why_live(g, ring[7]) is None
    ring_nodes = set(ring) | set(ring_layers)
    assert og.plan_gc(g).deleted_digests() == ring_nodes
    assert og.plan_gc(g, SPEC).is_empty  # an untagged entry is a root: the whole ring lives
    plan = og.plan_delete(g, [ring[250]])
    assert plan.deleted_digests() == ring_nodes and len(plan.deletions) == len(ring_nodes)
    order = [d.digest for d in plan.deletions]
    assert order.index(ring[0]) < order.index(ring_layers[0])  # a manifest before its layer
    plan = og.plan_delete(g, ["a"])
    assert plan.deleted_digests() == set(pair) | set(pair_layers)
    assert {d.reason.kind for d in plan.deletions} == {"target", "referrer-of", "orphaned-by"}
    plan = og.plan_remove(g, ["a"])
    assert plan.deleted_digests() == set(pair) | set(pair_layers)
    assert og.plan_untag(g, ["a"]).deletions == ()


def test_referrer_not_listed_anywhere_is_found_and_kept_alive_by_its_subject():
    b = Builder()
    img = image(b, "a")
    sig = b.manifest(layers=[b.blob("sig")], subject=img, artifact_type="application/sig")
    junk_layer = b.blob(b"\x1f\x8b not a manifest")
    b.entry(img, "a")
    g = b.graph()
    assert g.has_edge(sig["digest"], img["digest"])
    assert g.nodes[sig["digest"]]["status"] == "ok"
    assert g.nodes[junk_layer["digest"]]["status"] == "blob"
    assert og.plan_gc(g).deleted_digests() == {junk_layer["digest"]}


def test_cycle_through_subject_and_manifests_terminates_in_every_operation():
    # x lists y; y's subject is x, and y lists itself.  Content addressing makes such bytes
    # impossible to hash, so a crafted source answers with the parsed values directly.
    b = Builder()
    leaf = b.blob("leaf")
    x_digest = "sha256:" + "1" * 64
    y_digest = "sha256:" + "2" * 64
    x = og.Manifest(digest=x_digest, media_type=og.OCI_INDEX, refs=(
        ("manifests", og.Descriptor(og.OCI_MANIFEST, y_digest, 10)),))
    y = og.Manifest(digest=y_digest, media_type=og.OCI_MANIFEST, refs=(
        ("subject", og.Descriptor(og.OCI_INDEX, x_digest, 10)),
        ("layers", og.Descriptor(leaf["mediaType"], leaf["digest"], leaf["size"])),
        ("manifests", og.Descriptor(og.OCI_MANIFEST, y_digest, 10)),))

    class Source:
        def read_manifests(self, digests):
            return {d: {x_digest: x, y_digest: y}.get(d) or og.parse_manifest(d, b.blobs.get(d))
                    for d in digests}

    index = og.parse_index(orjson.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": og.OCI_INDEX, "digest": x_digest, "size": 10}]}))
    blobs = {d: og.BlobInfo(10) for d in (x_digest, y_digest)} | {leaf["digest"]: og.BlobInfo(4)}
    g = og.build_graph(og.Layout(index, blobs, Source()))
    assert g.has_edge(x_digest, y_digest) and g.has_edge(y_digest, x_digest)
    assert og.plan_gc(g).deleted_digests() == {x_digest, y_digest, leaf["digest"]}
    plan = og.plan_delete(g, [x_digest], ORAS)
    assert plan.deleted_digests() == {x_digest, y_digest, leaf["digest"]}
    assert len(plan.deletions) == 3


# -- §3 Delete ---------------------------------------------------------------------------------

def worked_example():
    b = Builder()
    d, e, f, h = (b.blob(x) for x in ("D", "E", "F", "H"))
    bb = b.manifest(b.blob("cfgB", CONFIG), [d, e])
    c = b.manifest(b.blob("cfgC", CONFIG), [e, f])
    a = b.index([bb, c])
    g_art = b.manifest(b.blob("cfgG", CONFIG), [h], subject=c)
    b.entry(a, "A")
    return b, dict(A=a, B=bb, C=c, D=d, E=e, F=f, G=g_art, H=h)


def test_worked_example_default_refuses_naming_the_live_index():
    b, n = worked_example()
    with pytest.raises(og.GuardError) as err:
        og.plan_delete(b.graph(), [n["C"]["digest"]], DEFAULT)
    assert err.value.holder == n["A"]["digest"]
    assert n["A"]["digest"] in str(err.value)


def test_worked_example_oras_deletes_c_f_g_h_and_their_configs():
    b, n = worked_example()
    g = b.graph()
    plan = og.plan_delete(g, [n["C"]["digest"]], ORAS)
    cfg_c = next(s for s, r in og.successors_of(g, n["C"]["digest"]) if "config" in r)
    cfg_g = next(s for s, r in og.successors_of(g, n["G"]["digest"]) if "config" in r)
    assert plan.deleted_digests() == {n[k]["digest"] for k in "CFGH"} | {cfg_c, cfg_g}
    reasons = plan.reasons()
    assert reasons[n["G"]["digest"]] == og.Reason("referrer-of", n["C"]["digest"])
    assert reasons[n["F"]["digest"]] == og.Reason("orphaned-by", n["C"]["digest"])
    assert og.Kept(n["E"]["digest"], "shared", n["B"]["digest"]) in plan.kept
    # predecessors first: G before C (G -> C), C before F
    order = [d.digest for d in plan.deletions]
    assert order.index(n["G"]["digest"]) < order.index(n["C"]["digest"]) < order.index(n["F"]["digest"])


def test_force_overrides_the_guard():
    b, n = worked_example()
    plan = og.plan_delete(b.graph(), [n["C"]["digest"]], dataclasses.replace(DEFAULT, force=True))
    assert n["C"]["digest"] in plan.deleted_digests()


def test_keep_referrers_leaves_referrer_and_subject_link_does_not_block():
    b = Builder()
    img = image(b, "a")
    sig = b.manifest(layers=[b.blob("sig")], subject=img)
    b.entry(img, "a")
    b.entry(sig, "sig")  # a tagged, live referrer: its subject edge must not trigger the guard
    plan = og.plan_delete(b.graph(), ["a"], dataclasses.replace(DEFAULT, cascade_referrers=False))
    assert sig["digest"] not in plan.deleted_digests()
    assert img["digest"] in plan.deleted_digests()


def test_tagged_referrer_is_deleted_by_cascade_with_its_entry():
    b = Builder()
    img = image(b, "a")
    sig = b.manifest(layers=[b.blob("sig")], subject=img)
    b.entry(img, "a")
    b.entry(sig, "sig")
    plan = og.plan_delete(b.graph(), ["a"])
    assert sig["digest"] in plan.deleted_digests()
    assert {c.tag for c in plan.index_changes} == {"a", "sig"}


def test_deleting_a_referrer_takes_its_untagged_subject_but_not_a_tagged_one():
    b = Builder()
    img = image(b, "a")
    sig = b.manifest(layers=[b.blob("sig")], subject=img)
    b.entry(sig, "sig")
    g = b.graph()
    assert img["digest"] in og.plan_delete(g, ["sig"]).deleted_digests()
    b.entry(img, "a")
    assert img["digest"] not in og.plan_delete(b.graph(), ["sig"]).deleted_digests()


def test_tagged_orphan_keeps_its_subtree():
    b = Builder()
    inner = image(b, "inner")
    idx = b.index([inner])
    b.entry(idx, "idx")
    b.entry(inner, "inner")
    plan = og.plan_delete(b.graph(), ["idx"])
    assert plan.deleted_digests() == {idx["digest"]}
    assert og.Kept(inner["digest"], "root") in plan.kept


def test_ambiguous_tag_refuses_and_lists_both_digests_but_both_are_gc_roots():
    b = Builder()
    m1, m2 = image(b, "1"), image(b, "2")
    b.entry(m1, "latest")
    b.entry(m2, "latest")
    g = b.graph()
    with pytest.raises(og.AmbiguousRefError) as err:
        og.plan_delete(g, ["latest"])
    assert m1["digest"] in str(err.value) and m2["digest"] in str(err.value)
    assert og.plan_gc(g).is_empty


def test_unknown_and_malformed_refs_are_errors():
    g = Builder().graph()
    with pytest.raises(og.UnknownRefError):
        og.plan_delete(g, ["nope"])
    with pytest.raises(og.UnknownRefError):
        og.plan_delete(g, ["sha256:" + "a" * 64])
    with pytest.raises(og.InvalidDigestError):
        og.plan_delete(g, ["sha256:ABC"])


def test_tag_containing_a_colon_resolves_as_a_tag():
    b = Builder()
    m = image(b, "a")
    b.entry(m, "example.com/app:1.0")
    assert og.resolve_ref(b.graph(), "example.com/app:1.0") == m["digest"]


# -- untag and remove ----------------------------------------------------------------------------

def test_untag_keeps_an_untagged_entry_when_it_was_the_last_one_and_deletes_nothing():
    b = Builder()
    m = image(b, "a")
    b.entry(m, "a")
    b.entry(m, "b")
    g = b.graph()
    plan = og.plan_untag(g, ["a"])
    assert plan.deletions == () and [c.action for c in plan.index_changes] == ["drop"]
    plan = og.plan_untag(g, ["a", "b"])
    assert [c.action for c in plan.index_changes] == ["untag", "drop"]
    after = og.simulate(b.layout(), plan)
    assert [(e.digest, e.tag) for e in after.index.entries] == [(m["digest"], None)]
    with pytest.raises(og.UnknownRefError):
        og.plan_untag(g, ["zzz"])


def test_remove_only_untags_when_another_tag_or_a_tagged_index_keeps_it():
    b = Builder()
    m = image(b, "a")
    other = image(b, "o")
    idx = b.index([other])
    b.entry(m, "a")
    b.entry(m, "a2")
    b.entry(other, "o")
    b.entry(idx, "idx")
    g = b.graph()
    p = og.plan_remove(g, ["a"])
    assert p.deletions == () and [c.tag for c in p.index_changes] == ["a"]
    p = og.plan_remove(g, ["o"])
    assert p.deletions == ()
    p = og.plan_remove(g, ["a", "a2"])
    assert m["digest"] in p.deleted_digests()
    after = og.simulate(b.layout(), p)
    assert m["digest"] not in after.present_digests()
    assert og.plan_gc(og.build_graph(after)).is_empty


# -- grace ---------------------------------------------------------------------------------------

def test_young_blobs_are_roots_for_gc_and_never_orphaned():
    b = Builder()
    m = image(b, "young")
    b.entry(image(b, "kept"), "kept")
    lay = b.layout(mtimes={d: 1000.0 for d in b.blobs} | {m["digest"]: 1990.0}, now=2000.0)
    g = og.build_graph(lay, mtimes=True)
    assert "blobs" not in g.graph  # times are copied out; no adapter object stays in the graph
    assert dict(g.graph["mtimes"]) == {d: 1000.0 for d in b.blobs} | {m["digest"]: 1990.0}
    assert og.plan_gc(g, dataclasses.replace(DEFAULT, grace=60)).is_empty
    assert m["digest"] in og.plan_gc(g, DEFAULT).deleted_digests()


def test_grace_on_a_graph_built_without_mtimes_is_refused_with_the_fix():
    b = Builder()
    b.entry(image(b, "kept"), "kept")
    g = og.build_graph(b.layout(mtimes={d: 1000.0 for d in b.blobs}, now=2000.0))
    assert "mtimes" not in g.graph and "blobs" not in g.graph
    for plan in (lambda p: og.plan_gc(g, p), lambda p: og.plan_delete(g, ["kept"], p),
                 lambda p: og.plan_remove(g, ["kept"], p), lambda p: og.roots(g, p)):
        with pytest.raises(ValueError, match=r"build_graph\(layout, mtimes=True\)"):
            plan(dataclasses.replace(DEFAULT, grace=60))
    assert og.plan_gc(g, DEFAULT).is_empty  # without grace, times are not needed


# -- §6 plans ------------------------------------------------------------------------------------

def test_plan_json_is_deterministic_and_round_trips():
    b, n = worked_example()
    p1 = og.plan_delete(b.graph(), [n["C"]["digest"]], ORAS)
    p2 = og.plan_delete(b.graph(), [n["C"]["digest"]], ORAS)
    assert p1.to_json() == p2.to_json()
    assert og.Plan.from_json(p1.to_json()) == p1
    doc = orjson.loads(p1.to_json())
    assert doc["bytesFreed"] == p1.bytes_freed > 0
    assert {d["reason"] for d in doc["deletions"]} == {"target", "referrer-of", "orphaned-by"}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(ocigraphPlan=9), "version"),
    (lambda d: d["deletions"][0].update(digest="sha256:../../etc/passwd"), "invalid digest"),
    (lambda d: d["deletions"][0].update(reason="because"), "unknown reason"),
    (lambda d: d.update(bytesFreed=1), "bytesFreed"),
    (lambda d: d["indexChanges"].append(
        {"position": 0, "digest": d["deletions"][0]["digest"], "tag": None, "action": "rm -rf"}),
     "unknown action"),
    (lambda d: d["policy"].update(force="yes"), "boolean"),
    (lambda d: d["kept"][0].update(kind="because"), "unknown kind 'because'"),
    (lambda d: d["kept"][0].update(kind=["shared"]), "unknown kind"),
    (lambda d: d.update(operation="purge"), "unknown operation 'purge'"),
])
def test_bad_plan_json_is_a_plan_format_error(mutate, message):
    b, n = worked_example()
    doc = orjson.loads(og.plan_delete(b.graph(), [n["C"]["digest"]], ORAS).to_json())
    mutate(doc)
    with pytest.raises(og.PlanFormatError, match=message):
        og.Plan.from_json(orjson.dumps(doc))


def test_simulate_refuses_a_stale_plan_and_render_keeps_other_fields():
    b = Builder()
    m = image(b, "a")
    b.entry(m, "a")
    b.entry(image(b, "b"), "b")
    b.entries[1]["annotations"]["org.example.note"] = "keep me"
    raw = orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_INDEX, "manifests": b.entries,
                        "annotations": {"top": "level"}})
    lay = og.layout_from_bytes(raw, b.blobs)
    plan = og.plan_delete(og.build_graph(lay), ["a"])
    new = orjson.loads(og.render_index(lay.index, plan.index_changes))
    assert new["annotations"] == {"top": "level"} and new["mediaType"] == og.OCI_INDEX
    assert new["manifests"] == [b.entries[1]]
    stale = dataclasses.replace(plan, index_fingerprint="sha256:" + "1" * 64)
    with pytest.raises(og.StalePlanError):
        og.simulate(lay, stale)


def test_signature_listed_by_a_deleted_index_stays_while_its_image_is_tagged():
    # Found by the space accounting's cross-check: the literal orphan rule would delete `sig`,
    # which is live because its subject is tagged.
    b = Builder()
    img = image(b, "app")
    sig = b.manifest(layers=[b.blob("sig")], subject=img)
    bundle = b.index([img, sig])
    b.entry(img, "app")
    b.entry(bundle, "bundle")
    g = b.graph()
    for plan in (og.plan_remove(g, ["bundle"]), og.plan_delete(g, ["bundle"])):
        assert plan.deleted_digests() == {bundle["digest"]}
        assert og.Kept(sig["digest"], "referrer", img["digest"]) in plan.kept
        after = og.build_graph(og.simulate(b.layout(), plan))
        assert og.live_set(after) == og.live_set(g) - {bundle["digest"]}


def test_stale_plan_says_which_entries_moved_and_which_planned_blob_is_listed_again():
    b = Builder()
    m = image(b, "a")
    b.entry(m, "a")
    plan = og.plan_delete(b.graph(), ["a"])
    b.entries.insert(0, dict(image(b, "new"), annotations={og.REF_NAME: "new"}))
    b.entries.append(dict(m, annotations={og.REF_NAME: "again"}))
    with pytest.raises(og.StalePlanError) as err:
        og.simulate(b.layout(), plan)
    changes = err.value.changes
    assert any(c.startswith("entry 0 was a ") and "now new" in c for c in changes)
    assert f"{m['digest']} (planned for deletion) is now listed as tag again" in changes
