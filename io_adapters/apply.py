"""Apply a plan to a layout on disk, so that a crash at any instant leaves a valid layout.

Order of work (SEMANTICS §6):

1. take the layout lock (or use the caller's) on the layout's directory handle
   (:class:`io_adapters.layout.LayoutDir`), through which every later step reads and writes;
2. refuse a plan made from another directory (``plan.origin``) and a layout whose path no
   longer names the directory the handle holds; re-read index.json and refuse a stale plan
   (its fingerprint differs);
3. write the new index.json atomically: a temp file in the layout folder, fsync, rename over
   index.json, fsync the folder -- readers see the old or the new file, never half of one;
4. unlink blobs in plan order, predecessors first, so at every instant each blob reachable from
   index.json still exists.  A blob already gone is fine; a blob that is not a regular file, or
   was written after the plan's snapshot, is skipped and reported.

Every digest to delete is checked, and its blob folder refused if it is a symlink, before step 3:
a bad plan changes nothing.  Right before step 3 the path is checked again: a layout exchanged
for another directory while the command waited (at its prompt, say) is left alone, and so is
the other directory.

If step 4 stops half way, index.json already no longer reaches the remaining blobs: they are
plain garbage, and the next ``gc`` removes them.
"""

from __future__ import annotations

import errno
import math
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ocigraph as og

from .errors import ApplyError, PlanMismatchError, PlanOriginError
from .layout import LayoutDir, blob_name, blob_path, open_layout, printable
from .lock import LayoutLock

__all__ = ["ApplyReport", "apply_plan", "verify_plan"]

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
    #: the layout's snapshot (:mod:`io_adapters.store`) just before the plan changed it, and
    #: index.json's digest after: what lets the store follow the change (not in the JSON)
    before: tuple[Any, ...] | None = None
    index_after: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "deleted": list(self.deleted),
            "alreadyGone": list(self.already_gone),
            "skipped": [{"digest": d, "why": w} for d, w in self.skipped],
            "bytesFreed": self.bytes_freed,
            "indexWritten": self.index_written,
            "seconds": round(self.seconds, 6),
        }


def _check_blob_folders(layout_dir: LayoutDir, digests: list[str]) -> None:
    """Refuse, before anything changes, a digest that is not a valid sweepable one
    (``sha256:../../x`` never becomes a name) and a ``blobs/`` or ``blobs/<alg>/`` that is a
    symlink; open each folder once.  A missing folder is fine (its blobs are already gone)."""
    algorithms = set()
    for digest in digests:
        blob_path(layout_dir.path, digest)  # raises for a digest that may not become a name
        algorithms.add(digest.partition(":")[0])
    for alg in sorted(algorithms):
        layout_dir.folder(f"blobs/{alg}", missing_ok=True)


def verify_plan(layout_dir: LayoutDir, plan: og.Plan) -> None:
    """Refuse a plan that deletes a blob, or edits an index.json entry, that planning the same
    operation (same targets, same policy) on the layout as it is now would not.

    A saved plan is a file: it may have been edited, and blobs may have been written since it
    was made (a push whose manifest now references a planned layer).  Call under the lock.
    """
    from .planner import plan_layout  # (the planner re-checks saved plans through apply)

    planned = plan_layout(layout_dir, plan.operation, plan.targets, plan.policy)
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
    layout_dir: LayoutDir,
    digests: list[str],
    snapshot_time: float | None,
    index_written: bool,
    progress: Callable[[int], None] | None,
    unlink: Callable[[Path], None] | None,
) -> tuple[list[str], list[str], list[tuple[str, str]], int]:
    """Unlink the blobs of ``digests`` in order: (deleted, already gone, skipped, bytes).

    The hot loop of apply: per blob one ``lstat`` (a regular file, not newer than the snapshot,
    its size) and one unlink, both relative to the blob folder's descriptor.  ``unlink``
    (tests only) replaces the unlink, and gets the blob's path.
    """
    deleted: list[str] = []
    gone: list[str] = []
    skipped: list[tuple[str, str]] = []
    freed = 0
    total = len(digests)
    lstat, remove, is_regular = layout_dir.lstat_blob, layout_dir.unlink_blob, stat.S_ISREG
    newest = math.inf if snapshot_time is None else snapshot_time
    for start in range(0, total, _PROGRESS_EVERY):
        for digest in digests[start:start + _PROGRESS_EVERY]:
            try:
                st = lstat(digest)
                if st is None:
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
                if unlink is None:
                    remove(digest)
                else:
                    unlink(blob_path(layout_dir.path, digest))
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
            progress(min(start + _PROGRESS_EVERY, total))
    return deleted, gone, skipped, freed


def apply_plan(
    root: Path | str | LayoutDir,
    plan: og.Plan,
    *,
    lock: LayoutLock | None = None,
    lock_timeout: float = 10.0,
    progress: Callable[[int], None] | None = None,
    unlink: Callable[[Path], None] | None = None,
    verify: bool = False,
) -> ApplyReport:
    """Apply ``plan`` to the layout at ``root`` (a path or an open :class:`LayoutDir`);
    returns an :class:`ApplyReport`.

    ``lock``: a held :class:`LayoutLock` (when the caller planned under it; its directory is
    the one changed); otherwise one is taken for the duration.  ``progress`` is called with the
    number of blobs handled so far, every ``_PROGRESS_EVERY`` blobs and once all are handled.
    ``unlink`` is injectable so tests can make deletion fail half way.  ``verify``: re-plan
    under the lock and refuse a plan that does more (:func:`verify_plan`) -- for a plan read
    from a file; pointless when the caller planned under the same lock hold.
    """
    started = time.monotonic()
    held = LayoutLock(open_layout(root), lock_timeout) if lock is None else lock
    layout_dir = held.dir
    if lock is None:
        held.acquire()
    try:
        layout_dir.require_in_place()
        if plan.origin is not None and plan.origin != layout_dir.origin:
            raise PlanOriginError(printable(str(layout_dir.path)))
        layout_dir.remove_stale_temp_files()
        current = layout_dir.read_index()
        if current.fingerprint != plan.index_fingerprint:
            raise og.StalePlanError(plan.index_fingerprint, current.fingerprint,
                                    og.describe_index_drift(plan, current))
        if verify:
            verify_plan(layout_dir, plan)
        todo = [d.digest for d in plan.deletions if d.present]
        _check_blob_folders(layout_dir, todo)
        before = (layout_dir.origin, current.fingerprint, layout_dir.folder_stamps())
        index_written = False
        index_after = current.fingerprint
        if plan.index_changes:
            layout_dir.require_in_place()  # the last moment a swap could still fool us
            data = og.render_index(current, plan.index_changes)
            layout_dir.replace_index(data)
            index_written = True
            index_after = og.digest_bytes(data)
        deleted, gone, skipped, freed = _delete_blobs(layout_dir, todo, plan.snapshot_time,
                                                      index_written, progress, unlink)
        return ApplyReport(tuple(deleted), tuple(gone), tuple(skipped), freed, index_written,
                           time.monotonic() - started, before, index_after)
    finally:
        if lock is None:
            held.release()
