"""Kill an applying ocigraph at a chosen instant (or make one system call fail), then check
what it left.

The child (``python -m hostile.killpoints ROOT --kill POINT``) runs a real GC -- through the
CLI when ``--via cli``, else through the adapter (lock, read, plan, apply) -- and SIGKILLs itself
at POINT.  With ``--fail POINT=ERRNO`` (e.g. ``unlink:5=EACCES``, ``temp-partial=ENOSPC``) the
system call at POINT raises that ``OSError`` instead, as a full disk or a failing device would.
Points are found with a ``sys.addaudithook`` hook (``open``, ``os.rename``, ``os.remove``
events; the shell works relative to its directory handle, so their names are relative) and by
wrapping ``os.write`` and ``os.fsync``, so production code carries no test hook at all:

``lock``           before the layout lock is taken
``temp-open``      before the temp index.json is created
``temp-partial``   half of the new index.json written to the temp file (``os.write`` wrapped)
``before-rename``  temp file complete and fsynced, not yet renamed over index.json
``after-rename``   index.json replaced, the folder not yet fsynced, no blob deleted
                   (the fsync of the folder, after the rename, is the point)
``unlink:N``       just before the N-th unlink of a file through a folder's descriptor (a blob
                   in blobs/ or in the quarantine, then the quarantine's own files)
``none``           run to completion

and, for the quarantine (``keep_deleted``; :mod:`io_adapters.quarantine`):

``probe``          before the file that reads the file system's clock is created
``journal-temp:N`` before the N-th temp file of the quarantine (index.json's copy, journal) is
                   created
``journal:N``      the N-th such file written and fsynced, before its rename
``move:N``         before the N-th blob is renamed into the quarantine
``back:N``         before the N-th blob is renamed back to blobs/ (live again)
``read-index:N``   before index.json is opened the N-th time after it was replaced (re-checks)
``rmdir:N``        before the N-th folder is removed (the quarantine's, when it is purged)

Exit status: -9 when the kill happened, 0 on success, 1 on a (one-line) ocigraph error,
3 when the kill point was never reached.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hostile.layoutgen import gc_workload, model_graph, model_live, model_reachable, present_blobs

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TESTS_DIR.parent
TEMP_PREFIX = ".index.json.ocigraph-"  # io_adapters.apply.TEMP_PREFIX, checked by the tests
PROBE_PREFIX = ".ocigraph-clock-"  # io_adapters.layout.PROBE_PREFIX, checked by the tests
QUARANTINE_FILES = ("journal.json", "index.json.before")
NAMED_POINTS = ("lock", "temp-open", "temp-partial", "before-rename", "after-rename")
COUNTED_POINTS = ("unlink", "journal-temp", "journal", "move", "back", "read-index", "rmdir")
NOT_REACHED = 3


def install_kill_point(root: Path, point: str, fail_errno: int | None = None,
                       relist: tuple[int, bytes] | None = None) -> None:
    """Arrange for this process to SIGKILL itself at ``point`` (see the module docstring), or,
    with ``fail_errno``, for the system call at ``point`` to raise that ``OSError``.
    ``relist=(N, data)``: just before the N-th move into the quarantine, rewrite index.json in
    place with ``data``, as a tool that read it before the run and writes it now."""
    if point == "none" and relist is None:
        return

    def _die(path: object = None) -> None:
        if fail_errno is None:
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(fail_errno, os.strerror(fail_errno), path)
    root_s = os.path.abspath(root)
    blobs_s = os.path.join(root_s, "blobs") + os.sep
    state = {"renamed": False, "temp": False, **dict.fromkeys(COUNTED_POINTS, 0)}
    kind, _, n = point.partition(":")
    nth = int(n) if kind in COUNTED_POINTS else None

    def count(what: str, path: object) -> None:
        state[what] += 1
        if kind == what and state[what] == nth:
            _die(path)

    def folder_of(fd: object) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}") if isinstance(fd, int) and fd >= 0 else ""
        except OSError:
            return ""

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "open":
            path = args[0]
            if not isinstance(path, (str, bytes, os.PathLike)):
                return
            name = os.fsdecode(path)
            base = os.path.basename(name)
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            if point == "lock" and os.path.abspath(name) == root_s and flags & os.O_DIRECTORY:
                _die(name)
            if base.startswith(TEMP_PREFIX):
                state["temp"] = True
                if point == "temp-open":
                    _die(name)
            elif base.startswith(PROBE_PREFIX) and point == "probe":
                _die(name)
            elif base.startswith(tuple(f".{f}." for f in QUARANTINE_FILES)) and flags & os.O_CREAT:
                count("journal-temp", name)
            elif name == "index.json" and state["renamed"]:
                count("read-index", name)
        elif event == "os.rename":
            dst = os.fsdecode(args[1])  # type: ignore[arg-type]
            if os.path.basename(dst) == "index.json" and state["temp"]:
                if point == "before-rename":
                    _die(dst)
                state["renamed"] = True
            elif dst in QUARANTINE_FILES:
                count("journal", dst)
            elif "/.ocigraph/quarantine/" in folder_of(args[3] if len(args) > 3 else None):
                if relist is not None and state["move"] + 1 == relist[0]:
                    with open(os.path.join(root_s, "index.json"), "r+b") as f:
                        f.truncate(0)
                        f.write(relist[1])
                count("move", dst)
            elif "/blobs/" in folder_of(args[3] if len(args) > 3 else None) + "/":
                count("back", dst)
        elif event == "os.remove" and nth is not None:
            name = os.fsdecode(args[0])  # type: ignore[arg-type]
            relative = len(args) > 1 and args[1] is not None  # unlinked through a folder's fd
            if os.path.basename(name).startswith(PROBE_PREFIX):
                return
            if relative or os.path.abspath(name).startswith(blobs_s):
                count("unlink", name)
        elif event == "os.rmdir" and nth is not None:
            count("rmdir", args[0])

    sys.addaudithook(hook)
    if point == "temp-partial":
        real_write = os.write

        def half_write(fd: int, data: bytes) -> int:  # type: ignore[override]
            if state["temp"] and len(data) > 1:
                real_write(fd, bytes(data[: len(data) // 2]))
                os.fsync(fd)
                _die(None)
            return real_write(fd, data)

        os.write = half_write  # type: ignore[assignment]
    if point == "after-rename":
        real_fsync = os.fsync

        def fsync_after_rename(fd: int) -> None:  # type: ignore[override]
            if state["renamed"]:
                _die(None)
            real_fsync(fd)

        os.fsync = fsync_after_rename  # type: ignore[assignment]


def run_gc_in_process(root: Path, *, preset: str = "default", grace: float = 0.0,
                      lock_timeout: float = 30.0, keep_deleted: float = 0.0) -> dict[str, object]:
    """GC through the adapter, planned and applied under one lock hold; returns the report."""
    import ocigraph as og
    from io_adapters.apply import apply_plan
    from io_adapters.layout import LayoutLock, read_layout
    from io_adapters.quarantine import recover

    with LayoutLock(root, lock_timeout) as lock:
        recover(lock.dir, lock=lock)  # as the CLI does: a live blob may sit in a quarantine
        disk = read_layout(lock.dir)
        plan = og.plan_gc(og.build_graph(disk.layout, mtimes=grace > 0),
                          og.Policy.preset(preset, grace=grace))
        report = apply_plan(lock.dir, plan, lock=lock, keep_deleted=keep_deleted)
    return report.to_dict()


def _child(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="hostile.killpoints")
    ap.add_argument("root", type=Path)
    ap.add_argument("--kill", default="none")
    ap.add_argument("--fail", default=None, metavar="POINT=ERRNO")
    ap.add_argument("--via", choices=("adapter", "cli"), default="adapter")
    ap.add_argument("--lock-timeout", type=float, default=30.0)
    ap.add_argument("--keep", type=float, default=0.0, help="keep_deleted, seconds")
    args = ap.parse_args(argv)
    import ocigraph as og  # imported before the hook: imports are not kill points

    if args.via == "cli":
        from io_adapters import cli
    point, fail_errno = args.kill, None
    if args.fail is not None:
        point, _, name = args.fail.partition("=")
        fail_errno = getattr(errno, name)
    install_kill_point(args.root, point, fail_errno)
    expect_stop = point != "none"
    if args.via == "cli":
        try:
            cli.cli.main(args=["gc", "--yes", "--lock-timeout", str(args.lock_timeout),
                               str(args.root)], prog_name="ocigraph")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            return NOT_REACHED if code == 0 and expect_stop else code
        return NOT_REACHED if expect_stop else 0
    try:
        report = run_gc_in_process(args.root, lock_timeout=args.lock_timeout,
                                   keep_deleted=args.keep)
    except og.OcigraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return NOT_REACHED if expect_stop else 0


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), str(REPO_DIR), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_child(root: Path, kill: str = "none", *, via: str = "adapter", lock_timeout: float = 30.0,
              fail: str | None = None, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run the child on ``root``; returns the finished process (``returncode -9`` after a kill)."""
    cmd = [sys.executable, "-m", "hostile.killpoints", str(root), "--kill", kill, "--via", via,
           "--lock-timeout", str(lock_timeout)]
    if fail is not None:
        cmd += ["--fail", fail]
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=timeout)


def run_forked(root: Path, kill: str = "none", *, keep_deleted: float = 0.0, action: str = "gc",
               relist: tuple[int, bytes] | None = None) -> int:
    """:func:`run_gc_in_process` (``action="gc"``), or ``purge`` (every kept quarantine, as if
    expired) or ``restore`` (the last apply) of :mod:`io_adapters.quarantine`, in a forked
    copy of this process that dies at ``kill`` (nothing to start or import: a few
    milliseconds a run); its exit status, ``-9`` when killed."""
    import ocigraph as og
    from io_adapters import quarantine

    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 2
        try:
            install_kill_point(root, kill, relist=relist)
            if action == "gc":
                run_gc_in_process(root, lock_timeout=30.0, keep_deleted=keep_deleted)
            elif action == "purge":
                quarantine.purge_expired(root, float("inf"))
            else:
                quarantine.restore(root)
            code = NOT_REACHED if kill != "none" else 0
        except og.OcigraphError:
            code = 1
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def start_child(root: Path, kill: str = "none", *, via: str = "adapter",
                lock_timeout: float = 30.0) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "hostile.killpoints", str(root), "--kill", kill, "--via", via,
           "--lock-timeout", str(lock_timeout)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())


# --- checks -----------------------------------------------------------------------------------


def temp_files(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root) if n.startswith(TEMP_PREFIX))


def check_valid_layout(root: Path, must_keep: frozenset[str]) -> list[str]:
    """What is wrong with ``root`` as a layout that lost nothing it must keep (empty if fine).

    * index.json parses (with the core's strict parser and with ``json``);
    * every blob reachable from any index.json entry is present;
    * every blob in ``must_keep`` (the live set before the run) is present.
    """
    import ocigraph as og

    problems = []
    data = (root / "index.json").read_bytes()
    try:
        og.parse_index(data)
    except og.OcigraphError as exc:
        problems.append(f"index.json does not parse: {exc}")
    if model_graph(root, data) is None:
        problems.append("index.json is not a JSON object with a manifests list")
    present = present_blobs(root)
    reachable = model_reachable(root) or frozenset()
    if missing := sorted(reachable - present):
        problems.append(f"{len(missing)} blob(s) reachable from index.json missing, e.g. {missing[0]}")
    if lost := sorted(must_keep - present):
        problems.append(f"{len(lost)} live blob(s) lost, e.g. {lost[0]}")
    return problems


def compare_with_reference(root: Path, reference: Path) -> list[str]:
    """Differences between a recovered layout and the layout an uninterrupted run produced."""
    problems = []
    a, b = present_blobs(root), present_blobs(reference)
    if a != b:
        problems.append(f"blob sets differ: {len(a - b)} extra, {len(b - a)} missing")
    if (root / "index.json").read_bytes() != (reference / "index.json").read_bytes():
        problems.append("index.json differs from the reference run's")
    if temps := temp_files(root):
        problems.append(f"stray temp files {temps}")
    return problems


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))


@dataclass(frozen=True)
class Workload:
    template: Path  # the layout before any GC (never modified)
    reference: Path  # the same layout after one uninterrupted GC
    live: frozenset[str]  # live before GC, by the independent model
    deletions: int


def make_workload(base: Path, garbage_images: int, live_images: int = 10) -> Workload:
    """A GC workload written under ``base``, and the state one uninterrupted GC reaches."""
    template = gc_workload(garbage_images, live_images).write(base / "template")
    reference = base / "reference"
    shutil.copytree(template, reference)
    run_gc_in_process(reference)
    live = model_live(template)
    assert live is not None
    deletions = len(present_blobs(template)) - len(present_blobs(reference))
    return Workload(template, reference, live, deletions)
