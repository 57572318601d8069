"""Running whole ``ocigraph`` commands as the benchmarks measure them.

Every measurement is a process of its own: ``python -m io_adapters ARGS`` with ``PYTHONPATH``
set to one code tree (and the working directory a temporary folder, so that ``-m`` cannot
pick up another ``io_adapters``), ``OCIGRAPH_CACHE_DIR`` set to a folder of the benchmark's.
:func:`run_command` returns

* ``wall``: from the start of the process to its exit (``wait4``), interpreter start included;
* ``cpu``: its CPU time, user + system (from ``wait4``) -- steadier than wall-clock time on
  a machine shared with other work;
* ``rss_mb``: its peak RSS (``ru_maxrss`` from ``wait4``);
* ``eof_after_exit``: how long after the exit its stdout and stderr pipes reached end-of-file
  -- a detached child that kept them open would show here as the time it ran on;
* ``bg_seconds``: when the command left a background writer (the store is written by a child
  after the answer: :mod:`io_adapters.background`), the time from the command's exit until
  the writer's lock (the ``<hash>.store`` file itself, or an older code's ``<store>.lock``,
  ``flock``) was free -- how long
  the background write took after the answer; ``bg_rss_mb``: the writer's peak RSS.

The writer is found without importing the code under test: this process makes itself a
*child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``, Linux), so the detached child, orphaned
when the command exits, becomes our child and ``wait4`` reports it; and every ``*.store`` and
``*.lock`` in the cache folder is waited for with a blocking ``flock`` (a writer claims its lock before the
command exits).  That works for the code before and after the store was rebuilt alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Run", "Tree", "run_command", "run_python", "link_copy", "wait_settled",
           "snapshot_tree", "best", "table", "make_subreaper", "drop_half_the_tags"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: a layout's folders must have last changed this long before a listing for the graph to be
#: stored (ocigraph.snapshot.SETTLE_NS, 2 s), plus a margin
SETTLE_SECONDS = 2.2

_SUBREAPER: list[bool] = []


def make_subreaper() -> bool:
    """Become the parent of orphaned descendants (Linux), so detached writers can be reaped
    and their peak RSS read.  Returns whether that worked."""
    if not _SUBREAPER:
        ok = False
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                ok = libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
        _SUBREAPER.append(ok)
    return _SUBREAPER[0]


@dataclass
class Run:
    wall: float
    rss_mb: float
    code: int
    out: bytes = b""
    err: bytes = b""
    eof_after_exit: float | None = None
    bg_seconds: float | None = None
    bg_rss_mb: float | None = None
    cpu: float = 0.0
    bg_cpu: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def had_writer(self) -> bool:
        return self.bg_seconds is not None

    def json(self) -> dict[str, Any]:
        """The last line of stdout, parsed (for helpers that print one JSON line)."""
        lines = self.out.decode(errors="replace").strip().splitlines()
        return orjson.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


@dataclass(frozen=True)
class Tree:
    """A code tree: a folder holding ``ocigraph/`` and ``io_adapters/``."""

    name: str
    path: Path

    def env(self, cache_dir: Path | None, extra: dict[str, str] | None = None,
            with_benchmarks: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("OCIGRAPH_") and k != "PYTHONPATH"}
        paths = [str(self.path)] + ([str(REPO)] if with_benchmarks else [])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if cache_dir is not None:
            env["OCIGRAPH_CACHE_DIR"] = str(cache_dir)
        env.update(extra or {})
        return env

    def where(self, cwd: Path) -> str:
        """``io_adapters.__file__`` and ``ocigraph.__file__`` as a command of this tree sees
        them (checked to lie in the tree)."""
        proc = subprocess.run(
            [sys.executable, "-c", "import io_adapters, io_adapters.cli, ocigraph; "
             "print(io_adapters.__file__); print(ocigraph.__file__)"],
            env=self.env(None), cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name}: cannot import the code in {self.path}:\n"
                               f"{proc.stderr[-2000:]}")
        files = proc.stdout.split()
        for f in files:
            if not Path(f).resolve().is_relative_to(self.path.resolve()):
                raise RuntimeError(f"{self.name}: imports {f}, outside {self.path}")
        return ", ".join(files)


def _reader(fd: int, sink: list[bytes], done: list[float]) -> None:
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            break
        chunks.append(b)
    done.append(time.perf_counter())
    sink.append(b"".join(chunks))


def _wait_lock(path: Path) -> bool:
    """Wait until nobody holds the ``flock`` of the file at ``path``; whether someone did.  A
    store is its own lock and its writer replaces it by rename: a lock won on a file no
    longer at ``path`` says nothing, so then the file there now is waited for."""
    held = False
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return held
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except OSError:
                return held
        finally:
            os.close(fd)
        if same:
            return held


def _wait_background(cache_dir: Path | None, exited: float,
                     timeout: float = 1800.0) -> tuple[float | None, float | None, float | None]:
    """Wait for a writer the command left: its lock(s) in ``cache_dir``, and (as subreaper)
    its exit.  ``(seconds from the exit until the locks were free and the writer gone,
    writer's peak RSS MB, writer's CPU seconds)``, or ``(None, None, None)`` when there was no writer."""
    held = False
    if cache_dir is not None and cache_dir.is_dir():
        for lock in sorted([*cache_dir.glob("*.lock"), *cache_dir.glob("*.store")]):
            held = _wait_lock(lock) or held
    freed = time.perf_counter()
    rss = cpu = None
    reaped = False
    if make_subreaper():
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, _, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break  # no child left: no writer, or reaped
            if pid:
                reaped = True
                freed = max(freed, time.perf_counter())  # a writer may sleep without its lock
                rss = max(rss or 0.0, usage.ru_maxrss / 1024)
                cpu = (cpu or 0.0) + usage.ru_utime + usage.ru_stime
                continue
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
    if not (held or reaped):
        return None, None, None
    return freed - exited, rss, cpu


def run_command(cmd: list[str], env: dict[str, str], cwd: Path, *,
                cache_dir: Path | None = None, check: bool = True,
                stdin: int | None = subprocess.DEVNULL) -> Run:
    """Run ``cmd`` (see the module's docstring for what is measured)."""
    make_subreaper()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=cwd, stdin=stdin)
    assert proc.stdout is not None and proc.stderr is not None
    outs: list[bytes] = []
    errs: list[bytes] = []
    eofs: list[float] = []
    readers = [threading.Thread(target=_reader, args=(proc.stdout.fileno(), outs, eofs), daemon=True),
               threading.Thread(target=_reader, args=(proc.stderr.fileno(), errs, eofs), daemon=True)]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    exited = time.perf_counter()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    bg, bg_rss, bg_cpu = _wait_background(cache_dir, exited)
    for t in readers:
        t.join(timeout=1800)
    proc.stdout.close()
    proc.stderr.close()
    run = Run(exited - t0, usage.ru_maxrss / 1024, code, outs[0] if outs else b"",
              errs[0] if errs else b"",
              max(eofs) - exited if len(eofs) == 2 else None, bg, bg_rss,
              usage.ru_utime + usage.ru_stime, bg_cpu)
    if check and code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n"
                           f"{run.err.decode(errors='replace')[-3000:]}")
    return run


def run_python(tree: Tree, args: list[str], cwd: Path, cache_dir: Path | None, *,
               env: dict[str, str] | None = None, with_benchmarks: bool = False,
               check: bool = True) -> Run:
    """``python ARGS`` with ``tree`` on ``PYTHONPATH`` (``-m io_adapters ...``: a command)."""
    return run_command([sys.executable, *args],
                       tree.env(cache_dir, env, with_benchmarks=with_benchmarks), cwd,
                       cache_dir=cache_dir, check=check)


def link_copy(src: Path, dst: Path) -> None:
    """A copy of a layout made of hard links, except index.json (rewritten by apply)."""
    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    (dst / "index.json").unlink()
    shutil.copyfile(src / "index.json", dst / "index.json")


def drop_half_the_tags(root: Path) -> None:
    """Untag every other tagged entry of index.json: a GC with many deletions."""
    doc = orjson.loads((root / "index.json").read_bytes())
    tagged = 0
    for entry in doc["manifests"]:
        ann = entry.get("annotations") or {}
        if "org.opencontainers.image.ref.name" in ann:
            tagged += 1
            if tagged % 2 == 0:
                del ann["org.opencontainers.image.ref.name"]
                if not ann:
                    entry.pop("annotations")
    (root / "index.json").write_bytes(orjson.dumps(doc))


def wait_settled(layout: Path) -> None:
    """Sleep until the layout's blob folders last changed ``SETTLE_SECONDS`` ago: a layout
    changed more recently is not stored (io_adapters.store), as one in daily use long has."""
    folders = [layout / "blobs", *(p for p in (layout / "blobs").iterdir() if p.is_dir())]
    newest = max(max(st.st_mtime_ns, st.st_ctime_ns) for st in map(os.lstat, folders))
    time.sleep(max(0.0, (newest - time.time_ns()) / 1e9 + SETTLE_SECONDS))


def snapshot_tree(src: Path, dst: Path, name: str, cwd: Path, tries: int = 10) -> Tree:
    """Copy ``src``'s ``ocigraph/`` and ``io_adapters/`` (sources only) to ``dst`` and compile
    them: the code measured stays what it was when the run began, while others edit ``src``
    (a store is keyed by a digest of the code, so an edit halfway would turn a warm run into a
    cold one).  An import failing (an edit in progress) is retried for a few minutes."""
    for attempt in range(tries):
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        for pkg in ("ocigraph", "io_adapters"):
            shutil.copytree(src / pkg, dst / pkg,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        tree = Tree(name, dst)
        try:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(dst)], check=True,
                           capture_output=True)
            tree.where(cwd)
            return tree
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            if attempt == tries - 1:
                raise
            print(f"{name}: {src} does not import yet ({str(exc).splitlines()[-1][:200]}); "
                  "retrying in 30 s", file=sys.stderr, flush=True)
            time.sleep(30)
    raise AssertionError("unreachable")


def git_describe(src: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--",
                                "ocigraph", "io_adapters"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + (" + uncommitted changes" if dirty else "")


def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.wall)


def table(rows: list[list[str]], markdown: bool = False) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
        if j == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|" if markdown
                         else "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def workspace(prefix: str) -> Path:
    """A temporary folder for caches, copies and the working directory of commands."""
    return Path(tempfile.mkdtemp(prefix=prefix))
