"""Planning a layout on disk (io_adapters/planner.py) with the one store: a plan answered from
the store -- a plan remembered from the run that stored the layout, or a delete planned on the
stored graph -- is exactly the plan reading the layout makes; any change to the layout, the
operation or the policy, and the layout is read again.

Time: as in tests/test_store.py, the store's rule runs with a 30 ms window instead of 2 s, and
the tests wait that long (:func:`settle`) where a real run would come later.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from builder import Builder, two_images_and_a_signature, write_layout
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

# the store's predecessors do not yet name the holders the core asks for: tests whose stored
# deletes meet that are expected to fail until it does (see tests/test_store.py)
import ocigraph as og
from io_adapters import planner, store
from io_adapters.cli import cli
from io_adapters.layout import LayoutDir, read_layout
from io_adapters.planner import plan_layout
from ocigraph import snapshot as snap
from ocigraph.testing import GeneratedLayout, generated_layouts, policies

SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
ORAS = og.Policy.preset("oras")


@pytest.fixture(autouse=True)
def _store_small_layouts_with_a_short_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """These layouts are tiny (a layout this small is never stored, by default), and the
    store's rule runs with a 30 ms window (see tests/test_store.py)."""
    monkeypatch.setattr(planner, "_MIN_BLOBS", 0)
    monkeypatch.setattr(snap, "SETTLE_NS", 30_000_000)


def settle(root: Path) -> None:
    """Wait until the layout's blob folders have settled under the window in force."""
    with LayoutDir(root) as d:
        wait = snap.settles_in(d.folder_stamps(), time.time_ns())
    if wait > 0:
        time.sleep(wait + 0.002)


def _comparable(plan: og.Plan) -> bytes:
    return orjson.dumps({k: v for k, v in plan.to_dict().items() if k != "snapshotTime"})


def _fresh(root: Path, operation: str, refs: list[str], policy: og.Policy) -> og.Plan:
    """The plan made by reading the layout (the store neither read nor written)."""
    return plan_layout(root, operation, refs, policy, cache=False).plan


def _blob(root: Path, digest: str) -> Path:
    alg, encoded = digest.split(":", 1)
    return root / "blobs" / alg / encoded


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, Builder]:
    """``app:1`` and ``app:0`` sharing a layer, a signature nobody lists, a dangling blob;
    settled, not yet planned."""
    b, _ = two_images_and_a_signature()
    root = write_layout(tmp_path / "layout", b.index_json(), b.blobs)
    settle(root)
    return root, tmp_path / "cache", b


# -- remembered plans ---------------------------------------------------------------------------

def test_the_second_run_recalls_the_plan_the_first_made(layout) -> None:
    root, cache_dir, _ = layout
    first = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    before = time.time()
    second = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    after = time.time()
    assert (first.how, second.how) == ("built", "remembered")
    assert second.graph is None and second.disk is None
    assert _comparable(second.plan) == _comparable(first.plan) == \
        _comparable(_fresh(root, "gc", [], og.Policy()))
    assert second.tags == first.tags and second.junk == first.junk
    assert not second.plan.is_empty  # (the dangling blob: there is a plan to remember)
    # the recalled plan carries this run's clock reading, not the first run's
    assert first.plan.snapshot_time < before <= second.plan.snapshot_time <= after
    assert second.plan.origin == LayoutDir(root).origin


@pytest.mark.parametrize("change", ["new blob", "blob gone", "index.json", "index.json same size"])
def test_a_changed_layout_is_planned_again(layout, change: str) -> None:
    root, cache_dir, b = layout
    plan_layout(root, "delete", ["app:0"], og.Policy(), cache_dir=cache_dir)
    if change == "new blob":
        (root / "blobs" / "sha256" / og.digest_bytes(b"pushed meanwhile").split(":")[1]).write_bytes(
            b"pushed meanwhile")
    elif change == "blob gone":
        _blob(root, og.digest_bytes(b"dangling")).unlink()
    elif change == "index.json":
        (root / "index.json").write_bytes(orjson.dumps(orjson.loads(b.index_json()),
                                                        option=orjson.OPT_INDENT_2))
    else:  # the two tags swapped: app:0 names the other image
        data = (root / "index.json").read_bytes()
        (root / "index.json").write_bytes(data.replace(b'"app:1"', b'"app:X"').replace(
            b'"app:0"', b'"app:1"').replace(b'"app:X"', b'"app:0"'))
    again = plan_layout(root, "delete", ["app:0"], og.Policy(), cache_dir=cache_dir)
    assert again.how == "built"
    assert _comparable(again.plan) == _comparable(_fresh(root, "delete", ["app:0"], og.Policy()))


@pytest.mark.parametrize("change", ["touched", "chmod"])
def test_a_blob_touched_keeps_the_plan_it_had(layout, change: str) -> None:
    """The rule looks at the blob folders, not at each blob: a blob's own mtime or mode
    changing does not change what planning reads (its name and bytes), nor the plan."""
    root, cache_dir, b = layout
    made = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir).plan
    manifest = next(d for d, data in b.blobs.items() if b'"layers"' in data)
    path = _blob(root, manifest)
    if change == "touched":
        st_ = path.stat()
        os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))
    else:
        os.chmod(path, 0o600)
    got = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert _comparable(got.plan) == _comparable(made) == _comparable(_fresh(root, "gc", [], og.Policy()))


def test_another_operation_target_or_policy_is_not_the_remembered_plan(layout) -> None:
    root, cache_dir, _ = layout
    plan_layout(root, "delete", ["app:1"], og.Policy(), cache_dir=cache_dir)
    assert plan_layout(root, "delete", ["app:1"], og.Policy(), cache_dir=cache_dir).how == "remembered"
    for operation, refs, policy in [("delete", [og.digest_bytes(b"dangling")], og.Policy()),
                                    ("remove", ["app:1"], og.Policy()),
                                    ("untag", ["app:1"], og.Policy()),
                                    ("delete", ["app:1"], og.Policy.preset("oras")),
                                    ("delete", ["app:1"], og.Policy(cascade_referrers=False)),
                                    ("gc", [], og.Policy(keep_untagged=True))]:
        got = plan_layout(root, operation, refs, policy, cache_dir=cache_dir, store=False)
        assert got.how != "remembered", (operation, refs, policy)
        assert got.how == ("stored" if operation == "delete" else "built")
        assert _comparable(got.plan) == _comparable(_fresh(root, operation, refs, policy))


def test_plans_with_grace_depend_on_the_clock_and_never_come_from_the_store(layout) -> None:
    root, cache_dir, _ = layout
    policy = og.Policy(grace=3600)
    for operation, refs in (("gc", []), ("gc", []), ("delete", ["app:0"]), ("delete", ["app:0"])):
        got = plan_layout(root, operation, refs, policy, cache_dir=cache_dir)
        assert got.how == "built"
    # the graph was stored all the same; a plan without grace is answered from it
    assert plan_layout(root, "delete", ["app:0"], og.Policy(), cache_dir=cache_dir).how == "stored"


@pytest.mark.parametrize("offset", [3600.0, -3600.0])
def test_grace_counts_blob_ages_by_the_file_systems_clock(tmp_path, monkeypatch, offset) -> None:
    """This machine's clock ``offset`` seconds off the file system's (an hour behind, or
    ahead): grace spares exactly the blobs younger than it by the file system's clock, whose
    times the blobs carry -- while the plan's snapshot time stays this machine's."""
    b = Builder()
    young, old = b.blob("young"), b.blob("old")
    b.entry(b.manifest(layers=[b.blob("kept")]), "kept")
    root = write_layout(tmp_path / "layout", b.index_json(), b.blobs)
    fs_now = time.time() + offset
    for desc, age in ((young, 60), (old, 600)):
        os.utime(_blob(root, desc["digest"]), (fs_now - age, fs_now - age))
    monkeypatch.setattr(LayoutDir, "clock_offset", lambda self: offset)
    before = time.time()
    plan = plan_layout(root, "gc", [], og.Policy(grace=300), cache=False).plan
    assert young["digest"] not in plan.deleted_digests()
    assert old["digest"] in plan.deleted_digests()
    assert before <= plan.snapshot_time <= time.time()


def test_a_storing_job_waits_on_a_clock_briefly_and_without_the_writers_lock(layout, monkeypatch) -> None:
    """Folders that settle only later by this machine's clock: the job sleeps without the
    store's lock (another writer could take it meanwhile), and never longer than a few
    seconds -- an hour off, it gives up at once."""
    root, cache_dir, _ = layout
    path = store.store_file_for(root, cache_dir)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        other = store.claim(path)  # free while the job sleeps
        assert other is not None
        os.close(other)

    for settles in (1.5, 3600.0):
        if path.exists():
            path.unlink()
        monkeypatch.setattr(snap, "settles_in", lambda folders, now, s=settles: s)
        monkeypatch.setattr(planner.time, "sleep", sleep)
        claimed = store.claim(path)
        assert claimed is not None
        planner._update(LayoutDir(root), path, claimed)
        store.release(path, claimed)
    assert waits == [1.5 + 0.01]
    assert 0 < planner._MAX_SETTLE_WAIT <= 5
    # another writer takes the store while the job sleeps: the job gives up and leaves it be
    taken: list[int | None] = []
    monkeypatch.setattr(snap, "settles_in", lambda folders, now: 1.0)
    monkeypatch.setattr(planner.time, "sleep", lambda seconds: taken.append(store.claim(path)))
    assert not path.exists()  # (a job that wrote nothing leaves no placeholder)
    claimed = store.claim(path)
    assert claimed is not None
    planner._update(LayoutDir(root), path, claimed)
    store.release(path, claimed)
    assert taken[0] is not None and path.stat().st_size == 0  # the other's placeholder, kept
    assert store.claim(path) is None  # and still the other's
    store.release(path, taken[0])


def test_without_the_cache_nothing_is_stored(layout, monkeypatch) -> None:
    root, cache_dir, _ = layout
    plan_layout(root, "gc", [], og.Policy(), cache=False, cache_dir=cache_dir)
    assert not cache_dir.exists()
    monkeypatch.setenv("OCIGRAPH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("OCIGRAPH_NO_CACHE", "1")
    plan_layout(root, "gc", [], og.Policy())
    assert not cache_dir.exists()
    monkeypatch.setenv("OCIGRAPH_NO_CACHE", "0")  # means on, in $OCIGRAPH_CACHE_DIR
    plan_layout(root, "gc", [], og.Policy())
    assert store.store_file_for(root, cache_dir).is_file()
    assert plan_layout(root, "gc", [], og.Policy()).how == "remembered"


def test_a_failed_plan_is_not_remembered(layout) -> None:
    root, cache_dir, _ = layout
    with pytest.raises(og.UnknownRefError) as fresh:
        plan_layout(root, "delete", ["no-such-tag"], og.Policy(), cache=False)
    for _ in range(2):  # the second from the store would say the same
        with pytest.raises(og.UnknownRefError) as got:
            plan_layout(root, "delete", ["no-such-tag"], og.Policy(), cache_dir=cache_dir)
        assert str(got.value) == str(fresh.value)
    assert not store.store_file_for(root, cache_dir).exists()  # planning failed: nothing kept
    plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    with pytest.raises(og.UnknownRefError) as stored:
        plan_layout(root, "delete", ["no-such-tag"], og.Policy(), cache_dir=cache_dir)
    assert str(stored.value) == str(fresh.value)


def _plans(path: Path) -> dict[str, bytes]:
    con = sqlite3.connect(path)
    try:
        return dict(con.execute("SELECT key, body FROM plans"))
    finally:
        con.close()


def test_a_plan_row_holding_another_operation_s_plan_is_not_used(layout) -> None:
    """A well-formed, checksummed row under the key of ``gc`` that holds a delete plan."""
    root, cache_dir, _ = layout
    delete_plan = plan_layout(root, "delete", ["app:1"], ORAS, cache=False).plan
    plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    path = store.store_file_for(root, cache_dir)
    key = og.plan_key("gc", [], og.Policy())
    assert list(_plans(path)) == [key]
    body = delete_plan.to_json(indent=False)
    con = sqlite3.connect(path)
    con.execute("UPDATE plans SET body = ?, crc = ? WHERE key = ?", (body, zlib.crc32(body), key))
    con.commit()
    con.close()
    again = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert again.how != "remembered" and again.plan.operation == "gc"
    assert _comparable(again.plan) == _comparable(_fresh(root, "gc", [], og.Policy()))


@pytest.mark.parametrize("damage", ["edited plan", "checksum", "not a plan", "row gone"])
def test_a_damaged_plan_row_is_ignored(layout, damage: str) -> None:
    root, cache_dir, _ = layout
    expected = _comparable(plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir).plan)
    sql = {"edited plan": "UPDATE plans SET body = CAST(REPLACE(CAST(body AS TEXT), 'unreachable', "
                          "'target') AS BLOB)",
           "checksum": "UPDATE plans SET crc = crc + 1",
           "not a plan": "UPDATE plans SET body = X'7b7d', crc = 2745614147",
           "row gone": "DELETE FROM plans"}[damage]
    assert zlib.crc32(b"{}") == 2745614147
    con = sqlite3.connect(store.store_file_for(root, cache_dir))
    assert con.execute(sql).rowcount == 1
    con.commit()
    con.close()
    again = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert again.how == "built" and _comparable(again.plan) == expected
    assert plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir).how == "remembered"  # stored anew


def test_a_delete_by_the_digests_a_tag_named_is_answered_from_the_store(layout) -> None:
    """What apply's re-check of a saved plan asks: the plan's targets are digests."""
    root, cache_dir, _ = layout
    _, names = two_images_and_a_signature()
    made = plan_layout(root, "delete", ["app:1"], og.Policy(), cache_dir=cache_dir).plan
    assert made.targets == (names["img"]["digest"],)
    by_digest = plan_layout(root, "delete", list(made.targets), og.Policy(), cache_dir=cache_dir)
    assert by_digest.how == "stored" and _comparable(by_digest.plan) == _comparable(made)


def test_plans_made_by_other_code_are_not_recalled(layout, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache_dir, _ = layout
    plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir).how == "remembered"
    monkeypatch.setattr(store, "_CODE", ["another version of ocigraph"])
    assert plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir, store=False).how == "built"
    assert plan_layout(root, "delete", ["app:1"], ORAS, cache_dir=cache_dir, store=False).how == "built"


def _signed_layout(tmp_path: Path) -> tuple[Path, Path, Path, bytes]:
    """A tagged image and its signature, which nobody lists (found by reading it)."""
    b = Builder()
    img = b.manifest(layers=[b.blob("layer")])
    b.entry(img, "app:1")
    sig = b.manifest(layers=[b.blob("sig payload")], subject=img, artifact_type="application/x-sig")
    root = write_layout(tmp_path / "layout", b.index_json(), b.blobs)
    path = _blob(root, str(sig["digest"]))
    return root, tmp_path / "cache", path, path.read_bytes()


def test_a_plan_made_while_a_blob_was_damaged_is_not_recalled_once_it_is_repaired(tmp_path: Path) -> None:
    root, cache_dir, sig_path, good = _signed_layout(tmp_path)
    st_ = sig_path.stat()
    sig_path.write_bytes(good[:-2] + bytes([good[-2] ^ 1]) + good[-1:])  # same size, one bit
    os.utime(sig_path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    settle(root)
    damaged = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir).plan
    sig = "sha256:" + sig_path.name
    assert sig in damaged.deleted_digests()  # not a manifest any more: garbage
    assert not store.store_file_for(root, cache_dir).exists()  # a disk error: nothing stored
    sig_path.write_bytes(good)  # repaired as cp -p would: the old mtime back
    os.utime(sig_path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    again = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert again.how == "built" and sig not in again.plan.deleted_digests()


def test_a_blob_that_cannot_be_stat_ed_is_an_error_naming_it(layout, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _, _ = layout
    disk = read_layout(root)
    digest = next(iter(disk.layout.blobs))

    def denied(self: LayoutDir, digest: str) -> os.stat_result:
        raise PermissionError(13, "Permission denied", digest)

    monkeypatch.setattr(LayoutDir, "lstat_blob", denied)
    with pytest.raises(og.OcigraphError, match=r"blobs/sha256/[0-9a-f]{64}: cannot stat \(Permission denied\)"):
        disk.layout.blobs[digest]


def test_the_command_line_prints_the_same_plan_twice_and_applies_a_remembered_one(layout, monkeypatch) -> None:
    root, cache_dir, _ = layout
    monkeypatch.setenv("OCIGRAPH_CACHE_DIR", str(cache_dir))
    runner = CliRunner()
    first = runner.invoke(cli, ["gc", "--dry-run", str(root)])
    assert plan_layout(root, "gc", [], og.Policy()).how == "remembered"
    second = runner.invoke(cli, ["gc", "--dry-run", str(root)])
    assert first.exit_code == second.exit_code == 0
    assert first.output == second.output and "delete:" in first.output
    done = runner.invoke(cli, ["gc", "--yes", str(root)])
    assert done.exit_code == 0, done.output
    assert done.output.startswith(first.output.removesuffix("dry run: nothing was changed\n"))
    assert not _blob(root, og.digest_bytes(b"dangling")).exists()
    assert _fresh(root, "gc", [], og.Policy()).is_empty


# -- from the old manifest cache's tests: a warm run plans what a cold run plans -----------------

def _rich() -> tuple[Builder, dict[str, dict[str, Any]]]:
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


@pytest.fixture
def rich(tmp_path: Path) -> tuple[Path, Path, dict[str, dict[str, Any]]]:
    b, named = _rich()
    root = write_layout(tmp_path / "layout", b.index_json(), b.blobs)
    settle(root)
    return root, tmp_path / "cache", named


def test_a_warm_run_plans_exactly_what_a_cold_run_plans(rich) -> None:
    root, cache_dir, named = rich
    for policy in (og.Policy(), og.Policy.preset("spec"), ORAS):
        cold = plan_layout(root, "gc", [], policy, cache_dir=cache_dir)
        warm = plan_layout(root, "gc", [], policy, cache_dir=cache_dir)
        assert (cold.how, warm.how) == ("built", "remembered")
        assert _comparable(warm.plan) == _comparable(cold.plan) == _comparable(_fresh(root, "gc", [], policy))
    delete = plan_layout(root, "delete", ["app:1"], og.Policy(), cache_dir=cache_dir)
    assert delete.how == "stored"
    assert _comparable(delete.plan) == _comparable(_fresh(root, "delete", ["app:1"], og.Policy()))
    # the unlisted signature of app:1 was found, and planned, from the store too
    sigs = [d for d in delete.plan.deletions if d.reason.kind == "referrer-of"]
    assert [d.reason.via for d in sigs] == [named["img"]["digest"]]
    assert delete.tags == plan_layout(root, "delete", ["app:1"], og.Policy(), cache=False).tags


def test_a_missing_manifest_gives_the_same_error_warm_or_cold(rich) -> None:
    root, cache_dir, named = rich
    plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    _blob(root, named["p2"]["digest"]).unlink()  # a platform manifest of the tagged index
    with pytest.raises(og.BrokenManifestError) as cold:
        plan_layout(root, "gc", [], og.Policy(), cache=False)
    with pytest.raises(og.BrokenManifestError) as warm:
        plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert str(warm.value) == str(cold.value)


def test_the_store_lives_outside_the_layout_and_leaves_no_temporary_file(rich) -> None:
    root, cache_dir, _ = rich
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    for policy in (og.Policy(), og.Policy(), ORAS, og.Policy()):
        plan_layout(root, "gc", [], policy, cache_dir=cache_dir)
        plan_layout(root, "delete", ["app:1"], policy, cache_dir=cache_dir)
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == before
    name = store.store_file_for(root, cache_dir).name
    assert sorted(os.listdir(cache_dir)) == [name]  # one file: the store is its own lock


def test_a_layout_growing_run_after_run_is_planned_as_a_cold_run(rich) -> None:
    root, cache_dir, _ = rich
    plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    b = Builder()
    for i in range(4):  # four runs, each after one more tagged image was pushed
        extra = b.manifest(layers=[b.blob(f"new layer {i}")])
        for digest, data in b.blobs.items():
            if not _blob(root, digest).exists():
                _blob(root, digest).write_bytes(data)
        index = orjson.loads((root / "index.json").read_bytes())
        index["manifests"].append({**extra, "annotations": {og.REF_NAME: f"new:{i}"}})
        (root / "index.json").write_bytes(orjson.dumps(index))
        settle(root)
        hows = []
        for operation, refs in (("gc", []), ("delete", [f"new:{i}"]), ("delete", ["app:1"])):
            got = plan_layout(root, operation, refs, og.Policy(), cache_dir=cache_dir)
            hows.append(got.how)
            assert _comparable(got.plan) == _comparable(_fresh(root, operation, refs, og.Policy()))
        # the gc read the layout, and stored it as it is now: the deletes came from that
        assert hows == ["built", "stored", "stored"]


# -- the property: from the store or not, the plan is what planning now makes --------------------

_MUTATIONS = st.sampled_from(["nothing", "drop a blob", "add a blob", "rewrite index.json",
                              "touch a blob", "replace the blob folder by a copy"])


def _storable(root: Path) -> bool:
    """Whether reading the layout finds nothing that says something about the disk (a
    manifest missing, unreadable or not matching its digest): only then is it stored."""
    disk = read_layout(root)
    og.build_graph(disk.layout)
    return disk.layout.manifests.disk_errors == 0


def _mutate(root: Path, g: GeneratedLayout, mutation: str, data: st.DataObject) -> bool:
    """Change the layout as ``mutation`` says; whether anything planning reads changed."""
    present = sorted(g.blobs)
    if mutation == "drop a blob" and present:
        _blob(root, data.draw(st.sampled_from(present), label="dropped")).unlink()
        return True
    if mutation == "add a blob":
        content = data.draw(st.binary(min_size=1, max_size=64), label="added")
        path = _blob(root, og.digest_bytes(content))
        if path.exists():
            return False
        path.write_bytes(content)
        return True
    if mutation == "rewrite index.json":
        doc = orjson.loads(g.index_json)
        doc["manifests"] = doc["manifests"][:-1]
        (root / "index.json").write_bytes(orjson.dumps(doc))
        return orjson.dumps(doc) != g.index_json
    if mutation == "touch a blob" and present:
        path = _blob(root, data.draw(st.sampled_from(present), label="touched"))
        st_ = path.stat()
        os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))
    if mutation == "replace the blob folder by a copy":  # the same names, another folder
        sha = root / "blobs" / "sha256"
        shutil.copytree(sha, root / "blobs" / "copy", copy_function=shutil.copy2)
        shutil.rmtree(sha)
        (root / "blobs" / "copy").rename(sha)
        return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated_layouts(), policies(), _MUTATIONS, st.data())
def test_a_plan_from_the_store_is_always_the_plan_reading_the_layout_makes(
        g: GeneratedLayout, policy: og.Policy, mutation: str, data: st.DataObject) -> None:
    tags = list(g.unambiguous_tags)
    operation = data.draw(st.sampled_from(["gc", "delete", "remove", "untag"] if tags else ["gc"]),
                          label="operation")
    refs = [data.draw(st.sampled_from(tags), label="ref")] if operation != "gc" else []
    if operation == "untag":  # it takes no policy: its plans carry the default, as the CLI's
        policy = og.Policy()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_layout(Path(tmp) / "layout", g.index_json, dict(g.blobs))
        cache_dir = Path(tmp) / "cache"
        settle(root)
        try:
            plan_layout(root, operation, refs, policy, cache_dir=cache_dir)
        except og.OcigraphError:
            return  # a refused plan is never remembered (tested above)
        stored = store.store_file_for(root, cache_dir).exists()
        assert stored == _storable(root)
        changed = _mutate(root, g, mutation, data)
        try:
            expected = _comparable(_fresh(root, operation, refs, policy))
        except og.OcigraphError as exc:
            with pytest.raises(type(exc)) as got_error:
                plan_layout(root, operation, refs, policy, cache_dir=cache_dir)
            assert str(got_error.value) == str(exc)
            return
        got = plan_layout(root, operation, refs, policy, cache_dir=cache_dir)
        event(f"{mutation}: {got.how}")
        assert _comparable(got.plan) == expected
        if changed:
            assert got.how == "built"
        elif mutation == "nothing":
            assert got.how == ("remembered" if stored else "built")
