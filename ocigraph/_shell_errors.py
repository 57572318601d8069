"""Errors the shell (``io_adapters``) raises, in the core's family: pure values, each naming the
path or pid at fault; exported as ``og.<Name>``."""

from __future__ import annotations

from ._errors import LayoutError, OcigraphError, RequestError

__all__ = ["LayoutAccessError", "LayoutLockedError", "ApplyError", "PlanMismatchError",
           "LayoutMovedError", "PlanOriginError", "ApplyInterrupted", "RestoreRefusedError"]


class LayoutAccessError(LayoutError):
    """A file of the layout is missing, unreadable, not what it should be, or a symlink."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        self.why = why
        super().__init__(f"{path}: {why}")


class LayoutLockedError(RequestError):
    """Another process holds the layout's lock."""

    def __init__(self, root: str, pid: int | None, waited: float) -> None:
        self.root = root
        self.pid = pid
        self.waited = waited
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"layout {root} is locked by {who} (waited {waited:g}s)")


class ApplyError(OcigraphError):
    """Applying stopped part way.  The layout is valid; planning again finishes the job."""

    def __init__(self, what: str, why: str, done: int, total: int, index_written: bool) -> None:
        self.what = what
        self.why = why
        self.done = done
        self.total = total
        self.index_written = index_written
        state = "index.json already updated; " if index_written else "nothing changed; "
        super().__init__(
            f"{what}: {why} ({done} of {total} blobs deleted; {state}"
            "the layout is valid: plan again to finish)"
        )


class PlanMismatchError(RequestError):
    """A saved plan does more than planning the same operation now would (it was edited, or
    the layout's blobs changed since): applying it could delete something live."""

    def __init__(self, what: str, digest: str) -> None:
        self.what = what
        self.digest = digest
        super().__init__(
            f"refusing the plan: it would {what} {digest}, which planning the same operation on "
            "the layout now keeps (the plan was edited, or blobs changed since); plan again"
        )


class LayoutMovedError(RequestError):
    """The layout's path no longer names the directory this command opened (it was renamed,
    exchanged, replaced or removed while the command ran): nothing more is done to either."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} was moved or replaced while ocigraph worked on it: nothing "
                         "more was changed; run the command again on the layout now at that path")


class PlanOriginError(RequestError):
    """A plan made from one layout directory is being applied to another."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} was moved or replaced since the plan was made (the plan is of "
                         "another directory): nothing was changed; plan again on this layout")


class RestoreRefusedError(RequestError):
    """Undoing an apply (``io_adapters.quarantine.restore``) would leave the layout worse;
    nothing was changed."""

    def __init__(self, why: str) -> None:
        super().__init__(f"refusing to restore: {why}; nothing was changed")


class ApplyInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`io_adapters.apply.apply_plan`, with the exact state: whether
    index.json was already rewritten, and how many of the plan's ``total`` blobs were
    ``deleted`` (out of ``blobs/``).  The layout is valid; the next command finishes."""

    def __init__(self, index_written: bool, deleted: int, total: int) -> None:
        self.index_written, self.deleted, self.total = index_written, deleted, total
        super().__init__(
            f"interrupted: index_written={index_written}, {deleted} of {total} deleted")
