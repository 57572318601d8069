"""Apply a plan to a layout on disk, so that a crash at any instant leaves a valid layout.

Order of work (SEMANTICS §6):

1. take the layout lock (or use the caller's);
2. re-read index.json and refuse a stale plan (its fingerprint differs);
3. write the new index.json atomically: a temp file in the layout folder, fsync, rename over
   index.json, fsync the folder -- readers see the old or the new file, never half of one;
4. unlink blobs in plan order, predecessors first, so at every instant each blob reachable from
   index.json still exists.  A blob already gone is fine; a blob that is not a regular file, or
   was written after the plan's snapshot, is skipped and reported.

Every digest to delete is checked, and its blob folder refused if it is a symlink, before step 3:
a bad plan changes nothing.

If step 4 stops half way, index.json already no longer reaches the remaining blobs: they are
plain garbage, and the next ``gc`` removes them.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ocigraph as og

from .errors import ApplyError, LayoutAccessError, PlanMismatchError
from .layout import blob_file, blob_name, check_real_dir, read_regular_file
from .lock import LayoutLock
from .planner import plan_layout

__all__ = ["ApplyReport", "apply_plan", "verify_plan", "write_index_atomically", "TEMP_PREFIX"]

TEMP_PREFIX = ".index.json.ocigraph-"

#: ``progress`` is called once per this many blobs handled, and at the end: a call per blob
#: (a tqdm update in the CLI) would add its cost to every deletion, for a bar that cannot show it
_PROGRESS_EVERY = 1024


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What ``apply_plan`` did."""

    deleted: tuple[str, ...]
    already_gone: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (digest, why)
    bytes_freed: int
    index_written: bool
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "deleted": list(self.deleted),
            "alreadyGone": list(self.already_gone),
            "skipped": [{"digest": d, "why": w} for d, w in self.skipped],
            "bytesFreed": self.bytes_freed,
            "indexWritten": self.index_written,
            "seconds": round(self.seconds, 6),
        }


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp_files(root: Path) -> None:
    """Remove temp files a killed ocigraph left (only ours, by prefix; call under the lock)."""
    with contextlib.suppress(OSError), os.scandir(root) as it:
        for e in it:
            if e.name.startswith(TEMP_PREFIX) and e.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)


def write_index_atomically(root: Path, data: bytes) -> None:
    """Replace ``root/index.json`` with ``data``: temp file, fsync, rename, fsync folder.

    Every failure is a :class:`LayoutAccessError`: before the rename, index.json is unchanged;
    after it (the folder cannot be fsynced), index.json is new but may not survive a power
    loss, so the caller must not delete any blob it no longer references.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=root, prefix=TEMP_PREFIX, suffix=".tmp")
    except OSError as exc:
        raise LayoutAccessError("index.json", f"cannot create a temp file beside it "
                                f"({exc.strerror}); it was left unchanged") from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)
        os.replace(tmp, root / "index.json")
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LayoutAccessError("index.json", f"cannot write the new index.json ({exc.strerror}); "
                                "it was left unchanged") from None
    try:
        _fsync_dir(root)
    except OSError as exc:
        raise LayoutAccessError("index.json", f"rewritten, but the layout folder could not be "
                                f"synced ({exc.strerror}), so no blob was deleted") from None


def _check_blob_folders(root: Path, algorithms: set[str]) -> None:
    """Refuse to unlink through a symlinked ``blobs/`` or ``blobs/<alg>/``: a plan may be applied
    long after it was made, and the folder may since point outside the layout.  A missing folder
    is fine (its blobs are already gone).  ``algorithms``: those of the blobs to delete."""
    folders = ["blobs", *sorted("blobs/" + alg for alg in algorithms)]
    for rel in folders if algorithms else ():
        check_real_dir(root / rel, rel, missing_ok=True)


def _blob_files(root: Path, digests: list[str]) -> tuple[list[str], set[str]]:
    """The file of each digest, as a string (:func:`blob_file`: a pathlib join per blob cost
    more than its unlink), and the algorithms seen; raises, before anything is changed, for a
    digest that is not a valid, sweepable one (``sha256:../../x`` never becomes a path)."""
    files = [blob_file(root, digest) for digest in digests]
    return files, {digest.partition(":")[0] for digest in digests}


def verify_plan(root: Path, plan: og.Plan) -> None:
    """Refuse a plan that deletes a blob, or edits an index.json entry, that planning the same
    operation (same targets, same policy) on the layout as it is now would not.

    A saved plan is a file: it may have been edited, and blobs may have been written since it
    was made (a push whose manifest now references a planned layer).  Call under the lock.
    """
    # (the plan just made by `ocigraph plan` on this unchanged layout is recalled, not redone)
    # (the layout is about to change: a graph built here is not worth storing)
    planned = plan_layout(root, plan.operation, plan.targets, plan.policy, store=False)
    fresh = planned.plan
    if fresh.index_fingerprint != plan.index_fingerprint:
        raise og.StalePlanError(plan.index_fingerprint, fresh.index_fingerprint)
    allowed = {d.digest for d in fresh.deletions if d.present}
    for d in plan.deletions:
        gone = not planned.present(d.digest)  # already gone: fine
        if d.present and not gone and d.digest not in allowed:
            raise PlanMismatchError("delete", d.digest)
    edits = {(c.position, c.digest, c.action) for c in fresh.index_changes}
    for c in plan.index_changes:
        if (c.position, c.digest, c.action) not in edits:
            raise PlanMismatchError(f"{c.action} index.json entry {c.position},", c.digest)


def _delete_blobs(
    digests: list[str],
    files: list[str],
    snapshot_time: float | None,
    index_written: bool,
    progress: Callable[[int], None] | None,
    unlink: Callable[[str], None],
) -> tuple[list[str], list[str], list[tuple[str, str]], int]:
    """Unlink ``files`` (those of ``digests``) in order: (deleted, already gone, skipped, bytes).

    The hot loop of apply: per blob one ``lstat`` (a regular file, not newer than the snapshot,
    its size) and one unlink, nothing else -- the ``lstat`` is the safety check, and all that
    apply costs beyond a bare unlink loop.  ``progress`` is called once per chunk.  A blob that
    fails is named relative to the layout, as ``blobs/<alg>/<encoded>``.

    Full paths rather than ``dir_fd`` calls on an opened ``blobs/<alg>/``: those measured no
    faster here (the kernel caches the lookups), and the kill-point tests find the N-th blob
    unlink by the path in its ``os.remove`` audit event.
    """
    deleted: list[str] = []
    gone: list[str] = []
    skipped: list[tuple[str, str]] = []
    freed = 0
    total = len(files)
    lstat, is_regular = os.lstat, stat.S_ISREG
    newest = math.inf if snapshot_time is None else snapshot_time
    for start in range(0, total, _PROGRESS_EVERY):
        stop = min(start + _PROGRESS_EVERY, total)
        for digest, file in zip(digests[start:stop], files[start:stop], strict=True):
            try:
                st = lstat(file)
            except FileNotFoundError:
                gone.append(digest)
                continue
            except OSError as exc:
                raise ApplyError(blob_name(digest), exc.strerror or str(exc), len(deleted), total,
                                 index_written) from None
            if not is_regular(st.st_mode):
                skipped.append((digest, "not a regular file"))
                continue
            if st.st_mtime > newest:
                skipped.append((digest, "written after the plan was made"))
                continue
            try:
                unlink(file)
            except FileNotFoundError:
                gone.append(digest)
                continue
            except OSError as exc:
                why = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
                raise ApplyError(f"cannot delete {blob_name(digest)}", why, len(deleted), total,
                                 index_written) from None
            deleted.append(digest)
            freed += st.st_size
        if progress is not None:
            progress(stop)
    return deleted, gone, skipped, freed


def apply_plan(
    root: Path | str,
    plan: og.Plan,
    *,
    lock: LayoutLock | None = None,
    lock_timeout: float = 10.0,
    progress: Callable[[int], None] | None = None,
    unlink: Callable[[Path], None] = os.unlink,
    verify: bool = False,
) -> ApplyReport:
    """Apply ``plan`` to the layout at ``root``; returns an :class:`ApplyReport`.

    ``lock``: a held :class:`LayoutLock` (when the caller planned under it); otherwise one is
    taken for the duration.  ``progress`` is called with the number of blobs handled so far,
    every ``_PROGRESS_EVERY`` blobs and once all are handled.
    ``unlink`` is injectable so tests can make deletion fail half way.  ``verify``: re-plan
    under the lock and refuse a plan that does more (:func:`verify_plan`) -- for a plan read
    from a file; pointless when the caller planned under the same lock hold.
    """
    root = Path(root)
    started = time.monotonic()
    own = lock is None
    held = LayoutLock(root, lock_timeout) if lock is None else lock
    if own:
        held.acquire()
    try:
        remove_stale_temp_files(root)
        current = og.parse_index(read_regular_file(root / "index.json", "index.json"))
        if current.fingerprint != plan.index_fingerprint:
            raise og.StalePlanError(plan.index_fingerprint, current.fingerprint,
                                    og.describe_index_drift(plan, current))
        if verify:
            verify_plan(root, plan)
        todo = [d.digest for d in plan.deletions if d.present]
        files, algorithms = _blob_files(root, todo)
        _check_blob_folders(root, algorithms)
        index_written = False
        if plan.index_changes:
            write_index_atomically(root, og.render_index(current, plan.index_changes))
            index_written = True
        # The injected ``unlink`` of the tests gets a Path, as it always has.
        remove: Callable[[str], None] = (os.unlink if unlink is os.unlink
                                         else lambda file: unlink(Path(file)))
        deleted, gone, skipped, freed = _delete_blobs(todo, files, plan.snapshot_time,
                                                      index_written, progress, remove)
        return ApplyReport(tuple(deleted), tuple(gone), tuple(skipped), freed, index_written,
                           time.monotonic() - started)
    finally:
        if own:
            held.release()
