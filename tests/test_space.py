"""Space accounting (ocigraph.space): totals, unique and shared bytes per tag, and the layout's
live and reclaimable bytes -- checked against hand sums and against the planners."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from builder import CONFIG, Builder

import ocigraph as og
from ocigraph import space as space_module
from ocigraph.space import SpaceReport, format_space_text, space_by_tag

SIG = "application/vnd.example.signature"


def shop(*, untagged_img3: bool = False, garbage_user_of_l1: bool = False) -> tuple[Builder, dict[str, Any]]:
    """Three tags over shared content.

    ``app:1`` -> img1 (cfg1; L0, L1), signed by sig1 (sigcfg; S1), which nothing lists;
    ``app:2`` -> img2 (cfg2; L0, L2); ``multi`` -> idx (img2, img3 (cfg3; L3, L4 absent));
    G0 is a stray blob.  Optionally img3 also has an untagged entry, and an unreachable
    manifest gm (gcfg; L1) shares img1's layer L1.
    """
    b = Builder()
    d: dict[str, Any] = {}
    d["L0"] = b.blob(b"0" * 1000)
    d["L1"] = b.blob(b"1" * 200)
    d["L2"] = b.blob(b"2" * 30)
    d["L3"] = b.blob(b"3" * 4000)
    d["L4"] = b.blob(b"4" * 777, present=False)
    d["S1"] = b.blob(b"signature", SIG)
    d["G0"] = b.blob(b"g" * 50000)
    for i in (1, 2, 3):
        d[f"cfg{i}"] = b.blob(orjson.dumps({"config": i}), CONFIG)
    d["sigcfg"] = b.blob(b'{"sig":true}', CONFIG)
    d["img1"] = b.manifest(d["cfg1"], [d["L0"], d["L1"]])
    d["img2"] = b.manifest(d["cfg2"], [d["L0"], d["L2"]])
    d["img3"] = b.manifest(d["cfg3"], [d["L3"], d["L4"]])
    d["sig1"] = b.manifest(d["sigcfg"], [d["S1"]], subject=d["img1"], artifact_type=SIG)
    d["idx"] = b.index([d["img2"], d["img3"]])
    if garbage_user_of_l1:
        d["gcfg"] = b.blob(b'{"garbage":1}', CONFIG)
        d["gm"] = b.manifest(d["gcfg"], [d["L1"]])
    b.entry(d["img1"], "app:1")
    b.entry(d["img2"], "app:2")
    b.entry(d["idx"], "multi")
    if untagged_img3:
        b.entry(d["img3"])
    return b, d


def size(d: dict[str, Any], *names: str) -> int:
    return sum(d[n]["size"] for n in names)


def test_per_tag_numbers_equal_hand_sums() -> None:
    b, d = shop()
    r = space_by_tag(b.graph())
    app1, app2, multi = r.tag("app:1"), r.tag("app:2"), r.tag("multi")
    assert app1.total_bytes == size(d, "img1", "cfg1", "L0", "L1", "sig1", "sigcfg", "S1")
    assert app1.unique_bytes == size(d, "img1", "cfg1", "L1", "sig1", "sigcfg", "S1")
    assert app1.shared_bytes == size(d, "L0")
    assert (app1.blobs, app1.unique_blobs) == (7, 6)
    assert app2.total_bytes == size(d, "img2", "cfg2", "L0", "L2")
    assert app2.unique_bytes == 0  # multi's index lists img2 too
    assert multi.total_bytes == size(d, "idx", "img2", "cfg2", "L0", "L2", "img3", "cfg3", "L3")
    assert multi.unique_bytes == size(d, "idx", "img3", "cfg3", "L3")  # L4 is absent: 0 bytes
    assert [t.tag for t in r.tags] == ["app:1", "app:2", "multi"]
    assert all(t.digests == (d[n]["digest"],) and not t.ambiguous
               for t, n in zip(r.tags, ("img1", "img2", "idx"), strict=True))


def test_layout_numbers_equal_hand_sums() -> None:
    b, d = shop()
    lay = space_by_tag(b.graph()).layout
    everything = [n for n in d if n != "L4"]
    assert lay.present_bytes == size(d, *everything)
    assert lay.present_blobs == len(everything)
    assert lay.reclaimable_bytes == size(d, "G0")
    assert lay.reclaimable_blobs == 1
    assert lay.live_bytes == lay.present_bytes - size(d, "G0")
    assert lay.absent == 1
    assert lay.untagged_live_bytes == 0


@pytest.mark.parametrize("preset", ["default", "oras", "spec"])
@pytest.mark.parametrize("untagged_img3", [False, True])
def test_unique_bytes_agree_with_plan_remove_and_reclaimable_with_plan_gc(
        preset: str, untagged_img3: bool) -> None:
    b, _ = shop(untagged_img3=untagged_img3)
    g = b.graph()
    policy = og.Policy.preset(preset)
    r = space_by_tag(g, policy)
    for t in r.tags:
        assert t.unique_bytes == og.plan_remove(g, [t.tag], policy).bytes_freed, t.tag
    assert r.layout.reclaimable_bytes == og.plan_gc(g, policy).bytes_freed


def test_an_untagged_entry_under_keep_untagged_holds_its_image() -> None:
    b, d = shop(untagged_img3=True)
    lone = b.manifest(b.blob(b'{"lone":1}', CONFIG), [d["L3"], b.blob(b"5" * 321)])
    b.entry(lone)  # untagged only: live under spec, held by no tag
    g = b.graph()
    default, spec = space_by_tag(g), space_by_tag(g, og.Policy.preset("spec"))
    assert default.tag("multi").unique_bytes == size(d, "idx", "img3", "cfg3", "L3")
    assert spec.tag("multi").unique_bytes == size(d, "idx")
    assert spec.tag("multi").total_bytes == default.tag("multi").total_bytes
    assert spec.layout.untagged_live_bytes == lone["size"] + 10 + 321  # L3 is multi's too
    assert default.layout.untagged_live_bytes == 0
    assert default.layout.reclaimable_bytes == size(d, "G0") + lone["size"] + 10 + 321


def test_unique_bytes_count_what_garbage_still_points_at() -> None:
    """An unreachable manifest gm shares L1 with img1: removing app:1 keeps L1 (gm references
    it), the next GC frees it.  unique_bytes counts it: it is what the tag alone keeps alive."""
    b, d = shop(garbage_user_of_l1=True)
    layout = b.layout()
    g = og.build_graph(layout)
    app1 = space_by_tag(g).tag("app:1")
    assert app1.unique_bytes == size(d, "img1", "cfg1", "L1", "sig1", "sigcfg", "S1")
    remove = og.plan_remove(g, ["app:1"])
    assert remove.bytes_freed == app1.unique_bytes - size(d, "L1")
    after = og.build_graph(og.simulate(layout, remove))
    gc_before, gc_after = og.plan_gc(g).bytes_freed, og.plan_gc(after).bytes_freed
    assert app1.unique_bytes == remove.bytes_freed + gc_after - gc_before


def test_a_tagged_referrer_and_its_subject_hold_each_other() -> None:
    """The subject is a successor of its referrer, and the referrer is live with its subject:
    tagging the signature makes everything under app:1 shared by the two tags."""
    b, d = shop()
    b.entry(d["sig1"], "app:1-sig")
    r = space_by_tag(b.graph())
    assert r.tag("app:1").unique_bytes == r.tag("app:1-sig").unique_bytes == 0
    assert r.tag("app:1-sig").total_bytes == r.tag("app:1").total_bytes
    for t in r.tags:
        assert t.unique_bytes == og.plan_remove(b.graph(), [t.tag]).bytes_freed


def test_an_ambiguous_tag_covers_every_digest_it_names() -> None:
    b, _ = shop()
    one, two = b.blob(b"x" * 11), b.blob(b"y" * 13)
    b.entry(one, "dup")
    b.entry(two, "dup")
    r = space_by_tag(b.graph())
    dup = r.tag("dup")
    assert dup.ambiguous and dup.digests == (one["digest"], two["digest"])
    assert dup.total_bytes == dup.unique_bytes == 24
    assert "dup *" in format_space_text(r) and "ambiguous" in format_space_text(r)


def test_young_blobs_are_held_by_no_tag_and_not_reclaimable() -> None:
    b, d = shop()
    g = b.graph(mtimes={d["G0"]["digest"]: 1000.0}, now=1010.0)
    policy = og.Policy(grace=60)
    r = space_by_tag(g, policy)
    assert r.layout.reclaimable_bytes == 0 == og.plan_gc(g, policy).bytes_freed
    assert r.layout.untagged_live_bytes == size(d, "G0")


def test_tags_on_one_strongly_connected_component_share_one_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A subject and its referrers reach each other: fifty tagged signatures of one image are
    one closure walk, not fifty."""
    b = Builder()
    img = b.manifest(b.blob(b'{"c":0}', CONFIG), [b.blob(b"base" * 100)])
    b.entry(img, "image")
    for i in range(50):
        sig = b.manifest(b.blob(b"{}", CONFIG), [b.blob(f"signature {i}", SIG)], subject=img)
        b.entry(sig, f"sig-{i:02d}")
    g = b.graph()
    calls: list[Any] = []
    real = space_module._closure_space

    def counting(graph: Any, referrers: Any, start: Any) -> tuple[int, int]:
        calls.append(start)
        return real(graph, referrers, start)

    monkeypatch.setattr(space_module, "_closure_space", counting)
    r = space_by_tag(g)
    assert len(calls) == 1
    present = sum(a["size"] for _, a in g.nodes.items() if a["present"])
    assert {t.total_bytes for t in r.tags} == {present}
    assert {t.unique_bytes for t in r.tags} == {0}
    assert r.tag("sig-07").unique_bytes == og.plan_remove(g, ["sig-07"]).bytes_freed


def test_many_tags_sharing_a_base_layer() -> None:
    b = Builder()
    base = b.blob(b"b" * 5000)
    sizes = {}
    for i in range(2000):
        cfg = b.blob(f'{{"n":{i}}}', CONFIG)
        own = b.blob(f"layer {i}")
        img = b.manifest(cfg, [base, own])
        b.entry(img, f"t{i}")
        sizes[f"t{i}"] = (img["size"] + cfg["size"] + own["size"])
    r = space_by_tag(b.graph())
    assert len(r.tags) == 2000
    for t in r.tags:
        assert t.unique_bytes == sizes[t.tag]
        assert t.total_bytes == sizes[t.tag] + 5000
    assert r.layout.live_bytes == sum(sizes.values()) + 5000


def test_report_to_dict_and_json_are_stable() -> None:
    b, d = shop()
    r = space_by_tag(b.graph())
    doc = r.to_dict()
    assert doc["indexFingerprint"] == b.layout().index.fingerprint
    assert doc["policy"]["name"] == "default"
    app1 = doc["tags"][0]
    assert app1 == {
        "tag": "app:1", "digests": [d["img1"]["digest"]], "totalBytes": r.tags[0].total_bytes,
        "uniqueBytes": r.tags[0].unique_bytes, "sharedBytes": size(d, "L0"), "blobs": 7,
        "uniqueBlobs": 6, "ambiguous": False,
    }
    assert doc["layout"]["reclaimableBytes"] == size(d, "G0")
    assert orjson.loads(r.to_json()) == doc
    assert r.to_json() == space_by_tag(b.graph()).to_json()
    with pytest.raises(og.UnknownRefError):
        r.tag("nope")


def test_format_space_text_lists_tags_and_totals() -> None:
    b, d = shop()
    b.entry(b.blob(b"ctl"), "bell\x07")
    r = space_by_tag(b.graph())
    text = format_space_text(r, human=False)
    lines = text.splitlines()
    assert lines[0].split() == ["TAG", "TOTAL", "UNIQUE", "SHARED", "BLOBS"]
    app1 = r.tag("app:1")
    assert lines[1].split() == ["app:1", str(app1.total_bytes), str(app1.unique_bytes),
                                str(app1.shared_bytes), "7"]
    assert "bell\\x07" in text and "\x07" not in text
    assert f"reclaimable by gc {size(d, 'G0')} (1 blobs)" in lines[-1]
    by_unique = format_space_text(r, sort="unique", limit=1).splitlines()
    assert by_unique[1].startswith("multi") and by_unique[2] == "... 3 more tag(s)"
    assert og.format_bytes(size(d, "G0")) in format_space_text(r)
    with pytest.raises(ValueError, match="sort"):
        format_space_text(r, sort="size")


def test_an_empty_layout_has_no_tags_and_no_bytes() -> None:
    r = space_by_tag(Builder().graph())
    assert isinstance(r, SpaceReport) and r.tags == ()
    assert r.layout.present_bytes == r.layout.live_bytes == r.layout.reclaimable_bytes == 0


# -- against an independent oracle, on generated layouts --------------------------------------------

testing = pytest.importorskip("ocigraph.testing", reason="needs hypothesis")
hypothesis = pytest.importorskip("hypothesis")


def _present_bytes(g: Any, nodes: Any) -> int:
    return sum(g.nodes[n]["size"] for n in nodes if g.nodes[n]["present"])


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(generated=testing.generated_layouts(ambiguous_tags=True),
                  policy=testing.policies())
def test_space_matches_live_set_oracle_on_generated_layouts(generated: Any, policy: og.Policy) -> None:
    g = og.build_graph(generated.layout())
    r = space_by_tag(g, policy)
    roots = og.roots(g, policy)
    live = og.live_set(g, root_set=roots)
    assert r.layout.live_bytes == _present_bytes(g, live)
    assert r.layout.reclaimable_bytes == og.plan_gc(g, policy).bytes_freed
    entries = g.graph["index"].entries
    for t in r.tags:
        assert t.total_bytes == _present_bytes(g, og.live_set(g, root_set=t.digests))
        others = {e.digest for e in entries
                  if e.tag != t.tag and (e.tag is not None or policy.keep_untagged)}
        unique = live - og.live_set(g, root_set=others)
        assert t.unique_bytes == _present_bytes(g, unique), t.tag
        assert 0 <= t.unique_bytes <= t.total_bytes
