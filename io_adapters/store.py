"""The one store: what ocigraph keeps about a layout between runs, in one SQLite file.

A command that built a layout's whole graph leaves here -- in a detached child, after its
answer -- every node (:mod:`ocigraph.rows`), the index.json entries, the liveness facts and its
plans; the next command on the unchanged layout answers from them (a delete from its targets'
neighbourhood, :mod:`ocigraph._view`; anything else, the plan made before) without listing a
million blobs.

**The rule.** Every fact in the store was derived from one *snapshot* of the layout: the
layout directory's device and inode, index.json's digest, and the inode, mtime and ctime of
``blobs/`` and each ``blobs/<alg>/``, all read through the one directory handle of
:class:`io_adapters.layout.LayoutDir` just before the listing the graph was built from.  A
snapshot is recorded only when those folders last changed (mtime or ctime -- a tool can set an
mtime back, never a ctime) at least ``SETTLE_NS`` before the listing began, as git's index
treats "racily clean" entries, so a change in the same clock tick cannot hide; and the store is
trusted only while the same handle reads the same snapshot again.  The rule and the ``meta``
row that records a snapshot are pure (:mod:`ocigraph.snapshot`); here are SQLite, the
writers' lock and the clock.  Anything else -- another
directory at the path, a blob created, removed or renamed, an index.json edited, other code --
and the layout is read instead.

Facts about a digest (edges, from manifests verified against their digests) cannot go stale; a
graph built from reads that said something about the disk rather than a digest is never
stored.  A blob rewritten *in place* (no tool does that; ``fsck`` finds it) goes unseen.  The
file system's clock is assumed to be the machine's within well under ``SETTLE_NS``; set
``OCIGRAPH_NO_CACHE=1`` where folder times never move.  Every row carries a CRC-32: a
mismatch, a missing row or any SQLite error and the store is ignored (and discarded), never
trusted -- a guard against damage, not against someone who can write your cache folder.

Where: ``$OCIGRAPH_CACHE_DIR``, else ``$XDG_CACHE_HOME/ocigraph``, else ``~/.cache/ocigraph``;
one file per layout path, ``<hash of the real path>.store``, written whole to a temporary file
and renamed into place, and its own writers' lock (:func:`claim`; an empty file is a writer's
placeholder, no store).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import sys
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import orjson

import ocigraph as og
from ocigraph import rows as R
from ocigraph import snapshot as S
from ocigraph.snapshot import Snapshot

from .collector import pauses_collector
from .layout import DiskLayout, Junk, LayoutDir

__all__ = ["GraphStore", "StoreDamaged", "store_file_for", "cache_enabled", "default_cache_dir",
           "code_fingerprint", "claim", "reclaim", "release", "save_store", "open_store",
           "wait_for_writer", "snapshot_of", "follow_apply"]

#: ``IN (...)`` batches (SQLite allows 32766 variables; smaller batches keep statements cheap)
_BATCH = 500


#: the store does not hold what it says it holds: a checksum, a row or SQLite failed
StoreDamaged = R.RowsDamaged


def cache_enabled(explicit: bool | None = None) -> bool:
    """``explicit`` if given, else on unless ``OCIGRAPH_NO_CACHE`` is set (and not ``0``)."""
    if explicit is not None:
        return explicit
    return os.environ.get("OCIGRAPH_NO_CACHE", "") in ("", "0")


def default_cache_dir() -> Path | None:
    """``$OCIGRAPH_CACHE_DIR``, ``$XDG_CACHE_HOME/ocigraph`` or ``~/.cache/ocigraph``."""
    explicit = os.environ.get("OCIGRAPH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ocigraph"
    home = os.environ.get("HOME")
    return Path(home) / ".cache" / "ocigraph" if home else None


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


def store_file_for(root: Path | str, cache_dir: Path | str | None = None) -> Path | None:
    """Where the store of the layout at ``root`` lives (``None``: nowhere to put one)."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if base is None:
        return None
    real = os.path.realpath(root)
    return Path(os.path.abspath(base)) / f"{hashlib.sha256(os.fsencode(real)).hexdigest()[:32]}.store"


# -- the writers' lock: a flock on the store file itself --------------------------------------

def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _lock(path: Path, create: bool, wait: bool) -> int | None:
    """A descriptor of the file at ``path`` holding its ``flock``.  A writer replaces the file
    by rename (holding the new one's lock first), so a lock won on a file no longer at
    ``path`` guards nothing: then again, on the file there now."""
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


def claim(path: Path) -> int | None:
    """Become the writer of the store at ``path``: an open descriptor of it (an empty
    placeholder if there is none) holding its ``flock``, or ``None`` when another process
    is writing it.  A forked child inherits the claim; it ends when every copy is closed."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _lock(path, create=True, wait=False)


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


def wait_for_writer(root: Path | str, cache_dir: Path | str | None = None) -> None:
    """Return once no process is writing the store of the layout at ``root`` (a detached
    writer, say) -- for benchmarks that must not overlap it."""
    path = store_file_for(root, cache_dir)
    fd = None if path is None else _lock(path, create=False, wait=True)
    if fd is not None:
        os.close(fd)


# -- writing ----------------------------------------------------------------------------------

def _meta(con: sqlite3.Connection) -> dict[str, Any]:
    row = con.execute("SELECT body, crc FROM meta WHERE id = 1").fetchone()
    if row is None:
        raise StoreDamaged("meta")
    return R.meta_from_row(*row)


def _put_meta(con: sqlite3.Connection, meta: Mapping[str, Any]) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES (1, ?, ?)", R.meta_row(meta))


def _put_rows(con: sqlite3.Connection, index: og.Index, plans: Mapping[str, og.Plan]) -> None:
    """The ``entries`` and ``plans`` tables anew."""
    con.execute("DELETE FROM entries")
    con.execute("DELETE FROM plans")
    con.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", map(R.entry_row, index.entries))
    con.executemany("INSERT INTO plans VALUES (?, ?, ?)", [R.plan_row(k, p) for k, p in plans.items()])


@pauses_collector
def save_store(path: Path, disk: DiskLayout, graph: nx.DiGraph, facts: Mapping[bool, og.Liveness],
               plans: Mapping[str, og.Plan], claimed: int | None = None) -> None:
    """Store ``graph`` (built from ``disk``, whole) with its ``facts`` under both root rules
    (``{False: ..., True: ...}``, grace 0) and the ``plans`` made on it (by
    :func:`ocigraph.plan_key`)
    at ``path``.  ``claimed``: the caller's :func:`claim`, which then moves to the new file
    before it takes the name (so the lock never leaves the file at ``path``).  Failing to
    write only costs the next run its shortcut."""
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
    index: og.Index = graph.graph["index"]
    con = sqlite3.connect(tmp, isolation_level=None)
    try:
        for pragma in ("page_size=65536", "journal_mode=OFF", "synchronous=OFF"):
            con.execute(f"PRAGMA {pragma}")
        con.execute("BEGIN")
        for table, columns in (("meta", "id INTEGER PRIMARY KEY"), ("plans", "key TEXT PRIMARY KEY"),
                               ("nodes", "id INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE"),
                               ("entries", "pos INTEGER PRIMARY KEY, tag TEXT")):
            con.execute(f"CREATE TABLE {table}({columns}, body BLOB NOT NULL, crc INTEGER NOT NULL)")
        snapshot = (disk.dir.origin, graph.graph["fingerprint"], disk.folders)
        _put_meta(con, S.store_meta(graph, facts, snapshot, code=code_fingerprint(),
                                    path=os.path.realpath(disk.dir.path),
                                    blobs=disk.layout.blobs, junk=disk.junk))
        con.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?)",
                        R.node_rows(graph, facts, orjson.dumps))
        _put_rows(con, index, plans)
        con.execute("CREATE INDEX entries_tag ON entries(tag)")
        con.execute("COMMIT")
    finally:
        con.close()


# -- reading ----------------------------------------------------------------------------------

class GraphStore(R.NodeRows):
    """A stored graph, as an :class:`ocigraph.GraphSource`.  Every row is checked against its
    checksum and what it is filed under; anything amiss raises :class:`StoreDamaged`."""

    def __init__(self, path: Path, con: sqlite3.Connection, meta: dict[str, Any]) -> None:
        super().__init__(self._fetch)
        self.path, self._con, self.meta = path, con, meta
        self.fingerprint: str = meta["fingerprint"]
        self.entry_count: int = meta["entry_count"]
        self.junk = tuple(Junk(p, why) for p, why in meta["junk"])
        self._counted = False

    def close(self) -> None:
        self._con.close()

    def _query(self, sql: str, args: Sequence[Any]) -> list[Any]:
        try:
            return self._con.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreDamaged(str(exc)) from None

    def _batches(self, sql: str, keys: Sequence[Any]) -> Iterator[Any]:
        """``sql`` with ``IN ({})`` filled a batch of ``keys`` at a time."""
        for at in range(0, len(keys), _BATCH):
            part = keys[at:at + _BATCH]
            yield from self._query(sql.format(",".join("?" * len(part))), part)

    def _fetch(self, column: str, keys: Sequence[Any]) -> Iterator[tuple[int, str, bytes, int]]:
        return self._batches(f"SELECT id, digest, body, crc FROM nodes WHERE {column} IN ({{}})", keys)

    def plan(self, key: str) -> og.Plan | None:
        """The plan kept under ``key`` (:func:`ocigraph.plan_key`), if any."""
        found = self._query("SELECT key, body, crc FROM plans WHERE key = ?", (key,))
        return R.plan_from_row(*found[0]) if found else None

    def unusable(self, keep_untagged: bool) -> tuple[tuple[str, str, str | None], ...]:
        return tuple((n, e, h) for n, e, h in self.meta["unusable"][int(keep_untagged)])

    def entries(self, positions: Collection[int]) -> dict[int, og.IndexEntry]:
        want = sorted(set(positions))
        out = {row[0]: R.entry_from_row(*row) for row in self._batches(
            "SELECT pos, tag, body, crc FROM entries WHERE pos IN ({})", want)}
        if len(out) != len(want):
            raise StoreDamaged("an index.json entry is missing")
        return out

    def tagged(self, tag: str) -> list[str]:
        found = [R.entry_from_row(pos, tag, body, crc).digest for pos, body, crc in self._query(
            "SELECT pos, body, crc FROM entries WHERE tag = ? ORDER BY pos", (tag,))]
        found = list(dict.fromkeys(found))
        if len(self.bodies(found)) != len(found):
            raise StoreDamaged(f"a digest tagged {tag!r} has no node")
        return found

    def with_prefix(self, prefix: str) -> list[str]:
        # a short digest names one node only if no other starts the same: a node lost from the
        # store would make it look unique, so count them first (once; a scan of the index)
        if not self._counted:
            if self._query("SELECT count(*) FROM nodes", ())[0][0] != self.meta["nodes"]:
                raise StoreDamaged("nodes")
            self._counted = True
        # digests are ASCII: every digest starting with the prefix sorts in [prefix, prefix+"\x7f")
        found = self._query("SELECT id, digest, body, crc FROM nodes WHERE digest >= ? AND "
                            "digest < ? ORDER BY digest", (prefix, prefix + "\x7f"))
        self.take(found)
        return [d for _, d, _, _ in found]


def snapshot_of(layout_dir: LayoutDir) -> Snapshot:
    """The layout's snapshot as its handle reads it now (see the module's docstring)."""
    fingerprint = og.digest_bytes(layout_dir.read_file("index.json"))
    return layout_dir.origin, fingerprint, layout_dir.folder_stamps()


def open_store(layout_dir: LayoutDir, cache_dir: Path | str | None = None,
               cache: bool | None = None, snapshot: Snapshot | None = None) -> GraphStore | None:
    """The store of the layout if it was made from the snapshot its handle reads now (or
    ``snapshot``) by this code; ``None`` otherwise (a placeholder too), or if it is damaged."""
    path = store_file_for(layout_dir.path, cache_dir) if cache_enabled(cache) else None
    con = None
    try:
        if path is None or not path.is_file() or path.stat().st_size == 0:
            return None
        now = snapshot or snapshot_of(layout_dir)
        con = sqlite3.connect(Path(os.path.abspath(path)).as_uri() + "?mode=ro", uri=True,
                              isolation_level=None)
        meta = _meta(con)
        if not S.made_from(meta, code_fingerprint(), now):
            con.close()
            return None
        # a row lost would go unseen by the checksums of the others: count the small table
        # here; a node lost shows as a name not found, which sends planning to the layout
        if con.execute("SELECT count(*) FROM entries").fetchone()[0] != meta["entry_count"]:
            raise StoreDamaged("entries")
        with contextlib.suppress(OSError):
            os.utime(path)  # in use: the last to be cleaned up
        return GraphStore(path, con, meta)
    except og.OcigraphError:
        if con is not None:
            con.close()
        raise  # index.json unreadable: the layout's problem, said by the layout
    except Exception:  # a cache: anything amiss and it is not believed
        if con is not None:
            con.close()
        return None


# -- following an apply ------------------------------------------------------------------------

def follow_apply(path: Path, before: Snapshot, plan: og.Plan, after: Snapshot, index: og.Index,
                 names: list[int], junk: Sequence[Junk], manifests: R.ReadManifests | None = None) -> bool:
    """Bring the store at ``path``, made from snapshot ``before``, to ``after``: the layout once
    ``plan`` was applied in full, ``index`` its index.json, ``names`` the
    :func:`ocigraph.names_checksum` and ``junk`` of a listing made after ``after`` was taken;
    ``manifests`` reads the layout's manifests, to recompute a kept node some of whose
    descriptors went.  Returns False, changing nothing, when the store is not the one made
    from ``before``, the listing is not what the plan leaves, or the result could differ
    from a rebuild's (:func:`ocigraph.rows.refreshed_attrs`).  The caller holds the claim."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        meta = _meta(con)
        if not (S.made_from(meta, code_fingerprint(), before)
                and S.lists_as_planned(meta, plan, names, junk)):
            return False  # another store, or another writer came or went meanwhile
        s = GraphStore(path, con, meta)
        indexed = [R.entry_from_row(*row).digest
                   for row in s._query("SELECT * FROM entries ORDER BY pos", ())]
        followed = R.follow_plan(s, plan, index, indexed, meta["unusable"], meta["ordered"],
                                 manifests)
        if followed is None:
            return False
        gone_ids, dirty = followed
        ids = sorted(gone_ids)
        for at in range(0, len(ids), _BATCH):
            part = ids[at:at + _BATCH]
            con.execute(f"DELETE FROM nodes WHERE id IN ({','.join('?' * len(part))})", part)
        bodies = [(orjson.dumps(s.rows[d]), s.id_of[d]) for d in dirty]
        con.executemany("UPDATE nodes SET body = ?, crc = ? WHERE id = ?",
                        [(b, R.node_crc(b, i), i) for b, i in bodies])
        _put_rows(con, index, S.plans_after(plan, after[1]))
        _put_meta(con, S.followed_meta(meta, after, names, len(index.entries), len(gone_ids)))
        con.execute("COMMIT")
        return True
    except (sqlite3.Error, StoreDamaged, KeyError, TypeError, ValueError, OSError,
            og.OcigraphError):
        return False
    finally:
        if con.in_transaction:
            con.execute("ROLLBACK")
        con.close()
