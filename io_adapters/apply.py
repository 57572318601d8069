"""Apply a plan to a layout on disk, so that a crash at any instant leaves a valid layout and a
tool writing index.json meanwhile (without our lock) loses nothing it lists when it writes.

Order of work (SEMANTICS §6), every step through the layout's one directory handle
(:class:`io_adapters.layout.LayoutDir`):

1. take the layout lock (or use the caller's); finish any apply a crash interrupted
   (:func:`io_adapters.quarantine.recover`);
2. refuse a plan made from another directory (``plan.origin``), a layout whose path no longer
   names the directory the handle holds, a stale plan (index.json's fingerprint differs), and
   a digest that may not become a file name or a symlinked blob folder: nothing is changed;
3. create this apply's quarantine, its journal fsynced (:mod:`io_adapters.quarantine`); read
   the file system's clock (blob times are its, not this machine's);
4. check the path once more, then write the new index.json atomically (temp file, fsync,
   rename, fsync of the folder);
5. move the blobs into the quarantine in plan order, predecessors first, so at every instant
   each blob reachable from index.json is where index.json's readers look.  A blob already
   gone is fine; one that is not a regular file, or was written after the plan's snapshot, is
   skipped and reported;
6. re-check: if index.json is no longer the file step 4 wrote (another tool rewrote it), move
   back every held blob it makes live (with referrers);
7. unlink the rest (``keep_deleted``: leave it, for :func:`io_adapters.quarantine.restore`,
   until :func:`io_adapters.quarantine.purge_expired` after it expires).

A crash at any point leaves a state the next command under the lock finishes (step 1).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ocigraph as og
from ocigraph import (
    ApplyError,
    ApplyInterrupted,
    LayoutAccessError,
    PlanMismatchError,
    PlanOriginError,
)

from .layout import LayoutDir, blob_name, open_layout, printable
from .lock import LayoutLock
from .quarantine import QUARANTINE, Quarantine, recover

__all__ = ["ApplyReport", "ApplyInterrupted", "apply_plan", "verify_plan"]

#: ``progress`` is called once per this many blobs moved, and at the end (a call per blob
#: would add a tqdm update's cost to every deletion, for a bar that cannot show it)
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
    #: planned blobs moved back: another tool's index.json made them live
    relisted: tuple[str, ...] = ()
    #: the quarantine keeping the deleted blobs (``keep_deleted``), for ``restore``
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


def verify_plan(layout_dir: LayoutDir, plan: og.Plan) -> None:
    """Refuse a plan that deletes a blob, or edits an index.json entry, that planning the same
    operation on the layout as it is now would not: a saved plan may have been edited, and
    blobs written since it was made (a push reusing a planned layer).  Call under the lock."""
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
        if d.present and planned.present(d.digest) and d.digest not in allowed:
            raise PlanMismatchError("delete", d.digest)
    edits = {(c.position, c.digest, c.action) for c in fresh.index_changes}
    for c in plan.index_changes:
        if (c.position, c.digest, c.action) not in edits:
            raise PlanMismatchError(f"{c.action} index.json entry {c.position},", c.digest)


@dataclass
class _Moves:
    """Step 5's tally, kept current blob by blob (so an interruption can say it exactly)."""

    moved: dict[str, int]  # digest -> size, in order
    gone: list[str]
    skipped: list[tuple[str, str]]
    rechecking: bool = False

    def handled(self) -> int:
        return len(self.moved) + len(self.gone) + len(self.skipped)


def _move_out(layout_dir: LayoutDir, q: Quarantine, todo: list[str], newest: float,
              tally: _Moves, progress: Callable[[int], None] | None) -> None:
    """Step 5, the hot loop: per blob one ``lstat`` (a regular file, not newer than
    ``newest``, its size) and one rename, by name relative to the two folders' descriptors."""
    lstat, rename, is_regular = os.stat, os.rename, stat.S_ISREG
    moved, gone, skipped = tally.moved, tally.gone, tally.skipped
    folders: dict[str, tuple[int | None, int | None]] = {}
    for start in range(0, len(todo), _PROGRESS_EVERY):
        for digest in todo[start:start + _PROGRESS_EVERY]:
            alg, _, name = digest.partition(":")  # (names checked by blob_parts in step 2)
            if (pair := folders.get(alg)) is None:
                src = layout_dir.folder(f"blobs/{alg}", missing_ok=True)
                pair = folders[alg] = (src, q.folder(alg, create=True))
            src, dst = pair
            if src is None:
                gone.append(digest)
                continue
            try:
                st = lstat(name, dir_fd=src, follow_symlinks=False)
                if not is_regular(st.st_mode):
                    skipped.append((digest, "not a regular file"))
                elif st.st_mtime > newest:
                    skipped.append((digest, "written after the plan was made"))
                else:
                    rename(name, name, src_dir_fd=src, dst_dir_fd=dst)
                    moved[digest] = st.st_size
            except FileNotFoundError:
                gone.append(digest)
        if progress is not None:
            progress(min(start + _PROGRESS_EVERY, len(todo)))


def _clock_warning(offset: float) -> str | None:
    if abs(offset) <= _CLOCK_SKEW_WARN:
        return None
    way = "ahead of" if offset > 0 else "behind"
    return (f"the file system's clock is {abs(offset):.0f} s {way} this machine's; blob times "
            "were compared on the file system's clock")


def _why(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


def apply_plan(
    root: Path | str | LayoutDir,
    plan: og.Plan,
    *,
    lock: LayoutLock | None = None,
    lock_timeout: float = 10.0,
    progress: Callable[[int], None] | None = None,
    verify: bool = False,
    keep_deleted: float | None = None,
) -> ApplyReport:
    """Apply ``plan`` to the layout at ``root`` (a path or an open :class:`LayoutDir`);
    returns an :class:`ApplyReport`.

    ``lock``: a held :class:`LayoutLock` (when the caller planned under it); otherwise one is
    taken for the duration.  ``progress`` is called with the number of blobs handled so far,
    every ``_PROGRESS_EVERY`` blobs and once all are.  ``verify``: re-plan under the lock and
    refuse a plan that does more (:func:`verify_plan`) -- for a plan read from a file.
    ``keep_deleted``: seconds to keep the deleted blobs in the quarantine (``None`` or ``0``:
    unlinked before this returns).

    Errors: one-line :class:`ocigraph.OcigraphError`\\ s; :class:`ApplyError` when a step fails
    part way (``done`` of ``total`` deleted; the layout is valid).  Ctrl-C raises
    :class:`ApplyInterrupted` (a ``KeyboardInterrupt``) carrying the exact state:
    ``index_written``, ``deleted`` (blobs moved out of ``blobs/``, no longer in the layout)
    and ``total`` (blobs the plan deletes); the next command under the lock finishes the job.
    """
    started = time.monotonic()
    held = LayoutLock(open_layout(root), lock_timeout) if lock is None else lock
    layout_dir = held.dir
    if lock is None:
        held.acquire()
    try:
        return _checked(layout_dir, plan, held, verify, keep_deleted, progress, started)
    except KeyboardInterrupt as exc:  # before step 3: nothing was changed
        if isinstance(exc, ApplyInterrupted):
            raise
        raise ApplyInterrupted(False, 0, sum(d.present for d in plan.deletions)) from None
    finally:
        if lock is None:
            held.release()


def _checked(layout_dir: LayoutDir, plan: og.Plan, held: LayoutLock, verify: bool,
             keep_deleted: float | None, progress: Callable[[int], None] | None,
             started: float) -> ApplyReport:
    """Steps 1 (after the lock) and 2 of :func:`apply_plan`, then :func:`_apply`."""
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
    for alg in sorted({og.blob_parts(d)[0] for d in todo}):  # every name checked first
        layout_dir.folder(f"blobs/{alg}", missing_ok=True)
    before = (layout_dir.origin, current.fingerprint, layout_dir.folder_stamps())
    data = og.render_index(current, plan.index_changes) if plan.index_changes else current.raw
    index_after = og.digest_bytes(data)
    return _apply(layout_dir, plan, todo, data, current, keep_deleted, progress,
                  (started, before, index_after))


def _apply(layout_dir: LayoutDir, plan: og.Plan, todo: list[str], data: bytes, current: og.Index,
           keep: float | None, progress: Callable[[int], None] | None,
           context: tuple[float, tuple[Any, ...], str]) -> ApplyReport:
    """Steps 3 to 7 of :func:`apply_plan`."""
    started, before, index_after = context
    written = bool(plan.index_changes)
    unchanged = "index.json is unchanged and no blob was deleted"
    q, offset = None, 0.0
    try:
        if todo:
            q = Quarantine.create(layout_dir, {
                "operation": plan.operation, "indexBefore": current.fingerprint,
                "indexAfter": index_after, "keepUntil": time.time() + keep if keep else None,
                "changes": [[c.position, c.digest, c.action] for c in plan.index_changes]},
                current.raw)
            offset = layout_dir.clock_offset()
        if written:
            layout_dir.require_in_place()  # the last moment a swap could still fool us
            layout_dir.replace_index(data)
    except BaseException as exc:
        if q is not None:
            with contextlib.suppress(OSError):
                q.purge([])  # nothing was moved: gone again (else recover() ends it)
        if isinstance(exc, OSError):
            if q is None:  # e.g. .ocigraph is a file or a symlink: not ours, never followed
                raise LayoutAccessError(printable(f"{layout_dir.path}/{QUARANTINE}"),
                                        f"cannot create the quarantine ({_why(exc)}); {unchanged}"
                                        f"; move {printable(str(layout_dir.path / '.ocigraph'))}"
                                        " away if it is not ocigraph's") from None
            raise LayoutAccessError(printable(str(layout_dir.path)),
                                    f"cannot write index.json ({_why(exc)}); {unchanged}") from None
        if isinstance(exc, KeyboardInterrupt):  # (index.json may be new: the rename is atomic)
            now = og.digest_bytes(layout_dir.read_file("index.json"))
            raise ApplyInterrupted(written and now == index_after, 0, len(todo)) from None
        raise
    # Blob times are the file system's: the plan's snapshot (this machine's clock) is moved
    # by how far the two differ.
    shift = offset if abs(offset) > _CLOCK_TOLERANCE else 0.0
    newest = math.inf if plan.snapshot_time is None else plan.snapshot_time + shift
    tally = _Moves({}, [], [])
    if q is None:
        return ApplyReport((), (), (), 0, written, time.monotonic() - started, before, index_after,
                           clock_warning=_clock_warning(offset))
    back: tuple[str, ...] | None = None
    failed = None
    try:
        try:
            _move_out(layout_dir, q, todo, newest, tally, progress)
        except OSError as exc:  # stop moving; what was moved is settled below
            failed = ApplyError(f"cannot delete {blob_name(todo[tally.handled()])}", _why(exc), 0,
                                len(todo), written)
        tally.rechecking = True
        back = q.recheck()
        if keep:
            q.update(state="kept")
            q.close()
        else:
            spared = set(back)
            q.purge(d for d in tally.moved if d not in spared)
    except KeyboardInterrupt:
        raise ApplyInterrupted(written, _deleted_now(layout_dir, q, todo, tally, back),
                               len(todo)) from None
    except OSError as exc:
        failed = failed or ApplyError(f"cannot finish {QUARANTINE}/{q.name}", _why(exc), 0,
                                      len(todo), written)
    spared = set(back or ())
    deleted = [d for d in tally.moved if d not in spared]
    if failed is not None:
        raise ApplyError(failed.what, failed.why, len(deleted), len(todo), written)
    return ApplyReport(tuple(deleted), tuple(tally.gone), tuple(tally.skipped),
                       sum(tally.moved[d] for d in deleted), written, time.monotonic() - started,
                       before, index_after, tuple(sorted(back or ())),
                       q.name if keep else None, _clock_warning(offset))


def _deleted_now(layout_dir: LayoutDir, q: Quarantine, todo: list[str], tally: _Moves,
                 back: tuple[str, ...] | None) -> int:
    """Exactly how many planned blobs are out of ``blobs/`` after an interruption: the tally,
    and the blob it may be one behind on (moved, not yet counted); while blobs were going
    back, a stat of each moved blob."""
    if back is not None:
        return len(tally.moved) - len(back)
    if tally.rechecking:
        return sum(layout_dir.lstat_blob(d) is None for d in tally.moved)
    k = tally.handled()
    if k < len(todo) and todo[k] not in tally.moved:
        alg, name = og.blob_parts(todo[k])
        with contextlib.suppress(OSError, TypeError):
            os.stat(name, dir_fd=q.folder(alg), follow_symlinks=False)
            return len(tally.moved) + 1
    return len(tally.moved)
