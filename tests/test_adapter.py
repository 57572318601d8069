"""The disk adapter on real temporary layouts: read_layout, apply_plan, the lock, fsck."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from builder import CONFIG, Builder

import ocigraph as og
from io_adapters import apply as apply_module
from io_adapters.apply import apply_plan
from io_adapters.fsck import fsck
from io_adapters.layout import TEMP_PREFIX, LayoutLock, blob_path, read_layout
from ocigraph import ApplyError, LayoutAccessError, LayoutLockedError

# --- helpers ---------------------------------------------------------------------------------


def write_layout(root: Path, b: Builder, index_doc: dict[str, Any] | None = None) -> Path:
    """Put a :class:`Builder` on disk; ``index_doc`` replaces the generated index.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    doc = index_doc if index_doc is not None else {"schemaVersion": 2, "manifests": b.entries}
    (root / "index.json").write_bytes(orjson.dumps(doc))
    for digest, data in b.blobs.items():
        path = blob_path(root, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every path under ``root`` with its content (None for folders/symlinks) and mtime_ns."""
    out: dict[str, tuple[bytes | None, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            out[str(p.relative_to(root))] = (data, st.st_mtime_ns)
    return out


def present(root: Path) -> set[str]:
    return set(read_layout(root).layout.blobs)


def reachable_missing(root: Path) -> set[str]:
    """Blobs reachable from index.json (every entry) that are not on disk."""
    graph = og.build_graph(read_layout(root).layout)
    seen = {e.digest for e in graph.graph["index"].entries}
    stack = list(seen)
    while stack:
        for s in graph.successors(stack.pop()):
            if s not in seen:
                seen.add(s)
                stack.append(s)
    return {n for n in seen if not graph.nodes[n]["present"]}


def image(b: Builder, name: str, shared_layer: dict[str, Any] | None = None) -> dict[str, Any]:
    layers = [b.blob(f"layer of {name}")]
    if shared_layer is not None:
        layers.append(shared_layer)
    return b.manifest(b.blob(f'{{"image":"{name}"}}', CONFIG), layers)


@pytest.fixture
def two_images(tmp_path: Path) -> tuple[Path, Builder, dict[str, dict[str, Any]]]:
    """v1 and v2 share a layer; sig is an (unlisted) referrer of v1; plus one loose blob."""
    b = Builder()
    shared = b.blob("shared layer")
    v1 = image(b, "v1", shared)
    v2 = image(b, "v2", shared)
    sig = b.manifest(b.blob("{}", "application/vnd.oci.empty.v1+json"),
                     [b.blob("signature", "application/vnd.example.sig")], subject=v1,
                     artifact_type="application/vnd.example.sig")
    loose = b.blob("nobody references me")
    b.entry(v1, "v1")
    b.entry(v2, "v2")
    root = write_layout(tmp_path / "layout", b)
    return root, b, {"v1": v1, "v2": v2, "sig": sig, "shared": shared, "loose": loose}


def plan_of(root: Path, op: str, *refs: str, policy: og.Policy | None = None) -> og.Plan:
    graph = og.build_graph(read_layout(root).layout)
    if op == "gc":
        return og.plan_gc(graph, policy)
    if op == "untag":
        return og.plan_untag(graph, refs)
    return og.plan_delete(graph, refs, policy)


# --- read_layout -----------------------------------------------------------------------------


def test_read_layout_lists_present_blobs_with_sizes(two_images: Any) -> None:
    root, b, _ = two_images
    disk = read_layout(root)
    assert {d: i.size for d, i in disk.layout.blobs.items()} == {d: len(x) for d, x in b.blobs.items()}
    assert disk.junk == ()
    assert [e.tag for e in disk.layout.index.entries] == ["v1", "v2"]


@pytest.mark.parametrize("what", ["index.json", "oci-layout", "blobs", "blobs/sha256"])
def test_read_layout_refuses_a_symlinked_layout_file(tmp_path: Path, two_images: Any, what: str) -> None:
    root, _, _ = two_images
    target = root / what
    moved = tmp_path / "elsewhere"
    target.rename(moved)
    target.symlink_to(moved)
    with pytest.raises(LayoutAccessError, match="symlink"):
        read_layout(root)


def test_read_layout_refuses_a_symlinked_root(tmp_path: Path, two_images: Any) -> None:
    root, _, _ = two_images
    link = tmp_path / "link"
    link.symlink_to(root)
    with pytest.raises(LayoutAccessError, match="symlink"):
        read_layout(link)


def test_junk_under_blobs_is_reported_and_survives_gc(tmp_path: Path, two_images: Any) -> None:
    root, _, blobs = two_images
    outside = tmp_path / "outside-secret"
    outside.write_bytes(b"keep me")
    sha = root / "blobs" / "sha256"
    junk_paths = {
        "blobs/md5": None,  # unknown algorithm folder
        "blobs/sha256/not-a-digest": b"x",
        "blobs/sha256/" + "A" * 64: b"uppercase is not a valid name",
        "blobs/README": b"a file where an algorithm folder should be",
    }
    for rel, data in junk_paths.items():
        p = root / rel
        if data is None:
            p.mkdir()
        else:
            p.write_bytes(data)
    # a digest-named symlink pointing out of the layout, and a digest-named folder
    (sha / ("e" * 64)).symlink_to(outside)
    (sha / ("f" * 64)).mkdir()
    disk = read_layout(root)
    reported = {j.path for j in disk.junk}
    assert reported == set(junk_paths) | {"blobs/sha256/" + "e" * 64, "blobs/sha256/" + "f" * 64}
    assert "e" * 64 not in "".join(disk.layout.blobs)

    before = snapshot(root)
    plan = og.plan_gc(og.build_graph(disk.layout))
    assert plan.deleted_digests() == {blobs["loose"]["digest"]}
    apply_plan(root, plan)
    after = snapshot(root)
    for rel in reported:
        assert after[rel] == before[rel], rel
    assert outside.read_bytes() == b"keep me"


def test_a_path_is_never_built_from_an_invalid_digest(tmp_path: Path) -> None:
    with pytest.raises(og.InvalidDigestError):
        blob_path(tmp_path, "sha256:../../etc/passwd")
    with pytest.raises(og.InvalidDigestError):
        blob_path(tmp_path, "blake3:" + "0" * 64)


# --- apply_plan ------------------------------------------------------------------------------


def test_stale_plan_is_refused_and_nothing_changes(two_images: Any) -> None:
    root, _, _ = two_images
    plan = plan_of(root, "delete", "v1")
    # someone else tags v2 again: index.json changes after the plan was made
    doc = orjson.loads((root / "index.json").read_bytes())
    doc["manifests"].append(dict(doc["manifests"][1], annotations={og.REF_NAME: "again"}))
    (root / "index.json").write_bytes(orjson.dumps(doc))
    before = snapshot(root)
    with pytest.raises(og.StalePlanError) as info:
        apply_plan(root, plan)
    assert info.value.expected == plan.index_fingerprint
    assert info.value.found == og.parse_index((root / "index.json").read_bytes()).fingerprint
    assert str(info.value).startswith("stale plan")
    assert snapshot(root) == before


def test_atomic_write_keeps_other_fields_annotations_and_order(two_images: Any) -> None:
    root, b, blobs = two_images
    v3 = image(b, "v3")
    write_layout(root, b)  # adds v3's blobs
    entries = [
        dict(blobs["v1"], annotations={og.REF_NAME: "v1", "org.example.note": "first"},
             platform={"architecture": "amd64", "os": "linux"}),
        dict(v3, annotations={"org.example.untagged": "yes"}),
        dict(blobs["v2"], annotations={og.REF_NAME: "v2", "org.example.z": "last"}),
        dict(v3, annotations={og.REF_NAME: "v3"}),
    ]
    doc = {"schemaVersion": 2, "mediaType": og.OCI_INDEX, "annotations": {"org.example.layout": "kept"},
           "x-vendor-extension": [1, 2, 3], "manifests": entries}
    (root / "index.json").write_bytes(orjson.dumps(doc))

    report = apply_plan(root, plan_of(root, "untag", "v1"))
    assert report.index_written and report.deleted == ()
    new = orjson.loads((root / "index.json").read_bytes())
    assert {k: v for k, v in new.items() if k != "manifests"} == {
        k: v for k, v in doc.items() if k != "manifests"}
    want_first = dict(entries[0], annotations={"org.example.note": "first"})
    assert new["manifests"] == [want_first, *entries[1:]]

    report = apply_plan(root, plan_of(root, "delete", "v3"))
    new = orjson.loads((root / "index.json").read_bytes())
    assert new["manifests"] == [want_first, entries[2]]
    assert [p.name for p in root.iterdir() if p.name.startswith(TEMP_PREFIX)] == []


def test_blobs_are_deleted_predecessors_first_and_reachable_blobs_always_exist(
        two_images: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, b, blobs = two_images
    idx = b.index([blobs["v1"], blobs["v2"]])
    outer = b.index([idx])
    b.entries.clear()
    b.entry(outer, "bundle")
    write_layout(root, b)
    graph = og.build_graph(read_layout(root).layout)
    assert og.plan_gc(graph).deleted_digests() == {blobs["loose"]["digest"]}
    plan = og.plan_delete(graph, ["bundle"])
    order: list[str] = []

    real_rename = os.rename

    def watching_move(src: str, dst: str, **kw: Any) -> None:  # blobs/ into the quarantine
        assert reachable_missing(root) == set(), "a reachable blob went missing before this move"
        alg = os.path.basename(os.readlink(f"/proc/self/fd/{kw['dst_dir_fd']}"))
        order.append(f"{alg}:{dst}")
        real_rename(src, dst, **kw)
        assert reachable_missing(root) == set(), f"moving {src} out broke the layout"

    monkeypatch.setattr(os, "rename", watching_move)
    report = apply_plan(root, plan)
    monkeypatch.undo()
    assert set(report.deleted) == plan.deleted_digests() == set(order)
    rank = {d: i for i, d in enumerate(order)}
    for d in order:
        for p in graph.predecessors(d):
            if p in rank:
                assert rank[p] < rank[d], f"{p} must be deleted before its successor {d}"
    assert rank[outer["digest"]] < rank[idx["digest"]] < rank[blobs["v2"]["digest"]]


def test_an_already_missing_blob_is_not_an_error(two_images: Any) -> None:
    root, _, blobs = two_images
    plan = plan_of(root, "delete", "v1")
    gone = blobs["sig"]["digest"]
    assert gone in plan.deleted_digests()
    blob_path(root, gone).unlink()
    report = apply_plan(root, plan)
    assert report.already_gone == (gone,)
    assert set(report.deleted) == {d.digest for d in plan.deletions if d.present} - {gone}
    assert present(root).isdisjoint(plan.deleted_digests())


def test_a_blob_written_after_the_snapshot_is_skipped(two_images: Any) -> None:
    root, _, blobs = two_images
    plan = plan_of(root, "gc")
    loose = blob_path(root, blobs["loose"]["digest"])
    later = time.time() + 60
    os.utime(loose, (later, later))
    report = apply_plan(root, plan)
    assert report.skipped == ((blobs["loose"]["digest"], "written after the plan was made"),)
    assert loose.exists()


def test_apply_report_counts_what_it_did(two_images: Any) -> None:
    root, _, blobs = two_images
    plan = plan_of(root, "delete", "v1")
    report = apply_plan(root, plan)
    assert report.bytes_freed == plan.bytes_freed
    assert report.index_written
    doc = report.to_dict()
    assert doc["deleted"] == list(report.deleted)
    assert orjson.loads(orjson.dumps(doc)) == doc
    assert blobs["shared"]["digest"] in present(root)  # v2 still uses it


def test_a_failed_move_leaves_a_valid_layout_and_replanning_finishes(
        two_images: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _, _ = two_images
    plan = plan_of(root, "delete", "v1")
    calls, real_rename = 0, os.rename

    def failing_rename(src: str, dst: str, **kw: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise PermissionError(13, "Permission denied")
        real_rename(src, dst, **kw)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(ApplyError, match="plan again"):
        apply_plan(root, plan)
    monkeypatch.undo()
    assert reachable_missing(root) == set()
    leftover = plan.deleted_digests() & present(root)
    assert leftover
    apply_plan(root, plan_of(root, "gc"))
    assert present(root).isdisjoint(plan.deleted_digests())


def test_progress_counts_blobs_handled_and_ends_at_the_total(
        two_images: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _, blobs = two_images
    plan = plan_of(root, "delete", "v1")
    gone = blobs["sig"]["digest"]
    blob_path(root, gone).unlink()  # handled too, though not deleted
    total = sum(1 for d in plan.deletions if d.present)
    assert total > 2
    monkeypatch.setattr(apply_module, "_PROGRESS_EVERY", 2)
    calls: list[int] = []
    report = apply_plan(root, plan, progress=calls.append)
    assert calls == [*range(2, total, 2), total]
    assert len(report.deleted) + len(report.already_gone) == total


def test_a_plan_with_a_bad_digest_changes_nothing(two_images: Any) -> None:
    # Digests are checked before index.json is written, not when their turn to go comes.
    root, _, _ = two_images
    plan = plan_of(root, "delete", "v1")
    assert plan.index_changes
    bad = og.Deletion(digest="sha256:../../victim", reason=plan.deletions[0].reason, size=1,
                      present=True)
    plan = dataclasses.replace(plan, deletions=(*plan.deletions, bad))
    before = snapshot(root)
    with pytest.raises(og.InvalidDigestError):
        apply_plan(root, plan)
    assert snapshot(root) == before


# --- the lock --------------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from io_adapters.layout import LayoutLock
lock = LayoutLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.read()  # hold until the parent closes our stdin
"""


@pytest.fixture
def locked_by_child(two_images: Any) -> Any:
    root = two_images[0]
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        yield root, child
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


def test_a_second_lock_times_out_naming_the_holder_pid(locked_by_child: Any) -> None:
    root, child = locked_by_child
    started = time.monotonic()
    with pytest.raises(LayoutLockedError) as info:
        LayoutLock(root, timeout=0.3).acquire()
    assert time.monotonic() - started >= 0.3
    assert info.value.pid == child.pid
    assert f"pid {child.pid}" in str(info.value)


def test_apply_waits_for_the_lock_and_changes_nothing_when_it_cannot_get_it(
        locked_by_child: Any) -> None:
    root, _ = locked_by_child
    plan = plan_of(root, "delete", "v1")
    before = snapshot(root)
    with pytest.raises(LayoutLockedError):
        apply_plan(root, plan, lock_timeout=0.2)
    assert snapshot(root) == before


def test_the_lock_is_released_when_its_holder_dies(two_images: Any) -> None:
    root = two_images[0]
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    child.kill()
    child.wait(timeout=10)
    with LayoutLock(root, timeout=2):
        pass
    assert sorted(p.name for p in root.iterdir()) == ["blobs", "index.json", "oci-layout"]


def test_the_lock_excludes_a_second_holder_in_the_same_process(two_images: Any) -> None:
    root = two_images[0]
    with LayoutLock(root, timeout=1), pytest.raises(LayoutLockedError):
        LayoutLock(root, timeout=0.1).acquire()
    with LayoutLock(root, timeout=0.1):
        pass


# --- fsck ------------------------------------------------------------------------------------


def test_fsck_of_a_clean_layout_finds_nothing(two_images: Any) -> None:
    report = fsck(two_images[0])
    assert report.ok and report.problems == ()
    assert report.blobs_checked == len(two_images[1].blobs)


def test_fsck_finds_missing_corrupt_mis_sized_broken_and_junk(two_images: Any) -> None:
    root, b, blobs = two_images
    bad_manifest = b"{ not json"
    bad_digest = og.digest_bytes(bad_manifest)
    v3 = image(b, "v3")
    short_layer = b.blob("declared too big")
    lying = dict(short_layer, size=short_layer["size"] + 5)
    v4 = b.manifest(b.blob('{"image":"v4"}', CONFIG), [lying])
    b.entry(v3, "v3")
    b.entry(v4, "v4")
    b.entry({"mediaType": og.OCI_MANIFEST, "digest": bad_digest, "size": len(bad_manifest)}, "bad")
    write_layout(root, b)
    blob_path(root, bad_digest).write_bytes(bad_manifest)
    blob_path(root, v3["digest"]).unlink()                       # missing (a tagged manifest)
    blob_path(root, blobs["shared"]["digest"]).write_bytes(b"bit rot")  # digest + size mismatch
    (root / "blobs" / "sha256" / "junk").write_bytes(b"")

    report = fsck(root)
    found = {(p.kind, p.where) for p in report.problems}
    assert found == {
        ("missing", v3["digest"]),
        ("digest-mismatch", blobs["shared"]["digest"]),
        ("size-mismatch", blobs["shared"]["digest"]),
        ("size-mismatch", short_layer["digest"]),
        ("broken-manifest", bad_digest),
        ("junk", "blobs/sha256/junk"),
    }
    missing = next(p for p in report.problems if p.kind == "missing")
    assert "v3" in missing.detail
    assert not report.ok
    assert orjson.loads(orjson.dumps(report.to_dict()))["problems"][0]["kind"] == report.problems[0].kind


def test_fsck_reports_an_unusable_index_as_a_problem(two_images: Any) -> None:
    root = two_images[0]
    (root / "index.json").write_bytes(b"[]")
    report = fsck(root)
    assert [p.kind for p in report.problems] == ["layout"]
    assert "index.json" in report.problems[0].detail


def test_fsck_hashes_a_large_blob_in_chunks(two_images: Any) -> None:
    root, b, _ = two_images
    big = os.urandom(3 * (1 << 20) + 7)
    desc = b.blob(big)
    b.entry(b.manifest(b.blob('{"big":1}', CONFIG), [desc]), "big")
    write_layout(root, b)
    assert fsck(root).ok
    with blob_path(root, desc["digest"]).open("r+b") as f:
        f.seek(2 * (1 << 20))
        f.write(b"\0")
    assert [(p.kind, p.where) for p in fsck(root).problems] == [("digest-mismatch", desc["digest"])]


@pytest.mark.parametrize("names, ok", [
    ([], True),
    (["0" * 64, "a" * 64], True),
    (["0" * 64, "A" * 64], False),            # uppercase: bytes.fromhex would take it
    (["0" * 64, "0" * 31 + " " + "0" * 32], False),  # a space: so would fromhex
    (["0" * 64, "0" * 63], False),            # one name short
    (["0" * 64, "g" * 64], False),
])
def test_digest_names_are_checked_all_at_once_exactly_as_one_by_one(names: list[str], ok: bool) -> None:
    assert og.are_digest_names(names, 64) is ok
    assert ok == all(len(n) == 64 and not n.strip("0123456789abcdef") for n in names)


def test_the_one_by_one_listing_sets_aside_everything_but_regular_files(tmp_path: Path) -> None:
    from io_adapters.layout import _entry_kind, _list_folder

    (tmp_path / ("a" * 64)).write_bytes(b"x")
    (tmp_path / ("b" * 64)).symlink_to(tmp_path / ("a" * 64))
    (tmp_path / ("c" * 64)).mkdir()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names, others = _list_folder(fd, "blobs/sha256")
    finally:
        os.close(fd)
    assert names == ["a" * 64]
    assert sorted(og.entry_junk("sha256", e.name, _entry_kind(e)).why for e in others) == [
        "not a regular file", "symlink (never followed, never deleted)"]


def test_gc_stats_what_it_reads_or_deletes_and_no_layer_it_keeps(tmp_path: Path) -> None:
    """The listing takes names only; planning a GC asks the file system about the manifests it
    reads and the blobs it deletes (sniffed for referrers first), never about a live layer."""
    b = Builder()
    live_layers = [b.blob(f"live layer {i}") for i in range(20)]
    img = b.manifest(layers=live_layers)
    b.entry(img, "app:1")
    junk = [b.blob(f"dangling {i}") for i in range(5)]
    root = write_layout(tmp_path / "layout", b)
    disk = read_layout(root)
    assert disk.layout.blobs.examined() == set()  # listed: nothing stat'ed yet
    plan = og.plan_gc(og.build_graph(disk.layout))
    examined = disk.layout.blobs.examined()
    assert {d.digest for d in plan.deletions} == {str(j["digest"]) for j in junk}
    assert str(img["digest"]) in examined
    assert examined >= {str(j["digest"]) for j in junk}
    assert not examined & {str(layer["digest"]) for layer in live_layers}
    # what a report of disk use needs is there on request: the files' own sizes
    full = og.build_graph(disk.layout, file_sizes=True)
    assert all(full.nodes[str(layer["digest"])]["size"] == layer["size"] for layer in live_layers)
    assert disk.layout.blobs.examined() >= {str(layer["digest"]) for layer in live_layers}
