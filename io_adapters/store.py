"""The one store: one SQLite file per layout in the cache folder, also its writers' lock.  What
it holds and why it cannot be stale: docs/design.md, "What the store trusts"; the rule and the
rows are pure (:mod:`ocigraph.snapshot`, :mod:`ocigraph.rows`); here are the file and SQLite."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import orjson

import ocigraph as og
from ocigraph import rows as R
from ocigraph import snapshot as S

from .background import collector_paused
from .layout import DiskLayout, LayoutDir

__all__ = ["GraphStore", "StoreDamaged", "store_file_for", "default_cache_dir",
           "code_fingerprint", "claim", "reclaim", "release", "save_store", "open_store",
           "snapshot_of", "follow_apply", "lock_file"]


#: the store does not hold what it says it holds: a checksum, a row or SQLite failed
StoreDamaged = R.RowsDamaged


def default_cache_dir() -> Path | None:
    """:func:`ocigraph.snapshot.cache_folder` in this process's environment."""
    parts = S.cache_folder(os.environ)
    return None if parts is None else Path(*parts)


_CODE: list[str] = []


def code_fingerprint() -> str:
    """A digest of ocigraph's own source: a store written by other code is somebody else's."""
    if not _CODE:
        h = hashlib.sha256()
        for package in (og, sys.modules[__package__ or "io_adapters"]):
            for path in sorted(Path(package.__file__ or "").parent.glob("*.py")):
                h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        _CODE.append(h.hexdigest())
    return _CODE[0]


def store_file_for(root: Path | str, cache_dir: os.PathLike[str] | str | None = None) -> Path | None:
    """Where the store of the layout at ``root`` lives (``None``: nowhere to put one)."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if base is None:
        return None
    return Path(os.path.abspath(base)) / S.store_name(os.fsencode(os.path.realpath(root)))


# -- the writers' lock: a flock on the store file itself --------------------------------------

def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def lock_file(path: Path, create: bool, wait: bool, again: bool = True) -> int | None:
    """A descriptor of the file at ``path`` holding its ``flock``, else ``None``.  A lock won on
    a file renamed over meanwhile guards nothing (docs/design.md): ``again`` locks the new one."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            os.close(fd)
            return None
        if _same_file(fd, path):
            return fd
        os.close(fd)
        if not again:
            return None


def claim(path: Path) -> int | None:
    """Become the writer of the store at ``path``: an open descriptor of it (an empty
    placeholder if there is none) holding its ``flock``, or ``None`` when another process
    is writing it.  A forked child inherits the claim; it ends when every copy is closed."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return lock_file(path, create=True, wait=False)


def reclaim(path: Path, fd: int) -> bool:
    """Claim the store at ``path`` again into the descriptor number ``fd`` (whose lock was let
    go meanwhile); False when another writer has it now."""
    again = claim(path)
    if again is None:
        return False
    os.dup2(again, fd, inheritable=False)
    os.close(again)
    return True


def release(path: Path, fd: int) -> None:
    """End the claim ``fd`` on the store at ``path``: a placeholder still empty goes first (no
    leftover for a writer that wrote nothing), while the lock still keeps others off it."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours (or free): never another's
        if os.fstat(fd).st_size == 0 and _same_file(fd, path):
            path.unlink()
    os.close(fd)


# -- writing ----------------------------------------------------------------------------------

def _put_rows(con: sqlite3.Connection, meta: Mapping[str, Any], index: og.Index,
              plans: Mapping[str, og.Plan]) -> None:
    """The ``meta`` row, and the ``entries`` and ``plans`` tables anew."""
    con.execute("INSERT OR REPLACE INTO meta VALUES (1, ?, ?)", R.meta_row(meta))
    con.execute("DELETE FROM entries")
    con.execute("DELETE FROM plans")
    con.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", map(R.entry_row, index.entries))
    con.executemany("INSERT INTO plans VALUES (?, ?, ?)",
                    [R.plan_row(k, p) for k, p in plans.items()])


@collector_paused()
def save_store(path: Path, disk: DiskLayout, graph: nx.DiGraph,
               facts: Mapping[bool, og.Liveness], plans: Mapping[str, og.Plan],
               claimed: int | None = None) -> None:
    """Store ``graph`` (built from ``disk``, whole) with its ``facts`` under both root rules
    (``{False: ..., True: ...}``, grace 0) and the ``plans`` made on it (by
    :func:`ocigraph.plan_key`) at ``path``, written whole to a temporary file and renamed into
    place.  ``claimed``: the caller's :func:`claim`, which then moves to the new file before it
    takes the name (so the lock never leaves the file at ``path``).  Failing to write only
    costs the next run its shortcut."""
    with contextlib.suppress(OSError, sqlite3.Error):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".graph")
        try:
            _write(tmp, disk, graph, facts, plans)
            os.fsync(fd)  # whole on disk before it has the name readers open
            if claimed is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # private until renamed
            os.replace(tmp, path)
            if claimed is not None:
                os.dup2(fd, claimed, inheritable=False)  # (the old file's lock goes)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)


def _write(tmp: str, disk: DiskLayout, graph: nx.DiGraph, facts: Mapping[bool, og.Liveness],
           plans: Mapping[str, og.Plan]) -> None:
    with contextlib.closing(sqlite3.connect(tmp, isolation_level=None)) as con:
        for pragma in ("page_size=65536", "journal_mode=OFF", "synchronous=OFF"):
            con.execute(f"PRAGMA {pragma}")
        con.execute("BEGIN")
        for table in R.TABLES:
            con.execute(table)
        snapshot = (disk.dir.origin, graph.graph["fingerprint"], disk.folders)
        meta = S.store_meta(graph, facts, snapshot, code=code_fingerprint(),
                            path=os.path.realpath(disk.dir.path), blobs=disk.layout.blobs,
                            junk=disk.junk)
        con.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?)",
                        R.node_rows(graph, facts, orjson.dumps))
        _put_rows(con, meta, graph.graph["index"], plans)
        con.execute("CREATE INDEX entries_tag ON entries(tag)")
        con.execute("COMMIT")


# -- reading ----------------------------------------------------------------------------------

class GraphStore(R.StoreRows):
    """A stored graph, as an :class:`ocigraph.GraphSource` (:class:`ocigraph.rows.StoreRows`),
    read from the SQLite connection ``con`` to the store at ``path``."""

    def __init__(self, path: Path, con: sqlite3.Connection) -> None:
        self.path, self._con = path, con
        super().__init__(self._query)

    def close(self) -> None:
        self._con.close()

    def _query(self, sql: str, args: Sequence[Any]) -> list[Any]:
        try:
            return self._con.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreDamaged(str(exc)) from None


def snapshot_of(layout_dir: LayoutDir) -> S.Snapshot:
    """The layout's snapshot (:data:`ocigraph.snapshot.Snapshot`) as its handle reads it now."""
    fingerprint = og.digest_bytes(layout_dir.read_file("index.json"))
    return layout_dir.origin, fingerprint, layout_dir.folder_stamps()


def open_store(layout_dir: LayoutDir, cache_dir: Path | str | None = None,
               cache: bool | None = None, snapshot: S.Snapshot | None = None) -> GraphStore | None:
    """The store of the layout if it was made from the snapshot its handle reads now (or
    ``snapshot``) by this code; ``None`` otherwise (a placeholder too), or if it is damaged."""
    path = store_file_for(layout_dir.path, cache_dir) if S.caching(cache, os.environ) else None
    con = None
    try:
        if path is None or not path.is_file() or path.stat().st_size == 0:
            return None
        now = snapshot or snapshot_of(layout_dir)
        con = sqlite3.connect(Path(os.path.abspath(path)).as_uri() + "?mode=ro", uri=True,
                              isolation_level=None)
        held = GraphStore(path, con)
        if S.made_from(held.meta, code_fingerprint(), now):
            held.check_entries()
            with contextlib.suppress(OSError):
                os.utime(path)  # in use: the last to be cleaned up
            return held
    except og.OcigraphError:
        raise  # index.json unreadable (nothing opened yet): the layout's problem, said by it
    except Exception:  # a cache: anything amiss and it is not believed
        pass
    if con is not None:
        con.close()
    return None


# -- following an apply ------------------------------------------------------------------------

def follow_apply(path: Path, before: S.Snapshot, plan: og.Plan, after: S.Snapshot, index: og.Index,
                 names: list[int], junk: Sequence[og.Junk],
                 manifests: R.ReadManifests | None = None) -> bool:
    """Bring the store at ``path``, made from snapshot ``before``, to ``after``, in one
    transaction, as :func:`ocigraph.rows.follow_store` says (``manifests`` reads the layout's
    manifests).  Returns False, changing nothing, when that declines or anything fails.  The
    caller holds the claim."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as con:
        try:
            con.execute("BEGIN IMMEDIATE")
            s = GraphStore(path, con)
            followed = R.follow_store(s, code_fingerprint(), before, plan, after, index, names,
                                      junk, manifests)
            if followed is None:
                return False
            gone, bodies, plans, meta = followed
            list(s.batches("DELETE FROM nodes WHERE id IN ({})", gone))
            con.executemany("UPDATE nodes SET body = ?, crc = ? WHERE id = ?", bodies)
            _put_rows(con, meta, index, plans)
            con.execute("COMMIT")
            return True
        except (sqlite3.Error, StoreDamaged, KeyError, TypeError, ValueError, OSError,
                og.OcigraphError):
            return False
        finally:
            if con.in_transaction:
                con.execute("ROLLBACK")
