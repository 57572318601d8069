"""A cross-process lock on a layout, with no lock file: ``flock`` on the layout's directory,
opened relative to its handle (:class:`io_adapters.layout.LayoutDir`), so the lock is on the
directory the command works on wherever its path points meanwhile.  Nothing is created in the
layout, the kernel drops the lock when its holder dies (even by SIGKILL), and two processes --
or two opens in one -- exclude each other.  The holder's pid comes from ``/proc/locks``.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

import ocigraph as og

from .layout import LayoutDir, open_layout

__all__ = ["LayoutLock", "lock_holder"]


def lock_holder(path: Path) -> int | None:
    """The pid holding a ``flock`` on ``path``, if /proc/locks says; else ``None``."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for parts in map(str.split, lines):  # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want:
            return int(parts[4]) if parts[4].isdigit() else None
    return None


class LayoutLock:
    """``with LayoutLock(root, timeout=10) as lock:`` -- exclusive, waits up to ``timeout``
    seconds.  ``root``: a path (opened here) or an open :class:`LayoutDir` (``lock.dir``)."""

    def __init__(self, root: Path | str | LayoutDir, timeout: float = 10.0, poll: float = 0.05) -> None:
        self.dir = open_layout(root)
        self.root = self.dir.path
        self.timeout, self.poll = timeout, poll
        self.held = False

    def acquire(self) -> None:
        # "." opened relative to the handle: the same directory, with an open file description
        # of its own (flock is per description), so two locks in one process exclude each other
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.dir.fd)
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd, self.held = fd, True
                return
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= self.timeout:
                    os.close(fd)
                    raise og.LayoutLockedError(str(self.root), lock_holder(self.root),
                                               round(waited, 1)) from None
                time.sleep(min(self.poll, max(self.timeout - waited, 0.001)))

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)

    def __enter__(self) -> LayoutLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
