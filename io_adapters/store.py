"""The one store: what ocigraph keeps about a layout between runs, in one SQLite file.

Planning a delete needs the neighbourhood of its targets and two facts about the whole graph
(see :mod:`ocigraph._view`); planning anything else on an unchanged layout gives the plan it
gave before.  So when a command has built a layout's whole graph, it leaves here -- in a
detached child, after its answer -- every node with its attributes, edges and liveness under
both root rules, the index.json entries, the facts, and the plans it made; the next command on
the unchanged layout answers from it: a ``delete`` reads a few hundred rows, a repeated ``gc``
reads one plan, and neither lists a million blobs nor builds a million nodes.

**The rule.** Every fact in the store was derived from one *snapshot* of the layout: the
layout directory's device and inode, index.json's digest, and the inode, mtime and ctime of
``blobs/`` and each ``blobs/<alg>/``, all read through the one directory handle of
:class:`io_adapters.layout.LayoutDir` just before the listing the graph was built from.  A
snapshot is recorded only when those folders last changed (mtime or ctime -- a tool can set an
mtime back, never a ctime) at least ``SETTLE_NS`` before the listing began, as git's index
treats "racily clean" entries, so a change in the same clock tick cannot hide; and the store is
trusted only while the same handle reads the same snapshot again.  Anything else -- another
directory at the path, a blob created, removed or renamed, an index.json edited, other code --
and the layout is read instead.

Facts about a digest (a node's edges, from a manifest verified against its digest) cannot go
stale; a graph built from reads that said something about the disk rather than a digest (a
blob unreadable or not matching its digest) is never stored.  One thing the rule does not see
is a blob file rewritten *in place* with other bytes (no tool does that to content-addressed
files; ``fsck`` finds it): the store then answers what the digest says.  This assumes the file
system's clock is the machine's within well under ``SETTLE_NS``; set ``OCIGRAPH_NO_CACHE=1``
on a file system whose folder times never move.

Every row carries a CRC-32 of its content; a row that does not match it, a missing row or any
SQLite error makes the store ignored (and discarded), never trusted.  A store is written whole
to a temporary file, synced and renamed into place, so a reader sees the old one or the new
one; the checksums guard against damage, not against someone who can write your cache folder.

Where: ``$OCIGRAPH_CACHE_DIR``, else ``$XDG_CACHE_HOME/ocigraph``, else ``~/.cache/ocigraph``;
one file per layout path, ``<hash of the real path>.store``.

Rows: ``meta`` (one: format, code, the snapshot, entry and node counts, the unusable live
manifests per root rule, the junk under ``blobs/``); ``nodes`` (id = rank in digest order,
digest, and a JSON body: the digest again, the attributes, ``[id, roles]`` per successor and
per predecessor, live without and with ``keep_untagged``); ``entries`` (index.json position,
tag, and a JSON body: position, digest, tag, descriptor); ``plans`` (a key naming operation,
targets and policy, and the plan's JSON).  Because ids rank digests, the smallest predecessor
outside a view's core -- the one a plan names as sharing a layer -- is found without reading
the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import orjson

import ocigraph as og

from .collector import pauses_collector
from .layout import DiskLayout, FolderStamp, Junk, LayoutDir

__all__ = ["STORE_FORMAT", "SETTLE_NS", "GraphStore", "StoreDamaged", "Snapshot", "store_file_for",
           "cache_enabled", "default_cache_dir", "code_fingerprint", "last_change", "settles_in",
           "claim", "save_store", "open_store", "is_settled", "wait_for_writer", "plan_key",
           "names_checksum", "snapshot_of", "follow_apply"]

STORE_FORMAT = 2
#: how long before a listing its folders must have last changed for their stamps to be kept
SETTLE_NS = 2_000_000_000
#: ``IN (...)`` batches (SQLite allows 32766 variables; smaller batches keep statements cheap)
_BATCH = 500

_ROLE_BITS = {"config": 1, "layer": 2, "manifest": 4, "blob": 8, "subject": 16}
_SUBJECT = _ROLE_BITS["subject"]


class StoreDamaged(Exception):
    """The store does not hold what it says it holds: a checksum, a row or SQLite failed."""


def cache_enabled(explicit: bool | None = None) -> bool:
    """``explicit`` if given, else on unless ``OCIGRAPH_NO_CACHE`` is set to a non-empty value
    other than ``0``."""
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
    """A digest of ocigraph's own source (the core and the shell): what is stored was computed
    by code, and a store written by other code -- an upgrade, a fix, a checkout -- is
    somebody else's."""
    if not _CODE:
        h = hashlib.sha256()
        for package in (og, sys.modules[__package__ or "io_adapters"]):
            folder = Path(package.__file__ or "").parent
            for path in sorted(folder.glob("*.py")):
                h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        _CODE.append(h.hexdigest())
    return _CODE[0]


def store_file_for(root: Path | str, cache_dir: Path | str | None = None) -> Path | None:
    """Where the store of the layout at ``root`` lives (``None``: nowhere to put one)."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if base is None:
        return None
    real = os.path.realpath(root)
    return base / f"{hashlib.sha256(os.fsencode(real)).hexdigest()[:32]}.store"


#: what a snapshot of a layout is made of (see the module's docstring): the directory's
#: ``"<device>:<inode>"``, index.json's digest, and the blob folders' stamps
Snapshot = tuple[str, str, tuple[FolderStamp, ...]]


def node_crc(body: bytes, node_id: int) -> int:
    """A node row's checksum: its body's CRC-32 seeded with its id, so that a row filed under
    another id (one flipped bit in a rowid) fails it as a damaged body does."""
    return zlib.crc32(body, node_id & 0xFFFFFFFF)


def plan_crc(body: bytes, key: str) -> int:
    """A plan row's checksum, bound to the key it is filed under."""
    return zlib.crc32(body, zlib.crc32(key.encode()))


def names_checksum(digests: Iterable[str]) -> list[int]:
    """``[count, sum]`` of a set of blob names, the sum over each digest's first 64 bits (its
    hex, which is already uniformly random) modulo 2**64: order-free, so the set after
    removing some names is the old checksum minus theirs, with no need to keep the names."""
    total = count = 0
    for d in digests:
        total += int(d[d.index(":") + 1:][:16], 16)
        count += 1
    return [count, total % (1 << 64)]


def plan_key(operation: str, refs: Sequence[str], policy: og.Policy) -> str:
    """The key a plan is kept under: its operation, the refs asked for, its policy."""
    return hashlib.sha256(orjson.dumps([operation, list(refs), policy.to_dict()],
                                       option=orjson.OPT_SORT_KEYS)).hexdigest()


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


@pauses_collector
def save_store(path: Path, disk: DiskLayout, graph: nx.DiGraph,
               facts: Mapping[bool, og.Liveness], plans: Mapping[str, og.Plan]) -> None:
    """Store ``graph`` (built from ``disk``, whole) with its ``facts`` under both root rules
    (``{False: ..., True: ...}``, with grace 0) and the ``plans`` made on it (by
    :func:`plan_key`) at ``path``.  The caller holds the :func:`claim`.  Failing to write only
    costs the next run its shortcut."""
    with contextlib.suppress(OSError, sqlite3.Error):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".graph")
        os.close(fd)
        try:
            _write(tmp, disk, graph, facts, plans)
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
        ids_here = range(start, start + len(part))
        yield from zip(ids_here, part, bodies, map(node_crc, bodies, ids_here),
                       strict=True)


def _write(tmp: str, disk: DiskLayout, graph: nx.DiGraph, facts: Mapping[bool, og.Liveness],
           plans: Mapping[str, og.Plan]) -> None:
    def entry_rows() -> Iterator[tuple[int, str | None, bytes, int]]:
        for e in graph.graph["index"].entries:
            body = orjson.dumps([e.position, e.digest, e.tag, list(e.descriptor)])
            yield e.position, e.tag, body, zlib.crc32(body)

    meta = orjson.dumps({
        "format": STORE_FORMAT, "code": code_fingerprint(), "origin": disk.dir.origin,
        "path": os.path.realpath(disk.dir.path).encode("utf-8", "surrogateescape").decode(
            "utf-8", "backslashreplace"),  # the layout's, for `ocigraph cache` (JSON: printable)
        "fingerprint": graph.graph["fingerprint"], "folders": disk.folders, "entry_count": len(graph.graph["index"].entries),
        "unusable": [facts[False].unusable, facts[True].unusable],
        "junk": [(j.path, j.why) for j in disk.junk], "nodes": graph.number_of_nodes(),
        "names": names_checksum(disk.layout.blobs),
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
        con.execute("CREATE TABLE plans(key TEXT PRIMARY KEY, body BLOB NOT NULL, crc INTEGER NOT NULL)")
        con.execute("INSERT INTO meta VALUES (1, ?, ?)", (meta, zlib.crc32(meta)))
        bodies = [(k, p.to_json(indent=False)) for k, p in plans.items()]
        con.executemany("INSERT INTO plans VALUES (?, ?, ?)",
                        [(k, b, plan_crc(b, k)) for k, b in bodies])
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
            if node_crc(body, i) != crc:
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

    def plan(self, key: str) -> og.Plan | None:
        """The plan kept under ``key`` (:func:`plan_key`), if any."""
        rows = self._query("SELECT body, crc FROM plans WHERE key = ?", (key,))
        if not rows:
            return None
        body, crc = rows[0]
        if plan_crc(body, key) != crc:
            raise StoreDamaged("a plan does not match its checksum")
        try:
            return og.Plan.from_json(body)
        except og.OcigraphError as exc:
            raise StoreDamaged(str(exc)) from None

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
            # a core node is loaded already; ids rank digests, so walking the ids outside the
            # core in order meets the smallest digest first: the smallest holder, the smallest
            # tagged one and the smallest live one under each root rule are found by reading
            # holders a batch at a time until each is met (one batch, as a rule)
            self._load("digest", core)  # (loaded already when a view asks)
            core_ids = {self._by_digest[d] for d in core if d in self._by_digest}
            inside = [(i, m) for i, m in pairs if i in core_ids]
            outside = sorted((i, m) for i, m in pairs if i not in core_ids)
            chosen: dict[int, int] = {}
            wanted = [lambda b: True, lambda b: bool(b[5]), lambda b: bool(b[_LIVE0]),
                      lambda b: bool(b[_LIVE1])]
            for at in range(0, len(outside), _BATCH):
                part = outside[at:at + _BATCH]
                self._load("id", [i for i, _ in part])
                for i, m in part:
                    fields = self._by_id[i][1]
                    hits = [w for w in wanted if w(fields)]
                    if hits:
                        chosen[i] = m
                        wanted = [w for w in wanted if w not in hits]
                if not wanted:
                    break
            pairs = [*inside, *sorted(chosen.items())]
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


def snapshot_of(layout_dir: LayoutDir) -> Snapshot:
    """The layout's snapshot as its handle reads it now (see the module's docstring)."""
    fingerprint = og.digest_bytes(layout_dir.read_file("index.json"))
    return layout_dir.origin, fingerprint, layout_dir.folder_stamps()


def open_store(layout_dir: LayoutDir, cache_dir: Path | str | None = None,
               cache: bool | None = None, snapshot: Snapshot | None = None) -> GraphStore | None:
    """The store of the layout if it was made from the snapshot its handle reads now (or
    ``snapshot``) by this code; ``None`` otherwise, or if it is damaged."""
    if not cache_enabled(cache):
        return None
    path = store_file_for(layout_dir.path, cache_dir)
    if path is None:
        return None
    con = None
    try:
        if not path.is_file():
            return None
        origin, fingerprint, folders = snapshot or snapshot_of(layout_dir)
        uri = Path(os.path.abspath(path)).as_uri() + "?mode=ro"
        con = sqlite3.connect(uri, uri=True, isolation_level=None)
        row = con.execute("SELECT body, crc FROM meta WHERE id = 1").fetchone()
        if row is None or zlib.crc32(row[0]) != row[1]:
            raise StoreDamaged("meta")
        meta = orjson.loads(row[0])
        stored_folders = tuple(tuple(f) for f in meta["folders"])
        if (meta["format"], meta["code"], meta["origin"], meta["fingerprint"], stored_folders) != (
                STORE_FORMAT, code_fingerprint(), origin, fingerprint, folders):
            con.close()
            return None
        # a row lost would go unseen by the checksums of the others: count the small table
        # here; a node lost shows as a name not found, which sends planning to the layout
        (entries,) = con.execute("SELECT count(*) FROM entries").fetchone()
        if entries != meta["entry_count"]:
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
#
# After ocigraph applies a plan to a layout whose store was current, the store can be brought
# to the layout's new snapshot by changing the few rows the plan touched, instead of reading
# the layout and building its graph again (seconds to minutes, in the background).  This is
# done only where the result is exactly what a rebuild would store; :func:`follow_apply`
# answers False otherwise, and the caller rebuilds.


class _Rows:
    """Node rows loaded by digest or id from a writable store, changed in memory."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con
        self.by_digest: dict[str, list[Any]] = {}
        self.digest_of: dict[int, str] = {}
        self.id_of: dict[str, int] = {}
        self.dirty: set[str] = set()

    def load(self, column: str, keys: Iterable[Any]) -> None:
        known = self.digest_of if column == "id" else self.by_digest
        want = sorted({k for k in keys if k not in known})
        for at in range(0, len(want), _BATCH):
            part = want[at:at + _BATCH]
            marks = ",".join("?" * len(part))
            for i, d, body, crc in self.con.execute(
                    f"SELECT id, digest, body, crc FROM nodes WHERE {column} IN ({marks})", part):
                if node_crc(body, i) != crc:
                    raise StoreDamaged(f"node {i} does not match its checksum")
                fields = orjson.loads(body)
                if fields[_DIGEST] != d:
                    raise StoreDamaged(f"node {i} is filed under another digest")
                self.by_digest[d], self.digest_of[i], self.id_of[d] = fields, d, i

    def get(self, digest: str) -> list[Any]:
        self.load("digest", [digest])
        try:
            return self.by_digest[digest]
        except KeyError:
            raise StoreDamaged(f"{digest} has no node") from None

    def named(self, pairs: Iterable[Sequence[int]]) -> list[tuple[str, int]]:
        pairs = list(pairs)
        self.load("id", [i for i, _ in pairs])
        try:
            return [(self.digest_of[i], m) for i, m in pairs]
        except KeyError as exc:
            raise StoreDamaged(f"node {exc} is missing") from None

    def succ(self, digest: str) -> list[tuple[str, int]]:
        return self.named(self.get(digest)[_SUCC])

    def pred(self, digest: str) -> list[tuple[str, int]]:
        return self.named(self.get(digest)[_PRED])


def _walk_neighbours(rows: _Rows, n: str) -> Iterator[str]:
    """The nodes liveness flows to from ``n``: its successors, and its referrers."""
    for s, _ in rows.succ(n):
        yield s
    for p, m in rows.pred(n):
        if m & _SUBJECT:
            yield p


def _shrink_liveness(rows: _Rows, gone: set[str], seeds: set[str], col: int,
                     is_root: Callable[[str], bool]) -> set[str]:
    """The nodes that stop being live under the root rule of column ``col`` when ``gone``
    leave the graph and ``seeds`` lose an edge or their root status.

    Only nodes reachable from the seeds over live edges can lose liveness (the region); one of
    them stays live when it is a root or a live node outside the region reaches it, and so
    does everything it reaches inside the region.  Subject cycles cannot loop: each node is
    visited once."""
    live = lambda n: bool(rows.get(n)[col])  # noqa: E731
    region: set[str] = set()
    stack = [n for n in seeds if n not in gone and live(n)]
    while stack:
        n = stack.pop()
        if n in region:
            continue
        region.add(n)
        stack.extend(x for x in _walk_neighbours(rows, n)
                     if x not in gone and x not in region and live(x))
    outside = lambda x: x not in region and x not in gone and live(x)  # noqa: E731

    def held_from_outside(n: str) -> bool:
        if is_root(n):
            return True
        if any(outside(p) for p, _ in rows.pred(n)):
            return True
        return any(m & _SUBJECT and outside(s) for s, m in rows.succ(n))

    kept = {n for n in region if held_from_outside(n)}
    stack = list(kept)
    while stack:
        n = stack.pop()
        for x in _walk_neighbours(rows, n):
            if x in region and x not in kept:
                kept.add(x)
                stack.append(x)
    return region - kept


def _entry_rows(index: og.Index) -> list[tuple[int, str | None, bytes, int]]:
    out = []
    for e in index.entries:
        body = orjson.dumps([e.position, e.digest, e.tag, list(e.descriptor)])
        out.append((e.position, e.tag, body, zlib.crc32(body)))
    return out


def follow_apply(path: Path, before: Snapshot, plan: og.Plan, after: Snapshot, index: og.Index,
                 names: list[int], junk: Sequence[Junk]) -> bool:
    """Bring the store at ``path``, made from snapshot ``before``, to ``after``: the layout
    once ``plan`` was applied to it in full, with ``index`` its new index.json and ``names``
    the :func:`names_checksum` and ``junk`` of a listing made after ``after`` was taken.
    Returns False, changing nothing, when the store is not the one made from ``before``, when
    the listing is not what the plan leaves, or when the plan touched something whose stored
    attributes a rebuild could give otherwise (a node deleted while a kept node still
    references it; a kept node whose media types, sizes, platform or artifact type could
    have come from a deleted descriptor).  The caller holds the :func:`claim`."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        row = con.execute("SELECT body, crc FROM meta WHERE id = 1").fetchone()
        if row is None or zlib.crc32(row[0]) != row[1]:
            raise StoreDamaged("meta")
        meta = orjson.loads(row[0])
        stored = (meta["origin"], meta["fingerprint"], tuple(tuple(f) for f in meta["folders"]))
        if stored != before or meta["format"] != STORE_FORMAT or meta["code"] != code_fingerprint():
            return False
        gone = {d.digest for d in plan.deletions}
        lost = names_checksum(d.digest for d in plan.deletions if d.present)
        if [meta["names"][0] - lost[0], (meta["names"][1] - lost[1]) % (1 << 64)] != names:
            return False  # another writer came or went meanwhile
        if [(j.path, j.why) for j in junk] != [tuple(j) for j in meta["junk"]]:
            return False
        rows = _Rows(con)
        rows.load("digest", gone)
        if set(rows.by_digest) != gone:
            return False
        touched: set[str] = set()
        for d in gone:
            if any(p not in gone for p, _ in rows.pred(d)):
                return False  # still referenced (a forced delete): its node stays, changed
            touched.update(s for s, _ in rows.succ(d) if s not in gone)
        for s in touched:
            b = rows.get(s)
            if len(b[1]) != 1 or len(b[3]) > 1 or b[8] is not None or b[11] is not None:
                return False
            b[_PRED] = [[i, m] for i, m in b[_PRED] if rows.digest_of.get(i) not in gone]
            if not b[_PRED] and not b[6] and not any(e.digest == s for e in index.entries):
                return False  # left without a holder: a rebuild would not see it the same
            rows.dirty.add(s)
        # index.json: every node with an entry, before or after, gets its entries and tags anew
        positions: dict[str, list[int]] = {}
        tags: dict[str, set[str]] = {}
        for e in index.entries:
            positions.setdefault(e.digest, []).append(e.position)
            if e.tag is not None:
                tags.setdefault(e.digest, set()).add(e.tag)
        for c in plan.index_changes:  # an entry dropped whose node stays: its descriptor goes
            if c.action == "drop" and c.digest not in gone:
                b = rows.get(c.digest)
                if (c.digest not in positions or len(b[1]) != 1 or len(b[3]) > 1
                        or b[8] is not None or b[11] is not None):
                    return False
        old_entries = [orjson.loads(b)[1] for (b,) in con.execute("SELECT body FROM entries")]
        rooted = set(old_entries) | set(positions)
        rows.load("digest", rooted)
        was_root: dict[str, tuple[bool, bool]] = {}
        for d in rooted - gone:
            b = rows.get(d)
            was_root[d] = (bool(b[5]), bool(b[7]))
            b[5], b[6], b[7] = sorted(tags.get(d, ())), positions.get(d, []), d in positions
            rows.dirty.add(d)
        # liveness, per root rule
        for col, flag in ((_LIVE0, 5), (_LIVE1, 7)):
            losing = {d for d, (t, i) in was_root.items() if (t, i)[flag == 7] and not rows.get(d)[flag]}
            dead = _shrink_liveness(rows, gone, touched | losing, col,
                                    lambda n, f=flag: bool(rows.get(n)[f]))  # type: ignore[misc]
            for n in dead:
                rows.get(n)[col] = False
                rows.dirty.add(n)
            rule = int(col == _LIVE1)
            for n, _, holder in meta["unusable"][rule]:
                if n in gone or n in dead or holder in gone or holder in dead:
                    return False  # who holds a broken manifest changed: a rebuild says it
        ids = [rows.id_of[d] for d in gone]
        for at in range(0, len(ids), _BATCH):
            part = ids[at:at + _BATCH]
            con.execute(f"DELETE FROM nodes WHERE id IN ({','.join('?' * len(part))})", part)
        bodies = [(orjson.dumps(rows.by_digest[d]), rows.id_of[d]) for d in rows.dirty - gone]
        con.executemany("UPDATE nodes SET body = ?, crc = ? WHERE id = ?",
                        [(b, node_crc(b, i), i) for b, i in bodies])
        con.execute("DELETE FROM entries")
        con.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", _entry_rows(index))
        con.execute("DELETE FROM plans")
        meta.update(origin=after[0], fingerprint=after[1], folders=after[2], names=names,
                    entry_count=len(index.entries), nodes=meta["nodes"] - len(gone))
        body = orjson.dumps(meta)
        con.execute("UPDATE meta SET body = ?, crc = ? WHERE id = 1", (body, zlib.crc32(body)))
        con.execute("COMMIT")
        return True
    except (sqlite3.Error, StoreDamaged, KeyError, TypeError, ValueError):
        return False
    finally:
        if con.in_transaction:
            con.execute("ROLLBACK")
        con.close()
