"""The store follows an apply row by row, and ends exactly where a rebuild would.

After ocigraph applies a plan to a layout whose store was current, the background job changes
only the rows the plan touched (:func:`io_adapters.store.follow_apply`) instead of reading the
layout and building its graph again.  The property: on generated layouts, for any operation,
policy and targets, the store after following is -- node by node, edge by edge, live flag by
live flag, entry by entry -- the store a fresh read of the layout makes; and when following
declines, it changed nothing.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import networkx as nx
import orjson
from builder import Builder, write_layout
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import ocigraph as og
import ocigraph.rows as R
from io_adapters import planner, store
from io_adapters.apply import apply_plan
from io_adapters.layout import DiskManifestSource, LayoutDir, read_layout, scan_blobs
from ocigraph import snapshot as snap
from ocigraph.testing import delete_targets, generated_layouts, policies


def _contents(path: Path) -> dict[str, Any]:
    """Everything a store holds, by digest (ids are ranks, and differ between stores)."""
    con = sqlite3.connect(path)
    try:
        bodies = {d: orjson.loads(b) for d, b in con.execute("SELECT digest, body FROM nodes")}
        ids = {i: d for i, d in con.execute("SELECT id, digest FROM nodes")}
        meta = orjson.loads(con.execute("SELECT body FROM meta").fetchone()[0])
        entries = sorted(orjson.loads(b) for (b,) in con.execute("SELECT body FROM entries"))
    finally:
        con.close()
    nodes = {}
    for d, b in bodies.items():
        attrs = b[1:12]
        succ = sorted((ids[i], m) for i, m in b[12])
        pred = [(ids[i], m) for i, m in b[13]]
        assert pred == sorted(pred)  # by id, so by digest
        firsts = b[16] and [None if i is None else ids[i] for i in b[16]]  # first holders
        nodes[d] = (attrs, succ, pred, b[14], b[15], firsts)
    keep = ("fingerprint", "folders", "origin", "entry_count", "unusable", "junk", "nodes", "names")
    return {"nodes": nodes, "entries": entries, "meta": {k: meta[k] for k in keep}}


def _fresh_contents(folder: Path, root: Path) -> tuple[dict[str, Any], nx.DiGraph]:
    """The contents of a store built afresh (in ``folder``) from the layout at ``root``, and
    the graph it was built from."""
    disk = read_layout(LayoutDir(root))
    graph = og.build_graph(disk.layout)
    whole = og.WholeGraph(graph)
    fresh = folder / "fresh.store"
    store.save_store(fresh, disk, graph, {k: whole.facts(k) for k in (False, True)}, {})
    return _contents(fresh), graph


def _follow(handle: LayoutDir, path: Path, report: Any, plan: og.Plan, read: bool = True) -> bool:
    """follow_apply as the background job calls it (``read``: letting it read manifests)."""
    after = store.snapshot_of(handle)
    listing, junk = scan_blobs(handle)
    manifests = DiskManifestSource(handle, listing).read_manifests if read else None
    return store.follow_apply(path, report.before, plan, after, handle.read_index(),
                              og.names_checksum(listing), junk, manifests)


@contextmanager
def _small_layouts_stored() -> Iterator[None]:
    with mock.patch.object(planner, "_MIN_BLOBS", 0), mock.patch.object(snap, "SETTLE_NS", 0):
        yield


OPERATIONS = ("delete", "gc", "remove", "untag")


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(generated_layouts(absent_blobs=False), policies(), st.sampled_from(OPERATIONS), st.data(),
       st.booleans())
def test_a_store_that_follows_an_apply_is_the_store_a_rebuild_makes(tmp_path, g, policy, op, data,
                                                                     few):
    # ``few``: every node with two holders or more keeps its first holders (at FEW=8 generated
    # layouts rarely have one), so following them is checked against a rebuild too
    with mock.patch.object(R, "FEW", 1 if few else R.FEW):
        _follow_then_compare(tmp_path, g, policy, op, data)


def _follow_then_compare(tmp_path: Path, g: Any, policy: og.Policy, op: str, data: Any) -> None:
    policy = og.Policy.preset(policy.name, keep_untagged=policy.keep_untagged,
                              cascade_referrers=policy.cascade_referrers, force=policy.force)
    refs: list[str] = []
    if op != "gc":
        refs = data.draw(delete_targets(g, max_size=2), label="refs")
        if op in ("remove", "untag"):
            refs = [r for r in refs if r in g.tags] or list(g.unambiguous_tags[:1])
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp, _small_layouts_stored():
        root, cache = Path(tmp) / "layout", Path(tmp) / "cache"
        write_layout(root, g.index_json, g.blobs)
        path = store.store_file_for(root, cache)
        planner.plan_layout(root, "untag", [], og.Policy(), cache_dir=cache)  # builds, stores
        if not path.exists():
            event("not stored")
            return
        try:
            plan = planner.plan_layout(root, op, refs, policy, cache_dir=cache, store=False).plan
        except og.OcigraphError:
            event("refused")
            return
        note(f"{op} {refs} {policy}: {len(plan.deletions)} deletions")
        before_contents = _contents(path)
        handle = LayoutDir(root)
        report = apply_plan(handle, plan)
        followed = _follow(handle, path, report, plan)
        event(f"{op}: followed" if followed else f"{op}: declined")
        if not followed:
            assert _contents(path) == before_contents  # declining changes nothing
            return
        (want, graph), got = _fresh_contents(Path(tmp), root), _contents(path)
        note(str([(d, got["nodes"].get(d), want["nodes"].get(d)) for d in got["nodes"].keys() | want["nodes"].keys()
                  if got["nodes"].get(d) != want["nodes"].get(d)]))
        assert got == want
        if op == "gc":  # the gc after a gc is known, and is what planning it anew gives
            again = [planner.plan_layout(root, "gc", [], policy, **kw) for kw in
                     ({"cache_dir": cache, "store": False}, {"cache": False})]
            assert again[0].how == "remembered"
            assert [p.plan.to_dict() | {"snapshotTime": 0} for p in again] == [
                again[1].plan.to_dict() | {"snapshotTime": 0}] * 2
        # and the store is current for the layout now: the next delete plans from it, and
        # plans what reading the layout plans
        assert store.open_store(LayoutDir(root), cache) is not None
        targets = sorted(graph.nodes)[:1] + sorted(t for e in graph.graph["index"].entries
                                                    if (t := e.tag) is not None)[:1]
        for target in targets:
            outcomes = []
            for kw in ({"cache_dir": cache, "store": False}, {"cache": False}):
                try:
                    planned = planner.plan_layout(root, "delete", [target], policy, **kw)
                    doc = planned.plan.to_dict()
                    doc.pop("snapshotTime")
                    outcomes.append((planned.how if kw.get("cache") is None else "read", doc))
                except og.OcigraphError as exc:
                    outcomes.append(("error", str(exc)))
            assert outcomes[0][1] == outcomes[1][1]
            event(f"then delete: {outcomes[0][0]}")


def test_following_declines_when_another_writer_changed_the_listing(tmp_path):
    """A blob added by another tool between the apply and the new snapshot: the names
    checksum no longer matches what the plan left, so the store is rebuilt, not followed."""

    b = Builder()
    img = b.manifest(layers=[b.blob("a"), b.blob("b")])
    old = b.manifest(layers=[b.blob("c")])
    b.entry(img, "keep")
    b.entry(old, "old")
    root, cache = tmp_path / "layout", tmp_path / "cache"
    write_layout(root, b.index_json(), b.blobs)
    with _small_layouts_stored():
        planner.plan_layout(root, "untag", [], og.Policy(), cache_dir=cache)
        path = store.store_file_for(root, cache)
        assert path.exists()
        plan = planner.plan_layout(root, "delete", ["old"], og.Policy(), cache_dir=cache).plan
        before = _contents(path)
        handle = LayoutDir(root)
        report = apply_plan(handle, plan)
        pushed = og.digest_bytes(b"pushed meanwhile")
        (root / "blobs" / "sha256" / pushed.split(":")[1]).write_bytes(b"pushed meanwhile")
        listing, junk = scan_blobs(handle)
        assert not store.follow_apply(path, report.before, plan, store.snapshot_of(handle),
                                      handle.read_index(), og.names_checksum(listing), junk)
        assert _contents(path) == before


def test_a_layer_under_two_media_types_is_followed_by_reading_its_holders(tmp_path):
    """A layer that one manifest names as an OCI layer and another as a Docker layer: when gc
    removes the second, the layer's media types are those its remaining holder gives -- read
    from its manifest, so the store follows the apply (it used to be rebuilt)."""

    b = Builder()
    docker = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    keep = b.manifest(layers=[b.blob("shared"), b.blob("k")])
    old = b.manifest(layers=[b.blob("shared", media_type=docker), b.blob("o")])["digest"]
    layer = b.blob("shared")["digest"]
    b.entry(keep, "keep")
    root, cache = tmp_path / "layout", tmp_path / "cache"
    write_layout(root, b.index_json(), b.blobs)
    with _small_layouts_stored():
        planner.plan_layout(root, "untag", [], og.Policy(), cache_dir=cache)
        path = store.store_file_for(root, cache)
        assert len(_contents(path)["nodes"][layer][0][0]) == 2  # two media types
        plan = planner.plan_layout(root, "gc", [], og.Policy(), cache_dir=cache).plan
        assert old in {d.digest for d in plan.deletions}
        handle = LayoutDir(root)
        report = apply_plan(handle, plan)
        before = _contents(path)
        assert not _follow(handle, path, report, plan, read=False)  # blind, it cannot tell
        assert _contents(path) == before
        assert _follow(handle, path, report, plan)
        assert _contents(path)["nodes"][layer][0][0] == ["application/vnd.oci.image.layer.v1.tar"]
        assert _contents(path) == _fresh_contents(tmp_path, root)[0]


def test_a_node_many_gone_images_shared_keeps_first_holders_a_rebuild_gives(tmp_path):
    """Forty tagged images share one config and one layer (each node keeps its first
    holders); ``remove`` takes the thirty with the smallest digests, the first holders among
    them: the followed rows name the same first holders as a rebuild's."""

    b = Builder()
    config, layer = b.blob("shared config"), b.blob("shared layer")
    images = [b.manifest(config=config, layers=[layer, b.blob(f"own {i}")]) for i in range(40)]
    for i, m in enumerate(sorted(images, key=lambda m: m["digest"])):
        b.entry(m, f"img{i:02}")
    root, cache = tmp_path / "layout", tmp_path / "cache"
    write_layout(root, b.index_json(), b.blobs)
    with _small_layouts_stored():
        planner.plan_layout(root, "untag", [], og.Policy(), cache_dir=cache)
        path = store.store_file_for(root, cache)
        before = _contents(path)["nodes"][config["digest"]][5]
        assert before is not None and before[0] is not None  # first holders kept
        plan = planner.plan_layout(root, "remove", [f"img{i:02}" for i in range(30)], og.Policy(),
                                   cache_dir=cache).plan
        assert len([d for d in plan.deletions if d.digest in {m["digest"] for m in images}]) == 30
        handle = LayoutDir(root)
        report = apply_plan(handle, plan)
        assert _follow(handle, path, report, plan)
        got, want = _contents(path), _fresh_contents(tmp_path, root)[0]
        assert got["nodes"][config["digest"]][5] != before  # the first holder was gone
        assert got == want
