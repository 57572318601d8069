"""``LayoutLock``: a cross-process ``flock`` on the layout's directory, taken through its handle
(no lock file; docs/design.md)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import ocigraph as og

from .layout import LayoutDir, open_layout

__all__ = ["LayoutLock", "lock_holder"]


def lock_holder(path: Path) -> int | None:
    """The pid holding a ``flock`` on ``path``, if /proc/locks says; else ``None``."""
    try:
        st = os.stat(path)
        locks = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return og.flock_holder(locks, os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


class LayoutLock:
    """``with LayoutLock(root, timeout=10) as lock:`` -- exclusive, waits up to ``timeout``
    seconds.  ``root``: a path (opened here) or an open :class:`LayoutDir` (``lock.dir``)."""

    def __init__(self, root: Path | str | LayoutDir, timeout: float = 10.0, poll: float = 0.05) -> None:
        self.dir = open_layout(root)
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
                    raise og.LayoutLockedError(str(self.dir.path), lock_holder(self.dir.path),
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

    def __exit__(self, *exc: object) -> None:
        self.release()
