"""Two processes on one layout, plans that went stale, and pushes in flight (``--grace``).

The rules (SEMANTICS §5-§6, docs/guarantees.md):

* the commands that change a layout take an exclusive ``flock`` on the layout folder before
  reading it; a second one waits up to ``--lock-timeout`` and then fails with one line naming
  the holder ("locked by pid N"); nothing is corrupted either way;
* a plan remembers the fingerprint of the index.json it was made from; ``apply`` refuses it
  (exit 1, nothing touched) once index.json has changed;
* a blob written after the plan's snapshot, or younger than ``--grace``, is never deleted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from hostile.killpoints import (
    check_valid_layout,
    child_env,
    compare_with_reference,
    run_gc_in_process,
    start_child,
    temp_files,
)
from hostile.layoutgen import (
    CONFIG,
    LAYER,
    OCI_MANIFEST,
    LayoutBuilder,
    canonical,
    diff_snapshots,
    gc_workload,
    model_live,
    present_blobs,
    sha256,
    snapshot_tree,
)

import ocigraph as og
from io_adapters.apply import apply_plan
from io_adapters.layout import LayoutLock, read_layout
from ocigraph import LayoutLockedError

HOLD_LOCK = """
import sys
from io_adapters.layout import LayoutLock
with LayoutLock(sys.argv[1], timeout=0):
    print("locked", flush=True)
    sys.stdin.read()
"""


def ocigraph(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "io_adapters", *args], capture_output=True,
                          text=True, env=child_env(), timeout=timeout)


def start_ocigraph(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "io_adapters", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())


def hold_lock(root: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=child_env())
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(10)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocigraph: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("concurrency")
    template = gc_workload(20).write(base / "template")
    reference = base / "reference"
    shutil.copytree(template, reference)
    run_gc_in_process(reference)
    return template, reference


@pytest.fixture
def layout(workload: tuple[Path, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(workload[0], tmp_path / "layout"))


# --- the lock -----------------------------------------------------------------------------------


def test_gc_fails_cleanly_naming_the_pid_that_holds_the_lock(layout: Path) -> None:
    before = snapshot_tree(layout)
    holder = hold_lock(layout)
    try:
        proc = ocigraph("gc", "--yes", "--lock-timeout", "0.5", str(layout))
    finally:
        release(holder)
    assert proc.returncode == 1
    assert f"locked by pid {holder.pid}" in one_error_line(proc)
    assert diff_snapshots(before, snapshot_tree(layout)) == []


@pytest.mark.parametrize("command", [["delete", "--yes", "v1"], ["untag", "v1"],
                                     ["remove", "--yes", "v1"]])
def test_every_changing_command_respects_the_lock(layout: Path, command: list[str]) -> None:
    before = snapshot_tree(layout)
    holder = hold_lock(layout)
    try:
        cmd = [command[0], "--lock-timeout", "0.2", str(layout), *command[1:]]
        proc = ocigraph(*cmd)
    finally:
        release(holder)
    assert proc.returncode == 1
    assert "locked by pid" in one_error_line(proc)
    assert diff_snapshots(before, snapshot_tree(layout)) == []


def test_apply_of_a_saved_plan_respects_the_lock(layout: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    assert ocigraph("plan", "gc", str(layout), "-o", str(plan_file)).returncode == 0
    before = snapshot_tree(layout)
    holder = hold_lock(layout)
    try:
        proc = ocigraph("apply", "--lock-timeout", "0.2", str(layout), str(plan_file))
    finally:
        release(holder)
    assert proc.returncode == 1 and "locked by pid" in one_error_line(proc)
    assert diff_snapshots(before, snapshot_tree(layout)) == []


def test_gc_waits_for_the_lock_and_then_finishes(layout: Path, workload: tuple[Path, Path]) -> None:
    holder = hold_lock(layout)
    gc = start_ocigraph("gc", "--yes", "--lock-timeout", "30", str(layout))
    time.sleep(1.0)
    assert gc.poll() is None, "gc did not wait for the lock"
    assert present_blobs(layout) == present_blobs(workload[0])
    release(holder)
    _, err = gc.communicate(timeout=60)
    assert gc.returncode == 0, err
    assert compare_with_reference(layout, workload[1]) == []


def test_lock_in_process_reports_the_holder() -> None:
    # Two opens in one process exclude each other too (flock is per open file description).
    import tempfile

    with tempfile.TemporaryDirectory() as d, LayoutLock(d):
        with pytest.raises(LayoutLockedError) as info:
            LayoutLock(d, timeout=0.1).acquire()
        assert f"locked by pid {os.getpid()}" in str(info.value)


@pytest.mark.parametrize("round_", range(3))
def test_two_gcs_at_once_end_in_the_uninterrupted_state(
    layout: Path, workload: tuple[Path, Path], round_: int
) -> None:
    procs = [start_ocigraph("gc", "--yes", "--lock-timeout", "60", str(layout)) for _ in range(2)]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    for code, _, err in results:
        assert code == 0, err
        assert "Traceback" not in err
    assert compare_with_reference(layout, workload[1]) == []


def test_gc_and_apply_of_an_older_plan_at_once(layout: Path, workload: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    # The plan was made before the gc; whichever goes second finds index.json changed or the
    # work done: apply refuses (stale) or succeeds -- never a broken layout.
    plan_file = tmp_path / "plan.json"
    assert ocigraph("plan", "gc", str(layout), "-o", str(plan_file)).returncode == 0
    live = model_live(layout)
    assert live is not None
    gc = start_ocigraph("gc", "--yes", "--lock-timeout", "60", str(layout))
    ap = start_ocigraph("apply", "--lock-timeout", "60", str(layout), str(plan_file))
    (_, gc_err), (_, ap_err) = gc.communicate(timeout=120), ap.communicate(timeout=120)
    assert gc.returncode == 0, gc_err
    assert ap.returncode in (0, 1), ap_err
    if ap.returncode == 1:
        assert "stale plan" in ap_err and len(ap_err.strip().splitlines()) == 1
    assert check_valid_layout(layout, live) == []
    assert compare_with_reference(layout, workload[1]) == []


def test_planning_while_a_gc_applies_never_yields_a_plan_that_applies_wrongly(
    layout: Path, workload: tuple[Path, Path], tmp_path: Path
) -> None:
    # ``plan`` takes no lock, so it may read a layout mid-apply; the plan then carries the
    # fingerprint of whichever index.json it read and apply judges it by that.
    live = model_live(layout)
    assert live is not None
    gc = start_child(layout)
    plans = []
    for i in range(4):
        f = tmp_path / f"plan{i}.json"
        p = ocigraph("plan", "gc", str(layout), "-o", str(f))
        assert "Traceback" not in p.stderr and "internal error" not in p.stderr
        if p.returncode == 0:
            plans.append(f)
        else:
            one_error_line(p)
    gc.communicate(timeout=120)
    assert gc.returncode == 0
    for f in plans:
        p = ocigraph("apply", str(layout), str(f))
        assert p.returncode in (0, 1), p.stderr
        if p.returncode == 1:
            assert "stale plan" in one_error_line(p)
        assert check_valid_layout(layout, live) == []
    assert compare_with_reference(layout, workload[1]) == []


# --- stale plans --------------------------------------------------------------------------------


def test_plan_made_before_index_json_changed_is_refused_and_nothing_touched(
    layout: Path, tmp_path: Path
) -> None:
    plan_file = tmp_path / "plan.json"
    assert ocigraph("plan", "gc", str(layout), "-o", str(plan_file)).returncode == 0
    untag = ocigraph("untag", str(layout), "v1")  # another process changes index.json
    assert untag.returncode == 0, untag.stderr
    before = snapshot_tree(layout)
    proc = ocigraph("apply", str(layout), str(plan_file))
    assert proc.returncode == 1
    assert "stale plan" in one_error_line(proc)
    assert diff_snapshots(before, snapshot_tree(layout)) == []


def test_plan_is_refused_after_another_gc_ran(layout: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    assert ocigraph("plan", "gc", str(layout), "-o", str(plan_file)).returncode == 0
    assert ocigraph("gc", "--yes", str(layout)).returncode == 0
    before = snapshot_tree(layout)
    proc = ocigraph("apply", str(layout), str(plan_file))
    assert proc.returncode == 1 and "stale plan" in one_error_line(proc)
    assert diff_snapshots(before, snapshot_tree(layout)) == []


def test_a_byte_level_rewrite_of_index_json_makes_a_plan_stale(layout: Path) -> None:
    # Same entries, different bytes (another tool reformatted it): the fingerprint is of the
    # bytes, so the plan is refused rather than trusted.
    plan = og.plan_gc(og.build_graph(read_layout(layout).layout))
    doc = orjson.loads((layout / "index.json").read_bytes())
    (layout / "index.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    before = snapshot_tree(layout)
    with pytest.raises(og.StalePlanError):
        apply_plan(layout, plan)
    assert diff_snapshots(before, snapshot_tree(layout)) == []


def test_a_plan_whose_blobs_are_partly_gone_still_applies(layout: Path, tmp_path: Path) -> None:
    # e.g. planned while another gc was deleting: a blob already gone is not an error (§6).
    plan_file = tmp_path / "plan.json"
    assert ocigraph("plan", "gc", str(layout), "-o", str(plan_file)).returncode == 0
    plan = og.Plan.from_json(plan_file.read_bytes())
    gone = [d.digest for d in plan.deletions if d.present][:5]
    for d in gone:
        _blob_file(layout, d).unlink()
    proc = ocigraph("apply", "--format", "json", str(layout), str(plan_file))
    assert proc.returncode == 0, proc.stderr
    assert set(gone) <= set(orjson.loads(proc.stdout)["result"]["alreadyGone"])


# --- grace and blobs written after planning ----------------------------------------------------


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def _blob_file(root: Path, digest: str) -> Path:
    alg, enc = digest.split(":", 1)
    return root / "blobs" / alg / enc


def _age_all(root: Path, seconds: float) -> None:
    for d in present_blobs(root):
        _age(_blob_file(root, d), seconds)


def test_blob_rewritten_after_planning_is_not_deleted(layout: Path, tmp_path: Path) -> None:
    # e.g. a push re-uploads a blob the plan saw as garbage: its mtime is after the snapshot.
    plan_file = tmp_path / "plan.json"
    assert ocigraph("plan", "gc", str(layout), "-o", str(plan_file)).returncode == 0
    plan = og.Plan.from_json(plan_file.read_bytes())
    victim = next(d.digest for d in plan.deletions if d.present)
    path = _blob_file(layout, victim)
    data = path.read_bytes()
    time.sleep(0.05)
    path.unlink()
    path.write_bytes(data)  # written again, after the plan's snapshot
    proc = ocigraph("apply", "--format", "json", str(layout), str(plan_file))
    assert proc.returncode == 0, proc.stderr
    result = orjson.loads(proc.stdout)["result"]
    assert {"digest": victim, "why": "written after the plan was made"} in result["skipped"]
    assert path.exists()


def test_grace_keeps_young_garbage_and_deletes_old_garbage(layout: Path) -> None:
    _age_all(layout, 7200)
    before = present_blobs(layout)
    live = model_live(layout)
    assert live is not None
    young = sorted(before - live)[:10]
    for d in young:
        _age(_blob_file(layout, d), 60)
    proc = ocigraph("gc", "--yes", "--grace", "1h", str(layout))
    assert proc.returncode == 0, proc.stderr
    after = present_blobs(layout)
    assert set(young) <= after
    assert live <= after
    assert len(before - after) > 50  # old garbage went


def _in_flight_push(root: Path) -> tuple[LayoutBuilder, dict[str, object]]:
    """Config and layers of a new image written to blobs/, manifest not yet written."""
    b = LayoutBuilder()
    config = b.blob(canonical({"name": "in flight"}), CONFIG)
    layers = [b.blob(f"in-flight layer {i}", LAYER) for i in range(3)]
    for d, data in b.blobs.items():
        _blob_file(root, d).write_bytes(data)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    return b, manifest


def test_grace_protects_a_push_in_flight(layout: Path) -> None:
    _age_all(layout, 7200)
    b, manifest = _in_flight_push(layout)
    proc = ocigraph("gc", "--yes", "--grace", "10m", str(layout))
    assert proc.returncode == 0, proc.stderr
    assert set(b.blobs) <= present_blobs(layout)
    # the push completes: manifest, then index.json; the image is whole
    raw = canonical(manifest)
    _blob_file(layout, sha256(raw)).write_bytes(raw)
    doc = orjson.loads((layout / "index.json").read_bytes())
    doc["manifests"].append({"mediaType": OCI_MANIFEST, "digest": sha256(raw), "size": len(raw),
                             "annotations": {"org.opencontainers.image.ref.name": "pushed"}})
    (layout / "index.json").write_bytes(orjson.dumps(doc))
    fsck = ocigraph("fsck", str(layout))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_without_grace_a_push_in_flight_is_garbage(layout: Path) -> None:
    # Why --grace exists: the same race with no grace loses the pushed layers.
    b, _ = _in_flight_push(layout)
    proc = ocigraph("gc", "--yes", str(layout))
    assert proc.returncode == 0, proc.stderr
    assert not set(b.blobs) & present_blobs(layout)


def test_grace_protects_what_a_young_unindexed_manifest_references(layout: Path) -> None:
    # A push that reuses an existing (old, garbage) layer writes only the manifest, then
    # index.json.  With grace, the young manifest keeps that old layer too.
    _age_all(layout, 7200)
    live = model_live(layout)
    assert live is not None
    garbage_layer = next(d for d in sorted(present_blobs(layout) - live)
                         if _blob_file(layout, d).read_bytes().startswith(b"layer "))
    data = _blob_file(layout, garbage_layer).read_bytes()
    config = LayoutBuilder().blob(canonical({"name": "reuses"}), CONFIG)
    _blob_file(layout, config["digest"]).write_bytes(canonical({"name": "reuses"}))
    raw = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                     "layers": [{"mediaType": LAYER, "digest": garbage_layer, "size": len(data)}]})
    _blob_file(layout, sha256(raw)).write_bytes(raw)
    proc = ocigraph("gc", "--yes", "--grace", "10m", str(layout))
    assert proc.returncode == 0, proc.stderr
    assert {garbage_layer, sha256(raw), config["digest"]} <= present_blobs(layout)


def test_grace_keeps_the_children_of_a_young_untagged_manifest(layout: Path) -> None:
    _age_all(layout, 7200)
    live = model_live(layout)
    assert live is not None
    idx = orjson.loads((layout / "index.json").read_bytes())
    untagged = [e["digest"] for e in idx["manifests"]
                if "annotations" not in e and e["digest"] not in live]
    young = untagged[0]
    _age(_blob_file(layout, young), 10)
    raw = _blob_file(layout, young).read_bytes()
    doc = orjson.loads(raw)
    children = {doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])}
    proc = ocigraph("gc", "--yes", "--grace", "10m", str(layout))
    assert proc.returncode == 0, proc.stderr
    assert {young, *children} <= present_blobs(layout)
    assert temp_files(layout) == []
