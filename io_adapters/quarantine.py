"""The quarantine: where apply moves the blobs it deletes until nothing can need them, and
what finishes (:func:`recover`) or undoes (:func:`restore`) an apply from it.  How and why:
docs/guarantees.md §5; the pure half: :mod:`ocigraph.applying`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

import ocigraph as og
from ocigraph import RestoreRefusedError
from ocigraph import applying as A

from .layout import (
    BlobListing,
    DiskManifestSource,
    LayoutDir,
    LayoutLock,
    locked,
    open_layout,
    read_at,
    scan_blobs,
    write_at,
)

__all__ = ["Quarantine", "live_now", "recover", "purge_expired", "quarantined", "restore",
           "RestoreRefusedError"]

JOURNAL, BEFORE = "journal.json", "index.json.before"
#: a purge of this many blobs or more unlinks them in ``PURGE_THREADS`` threads (measured at
#: 100k on ext4 with 2 CPUs: 2 threads unlink 50,000 quarantined blobs in a fraction of the
#: wall time one takes; fewer blobs are not worth the threads)
PURGE_PARALLEL_FROM, PURGE_THREADS = 2048, 2


class Quarantine:
    """One apply's folder ``.ocigraph/quarantine/<id>``, opened relative to the layout's handle."""

    def __init__(self, layout_dir: LayoutDir, name: str, fd: int, journal: dict[str, Any]) -> None:
        self.dir, self.name, self.fd, self.journal = layout_dir, name, fd, journal
        self._algs: dict[str, int] = {}

    @property
    def keep_until(self) -> float | None:
        return self.journal.get("keepUntil")

    @classmethod
    def create(cls, layout_dir: LayoutDir, plan: og.Plan, index: og.Index, index_after: str,
               keep: float | None) -> Quarantine:
        """A new quarantine for an apply of ``plan`` to ``index``, its journal
        (:func:`ocigraph.applying.new_journal`) and index.json's bytes fsynced; on failure
        nothing is left."""
        t = time.time()
        name = A.quarantine_id(t, os.getpid())
        q = None
        try:
            fd = layout_dir.open_folder(f"{A.QUARANTINE}/{name}", create=True)
            journal = A.new_journal(name, t, plan, index.fingerprint, index_after, keep)
            q = cls(layout_dir, name, fd, journal)  # type: ignore[arg-type]
            q._write(BEFORE, index.raw)
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
            top = layout_dir.open_folder(A.QUARANTINE)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                return []  # a file or a symlink on the way: not ours, never followed
            raise
        if top is None:
            return []
        found = []
        try:
            with os.scandir(top) as it:
                names = [e.name for e in it
                         if A.is_quarantine_id(e.name) and e.is_dir(follow_symlinks=False)]
            for name in names:
                if (fd := layout_dir.open_folder(name, at=top)) is not None:  # (else purged since)
                    found.append(cls(layout_dir, name, fd, A.read_journal(_read(fd, JOURNAL))))
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
                src = self.folder(digest.partition(":")[0])
                os.rename(name, name, src_dir_fd=src, dst_dir_fd=to)
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
        live = live_now(self, held) if held else frozenset()
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
            done = [_unlink_all(todo, None)]
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
        self._remove()
        return sum(c for c, _ in done), sum(b for _, b in done)

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
    folders = [(A.QUARANTINE, name)] if name is not None else []
    for parent, leaf in [*folders, (".ocigraph", "quarantine"), ("", ".ocigraph")]:
        with contextlib.suppress(OSError):
            fd = layout_dir.open_folder(parent) if parent else os.dup(layout_dir.fd)
            if fd is not None:
                try:
                    os.rmdir(leaf, dir_fd=fd)
                finally:
                    os.close(fd)


def _unlink_all(todo: Sequence[tuple[str, int, int]],
                stop: threading.Event | None) -> tuple[int, int]:
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
    """Manifests read from blobs/, or from the quarantine ``q`` for the ``held`` blobs."""

    def __init__(self, q: Quarantine, held: dict[str, int]) -> None:
        listing = scan_blobs(q.dir)[0]
        super().__init__(q.dir, BlobListing(q.dir, [*listing, *held.keys() - listing.keys()]), 1)
        self.q, self.held = q, held

    def read_bytes(self, digest: str) -> bytes | og.Manifest:
        got = super().read_bytes(digest)
        if isinstance(got, og.Manifest) and got.missing and digest in self.held:
            return self.q.read(digest) or og.parse_manifest(digest, None)
        return got

    def graph(self, index: og.Index) -> og.LayoutGraph:
        return og.build_graph(og.Layout(index, self.present, self))


def live_now(q: Quarantine, held: dict[str, int]) -> frozenset[str] | None:
    """What the index.json on disk makes live, every entry a root, reading manifests from
    blobs/ or from ``q`` (which holds ``held``); ``None`` in doubt: index.json unreadable (a
    writer rewriting it in place: read 5 times, 20 ms apart) or a live manifest broken."""
    for _ in range(5):
        try:
            index = q.dir.read_index()
            break
        except og.OcigraphError:
            time.sleep(0.02)
    else:
        return None
    graph = _Source(q, held).graph(index)
    live = og.live_set(graph, og.Policy(keep_untagged=True))
    return None if any(graph.nodes[n]["status"] == "broken" for n in live) else live


def recover(root: Path | str | LayoutDir, *, lock: LayoutLock | None = None,
            lock_timeout: float = 10.0) -> A.Recovery:
    """Finish what a killed apply left: each quarantine is re-checked (blobs live again go
    back) and purged unless kept.  Call it under the lock before reading the layout to plan (a
    live blob may be held).  Without a ``.ocigraph`` folder: nothing, and no lock taken."""
    return purge_expired(root, float("-inf"), lock=lock, lock_timeout=lock_timeout)


def purge_expired(root: Path | str | LayoutDir, now: float | None = None, *,
                  lock: LayoutLock | None = None, lock_timeout: float = 10.0) -> A.Recovery:
    """:func:`recover`, and purge the kept quarantines whose time is up at ``now``."""
    at = time.time() if now is None else now
    layout_dir = open_layout(root)
    try:
        top = layout_dir.open_folder(".ocigraph")
    except OSError:  # not a folder, or a symlink: not ours, never followed
        return A.Recovery()
    if top is None:
        return A.Recovery()
    os.close(top)
    restored: list[str] = []
    finished, kept, count, size, name = [], [], 0, 0, A.QUARANTINE
    with locked(layout_dir, lock, lock_timeout):
        try:
            for q in Quarantine.open_all(layout_dir):
                name = f"{A.QUARANTINE}/{q.name}"
                with contextlib.closing(q):
                    q.drop_temps()
                    restored += q.recheck()
                    if A.purge_due(q.keep_until, at):
                        n, b = q.purge()
                        finished.append(q.name)
                        count, size = count + n, size + b
                    else:
                        kept.append(q.name)
        except OSError as exc:
            raise A.unfinished(name, exc.strerror) from None
        _prune(layout_dir)  # folders a killed purge left empty
    return A.Recovery(tuple(restored), count, size, tuple(finished), tuple(kept))


def quarantined(root: Path | str | LayoutDir) -> tuple[A.QuarantineInfo, ...]:
    """The layout's quarantines, oldest first, with what each holds (reads only)."""
    out = []
    for q in Quarantine.open_all(open_layout(root)):
        with contextlib.closing(q):
            out.append(A.QuarantineInfo.of(q.name, q.journal, q.listing()))
    return tuple(out)


def restore(root: Path | str | LayoutDir, apply_id: str | None = None, *,
            lock: LayoutLock | None = None, lock_timeout: float = 10.0) -> A.Restored:
    """Undo the last apply that kept its blobs (or the one named ``apply_id``): the blobs go
    back, then index.json (:func:`ocigraph.applying.restored_index`).  Refused, changing
    nothing, when a tag now names another digest, a blob of that name holds other bytes, or one
    a restored entry needs is gone."""
    from .fsck import hash_file

    layout_dir = open_layout(root)
    with locked(layout_dir, lock, lock_timeout), contextlib.ExitStack() as opened:
        qs = [opened.enter_context(contextlib.closing(q)) for q in Quarantine.open_all(layout_dir)]
        q = qs[A.restorable([(k.name, k.keep_until) for k in qs], apply_id)]
        before, current = _read(q.fd, BEFORE), layout_dir.read_file("index.json")
        held = q.listing()
        if before is None:
            raise RestoreRefusedError(f"quarantine {q.name} has no copy of index.json")
        for digest in sorted(held):
            fd = layout_dir.open_blob(digest)
            alg, encoded = og.blob_parts(digest)
            if fd is not None and hash_file(fd, alg)[0] != encoded:
                raise RestoreRefusedError(f"blobs/{alg}/{encoded} exists with other content")
        data = A.restored_index(q.journal, before, current)
        changes = A.journal_changes(q.journal)
        A.refuse_lost(_Source(q, held).graph(og.parse_index(data)), changes)
        moved = q.take_back(sorted(held))
        if data != current:
            layout_dir.replace_index(data)
        q.purge()  # what is left: copies of blobs that were back already
        return A.Restored(q.name, moved, len(changes))
