"""Apply a plan to a layout through its one directory handle.  The order of work, and what it
guarantees after a crash at any instant or with a tool writing index.json meanwhile, are in
docs/design.md and docs/guarantees.md (§2, §5).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import ocigraph as og
from ocigraph import ApplyError, ApplyInterrupted
from ocigraph import applying as A
from ocigraph.applying import ApplyReport

from .layout import LayoutDir, LayoutLock, locked, open_layout
from .planner import plan_layout
from .quarantine import Quarantine, recover

__all__ = ["ApplyReport", "ApplyInterrupted", "apply_plan", "verify_plan"]

#: blobs per ``progress`` call (a call per blob would add a tqdm update to every deletion)
_PROGRESS_EVERY = 1024


def verify_plan(layout_dir: LayoutDir, plan: og.Plan) -> None:
    """Plan ``plan``'s operation again on the layout as it is now, and refuse ``plan`` if it
    does more (:func:`ocigraph.applying.check_saved_plan`).  Call under the lock."""
    kept = plan.retention if plan.operation == "prune" else None
    planned = plan_layout(layout_dir, plan.operation, plan.targets, plan.policy,
                          prune=None if kept is None else (kept.rules, kept.now))
    A.check_saved_plan(plan, planned.plan, planned.present)


def _move_out(layout_dir: LayoutDir, q: Quarantine, todo: list[str], newest: float,
              tally: A.Moves, progress: Callable[[int], None] | None) -> None:
    """The moves into the quarantine, the hot loop: per blob one ``lstat`` (a regular file,
    not newer than ``newest``, its size) and one rename, by name relative to the two folders'
    descriptors."""
    lstat, rename, is_regular = os.stat, os.rename, stat.S_ISREG
    moved, gone, skipped = tally.moved, tally.gone, tally.skipped
    folders: dict[str, tuple[int | None, int | None]] = {}
    for start in range(0, len(todo), _PROGRESS_EVERY):
        for digest in todo[start:start + _PROGRESS_EVERY]:
            alg, _, name = digest.partition(":")  # (names checked by blob_parts in apply_plan)
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
    :class:`ApplyInterrupted` (a ``KeyboardInterrupt``) carrying the exact state; the next
    command under the lock finishes the job.
    """
    started = time.monotonic()
    layout_dir = open_layout(root) if lock is None else lock.dir
    with locked(layout_dir, lock, lock_timeout) as held:
        try:
            layout_dir.require_in_place()
            A.refuse_other_origin(plan, layout_dir.origin, str(layout_dir.path))
            layout_dir.remove_stale_temp_files()
            recover(layout_dir, lock=held)
            current = layout_dir.read_index()
            A.refuse_stale(plan, current)
            if verify:
                verify_plan(layout_dir, plan)
            todo = [d.digest for d in plan.deletions if d.present]
            for alg in sorted({og.blob_parts(d)[0] for d in todo}):  # every name checked first
                layout_dir.folder(f"blobs/{alg}", missing_ok=True)
            return _apply(layout_dir, plan, todo, current, keep_deleted, progress, started)
        except ApplyInterrupted:
            raise
        except KeyboardInterrupt:  # (in the checks: nothing was changed)
            raise ApplyInterrupted(False, 0, sum(d.present for d in plan.deletions)) from None


def _apply(layout_dir: LayoutDir, plan: og.Plan, todo: list[str], current: og.Index,
           keep: float | None, progress: Callable[[int], None] | None,
           started: float) -> ApplyReport:
    """Create the quarantine, read the file system's clock, write index.json, move the blobs
    out, move back what index.json makes live again, then purge (or keep) the rest."""
    before = (layout_dir.origin, current.fingerprint, layout_dir.folder_stamps())
    data = og.render_index(current, plan.index_changes)  # (no changes: current.raw)
    index_after = og.digest_bytes(data)
    written = bool(plan.index_changes)
    q, offset = None, 0.0
    try:
        if todo:
            q = Quarantine.create(layout_dir, plan, current, index_after, keep)
            offset = layout_dir.clock_offset()
        if written:
            layout_dir.require_in_place()  # the last moment a swap could still fool us
            layout_dir.replace_index(data)
    except BaseException as exc:
        if q is not None:
            with contextlib.suppress(OSError):
                q.purge([])  # nothing was moved: gone again (else recover() ends it)
        if isinstance(exc, OSError):  # (.ocigraph a file or a symlink: not ours, never followed)
            error = A.quarantine_refused if q is None else A.index_unwritten
            raise error(og.printable(str(layout_dir.path)), A.os_error_why(exc)) from None
        if isinstance(exc, KeyboardInterrupt):  # (index.json may be new: the rename is atomic)
            now = og.digest_bytes(layout_dir.read_file("index.json"))
            raise ApplyInterrupted(written and now == index_after, 0, len(todo)) from None
        raise
    if q is None:  # (nothing to move: the file system's clock was not read)
        return ApplyReport((), (), (), 0, written, time.monotonic() - started, before, index_after)
    newest = A.newest_blob_time(plan.snapshot_time, offset)  # (blob times are the file system's)
    tally = A.Moves()
    back: tuple[str, ...] | None = None
    failed: tuple[str, str] | None = None  # (what, why) of the first step that failed
    try:
        try:
            _move_out(layout_dir, q, todo, newest, tally, progress)
        except OSError as exc:  # stop moving; what was moved is settled below
            failed = (f"cannot delete {og.blob_name(todo[tally.handled()])}", A.os_error_why(exc))
        tally.rechecking = True
        back = q.recheck()
        if keep:
            q.update(state="kept")
            q.close()
        else:
            q.purge(tally.deleted(back))
    except KeyboardInterrupt:
        raise ApplyInterrupted(written, _deleted_now(layout_dir, q, todo, tally, back),
                               len(todo)) from None
    except OSError as exc:
        failed = failed or (f"cannot finish {A.QUARANTINE}/{q.name}", A.os_error_why(exc))
    if failed is not None:
        raise ApplyError(*failed, len(tally.deleted(back)), len(todo), written)
    return tally.report(back, written, time.monotonic() - started, before, index_after,
                        q.name if keep else None, offset=offset)


def _deleted_now(layout_dir: LayoutDir, q: Quarantine, todo: list[str], tally: A.Moves,
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
        with contextlib.suppress(OSError):
            if (fd := q.folder(alg)) is not None:  # (never dir_fd=None: that is the cwd)
                os.stat(name, dir_fd=fd, follow_symlinks=False)
                return len(tally.moved) + 1
    return len(tally.moved)
