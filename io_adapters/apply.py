"""Apply a plan to a layout on disk, so that a crash at any instant leaves a valid layout and a
tool writing index.json meanwhile (without our lock) does not lose what it lists.

Order of work (SEMANTICS §6):

1. take the layout lock (or use the caller's) on the layout's directory handle
   (:class:`io_adapters.layout.LayoutDir`), through which every later step reads and writes,
   and finish any apply a crash interrupted (:func:`io_adapters.quarantine.recover`);
2. refuse a plan made from another directory (``plan.origin``) and a layout whose path no
   longer names the directory the handle holds; re-read index.json and refuse a stale plan
   (its fingerprint differs);
3. with ``keep_deleted``, create this apply's quarantine (:mod:`io_adapters.quarantine`), its
   journal fsynced; read the file system's clock (blob times are its, not this machine's);
4. write the new index.json atomically: a temp file in the layout folder, fsync, rename over
   index.json, fsync the folder -- readers see the old or the new file, never half of one;
5. delete the blobs in plan order, predecessors first, so at every instant each blob reachable
   from index.json still exists: in batches, each after a check that index.json is still the
   file step 4 wrote -- if another tool rewrote it, nothing it makes live is deleted from then
   on.  A blob already gone is fine; a blob that is not a regular file, or was written after
   the plan's snapshot, is skipped and reported.  With ``keep_deleted`` each blob is moved
   into the quarantine instead, and once all are, whatever index.json makes live goes back.

Every digest to delete is checked, and its blob folder refused if it is a symlink, before step 3:
a bad plan changes nothing.  Right before step 4 the path is checked again: a layout exchanged
for another directory while the command waited (at its prompt, say) is left alone, and so is
the other directory.

If step 5 stops half way, index.json already no longer reaches the blobs left: they are plain
garbage, which the next ``gc`` removes (a quarantine, the next command under the lock settles).
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

from .errors import ApplyError, LayoutAccessError, PlanMismatchError, PlanOriginError
from .layout import LayoutDir, blob_name, blob_path, open_layout, printable
from .lock import LayoutLock
from .quarantine import QUARANTINE, IndexWatch, Quarantine, live_now, recover

__all__ = ["ApplyReport", "apply_plan", "verify_plan"]

#: ``progress`` is called once per this many blobs handled, and at the end: a call per blob
#: (a tqdm update in the CLI) would add its cost to every deletion, for a bar that cannot show it
_PROGRESS_EVERY = 1024
#: seconds the file system's clock may differ from this machine's before blob times are moved
#: onto it (below: timestamp granularity), and before the difference is reported
_CLOCK_TOLERANCE = 1.0
_CLOCK_SKEW_WARN = 60.0


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
    #: planned blobs left in place (or moved back): another tool's index.json made them live
    relisted: tuple[str, ...] = ()
    #: the quarantine holding the deleted blobs (``keep_deleted``), for ``restore``
    quarantine: str | None = None
    #: set when the file system's clock and this machine's differ by more than a minute
    clock_warning: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "deleted": list(self.deleted),
            "alreadyGone": list(self.already_gone),
            "skipped": [{"digest": d, "why": w} for d, w in self.skipped],
            "bytesFreed": self.bytes_freed,
            "indexWritten": self.index_written,
            "relisted": list(self.relisted),
            "quarantine": self.quarantine,
            "clockWarning": self.clock_warning,
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
    from .planner import plan_layout, plan_prune_layout  # (the planner re-checks saved plans)

    if plan.operation == "prune" and plan.retention is not None:
        planned = plan_prune_layout(layout_dir, plan.retention.rules, plan.policy,
                                    plan.retention.now)
    else:
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
    remove: Callable[[str], None],
    newest: float,
    index_written: bool,
    progress: Callable[[int], None] | None,
    check: Callable[[list[str], int], set[str]] | None = None,
) -> tuple[list[str], list[str], list[tuple[str, str]], dict[str, int], set[str]]:
    """Remove the blobs of ``digests`` in order with ``remove`` (an unlink, or a move into the
    quarantine): (removed, already gone, skipped, sizes of the removed, spared).

    The hot loop of apply: per blob one ``lstat`` (a regular file, not newer than ``newest``,
    its size) and one unlink or rename, relative to the folders' descriptors.  Before each
    batch, ``check(digests, start)`` answers which of the blobs left to spare from now on.
    """
    removed: list[str] = []
    gone: list[str] = []
    skipped: list[tuple[str, str]] = []
    sizes: dict[str, int] = {}
    spared: set[str] = set()
    total = len(digests)
    lstat, is_regular = layout_dir.lstat_blob, stat.S_ISREG
    for start in range(0, total, _PROGRESS_EVERY):
        if check is not None:
            spared |= check(digests, start)  # (no slice: copying what is left costs seconds)
        for digest in digests[start:start + _PROGRESS_EVERY]:
            if digest in spared:
                continue
            try:
                st = lstat(digest)
                if st is None:
                    gone.append(digest)
                    continue
            except OSError as exc:
                raise ApplyError(blob_name(digest), exc.strerror or str(exc), len(removed), total,
                                 index_written) from None
            if not is_regular(st.st_mode):
                skipped.append((digest, "not a regular file"))
                continue
            if st.st_mtime > newest:
                skipped.append((digest, "written after the plan was made"))
                continue
            try:
                remove(digest)
            except FileNotFoundError:
                gone.append(digest)
                continue
            except OSError as exc:
                why = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
                raise ApplyError(f"cannot delete {blob_name(digest)}", why, len(removed), total,
                                 index_written) from None
            removed.append(digest)
            sizes[digest] = st.st_size
        if progress is not None:
            progress(min(start + _PROGRESS_EVERY, total))
    return removed, gone, skipped, sizes, spared


def _relisted_check(layout_dir: LayoutDir, index_after: str,
                    offset: float) -> Callable[[list[str], int], set[str]]:
    """Between batches: which of the blobs left (``digests[start:]``) the index.json on disk
    makes live, if it is no longer the one apply wrote (all of them, in doubt)."""
    watch = IndexWatch(layout_dir, index_after, offset)

    def check(digests: list[str], start: int) -> set[str]:
        if not watch.changed():
            return set()
        live = live_now(layout_dir)
        return set(digests[start:]) if live is None else set(live.intersection(digests[start:]))
    return check


def _clock_warning(offset: float) -> str | None:
    if abs(offset) <= _CLOCK_SKEW_WARN:
        return None
    way = "ahead of" if offset > 0 else "behind"
    return (f"the file system's clock is {abs(offset):.0f} s {way} this machine's; blob times "
            "were compared on the file system's clock")


def _os_error(what: str, exc: OSError, then: str) -> LayoutAccessError:
    why = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
    return LayoutAccessError(what, f"{why}; {then}")


def apply_plan(
    root: Path | str | LayoutDir,
    plan: og.Plan,
    *,
    lock: LayoutLock | None = None,
    lock_timeout: float = 10.0,
    progress: Callable[[int], None] | None = None,
    unlink: Callable[[Path], None] | None = None,
    verify: bool = False,
    keep_deleted: float = 0.0,
) -> ApplyReport:
    """Apply ``plan`` to the layout at ``root`` (a path or an open :class:`LayoutDir`);
    returns an :class:`ApplyReport`.

    ``lock``: a held :class:`LayoutLock` (when the caller planned under it; its directory is
    the one changed); otherwise one is taken for the duration.  ``progress`` is called with the
    number of blobs handled so far, every ``_PROGRESS_EVERY`` blobs and once all are handled.
    ``unlink`` is injectable so tests can make deletion fail half way.  ``verify``: re-plan
    under the lock and refuse a plan that does more (:func:`verify_plan`) -- for a plan read
    from a file; pointless when the caller planned under the same lock hold.
    ``keep_deleted``: seconds to keep the deleted blobs in a quarantine rather than unlink
    them (:func:`io_adapters.quarantine.restore` undoes the apply until then;
    :func:`io_adapters.quarantine.purge_expired` removes them after).
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
        recover(layout_dir, lock=held)
        current = layout_dir.read_index()
        if current.fingerprint != plan.index_fingerprint:
            raise og.StalePlanError(plan.index_fingerprint, current.fingerprint,
                                    og.describe_index_drift(plan, current))
        if verify:
            verify_plan(layout_dir, plan)
        todo = [d.digest for d in plan.deletions if d.present]
        _check_blob_folders(layout_dir, todo)
        before = (layout_dir.origin, current.fingerprint, layout_dir.folder_stamps())
        data = og.render_index(current, plan.index_changes) if plan.index_changes else current.raw
        index_after = og.digest_bytes(data)
        unchanged = "index.json is unchanged and no blob was deleted"
        q = None
        if todo and keep_deleted > 0:
            journal = {"operation": plan.operation, "state": "moving", "indexBefore": current.fingerprint,
                       "indexAfter": index_after, "keepUntil": time.time() + keep_deleted,
                       "changes": [[c.position, c.digest, c.action] for c in plan.index_changes]}
            try:
                q = Quarantine.create(layout_dir, journal, current.raw)
            except OSError as exc:
                raise _os_error(f"cannot create {QUARANTINE}", exc, unchanged) from None
        try:
            try:
                offset = layout_dir.clock_offset() if todo else 0.0
            except OSError as exc:
                raise _os_error("cannot create a file in the layout", exc, unchanged) from None
            if plan.index_changes:
                layout_dir.require_in_place()  # the last moment a swap could still fool us
                layout_dir.replace_index(data)
        except BaseException:
            if q is not None:  # nothing moved yet: gone, or (index.json new) recover() ends it
                try:
                    new = layout_dir.read_file("index.json") != current.raw
                except og.OcigraphError:
                    new = True
                q.close() if new else q.purge([])
            raise
        # Blob times are the file system's: the plan's snapshot, this machine's clock, is moved
        # by how far the two differ.
        shift = offset if abs(offset) > _CLOCK_TOLERANCE else 0.0
        newest = math.inf if plan.snapshot_time is None else plan.snapshot_time + shift
        written = bool(plan.index_changes)
        if q is None:
            remove = layout_dir.unlink_blob if unlink is None else (
                lambda d: unlink(blob_path(layout_dir.path, d)))
            check = _relisted_check(layout_dir, index_after, offset)
            deleted, gone, skipped, sizes, relisted = _delete_blobs(
                layout_dir, todo, remove, newest, written, progress, check)
        else:
            try:
                deleted, gone, skipped, sizes, _ = _delete_blobs(
                    layout_dir, todo, q.move_in, newest, written, progress)
            finally:
                back = set(q.recheck())
                q.update(state="kept")
                q.close()
            relisted = back & set(deleted)
            deleted = [d for d in deleted if d not in back]
        return ApplyReport(tuple(deleted), tuple(gone), tuple(skipped),
                           sum(sizes[d] for d in deleted), written, time.monotonic() - started,
                           before, index_after, tuple(sorted(relisted)),
                           q.name if q is not None else None, _clock_warning(offset))
    finally:
        if lock is None:
            held.release()
