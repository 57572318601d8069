"""The manifest cache (io_adapters/cache.py): warm runs plan exactly what cold runs plan, and a
cache that is damaged, stale or someone else's is never believed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest
from builder import Builder

import ocigraph as og
from io_adapters import cache as cache_mod
from io_adapters.cache import CachingManifestSource, cache_file_for
from io_adapters.layout import read_layout

SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"


def _store() -> tuple[Builder, dict[str, dict[str, object]]]:
    """Tagged image and index, an untagged image with a listed signature, a signature nobody
    lists (found by reading unexplained blobs), an orphaned manifest, a dangling blob."""
    b = Builder()
    shared = b.blob("shared base layer")
    img = b.manifest(layers=[shared, b.blob("layer a1"), b.blob("layer a2")])
    b.entry(img, "app:1")
    p1 = b.manifest(layers=[shared, b.blob("amd64 layer")])
    p2 = b.manifest(layers=[b.blob("arm64 layer")])
    idx = b.index([p1, p2])
    b.entry(idx, "multi:1")
    old = b.manifest(layers=[b.blob("old layer")])
    b.entry(old)  # untagged: garbage under the default policy
    old_sig = b.manifest(layers=[b.blob("old sig")], subject=old, artifact_type=SIG)
    b.entry(old_sig)
    b.manifest(layers=[b.blob("img sig")], subject=img, artifact_type=SIG)  # listed nowhere
    orphan = b.manifest(layers=[b.blob("orphan layer")])
    b.blob("dangling")
    return b, {"img": img, "idx": idx, "old": old, "old_sig": old_sig, "orphan": orphan, "p2": p2}


def _write(b: Builder, root: Path) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_bytes(b.index_json())
    for digest, data in b.blobs.items():
        alg, hexd = digest.split(":", 1)
        (root / "blobs" / alg / hexd).write_bytes(data)
    return root


def _blob_file(root: Path, desc: dict[str, object]) -> Path:
    alg, hexd = str(desc["digest"]).split(":", 1)
    return root / "blobs" / alg / hexd


@pytest.fixture(autouse=True)
def _cache_small_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """These layouts are tiny; by default a layout this small gets no cache file."""
    monkeypatch.setattr(cache_mod, "_MIN_ENTRIES", 0)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, dict[str, dict[str, object]]]:
    b, named = _store()
    return _write(b, tmp_path / "layout"), named


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _gc_plan(root: Path, **kwargs: object) -> og.Plan:
    disk = read_layout(root, **kwargs)  # type: ignore[arg-type]
    return og.plan_gc(og.build_graph(disk.layout))


def _comparable(plan: og.Plan) -> bytes:
    return orjson.dumps({k: v for k, v in plan.to_dict().items() if k != "snapshotTime"})


def _source(root: Path, cache_dir: Path) -> CachingManifestSource:
    source = read_layout(root, cache_dir=cache_dir).layout.manifests
    assert isinstance(source, CachingManifestSource)
    source.ensure_loaded()
    return source


def test_a_warm_run_plans_exactly_what_a_cold_run_plans(layout, cache_dir) -> None:
    root, named = layout
    uncached = _gc_plan(root, cache=False)
    cold = read_layout(root, cache_dir=cache_dir)
    cold_graph = og.build_graph(cold.layout)
    assert cold.layout.manifests.cache.rejected == "no cache file"
    assert cold.layout.manifests.misses > 0 and cold.layout.manifests.hits == 0
    assert cache_file_for(root, cache_dir).is_file()

    warm = read_layout(root, cache_dir=cache_dir)
    warm_graph = og.build_graph(warm.layout)
    assert warm.layout.manifests.misses == 0  # manifests and sniffed non-manifests alike
    assert warm.layout.manifests.hits == cold.layout.manifests.misses
    assert list(warm_graph.nodes(data=True)) == list(cold_graph.nodes(data=True))
    assert list(warm_graph.edges(data=True)) == list(cold_graph.edges(data=True))
    for plan in (og.plan_gc(cold_graph), og.plan_gc(warm_graph)):
        assert _comparable(plan) == _comparable(uncached)
    delete = [og.plan_delete(g, ["app:1"]) for g in (cold_graph, warm_graph)]
    assert _comparable(delete[0]) == _comparable(delete[1])
    # the unlisted signature of app:1 was found (and planned) from the cache too
    sigs = [d for d in delete[1].deletions if d.reason.kind == "referrer-of"]
    assert [d.reason.via for d in sigs] == [named["img"]["digest"]]


def test_cached_manifests_equal_freshly_parsed_ones(layout, cache_dir) -> None:
    root, named = layout
    digests = sorted(str(d["digest"]) for d in named.values())
    fresh = read_layout(root, cache=False).layout.manifests.read_manifests(digests)
    _source(root, cache_dir).read_manifests(digests)
    source = _source(root, cache_dir)
    assert source.read_manifests(digests) == fresh
    assert source.misses == 0


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped byte", "empty",
                                    "bad segment header", "trailing junk"])
def test_a_damaged_cache_file_is_ignored_and_rewritten(layout, cache_dir, damage) -> None:
    root, _ = layout
    expected = _comparable(_gc_plan(root, cache=False))
    _gc_plan(root, cache_dir=cache_dir)
    path = cache_file_for(root, cache_dir)
    data = path.read_bytes()
    header_end = data.index(b"\n", data.index(b"\n") + 1) + 1
    damaged = {
        "truncated": data[: len(data) - 40],
        "garbage": os.urandom(len(data)),
        "flipped byte": data[:-50] + bytes([data[-50] ^ 0x01]) + data[-49:],
        "empty": b"",
        "bad segment header": data[:header_end] + b"S x y\n" + data[header_end:],
        "trailing junk": data + b"S 5 0000\nhello\n",
    }[damage]
    path.write_bytes(damaged)

    source = _source(root, cache_dir)
    assert source.cache.rejected is not None and source.cache.entries == {}
    assert _comparable(_gc_plan(root, cache_dir=cache_dir)) == expected
    # the bad file was replaced by a good one
    again = _source(root, cache_dir)
    assert again.cache.rejected is None and again.cache.entries


def test_a_checksummed_cache_that_lies_about_its_layout_is_not_used(layout, cache_dir, tmp_path) -> None:
    root, _ = layout
    other = tmp_path / "other"
    shutil.copytree(root, other)
    _gc_plan(other, cache_dir=cache_dir)
    # the other layout's (valid, checksummed) cache file, put where this layout's would be
    shutil.copyfile(cache_file_for(other, cache_dir), cache_file_for(root, cache_dir))
    source = _source(root, cache_dir)
    assert source.cache.rejected == "ignored: written for another layout"
    assert source.cache.entries == {}


def test_a_layout_recreated_at_the_same_path_does_not_reuse_the_cache(layout, cache_dir) -> None:
    root, _ = layout
    _gc_plan(root, cache_dir=cache_dir)
    moved = root.with_name("moved")
    root.rename(moved)
    shutil.copytree(moved, root)  # same path, a new directory (another inode)
    assert _source(root, cache_dir).cache.rejected == "ignored: written for another layout"


def test_an_entry_whose_blob_is_gone_is_not_trusted(layout, cache_dir) -> None:
    root, named = layout
    _gc_plan(root, cache_dir=cache_dir)
    _blob_file(root, named["p2"]).unlink()  # a platform manifest of the tagged index
    source = _source(root, cache_dir)
    assert named["p2"]["digest"] in source.cache.entries  # still in the file...
    got = source.read_manifests([str(named["p2"]["digest"])])
    assert got[str(named["p2"]["digest"])].missing  # ...but the disk decides
    with pytest.raises(og.BrokenManifestError) as cold:
        _gc_plan(root, cache=False)
    with pytest.raises(og.BrokenManifestError) as warm:
        _gc_plan(root, cache_dir=cache_dir)
    assert str(warm.value) == str(cold.value)


def test_an_entry_whose_blob_was_rewritten_is_read_again(layout, cache_dir) -> None:
    root, named = layout
    _gc_plan(root, cache_dir=cache_dir)
    path = _blob_file(root, named["img"])
    data = path.read_bytes()
    path.write_bytes(data[:-1] + b" ")  # same size, new content, new mtime
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(og.BrokenManifestError, match="does not match its digest"):
        _gc_plan(root, cache_dir=cache_dir)
    path.write_bytes(data)  # repaired: the mismatch was never cached
    assert _comparable(_gc_plan(root, cache_dir=cache_dir)) == _comparable(_gc_plan(root, cache=False))


def test_content_that_does_not_verify_is_never_cached(layout, cache_dir) -> None:
    root, named = layout
    path = _blob_file(root, named["orphan"])
    path.write_bytes(b"x" * len(path.read_bytes()))
    _gc_plan(root, cache_dir=cache_dir)
    source = _source(root, cache_dir)
    assert named["orphan"]["digest"] not in source.cache.entries
    assert named["img"]["digest"] in source.cache.entries


def test_the_cache_can_be_turned_off(layout, cache_dir, monkeypatch) -> None:
    root, _ = layout
    monkeypatch.setenv("OCIGRAPH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("OCIGRAPH_NO_CACHE", "1")
    assert not isinstance(read_layout(root).layout.manifests, CachingManifestSource)
    monkeypatch.setenv("OCIGRAPH_NO_CACHE", "0")
    assert not isinstance(read_layout(root, cache=False).layout.manifests, CachingManifestSource)
    _gc_plan(root, cache=False)
    assert not cache_dir.exists()
    _gc_plan(root)  # OCIGRAPH_NO_CACHE=0 means on, in $OCIGRAPH_CACHE_DIR
    assert cache_file_for(root, cache_dir).is_file()


def test_the_cache_lives_outside_the_layout_and_leaves_no_temp_files(layout, cache_dir) -> None:
    root, _ = layout
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    for _ in range(3):
        _gc_plan(root, cache_dir=cache_dir)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert [p.name for p in cache_dir.iterdir()] == [cache_file_for(root, cache_dir).name]


def test_new_entries_are_appended_then_compacted(layout, cache_dir, monkeypatch) -> None:
    root, _ = layout
    monkeypatch.setattr(cache_mod, "_MAX_SEGMENTS", 3)
    _gc_plan(root, cache_dir=cache_dir)
    b = Builder()
    for i in range(4):  # four runs, each with one new tagged image
        extra = b.manifest(layers=[b.blob(f"new layer {i}")])
        for digest, data in b.blobs.items():
            path = root / "blobs" / "sha256" / digest.split(":", 1)[1]
            if not path.exists():
                path.write_bytes(data)
        index = orjson.loads((root / "index.json").read_bytes())
        index["manifests"].append({**extra, "annotations": {og.REF_NAME: f"new:{i}"}})
        (root / "index.json").write_bytes(orjson.dumps(index))
        assert _comparable(_gc_plan(root, cache_dir=cache_dir)) == _comparable(_gc_plan(root, cache=False))
        source = _source(root, cache_dir)
        assert source.cache.rejected is None and source.cache.segments <= 3
    assert _source(root, cache_dir).cache.entries[extra["digest"]][0].refs


def test_a_small_layout_gets_no_cache_file(layout, cache_dir, monkeypatch) -> None:
    root, _ = layout
    monkeypatch.setattr(cache_mod, "_MIN_ENTRIES", 512)
    assert _comparable(_gc_plan(root, cache_dir=cache_dir)) == _comparable(_gc_plan(root, cache=False))
    assert not cache_file_for(root, cache_dir).exists()
    monkeypatch.setattr(cache_mod, "_MIN_ENTRIES", 5)  # reached within the first run
    _gc_plan(root, cache_dir=cache_dir)
    assert _source(root, cache_dir).cache.entries


def test_abandoned_cache_files_are_removed_and_used_ones_kept(layout, cache_dir, tmp_path) -> None:
    root, _ = layout
    other = tmp_path / "other"
    shutil.copytree(root, other)
    _gc_plan(other, cache_dir=cache_dir)
    used = cache_file_for(other, cache_dir)
    abandoned = cache_dir / ("ab" * 16 + ".cache")
    temp = cache_dir / ".tmp-killed.cache"
    unrelated = cache_dir / "notes.txt"
    for p in (abandoned, temp, unrelated):
        p.write_bytes(b"x")
    month_ago = used.stat().st_mtime - 31 * 86400
    for p in (used, abandoned, temp, unrelated):
        os.utime(p, (month_ago, month_ago))
    assert _source(other, cache_dir).cache.rejected is None  # reading it marks it as in use
    _gc_plan(root, cache_dir=cache_dir)  # a new cache file: the old ones are swept
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
        [used.name, cache_file_for(root, cache_dir).name, unrelated.name])
