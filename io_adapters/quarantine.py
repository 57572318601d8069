"""The quarantine: where apply moves the blobs it deletes, until nothing can need them.

Tools that take no lock of ours (skopeo, umoci, oras) may write index.json while ocigraph
applies a plan, listing again what the plan deletes.  So apply (:mod:`io_adapters.apply`)
*moves* each blob, predecessors first, into ``.ocigraph/quarantine/<id>/<alg>/`` at the
layout's root (a rename relative to the folders' descriptors: same file system, and outside
``blobs/``, which other tools scan); then :meth:`Quarantine.recheck` reads index.json as it is
now, and if it is not the file apply wrote, walks what it makes live (:func:`live_now`: every
entry a root, successors and referrers) and moves that back; only then is the rest unlinked --
at once, or, with ``keep_deleted``, once its ``keepUntil`` has passed (:func:`purge_expired`;
until then :func:`restore` undoes the apply).

Crash safety: ``journal.json`` (the apply's index.json digests before and after, its changes,
``keepUntil``) and ``index.json.before`` are fsynced before index.json is written, and the
journal is removed last.  What the quarantine holds is its listing -- no record per blob is
needed -- so every crash leaves a state the next command under the lock finishes
(:func:`recover`: re-check, then purge unless kept), whatever the instant.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import ocigraph as og
from ocigraph import LayoutAccessError

from .layout import (
    BlobListing,
    DiskManifestSource,
    LayoutDir,
    open_layout,
    read_at,
    scan_blobs,
    write_at,
)
from .lock import LayoutLock

__all__ = ["QUARANTINE", "Quarantine", "QuarantineInfo", "Recovery", "Restored", "live_now",
           "recover", "purge_expired", "quarantined", "restore", "RestoreRefusedError"]

QUARANTINE = ".ocigraph/quarantine"
JOURNAL, BEFORE = "journal.json", "index.json.before"
_ID = re.compile(r"\d{8}T\d{6}\.\d{6}Z-\d+")
#: a purge of this many blobs or more unlinks them in ``PURGE_THREADS`` threads (measured at
#: 100k on ext4 with 2 CPUs: 2 threads unlink 50,000 quarantined blobs in a fraction of the
#: wall time one takes; fewer blobs are not worth the threads)
PURGE_PARALLEL_FROM, PURGE_THREADS = 2048, 2


class RestoreRefusedError(og.RequestError):
    """:func:`restore` would leave the layout worse; nothing was changed."""

    def __init__(self, why: str) -> None:
        super().__init__(f"refusing to restore: {why}; nothing was changed")


@dataclass(frozen=True, slots=True)
class QuarantineInfo:
    """One quarantine (``du``, ``show``, ``fsck``): its apply, and what it holds."""

    id: str
    operation: str
    created: float
    keep_until: float | None
    blobs: dict[str, int]  # digest -> bytes

    @property
    def bytes(self) -> int:
        return sum(self.blobs.values())

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "operation": self.operation, "created": self.created,
                "keepUntil": self.keep_until, "blobs": len(self.blobs), "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :func:`recover` or :func:`purge_expired` did."""

    restored: tuple[str, ...] = ()  # moved back: live again under index.json
    purged: int = 0
    purged_bytes: int = 0
    finished: tuple[str, ...] = ()  # quarantines emptied and removed
    kept: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Restored:
    """What :func:`restore` did: the quarantine, the blobs moved back, entries put back."""

    id: str
    blobs: tuple[str, ...]
    entries: int


class Quarantine:
    """One apply's folder ``.ocigraph/quarantine/<id>``, opened relative to the layout's handle."""

    def __init__(self, layout_dir: LayoutDir, name: str, fd: int, journal: dict[str, Any]) -> None:
        self.dir, self.name, self.fd, self.journal = layout_dir, name, fd, journal
        self._algs: dict[str, int] = {}

    @property
    def keep_until(self) -> float | None:
        return self.journal.get("keepUntil")

    @classmethod
    def create(cls, layout_dir: LayoutDir, journal: dict[str, Any], before: bytes) -> Quarantine:
        """A new quarantine, its journal and index.json's ``before`` bytes fsynced; on failure
        nothing is left."""
        t = time.time()
        name = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f".{int(t * 1e6) % 10**6:06d}Z-{os.getpid()}"
        q = None
        try:
            top = layout_dir.open_folder(QUARANTINE, create=True)
            try:
                q = cls(layout_dir, name, layout_dir.open_folder(name, create=True, at=top),  # type: ignore[arg-type]
                        {"ocigraphQuarantine": 1, "id": name, "created": t, **journal})
            finally:
                os.close(top)  # type: ignore[arg-type]
            q._write(BEFORE, before)
            q._write(JOURNAL, orjson.dumps(q.journal))
        except BaseException:
            q._remove() if q is not None else _prune(layout_dir, name)
            raise
        return q

    @classmethod
    def open_all(cls, layout_dir: LayoutDir) -> list[Quarantine]:
        """The layout's quarantines, oldest first; one whose journal is missing or bad (never
        ours: it is written by rename) has no expiry and a re-check that reads everything."""
        try:
            top = layout_dir.open_folder(QUARANTINE)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                return []  # a file or a symlink on the way: not ours, never followed
            raise
        if top is None:
            return []
        found = []
        try:
            with os.scandir(top) as it:
                names = [e.name for e in it if _ID.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
            for name in names:
                fd: int = layout_dir.open_folder(name, at=top)  # type: ignore[assignment]
                try:
                    journal = orjson.loads(_read(fd, JOURNAL) or b"{}")
                except orjson.JSONDecodeError:
                    journal = {}
                found.append(cls(layout_dir, name, fd, journal if isinstance(journal, dict) else {}))
        finally:
            os.close(top)
        return sorted(found, key=lambda q: (float(q.journal.get("created") or 0), q.name))

    def close(self) -> None:
        for fd in [*self._algs.values(), self.fd]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._algs, self.fd = {}, -1

    def _write(self, name: str, data: bytes) -> None:
        write_at(self.fd, name, data, f".{name}.{os.getpid()}.tmp")
        os.fsync(self.fd)

    def update(self, **fields: Any) -> None:
        self.journal.update(fields)
        self._write(JOURNAL, orjson.dumps(self.journal))

    def folder(self, alg: str, create: bool = False) -> int | None:
        """The descriptor of the quarantine's ``<alg>/`` folder (kept open)."""
        if alg not in self._algs:
            fd = self.dir.open_folder(alg, create=create, at=self.fd)
            if fd is None:
                return None
            self._algs[alg] = fd
        return self._algs[alg]

    def listing(self) -> dict[str, int]:
        """``digest -> size`` of the blobs held."""
        held = {}
        for alg, width in og.SWEEPABLE_ALGORITHMS.items():
            if (fd := self.folder(alg)) is not None:
                with os.scandir(fd) as it:
                    for e in it:
                        if len(e.name) == width and e.is_file(follow_symlinks=False):
                            held[f"{alg}:{e.name}"] = e.stat(follow_symlinks=False).st_size
        return held

    def read(self, digest: str) -> bytes | None:
        alg, name = og.blob_parts(digest)
        fd = self.folder(alg)
        return None if fd is None else _read(fd, name)

    def take_back(self, digests: Iterable[str]) -> tuple[str, ...]:
        """Move the blobs back to ``blobs/`` (not one whose name is taken there again), then
        fsync the folders they went to: a purge after this cannot outlive the move."""
        back, folders = [], set()
        for digest in digests:
            to, name = self.dir.blob_at(digest, missing_ok=False)
            if self.dir.lstat_blob(digest) is None:
                os.rename(name, name, src_dir_fd=self.folder(digest.partition(":")[0]), dst_dir_fd=to)
                back.append(digest)
                folders.add(to)
        for fd in folders:
            os.fsync(fd)  # type: ignore[arg-type]
        return tuple(back)

    def recheck(self) -> tuple[str, ...]:
        """Move back each held blob the index.json on disk makes live (:func:`live_now`; in
        doubt, all): none when it is the one the apply wrote or this last checked."""
        try:
            now: str | None = og.digest_bytes(self.dir.read_file("index.json"))
        except og.OcigraphError:
            now = None
        if now is not None and now in (self.journal.get("indexAfter"), self.journal.get("checked")):
            return ()
        held = self.listing()
        live = live_now(self.dir, self, held) if held else frozenset()
        back = self.take_back(d for d in sorted(held) if live is None or d in live)
        if now is not None and self.keep_until is not None:
            self.update(checked=now)
        return back

    def purge(self, digests: Iterable[str] | None = None) -> tuple[int, int]:
        """Unlink the blobs held (``digests``: those known held, bytes not counted), then
        the journal, then the folders: ``(blobs, bytes)``.  Many blobs go in
        :data:`PURGE_THREADS` threads: an unlink mostly waits on the file system, and the order
        no longer matters (nothing in ``blobs/`` is left to protect); Ctrl-C stops them all
        after their current unlink, leaving the rest to :func:`recover`."""
        folders = {alg: self.folder(alg) for alg in og.SWEEPABLE_ALGORITHMS}
        todo = []
        for digest, n in self.listing().items() if digests is None else ((d, 0) for d in digests):
            alg, _, name = digest.partition(":")
            if (fd := folders.get(alg)) is not None:  # (never dir_fd=None: that is the cwd)
                todo.append((name, fd, n))
        if len(todo) < PURGE_PARALLEL_FROM:
            count, size = _unlink_all(todo, None)
        else:
            stop = threading.Event()
            with ThreadPoolExecutor(PURGE_THREADS) as pool:
                parts = [pool.submit(_unlink_all, todo[k::PURGE_THREADS], stop)
                         for k in range(PURGE_THREADS)]
                try:
                    done = [part.result() for part in parts]
                except BaseException:
                    stop.set()  # (the pool's exit then waits for each thread's last unlink)
                    raise
            count, size = sum(c for c, _ in done), sum(b for _, b in done)
        self._remove()
        return count, size

    def drop_temps(self) -> None:
        """Remove the temp files a killed write left (call under the lock)."""
        with os.scandir(self.fd) as it:
            temps = [e.name for e in it if e.name.startswith(".") and e.name.endswith(".tmp")]
        for name in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self.fd)

    def _remove(self) -> None:
        for alg in list(self._algs):
            with contextlib.suppress(OSError):
                os.rmdir(alg, dir_fd=self.fd)
        self.drop_temps()
        for name in (BEFORE, JOURNAL):  # the journal last: until then, recover() resumes
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self.fd)
        self.close()
        _prune(self.dir, self.name)


def _prune(layout_dir: LayoutDir, name: str | None = None) -> None:
    """Remove the quarantine folder ``name``, then its parents, each only if empty (anything
    else in them is not ours: left alone)."""
    for parent, leaf in ((QUARANTINE, name), (".ocigraph", "quarantine"), ("", ".ocigraph")):
        with contextlib.suppress(OSError):
            fd = (layout_dir.open_folder(parent) if parent else os.dup(layout_dir.fd)) if leaf else None
            if fd is not None and leaf is not None:
                try:
                    os.rmdir(leaf, dir_fd=fd)
                finally:
                    os.close(fd)


def _unlink_all(todo: Sequence[tuple[str, int, int]], stop: threading.Event | None) -> tuple[int, int]:
    """Unlink each ``(name, folder descriptor, bytes)``, until ``stop`` is set:
    ``(blobs, bytes)`` unlinked (one already gone is not counted)."""
    count = size = 0
    unlink = os.unlink
    for k, (name, fd, n) in enumerate(todo):
        if stop is not None and k % 256 == 0 and stop.is_set():
            break
        try:
            unlink(name, dir_fd=fd)
        except FileNotFoundError:
            continue
        count, size = count + 1, size + n
    return count, size


def _read(fd: int, name: str) -> bytes | None:
    try:
        return read_at(fd, name)
    except FileNotFoundError:
        return None


class _Source(DiskManifestSource):
    """Manifests read from blobs/, or from the quarantine ``q`` for the blobs it holds."""

    def __init__(self, layout_dir: LayoutDir, q: Quarantine | None, held: dict[str, int]) -> None:
        listing = scan_blobs(layout_dir)[0]
        super().__init__(layout_dir, BlobListing(layout_dir, [*listing, *held.keys() - listing.keys()]), 1)
        self.q, self.held = q, held

    def read_bytes(self, digest: str) -> bytes | og.Manifest:
        got = super().read_bytes(digest)
        if isinstance(got, og.Manifest) and got.missing and self.q is not None and digest in self.held:
            return self.q.read(digest) or og.parse_manifest(digest, None)
        return got


def _graph(layout_dir: LayoutDir, q: Quarantine | None, held: dict[str, int], index: og.Index) -> Any:
    source = _Source(layout_dir, q, held)
    return og.build_graph(og.Layout(index, source.present, source))


def live_now(layout_dir: LayoutDir, q: Quarantine | None = None,
             held: dict[str, int] | None = None) -> frozenset[str] | None:
    """What the index.json on disk makes live, every entry a root, reading manifests from
    blobs/ or from ``q`` (which holds ``held``); ``None`` in doubt: index.json unreadable (a
    writer rewriting it in place: read 5 times, 20 ms apart) or a live manifest broken."""
    for _ in range(5):
        try:
            index = layout_dir.read_index()
            break
        except og.OcigraphError:
            time.sleep(0.02)
    else:
        return None
    graph = _graph(layout_dir, q, held or {}, index)
    live = og.live_set(graph, og.Policy(keep_untagged=True))
    return None if any(graph.nodes[n]["status"] == "broken" for n in live) else live


@contextlib.contextmanager
def _locked(layout_dir: LayoutDir, lock: LayoutLock | None, timeout: float) -> Iterator[None]:
    if lock is not None and lock.held:
        yield
    else:
        with LayoutLock(layout_dir, timeout):
            yield


def _settle(root: Path | str | LayoutDir, lock: LayoutLock | None, timeout: float,
            ends: Callable[[Quarantine], bool]) -> Recovery:
    layout_dir = open_layout(root)
    try:
        top = layout_dir.open_folder(".ocigraph")
    except OSError:  # not a folder, or a symlink: not ours, never followed
        return Recovery()
    if top is None:
        return Recovery()
    os.close(top)
    restored: list[str] = []
    finished, kept, count, size, name = [], [], 0, 0, QUARANTINE
    with _locked(layout_dir, lock, timeout):
        try:
            for q in Quarantine.open_all(layout_dir):
                name = f"{QUARANTINE}/{q.name}"
                try:
                    q.drop_temps()
                    restored += q.recheck()
                    if ends(q):
                        n, b = q.purge()
                        finished.append(q.name)
                        count, size = count + n, size + b
                    else:
                        kept.append(q.name)
                finally:
                    q.close()
        except OSError as exc:
            raise LayoutAccessError(name, f"cannot finish what an earlier run left ({exc.strerror}); "
                                    "the layout is valid: run the command again") from None
        _prune(layout_dir)  # folders a killed purge left empty
    return Recovery(tuple(restored), count, size, tuple(finished), tuple(kept))


def recover(root: Path | str | LayoutDir, *, lock: LayoutLock | None = None,
            lock_timeout: float = 10.0) -> Recovery:
    """Finish what a killed apply left: each quarantine is re-checked (blobs live again go
    back) and purged unless kept.  Call it under the lock before reading the layout to plan (a
    live blob may be held).  Without a ``.ocigraph`` folder: nothing, and no lock taken."""
    return _settle(root, lock, lock_timeout, lambda q: q.keep_until is None)


def purge_expired(root: Path | str | LayoutDir, now: float | None = None, *,
                  lock: LayoutLock | None = None, lock_timeout: float = 10.0) -> Recovery:
    """:func:`recover`, and purge the kept quarantines whose time is up at ``now``."""
    at = time.time() if now is None else now
    return _settle(root, lock, lock_timeout, lambda q: q.keep_until is None or q.keep_until <= at)


def quarantined(root: Path | str | LayoutDir) -> tuple[QuarantineInfo, ...]:
    """The layout's quarantines, oldest first, with what each holds (reads only)."""
    out = []
    for q in Quarantine.open_all(open_layout(root)):
        try:
            j = q.journal
            out.append(QuarantineInfo(q.name, str(j.get("operation", "?")),
                                      float(j.get("created") or 0), q.keep_until, q.listing()))
        finally:
            q.close()
    return tuple(out)


def restore(root: Path | str | LayoutDir, apply_id: str | None = None, *,
            lock: LayoutLock | None = None, lock_timeout: float = 10.0) -> Restored:
    """Undo the last apply that kept its blobs (or the one named): the blobs go back, then
    index.json -- as it was, when no one changed it since, else the current one with the
    entries the apply dropped or untagged put back (:func:`ocigraph.restore_index_entries`).
    Refused, changing nothing, when a tag now names another digest, a blob of that name holds
    other bytes, or one a restored entry needs is gone."""
    from .fsck import hash_file

    layout_dir = open_layout(root)
    with _locked(layout_dir, lock, lock_timeout):
        qs = Quarantine.open_all(layout_dir)
        try:
            kept = [q for q in qs if q.keep_until is not None and apply_id in (None, q.name)]
            if not kept:
                raise RestoreRefusedError(f"no apply{' ' + apply_id if apply_id else ''} kept its blobs (only one "
                                          "made with --keep-deleted can be undone, until it expires)")
            q = kept[-1]
            before, current, held = _read(q.fd, BEFORE), layout_dir.read_file("index.json"), q.listing()
            if before is None:
                raise RestoreRefusedError(f"quarantine {q.name} has no copy of index.json")
            for digest in sorted(held):
                fd = layout_dir.open_blob(digest)
                alg, encoded = og.blob_parts(digest)
                if fd is not None and hash_file(fd, alg)[0] != encoded:
                    raise RestoreRefusedError(f"blobs/{alg}/{encoded} exists with other content")
            changes = [(int(p), str(d), str(a)) for p, d, a in q.journal.get("changes") or []]
            now = og.digest_bytes(current)
            try:
                data = (before if now == q.journal.get("indexAfter") else current
                        if now == q.journal.get("indexBefore")
                        else og.restore_index_entries(current, before, changes))
            except ValueError as exc:
                raise RestoreRefusedError(str(exc)) from None
            graph = _graph(layout_dir, q, held, og.parse_index(data))
            needed = og.live_set(graph, root_set=[c[1] for c in changes if c[1] in graph])
            if lost := sorted(n for n in needed if not graph.nodes[n]["present"] and og.is_sweepable(n)):
                raise RestoreRefusedError(f"{lost[0]}, which a restored entry needs, is gone")
            moved = q.take_back(sorted(held))
            if data != current:
                layout_dir.replace_index(data)
            q.purge()  # what is left: copies of blobs that were back already
            return Restored(q.name, moved, len(changes))
        finally:
            for q in qs:
                q.close()
