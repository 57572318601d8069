"""A cross-process lock on a layout, with no lock file.

``flock`` on the layout directory itself: nothing is created inside the layout, the kernel
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

from .errors import LayoutAccessError, LayoutLockedError

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
    """``with LayoutLock(root, timeout=10):`` -- exclusive, waits up to ``timeout`` seconds."""

    def __init__(self, root: Path | str, timeout: float = 10.0, poll: float = 0.05) -> None:
        self.root = Path(root)
        self.timeout = timeout
        self.poll = poll
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LayoutAccessError(str(self.root), f"cannot open layout directory ({exc.strerror})") from None
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= self.timeout:
                    pid = lock_holder(self.root)
                    os.close(fd)
                    raise LayoutLockedError(str(self.root), pid, round(waited, 1)) from None
                time.sleep(min(self.poll, max(self.timeout - waited, 0.001)))

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> LayoutLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
