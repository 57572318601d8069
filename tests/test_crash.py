"""Crash safety of ``apply``: SIGKILL at many instants, and system calls failing half way.

SEMANTICS §6: a crash at any point leaves a valid layout (index.json parses, every blob it
reaches exists, nothing live is lost) and re-planning finishes the job, ending in exactly the
state an uninterrupted run reaches.  The kill points are reached with an audit hook in a child
process (``tests/hostile/killpoints.py``); production code has no test hook.  The large run
(>= 100 kill points over >= 1,000 deletions) is ``benchmarks/crash_kill.py``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile.killpoints import (
    NAMED_POINTS,
    PROBE_PREFIX,
    TEMP_PREFIX,
    Workload,
    check_valid_layout,
    compare_with_reference,
    make_workload,
    run_child,
    run_forked,
    run_gc_in_process,
    temp_files,
)
from hostile.layoutgen import model_reachable, present_blobs

import ocigraph as og
from io_adapters import layout as layout_module
from io_adapters.apply import apply_plan
from io_adapters.layout import read_layout
from io_adapters.quarantine import recover
from ocigraph import ApplyError, LayoutAccessError

GARBAGE_IMAGES = 33  # about 200 deletions: 6 blobs per garbage image, plus dangling blobs




@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    w = make_workload(tmp_path_factory.mktemp("crash"), GARBAGE_IMAGES)
    assert w.deletions >= 200
    # The reference run really did what the test relies on: nothing live went, index changed.
    assert w.live <= present_blobs(w.reference)
    assert (w.reference / "index.json").read_bytes() != (w.template / "index.json").read_bytes()
    return w


def copy_of(w: Workload, tmp_path: Path) -> Path:
    root = tmp_path / "layout"
    shutil.copytree(w.template, root)
    return root


def unlink_points(total: int, count: int = 12) -> list[str]:
    ns = {1, 2, total} | {max(1, round(total * k / (count - 2))) for k in range(1, count - 2)}
    return [f"unlink:{n}" for n in sorted(ns)]


def test_temp_prefix_matches_the_adapter() -> None:
    assert TEMP_PREFIX == layout_module.TEMP_PREFIX
    assert PROBE_PREFIX == layout_module.PROBE_PREFIX


# --- SIGKILL -----------------------------------------------------------------------------------


KILL_POINTS = [*NAMED_POINTS, *unlink_points(218)]  # 218: the workload's deletions, checked below


def test_kill_points_cover_the_whole_apply(workload: Workload) -> None:
    assert workload.deletions == 218, "update KILL_POINTS' unlink spread for the new workload"
    assert len(KILL_POINTS) >= 15


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_leaves_a_valid_layout_and_gc_then_matches_an_uninterrupted_run(
    workload: Workload, tmp_path: Path, point: str
) -> None:
    root = copy_of(workload, tmp_path)
    proc = run_child(root, point)
    assert proc.returncode == -signal.SIGKILL, f"not killed at {point}: {proc.stderr}"

    assert check_valid_layout(root, workload.live) == []
    index_now = (root / "index.json").read_bytes()
    assert index_now in {(workload.template / "index.json").read_bytes(),
                         (workload.reference / "index.json").read_bytes()}, "index.json is a mix"
    if point in ("temp-partial", "before-rename"):
        assert temp_files(root), "the kill should have left the temp file behind"

    run_gc_in_process(root)
    assert compare_with_reference(root, workload.reference) == []


@pytest.mark.parametrize("point", ["before-rename", "unlink:109"])
def test_sigkill_of_the_cli_then_cli_gc_matches_an_uninterrupted_run(
    workload: Workload, tmp_path: Path, point: str
) -> None:
    root = copy_of(workload, tmp_path)
    proc = run_child(root, point, via="cli")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert check_valid_layout(root, workload.live) == []
    again = run_child(root, via="cli")
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert compare_with_reference(root, workload.reference) == []


def test_repeated_kills_during_recovery_still_converge(workload: Workload, tmp_path: Path) -> None:
    root = copy_of(workload, tmp_path)
    for point in ("before-rename", "unlink:40", "unlink:40", "unlink:40", "unlink:40"):
        proc = run_child(root, point)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert check_valid_layout(root, workload.live) == []
    last = run_child(root)
    assert last.returncode == 0, last.stderr
    assert compare_with_reference(root, workload.reference) == []


def test_a_killed_lock_holder_does_not_block_the_next_run(workload: Workload, tmp_path: Path) -> None:
    # flock dies with its holder, even on SIGKILL: no stale lock file to clean up by hand.
    root = copy_of(workload, tmp_path)
    proc = run_child(root, "unlink:1")
    assert proc.returncode == -signal.SIGKILL
    again = run_child(root, lock_timeout=0)
    assert again.returncode == 0, again.stderr


# --- failing system calls, no kill ------------------------------------------------------------


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message.strip(), repr(message)


def plan_gc(root: Path) -> og.Plan:
    return og.plan_gc(og.build_graph(read_layout(root).layout))


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO, errno.EROFS])
def test_a_move_failing_half_way_is_a_clear_error_and_a_rerun_finishes(
    workload: Workload, tmp_path: Path, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_of(workload, tmp_path)
    calls, real_rename = 0, os.rename

    def failing_rename(src: str, dst: str, **kw: object) -> None:
        nonlocal calls
        calls += 1
        if calls > workload.deletions // 2:
            raise OSError(code, os.strerror(code), src)
        real_rename(src, dst, **kw)  # type: ignore[arg-type]

    plan = plan_gc(root)
    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(ApplyError) as info:
        apply_plan(root, plan)
    monkeypatch.undo()
    err = info.value
    assert_one_line(str(err))
    assert os.strerror(code) in str(err) and "plan again" in str(err)
    assert err.done == workload.deletions // 2 and err.index_written
    assert check_valid_layout(root, workload.live) == []
    run_gc_in_process(root)
    assert compare_with_reference(root, workload.reference) == []


def _unchanged_after_failed_index_write(w: Workload, root: Path) -> None:
    assert (root / "index.json").read_bytes() == (w.template / "index.json").read_bytes()
    assert present_blobs(root) == present_blobs(w.template), "a blob was deleted"
    assert temp_files(root) == []


def _fd_is_temp(fd: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(TEMP_PREFIX)
    except OSError:
        return False


def test_disk_full_while_writing_index_json_leaves_it_unchanged(
    workload: Workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_of(workload, tmp_path)
    real_write = os.write

    def write_until_full(fd: int, data: bytes) -> int:
        if _fd_is_temp(fd):
            if len(data) > 100:  # write a little, then the disk is full
                return real_write(fd, bytes(data[:100]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write_until_full)
    with pytest.raises(LayoutAccessError) as info:
        apply_plan(root, plan_gc(root))
    monkeypatch.undo()
    assert_one_line(str(info.value))
    assert "No space left on device" in str(info.value) and "unchanged" in str(info.value)
    _unchanged_after_failed_index_write(workload, root)
    run_gc_in_process(root)
    assert compare_with_reference(root, workload.reference) == []


@pytest.mark.parametrize(
    ("target", "code"),
    [("fsync", errno.EIO), ("replace", errno.EXDEV), ("create", errno.EROFS),
     ("create", errno.EDQUOT)],
)
def test_index_json_write_failures_are_clear_errors_with_nothing_changed(
    workload: Workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, code: int
) -> None:
    root = copy_of(workload, tmp_path)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    real_open = os.open

    def failing_create(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_CREAT:  # the temp file beside index.json
            raise OSError(code, os.strerror(code))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    plan = plan_gc(root)
    if target == "create":
        monkeypatch.setattr(os, "open", failing_create)
    else:
        monkeypatch.setattr(os, target, fail)
    with pytest.raises(LayoutAccessError) as info:
        apply_plan(root, plan)
    monkeypatch.undo()
    assert_one_line(str(info.value))
    assert os.strerror(code) in str(info.value)
    _unchanged_after_failed_index_write(workload, root)
    run_gc_in_process(root)
    assert compare_with_reference(root, workload.reference) == []


def test_folder_fsync_failing_after_the_rename_deletes_no_blob(
    workload: Workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The new index.json may not survive a power loss: deleting the blobs the old one reaches
    # would then break the layout, so apply stops before the first unlink.
    root = copy_of(workload, tmp_path)

    real_fsync = os.fsync

    def fail_on_folders(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    plan = plan_gc(root)
    monkeypatch.setattr(os, "fsync", fail_on_folders)
    with pytest.raises(LayoutAccessError) as info:
        apply_plan(root, plan)
    monkeypatch.undo()
    assert_one_line(str(info.value))
    assert "no blob was deleted" in str(info.value)
    assert present_blobs(root) == present_blobs(workload.template)
    assert check_valid_layout(root, workload.live) == []
    run_gc_in_process(root)
    assert compare_with_reference(root, workload.reference) == []


CLI_FAULTS = [
    ("unlink:50=EACCES", "Permission denied"),
    ("unlink:50=EIO", "Input/output error"),
    ("temp-partial=ENOSPC", "No space left on device"),
    ("temp-open=EROFS", "Read-only file system"),
    ("before-rename=EXDEV", "Invalid cross-device link"),
    ("after-rename=EIO", "no blob was deleted"),
]


@pytest.mark.parametrize(("fault", "says"), CLI_FAULTS)
def test_cli_gc_with_a_failing_system_call_prints_one_line_and_exits_1(
    workload: Workload, tmp_path: Path, fault: str, says: str
) -> None:
    root = copy_of(workload, tmp_path)
    proc = run_child(root, fail=fault, via="cli")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocigraph: error: "), proc.stderr
    assert says in lines[0]
    assert "internal error" not in proc.stderr
    assert check_valid_layout(root, workload.live) == []
    assert temp_files(root) == []
    again = run_child(root, via="cli")
    assert again.returncode == 0, again.stderr
    assert compare_with_reference(root, workload.reference) == []


# --- a real full disk and a real read-only file system (tmpfs; needs mount rights) -----------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def fill_up(fs: Path) -> Path:
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def test_real_disk_full_on_a_tmpfs(tmp_path: Path) -> None:
    w = make_workload(tmp_path / "small", 10)
    with small_tmpfs(tmp_path / "fs", "4m") as fs:
        root = fs / "layout"
        shutil.copytree(w.template, root)
        filler = fill_up(fs)
        before = present_blobs(root)
        proc = run_child(root, via="cli")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "No space left on device" in proc.stderr and len(proc.stderr.splitlines()) == 1
        assert (root / "index.json").read_bytes() == (w.template / "index.json").read_bytes()
        assert present_blobs(root) == before and temp_files(root) == []
        filler.unlink()
        again = run_child(root, via="cli")
        assert again.returncode == 0, again.stderr
        assert compare_with_reference(root, w.reference) == []


def test_read_only_file_system_is_a_clear_error(tmp_path: Path) -> None:
    w = make_workload(tmp_path / "small", 10)
    with small_tmpfs(tmp_path / "fs", "8m") as fs:
        root = fs / "layout"
        shutil.copytree(w.template, root)
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True, capture_output=True)
        proc = run_child(root, via="cli")
        assert proc.returncode == 1
        assert "Read-only file system" in proc.stderr and len(proc.stderr.splitlines()) == 1
        assert present_blobs(root) == present_blobs(w.template)
        subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True, capture_output=True)
        again = run_child(root, via="cli")
        assert again.returncode == 0, again.stderr
        assert compare_with_reference(root, w.reference) == []


# --- the quarantine (keep_deleted): SIGKILL at every step of an apply, a re-check, a purge,
# a restore; the next run converges and no blob is ever lost --------------------------------

KEEP = 3600.0
KEPT_GARBAGE_IMAGES = 6  # 56 deletions: every move is a kill point


def quarantined_blobs(root: Path) -> frozenset[str]:
    """Every blob file held in the layout's quarantine folders."""
    top = root / ".ocigraph" / "quarantine"
    held = set()
    for folder in top.iterdir() if top.is_dir() else ():
        for alg in folder.iterdir():
            if alg.is_dir():
                held |= {f"{alg.name}:{f.name}" for f in alg.iterdir()}
    return frozenset(held)


def quarantine_leftovers(root: Path) -> list[str]:
    """Temp files, and quarantine folders without a journal: what a finished run never leaves."""
    top = root / ".ocigraph" / "quarantine"
    bad = [str(p) for p in top.rglob(".*.tmp")] if top.is_dir() else []
    bad += [str(q) for q in (top.iterdir() if top.is_dir() else ()) if not (q / "journal.json").is_file()]
    return bad + [str(p) for p in root.glob(f"{PROBE_PREFIX}*")]


@dataclass(frozen=True)
class Kept:
    w: Workload
    reference: Path  # the template after one uninterrupted gc with keep_deleted
    moved: int  # blobs it moved into the quarantine


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Kept:
    w = make_workload(tmp_path_factory.mktemp("kept"), KEPT_GARBAGE_IMAGES)
    reference = w.template.parent / "kept-reference"
    shutil.copytree(w.template, reference)
    assert run_forked(reference, keep_deleted=KEEP) == 0
    # a kept gc leaves blobs/ as a gc does, and holds exactly what that gc deleted
    assert compare_with_reference(reference, w.reference) == []
    assert quarantined_blobs(reference) == present_blobs(w.template) - present_blobs(w.reference)
    assert quarantine_leftovers(reference) == []
    return Kept(w, reference, w.deletions)


def nothing_lost(root: Path, w: Workload) -> list[str]:
    """Every blob of the template is in blobs/ or in a quarantine, and the layout is valid."""
    lost = present_blobs(w.template) - present_blobs(root) - quarantined_blobs(root)
    return check_valid_layout(root, w.live) + ([f"{len(lost)} blob(s) lost"] if lost else [])


def apply_points(moves: int) -> list[str]:
    return ["lock", "journal-temp:1", "journal:1", "journal-temp:2", "journal:2",
            "temp-open", "temp-partial", "before-rename", "after-rename",
            *(f"move:{n}" for n in range(1, moves + 1)),
            "read-index:1", "journal-temp:3", "journal:3"]


KEPT_POINTS = apply_points(56)
RELIST_AT = 20  # a writer puts the old index.json back just before the 20th move


def test_the_kept_kill_points_cover_every_move(kept: Kept) -> None:
    assert kept.moved == 56, "update KEPT_POINTS for the new workload"
    assert len(KEPT_POINTS) + len(RELIST_POINTS) + len(PURGE_POINTS) + len(RESTORE_POINTS) >= 100


@pytest.mark.parametrize("point", KEPT_POINTS)
def test_sigkill_of_a_kept_apply_loses_nothing_and_the_next_run_converges(
        kept: Kept, tmp_path: Path, point: str) -> None:
    w = kept.w
    root = copy_of(w, tmp_path)
    assert run_forked(root, point, keep_deleted=KEEP) == -signal.SIGKILL, f"not killed at {point}"
    assert nothing_lost(root, w) == []
    assert (root / "index.json").read_bytes() in {(w.template / "index.json").read_bytes(),
                                                  (w.reference / "index.json").read_bytes()}
    assert run_forked(root, keep_deleted=KEEP) == 0
    assert compare_with_reference(root, w.reference) == []
    assert quarantined_blobs(root) == quarantined_blobs(kept.reference)  # (in one or two folders)
    assert quarantine_leftovers(root) == []


# The default apply goes through the same quarantine, purged before it returns: SIGKILL at
# every step of it -- each move out of blobs/, each unlink of the purge, the quarantine's own
# files and folders -- and the next gc converges to the uninterrupted gc's layout.
PURGED_POINTS = [*apply_points(56)[:-2], *(f"unlink:{n}" for n in range(1, 59)),
                 *(f"rmdir:{n}" for n in range(1, 5))]


def test_the_default_apply_has_over_100_distinct_kill_points() -> None:
    assert len(set(PURGED_POINTS)) == len(PURGED_POINTS) >= 100


@pytest.mark.parametrize("point", PURGED_POINTS)
def test_sigkill_of_a_default_apply_loses_nothing_and_the_next_run_converges(
        kept: Kept, tmp_path: Path, point: str) -> None:
    w = kept.w
    root = copy_of(w, tmp_path)
    assert run_forked(root, point) == -signal.SIGKILL, f"not killed at {point}"
    assert check_valid_layout(root, w.live) == []  # (what the purge unlinked was garbage)
    assert present_blobs(w.reference) <= present_blobs(root)
    assert (root / "index.json").read_bytes() in {(w.template / "index.json").read_bytes(),
                                                  (w.reference / "index.json").read_bytes()}
    assert run_forked(root) == 0
    assert compare_with_reference(root, w.reference) == []
    assert not (root / ".ocigraph").exists() and quarantine_leftovers(root) == []


# A tool that read index.json before the run writes it back (in place) during the moves: the
# re-check finds every entry's blobs live again and moves them back; SIGKILL at each of those
# steps.  The next gc then makes exactly the uninterrupted gc's layout.
RELIST_POINTS = [*(f"back:{n}" for n in range(1, 37)), "read-index:1", "read-index:2",
                 "journal:3", "journal:4", f"move:{RELIST_AT}", f"move:{RELIST_AT + 1}", "move:56"]


def test_a_writer_relisting_during_the_moves_gets_every_blob_back(kept: Kept, tmp_path: Path) -> None:
    w = kept.w
    root = copy_of(w, tmp_path)
    old = (w.template / "index.json").read_bytes()
    assert run_forked(root, keep_deleted=KEEP, relist=(RELIST_AT, old)) == 0
    assert (root / "index.json").read_bytes() == old
    reachable = model_reachable(root)
    assert reachable is not None and reachable <= present_blobs(root), "a relisted blob is missing"
    assert not reachable & quarantined_blobs(root)
    assert present_blobs(root) | quarantined_blobs(root) == present_blobs(w.template)
    back = len(present_blobs(root) - present_blobs(w.reference))
    assert back == 36, f"{back} blobs came back: RELIST_POINTS assumes 36"


@pytest.mark.parametrize("point", RELIST_POINTS)
def test_sigkill_while_blobs_go_back_loses_nothing_and_gc_converges(
        kept: Kept, tmp_path: Path, point: str) -> None:
    w = kept.w
    root = copy_of(w, tmp_path)
    old = (w.template / "index.json").read_bytes()
    code = run_forked(root, point, keep_deleted=KEEP, relist=(RELIST_AT, old))
    assert code == -signal.SIGKILL, f"not killed at {point}"
    # index.json may list what the quarantine holds (the writer's doing), but nothing is lost,
    # and what the next command does first puts it all back
    assert present_blobs(root) | quarantined_blobs(root) == present_blobs(w.template)
    recover(root)
    assert nothing_lost(root, w) == []
    assert run_forked(root, keep_deleted=KEEP) == 0
    assert compare_with_reference(root, w.reference) == []
    assert present_blobs(root) | quarantined_blobs(root) == present_blobs(w.template)
    assert quarantine_leftovers(root) == []


def kept_copy(kept: Kept, tmp_path: Path) -> Path:
    root = tmp_path / "layout"
    shutil.copytree(kept.reference, root)
    return root


PURGE_POINTS = [*(f"unlink:{n}" for n in (1, 2, 3, *range(5, 57, 4), 56, 57, 58)),
                "rmdir:1", "rmdir:2", "rmdir:3", "rmdir:4"]


@pytest.mark.parametrize("point", PURGE_POINTS)
def test_sigkill_during_a_purge_then_purging_again_ends_it(kept: Kept, tmp_path: Path,
                                                            point: str) -> None:
    root = kept_copy(kept, tmp_path)
    assert run_forked(root, point, action="purge") == -signal.SIGKILL, f"not killed at {point}"
    assert check_valid_layout(root, kept.w.live) == []
    assert compare_with_reference(root, kept.w.reference) == []
    assert run_forked(root, action="purge") == 0
    assert compare_with_reference(root, kept.w.reference) == []
    assert not (root / ".ocigraph").exists()


RESTORE_POINTS = [*(f"back:{n}" for n in (1, 2, *range(4, 56, 5), 56)), "temp-open",
                  "temp-partial", "before-rename", "after-rename", "rmdir:1", "rmdir:2", "rmdir:3"]


@pytest.mark.parametrize("point", RESTORE_POINTS)
def test_sigkill_during_a_restore_then_restoring_again_ends_it(kept: Kept, tmp_path: Path,
                                                                point: str) -> None:
    w = kept.w
    root = kept_copy(kept, tmp_path)
    assert run_forked(root, point, action="restore") == -signal.SIGKILL, f"not killed at {point}"
    assert nothing_lost(root, w) == []
    if list(root.glob(".ocigraph/quarantine/*/journal.json")):  # not done: restore again
        assert run_forked(root, action="restore") == 0
    recover(root)  # what the next command does first: empty folders a kill left go
    assert (root / "index.json").read_bytes() == (w.template / "index.json").read_bytes()
    assert present_blobs(root) == present_blobs(w.template)
    assert not (root / ".ocigraph").exists()
