"""An apply's pure half (``io_adapters/apply.py``, ``io_adapters/quarantine.py``): its report,
the quarantine's ids and journal, the checks of a saved plan, blob times on the file system's
clock, restore's decisions and the errors they raise.  How they fit: docs/design.md and
docs/guarantees.md §5.
"""

from __future__ import annotations

import errno
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import networkx as nx
import orjson

from ._digest import digest_bytes, is_sweepable, printable
from ._errors import StalePlanError
from ._graph import live_set
from ._model import Index
from ._parse import restore_index_entries
from ._plan import Plan
from ._planning import describe_index_drift
from ._shell_errors import (
    LayoutAccessError,
    PlanMismatchError,
    PlanOriginError,
    RestoreRefusedError,
)
from .snapshot import Snapshot

__all__ = ["ApplyReport", "Moves", "QuarantineInfo", "Recovery", "Restored", "QUARANTINE",
           "JOURNAL_FORMAT", "quarantine_id", "is_quarantine_id", "new_journal", "read_journal",
           "journal_changes", "purge_due", "refuse_other_origin", "refuse_stale",
           "check_saved_plan", "CLOCK_TOLERANCE", "CLOCK_SKEW_WARN", "newest_blob_time",
           "clock_warning", "os_error_why", "quarantine_refused", "index_unwritten", "unfinished",
           "restorable", "restored_index", "refuse_lost"]

#: the quarantines' folder, relative to the layout's root
QUARANTINE = ".ocigraph/quarantine"
#: the version of a quarantine's ``journal.json`` (its ``ocigraphQuarantine`` field)
JOURNAL_FORMAT = 1
_ID = re.compile(r"\d{8}T\d{6}\.\d{6}Z-\d+")
#: seconds the file system's clock may differ from this machine's before blob times are moved
#: onto it (below: timestamp granularity), and before the difference is reported
CLOCK_TOLERANCE = 1.0
CLOCK_SKEW_WARN = 60.0
_UNCHANGED = "index.json is unchanged and no blob was deleted"


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What ``io_adapters.apply.apply_plan`` did; :meth:`to_dict` is the ``result`` of the
    report the command line prints.

    >>> r = ApplyReport(("sha256:a",), (), (("sha256:b", "not a regular file"),), 10, True, 0.5)
    >>> d = r.to_dict()
    >>> d["skipped"], d["bytesFreed"], d["quarantine"], "before" in d
    ([{'digest': 'sha256:b', 'why': 'not a regular file'}], 10, None, False)
    """

    deleted: tuple[str, ...]
    already_gone: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (digest, why)
    bytes_freed: int
    index_written: bool
    seconds: float
    #: the layout's snapshot (:mod:`ocigraph.snapshot`) just before the plan changed it, and
    #: index.json's digest after: what lets the store follow the change (not in the JSON)
    before: Snapshot | None = None
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


@dataclass(slots=True)
class Moves:
    """The tally of an apply's moves into its quarantine, kept current blob by blob (so an
    interruption can say it exactly), and the report it makes once the blobs that index.json
    made live again went back.

    >>> moves = Moves({"sha256:a": 3, "sha256:b": 4}, ["sha256:c"])
    >>> moves.handled(), moves.deleted(["sha256:a"])
    (3, ['sha256:b'])
    >>> r = moves.report(["sha256:a"], True, 0.5, None, None, "q1", offset=0.0)
    >>> r.deleted, r.already_gone, r.bytes_freed, r.relisted, r.quarantine, r.clock_warning
    (('sha256:b',), ('sha256:c',), 4, ('sha256:a',), 'q1', None)
    """

    moved: dict[str, int] = field(default_factory=dict)  # digest -> size, in order
    gone: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (digest, why)
    rechecking: bool = False  # the moves are over: blobs may be going back

    def handled(self) -> int:
        """How many planned blobs the moves have dealt with, in the plan's order."""
        return len(self.moved) + len(self.gone) + len(self.skipped)

    def deleted(self, back: Collection[str] | None) -> list[str]:
        """The blobs moved out, in order, but for those moved ``back``."""
        spared = set(back or ())
        return [d for d in self.moved if d not in spared]

    def report(self, back: Collection[str] | None, index_written: bool, seconds: float,
               before: Snapshot | None, index_after: str | None, quarantine: str | None, *,
               offset: float) -> ApplyReport:
        """The :class:`ApplyReport` of the apply these moves end: only the blobs not moved
        ``back`` are deleted and counted; ``quarantine`` keeps them (or ``None``: purged);
        the file system's clock was ``offset`` seconds ahead (:func:`clock_warning`)."""
        deleted = self.deleted(back)
        return ApplyReport(tuple(deleted), tuple(self.gone), tuple(self.skipped),
                           sum(self.moved[d] for d in deleted), index_written, seconds, before,
                           index_after, tuple(sorted(back or ())), quarantine,
                           clock_warning(offset))


@dataclass(frozen=True, slots=True)
class QuarantineInfo:
    """One quarantine (``du``, ``show``, ``fsck``): its apply, and what it holds."""

    id: str
    operation: str
    created: float
    keep_until: float | None
    blobs: dict[str, int]  # digest -> bytes

    @classmethod
    def of(cls, apply_id: str, journal: Mapping[str, Any], blobs: dict[str, int]) -> QuarantineInfo:
        """The quarantine ``apply_id`` whose journal (:func:`read_journal`) is ``journal``
        and which holds ``blobs``; a journal that says nothing gives operation ``?``, created 0.

        >>> QuarantineInfo.of("q", {}, {"sha256:a": 3, "sha256:b": 4}).to_dict()
        {'id': 'q', 'operation': '?', 'created': 0.0, 'keepUntil': None, 'blobs': 2, 'bytes': 7}
        """
        return cls(apply_id, str(journal.get("operation", "?")),
                   float(journal.get("created") or 0), journal.get("keepUntil"), blobs)

    @property
    def bytes(self) -> int:
        return sum(self.blobs.values())

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "operation": self.operation, "created": self.created,
                "keepUntil": self.keep_until, "blobs": len(self.blobs), "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``recover`` or ``purge_expired`` (``io_adapters.quarantine``) did."""

    restored: tuple[str, ...] = ()  # moved back: live again under index.json
    purged: int = 0
    purged_bytes: int = 0
    finished: tuple[str, ...] = ()  # quarantines emptied and removed
    kept: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Restored:
    """What ``restore`` did: the quarantine, the blobs moved back, entries put back."""

    id: str
    blobs: tuple[str, ...]
    entries: int


# -- the quarantine's id and journal --------------------------------------------------------------

def quarantine_id(created: float, pid: int) -> str:
    """The id (and folder name) of the quarantine process ``pid`` creates at ``created``
    (seconds since the epoch): UTC to the microsecond, then the pid.

    >>> quarantine_id(1796464800.25, 7)
    '20261205T100000.250000Z-7'
    >>> is_quarantine_id(quarantine_id(0.0, 1)), is_quarantine_id("20261205T100000Z-7")
    (True, False)
    """
    second = datetime.fromtimestamp(math.floor(created), UTC).strftime("%Y%m%dT%H%M%S")
    return f"{second}.{int(created * 1e6) % 10**6:06d}Z-{pid}"


def is_quarantine_id(name: str) -> bool:
    """Whether a folder under :data:`QUARANTINE` is named as ocigraph names its quarantines."""
    return _ID.fullmatch(name) is not None


def new_journal(apply_id: str, created: float, plan: Plan, index_before: str,
                index_after: str, keep: float | None) -> dict[str, Any]:
    """The ``journal.json`` of the quarantine ``apply_id`` of an apply of ``plan``: its
    operation, index.json's digests before and after, the entries it changes (``[position,
    digest, action]``), and ``keepUntil`` (``keep`` seconds after ``created``; ``None`` or ``0``:
    purged at once, so no expiry)."""
    return {"ocigraphQuarantine": JOURNAL_FORMAT, "id": apply_id, "created": created,
            "operation": plan.operation, "indexBefore": index_before, "indexAfter": index_after,
            "keepUntil": created + keep if keep else None,
            "changes": [[c.position, c.digest, c.action] for c in plan.index_changes]}


def read_journal(data: bytes | None) -> dict[str, Any]:
    """A journal as read back (``None``: there is none); one that is not a JSON object -- never
    ocigraph's, which writes it by rename -- is ``{}``: no expiry, nothing known.

    >>> read_journal(b'{"keepUntil": 5.0}'), read_journal(b'[1]'), read_journal(b'{"k')
    ({'keepUntil': 5.0}, {}, {})
    """
    try:
        journal = orjson.loads(data or b"{}")
    except orjson.JSONDecodeError:
        return {}
    return journal if isinstance(journal, dict) else {}


def journal_changes(journal: Mapping[str, Any]) -> list[tuple[int, str, str]]:
    """The index.json entries the journal's apply changed: ``(position, digest, action)``.

    >>> journal_changes({"changes": [[0, "sha256:a", "drop"]]}), journal_changes({})
    ([(0, 'sha256:a', 'drop')], [])
    """
    return [(int(p), str(d), str(a)) for p, d, a in journal.get("changes") or []]


def purge_due(keep_until: object, now: float) -> bool:
    """Whether the quarantine whose journal's ``keepUntil`` is ``keep_until`` is purged at
    ``now``: one not kept (``None``) always; a kept one once its time is up -- never at
    ``-inf``, which is how ``recover`` leaves every kept one alone; a ``keepUntil`` that is not
    a number (never ocigraph's) keeps it.

    >>> purge_due(None, float("-inf")), purge_due(5.0, float("-inf")), purge_due(5.0, 4.0)
    (True, False, False)
    >>> purge_due(5.0, 5.0), purge_due(5, 9.0), purge_due("5", 9.0)
    (True, True, False)
    """
    if keep_until is None:
        return True
    return isinstance(keep_until, int | float) and keep_until <= now


# -- applying -------------------------------------------------------------------------------------

def refuse_other_origin(plan: Plan, origin: str, root: str) -> None:
    """Raise :class:`PlanOriginError` when ``plan`` was made from another directory than the
    layout at ``root``, whose origin is ``origin``; a plan that records none is not checked.

    >>> from ocigraph import Plan, Policy
    >>> plan = Plan("gc", (), Policy(), "sha256:" + "0" * 64, origin="8:5")
    >>> refuse_other_origin(plan, "8:5", "L")
    >>> refuse_other_origin(plan, "8:6", "L")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ocigraph._shell_errors.PlanOriginError: L was moved or replaced since the plan was made ...
    """
    if plan.origin is not None and plan.origin != origin:
        raise PlanOriginError(printable(root))


def refuse_stale(plan: Plan, current: Index) -> None:
    """Raise :class:`StalePlanError`, saying what drifted (:func:`ocigraph.describe_index_drift`),
    unless ``current`` is the index.json ``plan`` was made from."""
    if current.fingerprint != plan.index_fingerprint:
        raise StalePlanError(plan.index_fingerprint, current.fingerprint,
                             describe_index_drift(plan, current))


def check_saved_plan(plan: Plan, fresh: Plan, present: Callable[[str], bool]) -> None:
    """Refuse a saved ``plan`` that deletes a blob, or edits an index.json entry, that
    ``fresh`` -- the same operation planned on the layout as it is now, whose blobs
    ``present`` tells -- does not: :class:`StalePlanError` when index.json changed,
    :class:`PlanMismatchError` naming the first blob or entry too many.  A planned blob gone
    since, or a plan doing less, is fine."""
    if fresh.index_fingerprint != plan.index_fingerprint:
        raise StalePlanError(plan.index_fingerprint, fresh.index_fingerprint)
    allowed = {d.digest for d in fresh.deletions if d.present}
    for d in plan.deletions:
        if d.present and present(d.digest) and d.digest not in allowed:
            raise PlanMismatchError("delete", d.digest)
    edits = {(c.position, c.digest, c.action) for c in fresh.index_changes}
    for c in plan.index_changes:
        if (c.position, c.digest, c.action) not in edits:
            raise PlanMismatchError(f"{c.action} index.json entry {c.position},", c.digest)


def newest_blob_time(snapshot_time: float | None, offset: float) -> float:
    """The latest mtime a planned blob may have and still be deleted: the plan's snapshot
    time (this machine's clock) moved onto the file system's clock, ``offset`` seconds ahead,
    when they differ by more than :data:`CLOCK_TOLERANCE`; no bound without a snapshot time.

    >>> newest_blob_time(100.0, 0.5), newest_blob_time(100.0, -3600.0), newest_blob_time(None, 9)
    (100.0, -3500.0, inf)
    """
    shift = offset if abs(offset) > CLOCK_TOLERANCE else 0.0
    return math.inf if snapshot_time is None else snapshot_time + shift


def clock_warning(offset: float) -> str | None:
    """The report's warning when the file system's clock is ``offset`` seconds ahead of this
    machine's (behind, when negative) by more than :data:`CLOCK_SKEW_WARN`.

    >>> clock_warning(-3600.4).split(";")[0], clock_warning(60.0)
    ("the file system's clock is 3600 s behind this machine's", None)
    """
    if abs(offset) <= CLOCK_SKEW_WARN:
        return None
    way = "ahead of" if offset > 0 else "behind"
    return (f"the file system's clock is {abs(offset):.0f} s {way} this machine's; blob times "
            "were compared on the file system's clock")


def os_error_why(exc: OSError) -> str:
    """What went wrong, as an error line says it: the system's words, else the errno's name.

    >>> os_error_why(OSError(5, "Input/output error")), os_error_why(OSError(28, None))
    ('Input/output error', 'ENOSPC')
    """
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


def quarantine_refused(root: str, why: str) -> LayoutAccessError:
    """The error when the layout at ``root`` (printable) cannot have a quarantine -- say
    ``.ocigraph`` is a file or a symlink, which is never followed: nothing was changed.

    >>> for part in str(quarantine_refused(".", "Not a directory")).split("; "):
    ...     print(part)
    ./.ocigraph/quarantine: cannot create the quarantine (Not a directory)
    index.json is unchanged and no blob was deleted
    move .ocigraph away if it is not ocigraph's
    """
    return LayoutAccessError(f"{root}/{QUARANTINE}", f"cannot create the quarantine ({why}); "
                             f"{_UNCHANGED}; move {PurePosixPath(root, '.ocigraph')} away if it "
                             "is not ocigraph's")


def index_unwritten(root: str, why: str) -> LayoutAccessError:
    """The error when the new index.json of the layout at ``root`` cannot be written: nothing
    was changed.

    >>> str(index_unwritten("L", "EIO"))
    'L: cannot write index.json (EIO); index.json is unchanged and no blob was deleted'
    """
    return LayoutAccessError(root, f"cannot write index.json ({why}); {_UNCHANGED}")


def unfinished(where: str, why: str | None) -> LayoutAccessError:
    """The error when what an earlier run left at ``where`` cannot be finished."""
    return LayoutAccessError(where, f"cannot finish what an earlier run left ({why}); the layout "
                             "is valid: run the command again")


# -- restoring ------------------------------------------------------------------------------------

def restorable(quarantines: Sequence[tuple[str, float | None]], apply_id: str | None) -> int:
    """Which of the layout's quarantines (``(id, keepUntil)``, oldest first) ``restore``
    undoes: the last one kept, or the kept one named ``apply_id``.

    >>> restorable([("a", 5.0), ("b", None), ("c", 6.0), ("d", None)], None)
    2
    >>> restorable([("a", 5.0), ("b", None)], "a")
    0
    """
    kept = [k for k, (name, until) in enumerate(quarantines)
            if until is not None and apply_id in (None, name)]
    if not kept:
        raise RestoreRefusedError(f"no apply{' ' + apply_id if apply_id else ''} kept its blobs "
                                  "(only one made with --keep-deleted can be undone, until it "
                                  "expires)")
    return kept[-1]


def restored_index(journal: Mapping[str, Any], before: bytes, current: bytes) -> bytes:
    """The index.json ``restore`` leaves, given the journal's apply, index.json ``before`` it
    and ``current``: ``before`` when ``current`` is still the one the apply wrote, ``current``
    when it is back to the one before, else ``current`` with the entries the apply dropped or
    untagged put back (:func:`ocigraph.restore_index_entries`; :class:`RestoreRefusedError`
    when that cannot be done)."""
    changes, now = journal_changes(journal), digest_bytes(current)
    if now == journal.get("indexAfter"):
        return before
    if now == journal.get("indexBefore"):
        return current
    try:
        return restore_index_entries(current, before, changes)
    except ValueError as exc:
        raise RestoreRefusedError(str(exc)) from None


def refuse_lost(graph: nx.DiGraph, changes: Sequence[tuple[int, str, str]]) -> None:
    """Raise :class:`RestoreRefusedError` when a blob that the entries ``changes`` put back
    need (in ``graph``, of the index.json restore would leave) is gone."""
    needed = live_set(graph, root_set=[c[1] for c in changes if c[1] in graph])
    if lost := sorted(n for n in needed if not graph.nodes[n]["present"] and is_sweepable(n)):
        raise RestoreRefusedError(f"{lost[0]}, which a restored entry needs, is gone")
