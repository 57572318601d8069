"""The graph of a layout kept on disk, so that a delete reads a few hundred rows, not a layout.

Planning a delete needs the neighbourhood of its targets and two facts about the whole graph
(see :mod:`ocigraph._view`).  A full plan builds the whole graph anyway; when it has, it leaves
it here -- every node with its attributes, edges and liveness under both root rules, the
index.json entries, the facts -- and the next ``plan delete`` / ``delete`` on the unchanged
layout answers from it: a million-blob layout then costs a few hundred rows, not a listing of
a million names and the building of a million nodes.

The store answers only for the layout it was made from, unchanged.  That is checked without
listing a blob:

* **which blobs exist**: the inode, mtime and ctime of ``blobs/`` and of each
  ``blobs/<alg>/`` (:func:`io_adapters.layout.folder_stamps`) must be those taken just before
  the listing the graph was built from.  Creating, removing or renaming a file in a folder
  changes its mtime and ctime -- but only to the file system's clock, which may tick coarsely
  (a few milliseconds), so a change in the same tick as the stamp could keep it.  As git does
  with its index ("racily clean" entries), stamps are kept only when every folder was last
  changed (mtime or ctime: a tool can set an mtime back, not a ctime) at least ``SETTLE_NS``
  before the listing began; a layout changed just before it is simply not stored, and the next
  full plan stores it.  This assumes the file system's clock is the machine's, give or take
  well under ``SETTLE_NS`` (a network file system whose server's clock is off by more, or a
  FUSE mount whose folder times never move, defeats it: set ``OCIGRAPH_NO_CACHE=1`` there).
* **index.json**: its bytes are read and hashed, and must be those the graph was built from.
* **what manifests say**: nothing to check -- a manifest is its digest's content, verified
  when it was read.  A graph built from reads that said something about the disk rather than
  the digest (a blob missing, unreadable or not matching its digest) is never stored, so no
  repaired file can come back to a stale answer.
* **the code**: the store names the code that built it (:func:`~io_adapters.cache.code_fingerprint`).

Every row carries a CRC-32 of its content, and a row that does not match it, a missing row or
any SQLite error makes the store ignored, never trusted: planning falls back to reading the
layout.  A store is written whole to a temporary file and renamed into place, so a reader sees
the old one or the new one; the checksums guard against damage, not against someone who can
write your cache folder.  ``OCIGRAPH_NO_CACHE=1`` turns it off with the cache.

Rows: ``meta`` (one: format, code, index.json fingerprint, folder stamps, entry count, the
unusable live manifests per root rule, the junk under ``blobs/``); ``nodes`` (id = rank in
digest order, digest, and a JSON body: the digest again, the attributes, ``[id, roles]`` per
successor and per predecessor, live without and with ``keep_untagged``); ``entries``
(index.json position, tag, and a JSON body: position, digest, tag, descriptor).  Because ids
rank digests, the smallest predecessor outside a view's core -- the one a plan names as
sharing a layer -- is found without reading the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import orjson

import ocigraph as og
from .collector import pauses_collector as pauses_gc

from .cache import cache_enabled, cache_file_for, code_fingerprint
from .layout import DiskLayout, FolderStamp, Junk

__all__ = ["STORE_FORMAT", "SETTLE_NS", "GraphStore", "StoreDamaged", "store_file_for", "last_change", "settles_in",
           "claim", "save_store", "open_store", "is_settled", "wait_for_writer"]

STORE_FORMAT = 1
#: how long before a listing its folders must have last changed for their stamps to be kept
SETTLE_NS = 2_000_000_000
#: ``IN (...)`` batches (SQLite allows 32766 variables; smaller batches keep statements cheap)
_BATCH = 500

_ROLE_BITS = {"config": 1, "layer": 2, "manifest": 4, "blob": 8, "subject": 16}
_SUBJECT = _ROLE_BITS["subject"]


class StoreDamaged(Exception):
    """The store does not hold what it says it holds: a checksum, a row or SQLite failed."""


def store_file_for(root: Path | str, cache_dir: Path | str | None = None) -> Path | None:
    """Where the graph of the layout at ``root`` is stored (beside its manifest cache)."""
    path = cache_file_for(root, cache_dir)
    return None if path is None else path.with_suffix(".graph")


def last_change(folders: Sequence[FolderStamp]) -> int:
    """When the folders last changed, in nanoseconds: the latest mtime *or ctime* -- an mtime
    can be set back (``cp -a``, ``rsync -t``, ``tar x``), a ctime only moves forward."""
    return max(max(mtime, ctime) for _, _, mtime, ctime in folders)


def settles_in(folders: Sequence[FolderStamp]) -> float:
    """Seconds until ``folders``, as stamped, will have settled (0 if they have)."""
    return max(0.0, (last_change(folders) + SETTLE_NS - time.time_ns()) / 1e9)


def is_settled(disk: DiskLayout) -> bool:
    """Whether ``disk``'s folder stamps can later prove nothing changed (see the module)."""
    return bool(disk.folders) and disk.listed_at - last_change(disk.folders) >= SETTLE_NS


def _mask(roles: Iterable[str]) -> int:
    m = 0
    for r in roles:
        m |= _ROLE_BITS[r]
    return m


_ROLES_OF: dict[int, frozenset[str]] = {}


def _roles(mask: int) -> frozenset[str]:
    fs = _ROLES_OF.get(mask)
    if fs is None:
        fs = _ROLES_OF[mask] = frozenset(r for r, b in _ROLE_BITS.items() if mask & b)
    return fs


# -- writing ----------------------------------------------------------------------------------

def _open_lock(path: Path) -> int:
    """A descriptor of the store's writer lock file, ``<path>.lock``."""
    return os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def claim(path: Path) -> int | None:
    """Become the writer of the store at ``path``: an open descriptor of ``<path>.lock``
    holding its ``flock``, or ``None`` when another process is writing it (or no lock can be
    had).  A forked child inherits the claim; it ends when every copy of the descriptor is
    closed."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _open_lock(path)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@pauses_gc
def save_store(path: Path, disk: DiskLayout, graph: nx.DiGraph,
               facts: Mapping[bool, og.Liveness]) -> None:
    """Store ``graph`` (built from ``disk``, whole) with its ``facts`` under both root rules
    (``{False: ..., True: ...}``, with grace 0) at ``path``.  The caller holds the
    :func:`claim`.  Failing to write only costs the next run its shortcut."""
    with contextlib.suppress(OSError, sqlite3.Error):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".graph")
        os.close(fd)
        try:
            _write(tmp, disk, graph, facts)
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)  # whole on disk before it has the name readers open
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def wait_for_writer(root: Path | str, cache_dir: Path | str | None = None) -> None:
    """Return once no process is storing the graph of the layout at ``root`` (a background
    writer started by the last command, say) -- for benchmarks that must not overlap it."""
    path = store_file_for(root, cache_dir)
    if path is None or not path.parent.is_dir():
        return
    with contextlib.suppress(OSError):
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            os.close(fd)


#: nodes encoded at a time: the writer's memory is a chunk's, not a million nodes' (each body
#: orjson makes pins about 4 KiB until it is freed: its first buffer, shrunk in place)
_CHUNK = 4096


def _columns(graph: nx.DiGraph, digests: Sequence[str], ids: Mapping[str, int],
             facts: Mapping[bool, og.Liveness], masks: dict[frozenset[str], int],
             as_list: dict[frozenset[Any], list[Any]]) -> list[list[Any]]:
    """One column per field of a node's body, for ``digests``: a few comprehensions over a
    chunk rather than one Python-level row at a time."""
    nodes, succ, pred = graph._node, graph._succ, graph._pred
    attrs = [nodes[d] for d in digests]

    def listed(fs: frozenset[Any]) -> list[Any]:  # the few distinct sets, sorted once
        got = as_list.get(fs)
        if got is None:
            got = as_list[fs] = sorted(fs)
        return got

    def mask(roles: frozenset[str]) -> int:
        m = masks.get(roles)
        if m is None:
            m = masks[roles] = _mask(roles)
        return m

    live0, live1 = facts[False].live, facts[True].live
    return [
        list(digests),
        [listed(a["media_types"]) for a in attrs],
        [a["size"] for a in attrs],
        [listed(s) if len(s) > 1 else list(s) for s in (a["declared_sizes"] for a in attrs)],
        [a["present"] for a in attrs],
        [listed(t) if t else () for t in (a["tags"] for a in attrs)],
        [a["entries"] for a in attrs],
        [a["indexed"] for a in attrs],
        [a["artifact_type"] for a in attrs],
        [a["status"] for a in attrs],
        [a["error"] for a in attrs],
        [a["platform"] for a in attrs],
        [[(ids[s], mask(e["roles"])) for s, e in succ[d].items()] for d in digests],
        [[(ids[p], mask(e["roles"])) for p, e in pred[d].items()] for d in digests],
        [d in live0 for d in digests],
        [d in live1 for d in digests],
    ]


def _node_rows(graph: nx.DiGraph, facts: Mapping[bool, og.Liveness]) -> Iterator[tuple[int, str, bytes, int]]:
    """``(id, digest, body, crc)`` of every node, in digest order, a chunk at a time.  A body
    names its digest, so its checksum binds the row to the node it describes."""
    digests = sorted(graph._node)
    ids = {d: i for i, d in enumerate(digests)}
    masks: dict[frozenset[str], int] = {}
    as_list: dict[frozenset[Any], list[Any]] = {}
    for start in range(0, len(digests), _CHUNK):
        part = digests[start:start + _CHUNK]
        bodies = list(map(orjson.dumps, zip(*_columns(graph, part, ids, facts, masks, as_list),
                                            strict=True)))
        yield from zip(range(start, start + len(part)), part, bodies, map(zlib.crc32, bodies),
                       strict=True)


def _write(tmp: str, disk: DiskLayout, graph: nx.DiGraph, facts: Mapping[bool, og.Liveness]) -> None:
    def entry_rows() -> Iterator[tuple[int, str | None, bytes, int]]:
        for e in graph.graph["index"].entries:
            body = orjson.dumps([e.position, e.digest, e.tag, list(e.descriptor)])
            yield e.position, e.tag, body, zlib.crc32(body)

    meta = orjson.dumps({
        "format": STORE_FORMAT, "code": code_fingerprint(), "fingerprint": graph.graph["fingerprint"],
        "folders": disk.folders, "entry_count": len(graph.graph["index"].entries),
        "unusable": [facts[False].unusable, facts[True].unusable],
        "junk": [(j.path, j.why) for j in disk.junk], "nodes": graph.number_of_nodes(),
    })
    con = sqlite3.connect(tmp, isolation_level=None)
    try:
        con.execute("PRAGMA page_size=65536")
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("BEGIN")
        con.execute("CREATE TABLE meta(id INTEGER PRIMARY KEY, body BLOB NOT NULL, crc INTEGER NOT NULL)")
        con.execute("CREATE TABLE nodes(id INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE, "
                    "body BLOB NOT NULL, crc INTEGER NOT NULL)")
        con.execute("CREATE TABLE entries(pos INTEGER PRIMARY KEY, tag TEXT, body BLOB NOT NULL, "
                    "crc INTEGER NOT NULL)")
        con.execute("INSERT INTO meta VALUES (1, ?, ?)", (meta, zlib.crc32(meta)))
        con.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?)", _node_rows(graph, facts))
        con.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", entry_rows())
        con.execute("CREATE INDEX entries_tag ON entries(tag)")
        con.execute("COMMIT")
    finally:
        con.close()


# -- reading ----------------------------------------------------------------------------------

#: where a node's body keeps what (see :func:`_columns`)
_DIGEST, _SUCC, _PRED, _LIVE0, _LIVE1 = 0, 12, 13, 14, 15


def _decode_attrs(b: list[Any]) -> dict[str, Any]:
    plat = b[11]
    return {
        "media_types": frozenset(b[1]), "size": b[2], "declared_sizes": frozenset(b[3]),
        "present": b[4], "tags": frozenset(b[5]), "entries": tuple(b[6]), "indexed": b[7],
        "artifact_type": b[8], "status": b[9], "error": b[10],
        "platform": None if plat is None else tuple(tuple(p) for p in plat),
    }


class GraphStore:
    """A stored graph, as an :class:`ocigraph.GraphSource`.  Every answer is checked against
    its row's checksum; anything amiss raises :class:`StoreDamaged`."""

    def __init__(self, path: Path, con: sqlite3.Connection, meta: dict[str, Any]) -> None:
        self.path = path
        self._con = con
        self.meta = meta
        self.fingerprint: str = meta["fingerprint"]
        self.entry_count: int = meta["entry_count"]
        self.junk = tuple(Junk(p, why) for p, why in meta["junk"])
        self._by_id: dict[int, tuple[str, list[Any]]] = {}
        self._by_digest: dict[str, int] = {}
        self._counted = False

    def close(self) -> None:
        self._con.close()

    def _query(self, sql: str, args: Sequence[Any]) -> list[Any]:
        try:
            return self._con.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreDamaged(str(exc)) from None

    def _take(self, rows: Iterable[Any]) -> None:
        for i, d, body, crc in rows:
            if zlib.crc32(body) != crc:
                raise StoreDamaged(f"node {i} does not match its checksum")
            fields = orjson.loads(body)
            if fields[_DIGEST] != d:
                raise StoreDamaged(f"node {i} is filed under another digest")
            self._by_id[i] = (d, fields)
            self._by_digest[d] = i

    def _load(self, column: str, keys: Collection[Any]) -> None:
        known = self._by_id if column == "id" else self._by_digest
        want = [k for k in keys if k not in known]
        for at in range(0, len(want), _BATCH):
            part = want[at:at + _BATCH]
            marks = ",".join("?" * len(part))
            self._take(self._query(f"SELECT id, digest, body, crc FROM nodes WHERE {column} IN ({marks})",
                                   part))

    def _bodies(self, digests: Collection[str]) -> dict[str, list[Any]]:
        self._load("digest", digests)
        return {d: self._by_id[self._by_digest[d]][1] for d in digests if d in self._by_digest}

    def _named(self, pairs: Sequence[Sequence[int]]) -> dict[str, frozenset[str]]:
        self._load("id", [i for i, _ in pairs])
        by_id = self._by_id
        try:
            return {by_id[i][0]: _roles(m) for i, m in pairs}
        except KeyError as exc:
            raise StoreDamaged(f"node {exc} is missing") from None

    # -- GraphSource -------------------------------------------------------------------------

    def records(self, digests: Collection[str]) -> dict[str, og.NodeRecord]:
        bodies = self._bodies(digests)
        referrers = {d: [(i, m) for i, m in b[_PRED] if m & _SUBJECT] for d, b in bodies.items()}
        self._load("id", [i for b in bodies.values() for i, _ in b[_SUCC]]
                   + [i for pairs in referrers.values() for i, _ in pairs])
        return {d: og.NodeRecord(_decode_attrs(b), self._named(b[_SUCC]), self._named(referrers[d]))
                for d, b in bodies.items()}

    def predecessors(self, digest: str, core: Collection[str],
                     whole: bool) -> dict[str, frozenset[str]]:
        body = self._bodies([digest]).get(digest)
        if body is None:
            raise StoreDamaged(f"{digest} has no node")
        pairs = body[_PRED]
        if not whole:
            # a core node is loaded already; ids rank digests, so the smallest id outside the
            # core is the smallest digest outside it
            by_id = self._by_id
            inside = [(i, m) for i, m in pairs if i in by_id and by_id[i][0] in core]
            outside = [(i, m) for i, m in pairs if not (i in by_id and by_id[i][0] in core)]
            pairs = [*inside, min(outside)] if outside else inside
        return self._named(pairs)

    def attributes(self, digests: Collection[str]) -> dict[str, Mapping[str, Any]]:
        return {d: _decode_attrs(b) for d, b in self._bodies(digests).items()}

    def live(self, digests: Collection[str], keep_untagged: bool) -> set[str]:
        col = _LIVE1 if keep_untagged else _LIVE0
        return {d for d, b in self._bodies(digests).items() if b[col]}

    def unusable(self, keep_untagged: bool) -> tuple[tuple[str, str, str | None], ...]:
        return tuple((n, e, h) for n, e, h in self.meta["unusable"][int(keep_untagged)])

    def entries(self, positions: Collection[int]) -> dict[int, og.IndexEntry]:
        out: dict[int, og.IndexEntry] = {}
        want = sorted(set(positions))
        for at in range(0, len(want), _BATCH):
            part = want[at:at + _BATCH]
            marks = ",".join("?" * len(part))
            for pos, tag, body, crc in self._query(
                    f"SELECT pos, tag, body, crc FROM entries WHERE pos IN ({marks})", part):
                _digest, desc = _entry(pos, tag, body, crc)
                out[pos] = og.IndexEntry(pos, og.Descriptor(*_descriptor_fields(desc)), tag)
        if len(out) != len(want):
            raise StoreDamaged("an index.json entry is missing")
        return out

    def tagged(self, tag: str) -> list[str]:
        found: list[str] = []
        for pos, body, crc in self._query("SELECT pos, body, crc FROM entries WHERE tag = ? ORDER BY pos",
                                          (tag,)):
            digest, _ = _entry(pos, tag, body, crc)
            if digest not in found:
                found.append(digest)
        if len(self._bodies(found)) != len(found):
            raise StoreDamaged(f"a digest tagged {tag!r} has no node")
        return found

    def has(self, digest: str) -> bool:
        return bool(self._bodies([digest]))

    def with_prefix(self, prefix: str) -> list[str]:
        # a short digest names one node only if no other starts the same: a node lost from the
        # store would make it look unique, so count them first (once; a scan of the index)
        if not self._counted:
            (nodes,) = self._query("SELECT count(*) FROM nodes", ())[0]
            if nodes != self.meta["nodes"]:
                raise StoreDamaged("nodes")
            self._counted = True
        # digests are ASCII: every digest starting with the prefix sorts in [prefix, prefix+"\x7f")
        rows = self._query("SELECT id, digest, body, crc FROM nodes WHERE digest >= ? AND digest < ? "
                           "ORDER BY digest", (prefix, prefix + "\x7f"))
        self._take(rows)
        return [d for _, d, _, _ in rows]


def _entry(pos: int, tag: str | None, body: Any, crc: int) -> tuple[str, list[Any]]:
    """An ``entries`` row checked -- its checksum, and that its body says the position and tag
    it is filed under -- as ``(digest, descriptor fields)``."""
    if zlib.crc32(body) != crc:
        raise StoreDamaged(f"index.json entry {pos} does not match its checksum")
    at, digest, entry_tag, desc = orjson.loads(body)
    if (at, entry_tag) != (pos, tag):
        raise StoreDamaged(f"index.json entry {pos} is filed under another position or tag")
    return digest, desc


def _descriptor_fields(desc: list[Any]) -> tuple[Any, ...]:
    media_type, digest, size, annotations, artifact_type, platform = desc
    return (media_type, digest, size, tuple(tuple(p) for p in annotations), artifact_type,
            None if platform is None else tuple(tuple(p) for p in platform))


def open_store(root: Path, cache_dir: Path | str | None, index_fingerprint: str,
               folders: tuple[FolderStamp, ...], cache: bool | None = None) -> GraphStore | None:
    """The stored graph of the layout at ``root`` if it was made from this index.json (by
    fingerprint), these folder stamps and this code; ``None`` otherwise, or if it is damaged."""
    if not cache_enabled(cache):
        return None
    path = store_file_for(root, cache_dir)
    if path is None:
        return None
    con = None
    try:
        if not path.is_file():
            return None
        uri = Path(os.path.abspath(path)).as_uri() + "?mode=ro"
        con = sqlite3.connect(uri, uri=True, isolation_level=None)
        row = con.execute("SELECT body, crc FROM meta WHERE id = 1").fetchone()
        if row is None or zlib.crc32(row[0]) != row[1]:
            raise StoreDamaged("meta")
        meta = orjson.loads(row[0])
        stored_folders = tuple(tuple(f) for f in meta["folders"])
        if (meta["format"], meta["code"], meta["fingerprint"], stored_folders) != (
                STORE_FORMAT, code_fingerprint(), index_fingerprint, folders):
            con.close()
            return None
        # a row lost would go unseen by the checksums of the others: count the small table
        # here; a node lost shows as a name not found, which sends planning to the layout
        (entries,) = con.execute("SELECT count(*) FROM entries").fetchone()
        if entries != meta["entry_count"]:
            raise StoreDamaged("entries")
        with contextlib.suppress(OSError):
            os.utime(path)  # in use: not one for the cache's clean-up of abandoned files
        return GraphStore(path, con, meta)
    except Exception:  # a cache: anything amiss and it is not believed
        if con is not None:
            con.close()
        return None



