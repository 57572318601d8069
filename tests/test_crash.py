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
import stat
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile.killpoints import (
    NAMED_POINTS,
    TEMP_PREFIX,
    Workload,
    check_valid_layout,
    compare_with_reference,
    make_workload,
    run_child,
    run_gc_in_process,
    temp_files,
)
from hostile.layoutgen import present_blobs

import ocigraph as og
from io_adapters import layout as layout_module
from io_adapters.apply import apply_plan
from io_adapters.errors import ApplyError, LayoutAccessError
from io_adapters.layout import read_layout

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
def test_unlink_failing_half_way_is_a_clear_error_and_a_rerun_finishes(
    workload: Workload, tmp_path: Path, code: int
) -> None:
    root = copy_of(workload, tmp_path)
    calls = 0

    def failing_unlink(path: Path) -> None:
        nonlocal calls
        calls += 1
        if calls > workload.deletions // 2:
            raise OSError(code, os.strerror(code), str(path))
        os.unlink(path)

    with pytest.raises(ApplyError) as info:
        apply_plan(root, plan_gc(root), unlink=failing_unlink)
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
