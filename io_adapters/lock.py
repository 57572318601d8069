"""A cross-process lock on a layout, with no lock file.

``flock`` on the layout's directory handle (:class:`io_adapters.layout.LayoutDir`) itself --
the same descriptor every read and write of the command goes through, so the lock is on the
directory the command works on, wherever its path points meanwhile: nothing is created inside the layout, the kernel
drops the lock when the holder dies (even by SIGKILL), and two processes -- or two opens in
one process -- exclude each other.  Who holds it is read from ``/proc/locks`` where Linux
offers it, for the "locked by pid N" message.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from .errors import LayoutLockedError
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
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want:
            try:
                return int(parts[4])
            except ValueError:
                return None
    return None


class LayoutLock:
    """``with LayoutLock(root, timeout=10) as lock:`` -- exclusive, waits up to ``timeout``
    seconds.  ``root``: a path (opened here) or an open :class:`LayoutDir` (``lock.dir``)."""

    def __init__(self, root: Path | str | LayoutDir, timeout: float = 10.0, poll: float = 0.05) -> None:
        self.dir = open_layout(root)
        self.root = self.dir.path
        self.timeout = timeout
        self.poll = poll
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> None:
        # flock is per open file description: "." opened relative to the handle is the same
        # directory (wherever its path points now) with a description of its own, so two
        # locks in one process exclude each other too
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.dir.fd)
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                self._held = True
                return
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= self.timeout:
                    pid = lock_holder(self.root)
                    os.close(fd)
                    raise LayoutLockedError(str(self.root), pid, round(waited, 1)) from None
                time.sleep(min(self.poll, max(self.timeout - waited, 0.001)))

    def release(self) -> None:
        if self._held:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)

    def __enter__(self) -> LayoutLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
