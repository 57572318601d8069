"""A built graph as the rows of a store, and how an applied plan changes them -- pure values.

``io_adapters.store`` keeps one row per node in SQLite; what a row holds, how it is encoded
and checked, the queries that read the tables as a graph source (:class:`StoreRows`, through a
``query`` function the shell gives), and the graph computations that bring rows up to date
after an apply (without building the graph again) live here, free of files and clocks.

A node's *body* (a JSON list): its digest; its :data:`~ocigraph.NODE_SCHEMA` attributes,
encoded; ``[id, roles mask]`` per successor and per predecessor (predecessors by id, and ids
rank digests, so the smallest comes first); whether it is live without and with
``keep_untagged``; and the ids of its *first holders*: its smallest tagged predecessor and its
smallest live one under each root rule, kept for a node with more than :data:`FEW`
predecessors (``None`` otherwise: they are read at once) -- what a delete's view asks of a node
a thousand images share, answered from one row.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import networkx as nx
import orjson

from ._build import NODE_ATTRIBUTES, NODE_SCHEMA, decode_node_attrs, encode_node_columns
from ._errors import OcigraphError
from ._graph import Liveness
from ._listing import Junk
from ._mediatypes import SUCCESSOR_FIELDS
from ._model import Descriptor, Index, IndexEntry, Manifest
from ._plan import Plan
from ._view import NodeRecord
from .snapshot import Snapshot, followed_meta, lists_as_planned, made_from, plans_after

__all__ = ["ROLE_BITS", "DIGEST", "SUCC", "PRED", "LIVE", "FIRSTS", "TABLES", "RowsDamaged",
           "NodeRows", "Query", "StoreRows",
           "role_mask", "roles_of", "node_crc", "node_rows", "row_attrs", "first_holder",
           "lost_liveness", "descriptors_naming", "refreshed_attrs", "follow_plan", "entry_row",
           "entry_from_row", "plan_row", "plan_from_row", "meta_row", "meta_from_row", "Followed",
           "follow_store"]

ROLE_BITS = {"config": 1, "layer": 2, "manifest": 4, "blob": 8, "subject": 16}
#: where a body keeps its digest, successors, predecessors, live flags (by ``keep_untagged``)
#: and first holders (tagged, live without, live with ``keep_untagged``)
DIGEST, SUCC, PRED = 0, len(NODE_SCHEMA) + 1, len(NODE_SCHEMA) + 2
LIVE = (len(NODE_SCHEMA) + 3, len(NODE_SCHEMA) + 4)
FIRSTS = len(NODE_SCHEMA) + 5
_MEDIA, _SIZES, _PRESENT, _TAGS, _ENTRIES, _INDEXED, _ART, _STATUS, _PLATFORM = (
    1 + NODE_ATTRIBUTES.index(a) for a in ("media_types", "declared_sizes", "present", "tags",
                                           "entries", "indexed", "artifact_type", "status",
                                           "platform"))
_SUBJECT = 16
#: rows read at a time when looking for a first holder, and keys in one ``IN (...)``
_BATCH = 500
#: the store's tables, as SQL: each row, filed under its key, is a ``body`` and its ``crc``
#: (:func:`meta_row`, :func:`plan_row`, :func:`node_rows`, :func:`entry_row`)
TABLES = tuple(f"CREATE TABLE {name}({key}, body BLOB NOT NULL, crc INTEGER NOT NULL)"
               for name, key in (("meta", "id INTEGER PRIMARY KEY"),
                                 ("plans", "key TEXT PRIMARY KEY"),
                                 ("nodes", "id INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE"),
                                 ("entries", "pos INTEGER PRIMARY KEY, tag TEXT")))

_ROLES_OF: dict[int, frozenset[str]] = {}


def role_mask(roles: Iterable[str]) -> int:
    m = 0
    for r in roles:
        m |= ROLE_BITS[r]
    return m


def roles_of(mask: int) -> frozenset[str]:
    fs = _ROLES_OF.get(mask)
    if fs is None:
        fs = _ROLES_OF[mask] = frozenset(r for r, b in ROLE_BITS.items() if mask & b)
    return fs


def node_crc(body: bytes, node_id: int) -> int:
    """A body's CRC-32 seeded with its id: a row filed under another id fails it too."""
    return zlib.crc32(body, node_id & 0xFFFFFFFF)


def first_holder(pairs: Iterable[Sequence[int]], holds: Callable[[int], bool]) -> int | None:
    """The smallest id of ``pairs`` (``[id, mask]``, by id) for which ``holds``."""
    return next((i for i, _ in pairs if holds(i)), None)


#: nodes encoded at a time: the writer's memory is a chunk's, not a million nodes'
_CHUNK = 4096
#: the most predecessors a node has whose first holders are found by reading them all, not
#: kept in its row
FEW = 8


def node_rows(graph: nx.DiGraph, facts: Mapping[bool, Liveness],
              dumps: Callable[[Any], bytes]) -> Iterator[tuple[int, str, bytes, int]]:
    """``(id, digest, body, crc)`` of every node of ``graph`` (built whole, with its ``facts``
    under both root rules), in digest order, a chunk at a time; ``dumps`` encodes JSON."""
    digests = sorted(graph._node)
    ids = {d: i for i, d in enumerate(digests)}
    nodes, succ, pred = graph._node, graph._succ, graph._pred
    tagged = [bool(nodes[d]["tags"]) for d in digests]
    live0, live1 = ([d in facts[k].live for d in digests] for k in (False, True))
    masks: dict[frozenset[str], int] = {}

    def mask(roles: frozenset[str]) -> int:
        m = masks.get(roles)
        if m is None:
            m = masks[roles] = role_mask(roles)
        return m

    def firsts(ps: list[tuple[int, int]]) -> Any:
        return (first_holder(ps, tagged.__getitem__), first_holder(ps, live0.__getitem__),
                first_holder(ps, live1.__getitem__))

    for start in range(0, len(digests), _CHUNK):
        part = digests[start:start + _CHUNK]
        preds = [[(ids[p], mask(e["roles"])) for p, e in pred[d].items()] for d in part]
        preds = [ps if len(ps) < 2 else sorted(ps) for ps in preds]
        columns = [part, *encode_node_columns([nodes[d] for d in part]),
                   [[(ids[s], mask(e["roles"])) for s, e in succ[d].items()] for d in part],
                   preds, live0[start:start + len(part)], live1[start:start + len(part)],
                   [None if len(ps) <= FEW else firsts(ps) for ps in preds]]
        bodies = list(map(dumps, zip(*columns, strict=True)))
        here = range(start, start + len(part))
        yield from zip(here, part, bodies, map(node_crc, bodies, here), strict=True)


def entry_row(e: IndexEntry) -> tuple[int, str | None, bytes, int]:
    """An index.json entry as a row: ``(position, tag, body, crc)``."""
    body = orjson.dumps([e.position, e.digest, e.tag, list(e.descriptor)])
    return e.position, e.tag, body, zlib.crc32(body)


def entry_from_row(pos: int, tag: str | None, body: bytes, crc: int) -> IndexEntry:
    """The entry of a row :func:`entry_row` made, checked: its checksum, its position, its tag."""
    if zlib.crc32(body) != crc:
        raise RowsDamaged(f"index.json entry {pos} does not match its checksum")
    at, digest, entry_tag, (mt, _, size, notes, art, plat) = orjson.loads(body)
    if (at, entry_tag) != (pos, tag):
        raise RowsDamaged(f"index.json entry {pos} is filed under another position or tag")
    return IndexEntry(pos, Descriptor(mt, digest, size, tuple(map(tuple, notes)), art,
                                      None if plat is None else tuple(map(tuple, plat))), tag)


def plan_row(key: str, plan: Plan) -> tuple[str, bytes, int]:
    """A plan as a row: ``(key, body, crc)``, the checksum bound to the key."""
    body = plan.to_json(indent=False)
    return key, body, zlib.crc32(body, zlib.crc32(key.encode()))


def plan_from_row(key: str, body: bytes, crc: int) -> Plan:
    """The plan of a row :func:`plan_row` made, checked."""
    if zlib.crc32(body, zlib.crc32(key.encode())) != crc:
        raise RowsDamaged("a plan does not match its checksum")
    try:
        return Plan.from_json(body)
    except OcigraphError as exc:
        raise RowsDamaged(str(exc)) from None


def meta_row(meta: Mapping[str, Any]) -> tuple[bytes, int]:
    """The store's ``meta`` (:func:`ocigraph.snapshot.store_meta`) as a row: ``(body, crc)``."""
    body = orjson.dumps(meta)
    return body, zlib.crc32(body)


def meta_from_row(body: bytes, crc: int) -> dict[str, Any]:
    """The ``meta`` of a row :func:`meta_row` made, checked.

    >>> meta_from_row(*meta_row({"format": 3}))
    {'format': 3}
    """
    if zlib.crc32(body) != crc:
        raise RowsDamaged("meta")
    meta: dict[str, Any] = orjson.loads(body)
    return meta


def row_attrs(body: Sequence[Any]) -> dict[str, Any]:
    """A body's attributes, as :func:`~ocigraph.build_graph` sets them."""
    return decode_node_attrs(body[1:SUCC])


def lost_liveness(seeds: Iterable[str], gone: Collection[str], live: Callable[[str], bool],
                  is_root: Callable[[str], bool], flows_to: Callable[[str], Iterable[str]],
                  flows_from: Callable[[str], Iterable[str]]) -> set[str]:
    """The nodes that stop being live when ``gone`` leave a graph and ``seeds`` lose an edge
    or their root status (liveness only shrinks then).  ``live`` and ``is_root`` say what
    held before and what holds after; liveness flows from a node to ``flows_to`` (its
    successors and referrers) and into it from ``flows_from`` (its predecessors and, for a
    referrer, its subjects).

    Only nodes reachable from the seeds over live edges can lose liveness (the region); one of
    them stays live when it is a root or a live node outside the region reaches it, and so
    does everything it reaches inside the region.  Each node is visited once: subject cycles
    cannot loop.  Linear in the region and its edges."""
    region: set[str] = set()
    stack = [n for n in seeds if n not in gone and live(n)]
    while stack:
        n = stack.pop()
        if n not in region:
            region.add(n)
            stack.extend(x for x in flows_to(n) if x not in gone and x not in region and live(x))
    kept = {n for n in region if is_root(n) or any(
        x not in region and x not in gone and live(x) for x in flows_from(n))}
    stack = list(kept)
    while stack:
        for x in flows_to(stack.pop()):
            if x in region and x not in kept:
                kept.add(x)
                stack.append(x)
    return region - kept


def descriptors_naming(manifest: Manifest, media_types: Iterable[str], child: str) -> list[Descriptor]:
    """The descriptors of ``child`` that :func:`~ocigraph.build_graph` walks in ``manifest``,
    the manifest of a node with ``media_types`` (each manifest type it has is walked)."""
    fields = {f for mt in media_types for f in SUCCESSOR_FIELDS.get(mt, ())}
    return [desc for name, desc in manifest.refs if name in fields and desc.digest == child]


_UNKNOWN = object()


def _only(values: Iterable[Any], otherwise: Any) -> Any:
    """What "the first descriptor's, if any has one" gives when the order of descriptors is
    not known: the one value they have, ``otherwise`` if none has one, else unknown."""
    distinct = {v for v in values if v is not None}
    return distinct.pop() if len(distinct) == 1 else otherwise if not distinct else _UNKNOWN


def _size_error(sizes: Collection[int], size: int) -> str:
    return f"descriptor size {max(sizes)} but the blob has {size} bytes"


def refreshed_attrs(attrs: Mapping[str, Any], descriptors: Sequence[Descriptor],
                    own_artifact_type: str | None) -> dict[str, Any] | None:
    """The attributes :func:`~ocigraph.build_graph` gives a node with ``attrs`` once only
    ``descriptors`` name it (a subset of those that did: some of its predecessors or index.json
    entries went), ``own_artifact_type`` its manifest's own.  ``None`` when that cannot be
    known without a rebuild: no descriptor left, the artifact type or platform of two that
    differ (the first in walk order wins), a manifest type it loses (its edges would go), or a
    status that changes (the unusable manifests would)."""
    if not descriptors:
        return None
    media_types = frozenset(d.media_type for d in descriptors)
    if (attrs["media_types"] - media_types) & SUCCESSOR_FIELDS.keys():
        return None
    sizes = frozenset(d.size for d in descriptors)
    artifact_type = _only((d.artifact_type for d in descriptors), own_artifact_type)
    platform = _only((d.platform for d in descriptors), None)
    if artifact_type is _UNKNOWN or platform is _UNKNOWN:
        return None
    size, status, error = attrs["size"], attrs["status"], attrs["error"]
    if not attrs["present"]:
        size = max(sizes)
    elif status == "blob" and len(sizes) == 1:
        (size,) = sizes  # with two or more, the file's size: what it had, as it had two then
    if status == "ok" or error == _size_error(attrs["declared_sizes"], attrs["size"]):
        broken = attrs["present"] and size not in sizes
        status, error = ("broken", _size_error(sizes, size)) if broken else ("ok", None)
        if status != attrs["status"]:
            return None
    out = dict(attrs)
    out.update(media_types=media_types, size=size, declared_sizes=sizes, status=status,
               error=error, artifact_type=artifact_type, platform=platform)
    return out


class RowsDamaged(Exception):
    """Rows do not hold what they say they hold: a checksum failed, or a row is missing."""


#: ``fetch(column, keys)``: the rows ``(id, digest, body, crc)`` whose ``column`` (``"id"`` or
#: ``"digest"``) is one of ``keys``, in any order, those missing left out
Fetch = Callable[[str, Sequence[Any]], Iterable[tuple[int, str, bytes, int]]]


class NodeRows:
    """Node rows read through ``fetch``, checked and kept (``rows``: digest to body, a list
    the caller may change); a :class:`~ocigraph.GraphSource`'s questions about nodes answered
    from them."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self.rows: dict[str, list[Any]] = {}
        self.digest_of: dict[int, str] = {}
        self.id_of: dict[str, int] = {}

    def take(self, found: Iterable[tuple[int, str, bytes, int]]) -> None:
        for i, d, body, crc in found:
            if node_crc(body, i) != crc:
                raise RowsDamaged(f"node {i} does not match its checksum")
            fields = orjson.loads(body)
            if fields[DIGEST] != d:
                raise RowsDamaged(f"node {i} is filed under another digest")
            self.rows[d], self.digest_of[i], self.id_of[d] = fields, d, i

    def load(self, column: str, keys: Iterable[Any]) -> None:
        known = self.digest_of if column == "id" else self.rows
        want = sorted({k for k in keys if k not in known})
        if want:
            self.take(self.fetch(column, want))

    def bodies(self, digests: Collection[str]) -> dict[str, list[Any]]:
        self.load("digest", digests)
        return {d: self.rows[d] for d in digests if d in self.rows}

    def row(self, digest: str) -> list[Any]:
        self.load("digest", [digest])
        try:
            return self.rows[digest]
        except KeyError:
            raise RowsDamaged(f"{digest} has no node") from None

    def named(self, pairs: Sequence[Sequence[int]]) -> list[tuple[str, int]]:
        """``[id, mask]`` pairs as ``(digest, mask)``."""
        self.load("id", [i for i, _ in pairs])
        try:
            return [(self.digest_of[i], m) for i, m in pairs]
        except KeyError as exc:
            raise RowsDamaged(f"node {exc} is missing") from None

    def _roles(self, pairs: Sequence[Sequence[int]]) -> dict[str, frozenset[str]]:
        return {d: roles_of(m) for d, m in self.named(pairs)}

    def holds(self, k: int, node_id: int) -> bool:
        """The first holders' questions of node ``node_id``: tagged (``k`` 0), live without
        (1) or with (2) ``keep_untagged``."""
        b = self.row(self.named([[node_id, 0]])[0][0])
        return bool(b[_TAGS] if k == 0 else b[LIVE[k - 1]])

    def first_holder(self, pairs: Sequence[Sequence[int]], k: int) -> int | None:
        """:func:`first_holder` for question ``k``, reading a batch of rows at a time."""
        for at in range(0, len(pairs), _BATCH):
            self.load("id", [i for i, _ in pairs[at:at + _BATCH]])
            found = first_holder(pairs[at:at + _BATCH], lambda i: self.holds(k, i))
            if found is not None:
                return found
        return None

    def records(self, digests: Collection[str]) -> dict[str, NodeRecord]:
        return {d: NodeRecord(row_attrs(b), self._roles(b[SUCC]),
                              self._roles([p for p in b[PRED] if p[1] & _SUBJECT]))
                for d, b in self.bodies(digests).items()}

    def predecessors(self, digest: str, core: Collection[str],
                     whole: bool) -> dict[str, frozenset[str]]:
        body = self.row(digest)
        pairs = body[PRED]
        if not whole:
            # by id, so by digest: the smallest outside the core comes first; the row names
            # its first holders, and only one inside the core sends us on to the next
            self.load("digest", core)
            inside = {self.id_of[d] for d in core if d in self.id_of}
            outside = [p for p in pairs if p[0] not in inside]
            chosen = {outside[0][0]} if outside else set()
            for k, first in enumerate(body[FIRSTS] or (-1, -1, -1)):
                if first is not None:
                    chosen.add(first if first >= 0 and first not in inside
                               else self.first_holder(outside, k))
            pairs = [p for p in pairs if p[0] in inside or p[0] in chosen]
        return self._roles(pairs)

    def attributes(self, digests: Collection[str]) -> dict[str, Mapping[str, Any]]:
        return {d: row_attrs(b) for d, b in self.bodies(digests).items()}

    def live(self, digests: Collection[str], keep_untagged: bool) -> set[str]:
        return {d for d, b in self.bodies(digests).items() if b[LIVE[keep_untagged]]}

    def has(self, digest: str) -> bool:
        return bool(self.bodies([digest]))


#: ``query(sql, args)``: the rows a statement on the store's tables returns, as a list (a
#: failure of the database: :class:`RowsDamaged`)
Query = Callable[[str, Sequence[Any]], list[Any]]


class StoreRows(NodeRows):
    """A store's tables as a :class:`~ocigraph.GraphSource`: ``meta`` (:func:`meta_row`),
    ``nodes`` (:func:`node_rows`), ``entries`` (:func:`entry_row`) and ``plans``
    (:func:`plan_row`), read through ``query``.  Every row is checked against its checksum and
    what it is filed under, and the rows a question needs against what ``meta`` counts;
    anything amiss raises :class:`RowsDamaged`."""

    def __init__(self, query: Query) -> None:
        super().__init__(self._fetch)
        self.query = query
        found = query("SELECT body, crc FROM meta WHERE id = 1", ())
        if not found:
            raise RowsDamaged("meta")
        self.meta = meta = meta_from_row(*found[0])
        self.fingerprint: str = meta["fingerprint"]
        self.entry_count: int = meta["entry_count"]
        self.junk = tuple(Junk(p, why) for p, why in meta["junk"])
        self._counted = False

    def check_entries(self) -> None:
        """Raise :class:`RowsDamaged` unless ``entries`` holds as many rows as ``meta`` counts: a
        row lost would go unseen by the checksums of the others.  (A node lost shows as a name
        not found, which sends planning to the layout.)"""
        if self.query("SELECT count(*) FROM entries", ())[0][0] != self.entry_count:
            raise RowsDamaged("entries")

    def batches(self, sql: str, keys: Sequence[Any]) -> Iterator[Any]:
        """``sql`` with ``IN ({})`` filled a batch of ``keys`` at a time (SQLite allows 32766
        variables; smaller batches keep statements cheap)."""
        for at in range(0, len(keys), _BATCH):
            part = keys[at:at + _BATCH]
            yield from self.query(sql.format(",".join("?" * len(part))), part)

    def _fetch(self, column: str, keys: Sequence[Any]) -> Iterator[tuple[int, str, bytes, int]]:
        return self.batches(f"SELECT id, digest, body, crc FROM nodes WHERE {column} IN ({{}})",
                            keys)

    def plan(self, key: str) -> Plan | None:
        """The plan kept under ``key`` (:func:`ocigraph.plan_key`), if any."""
        found = self.query("SELECT key, body, crc FROM plans WHERE key = ?", (key,))
        return plan_from_row(*found[0]) if found else None

    def indexed(self) -> list[str]:
        """The digests of index.json's entries, in order."""
        rows = self.query("SELECT pos, tag, body, crc FROM entries ORDER BY pos", ())
        return [entry_from_row(*row).digest for row in rows]

    def unusable(self, keep_untagged: bool) -> tuple[tuple[str, str, str | None], ...]:
        return tuple((n, e, h) for n, e, h in self.meta["unusable"][int(keep_untagged)])

    def entries(self, positions: Collection[int]) -> dict[int, IndexEntry]:
        want = sorted(set(positions))
        out = {row[0]: entry_from_row(*row) for row in self.batches(
            "SELECT pos, tag, body, crc FROM entries WHERE pos IN ({})", want)}
        if len(out) != len(want):
            raise RowsDamaged("an index.json entry is missing")
        return out

    def tagged(self, tag: str) -> list[str]:
        found = [entry_from_row(pos, tag, body, crc).digest for pos, body, crc in self.query(
            "SELECT pos, body, crc FROM entries WHERE tag = ? ORDER BY pos", (tag,))]
        found = list(dict.fromkeys(found))
        if len(self.bodies(found)) != len(found):
            raise RowsDamaged(f"a digest tagged {tag!r} has no node")
        return found

    def with_prefix(self, prefix: str) -> list[str]:
        # a short digest names one node only if no other starts the same: a node lost from the
        # store would make it look unique, so count them first (once; a scan of the index)
        if not self._counted:
            if self.query("SELECT count(*) FROM nodes", ())[0][0] != self.meta["nodes"]:
                raise RowsDamaged("nodes")
            self._counted = True
        # digests are ASCII: every digest starting with the prefix sorts in [prefix, prefix+"\x7f")
        found = self.query("SELECT id, digest, body, crc FROM nodes WHERE digest >= ? AND "
                           "digest < ? ORDER BY digest", (prefix, prefix + "\x7f"))
        self.take(found)
        return [d for _, d, _, _ in found]


#: reads manifests by digest, verified (a :class:`~ocigraph.ManifestSource`'s question)
ReadManifests = Callable[[Sequence[str]], Mapping[str, Manifest]]


def _ambiguous(b: Sequence[Any]) -> bool:
    """Whether a node's attributes may depend on which of its descriptors remain."""
    return len(b[_MEDIA]) != 1 or len(b[_SIZES]) > 1 or b[_ART] is not None or b[_PLATFORM] is not None


def _refresh(s: NodeRows, t: str, index_descs: Sequence[Descriptor],
             manifests: ReadManifests | None) -> bool:
    """Recompute the attributes of ``t``, some of whose descriptors went, from those that
    remain: its index.json entries' and those in its remaining predecessors' manifests."""
    b = s.row(t)
    if not b[PRED] and not index_descs:
        return False  # left without a holder: a rebuild would see it otherwise
    if not _ambiguous(b):
        return True  # every descriptor said the same: so do those left
    if manifests is None:
        return False
    holders = [p for p, _ in s.named(b[PRED])]
    own = b[_STATUS] != "blob" and bool(b[_PRESENT])
    read = manifests(holders + [t] * own)
    if any(read[p].error is not None for p in holders):
        return False
    descs = [*index_descs, *(x for p in holders
                             for x in descriptors_naming(read[p], s.row(p)[_MEDIA], t))]
    new = refreshed_attrs(row_attrs(b), descs, read[t].artifact_type if own else None)
    if new is None:
        return False
    b[1:SUCC] = [col[0] for col in encode_node_columns([new])]
    return True


def _fix_firsts(s: NodeRows, x: str, gone_ids: set[int]) -> bool:
    """Bring ``x``'s first holders up to date: holders only ever lose a tag, liveness or
    their node, so each is the old one or, past it, the next that still holds."""
    b = s.row(x)
    if b[FIRSTS] is None or len(b[PRED]) <= FEW:
        changed = b[FIRSTS] is not None
        b[FIRSTS] = None
        return changed
    firsts = list(b[FIRSTS])
    for k, f in enumerate(firsts):
        if f is not None and (f in gone_ids or not s.holds(k, f)):
            firsts[k] = s.first_holder([p for p in b[PRED] if p[0] > f], k)
    changed = bool(firsts != b[FIRSTS])
    b[FIRSTS] = firsts
    return changed


def follow_plan(s: NodeRows, plan: Plan, index: Index, indexed_before: Sequence[str],
                unusable: Sequence[Sequence[Sequence[Any]]], order_matters: bool = True,
                manifests: ReadManifests | None = None) -> tuple[set[int], set[str]] | None:
    """Change the rows of ``s`` -- a whole graph's, made by :func:`node_rows`, whose
    index.json listed ``indexed_before`` (in order) and whose unusable manifests under each
    root rule were ``unusable`` -- into those of the graph once ``plan`` was applied in full,
    ``index`` the new index.json: the ids of the rows to delete and the digests of those
    changed.  ``manifests`` reads what a kept node's remaining predecessors say of it, when
    some of its descriptors went.  ``None`` when the result could differ from the graph
    built anew (:func:`refreshed_attrs`; a node deleted that a kept one references; a node
    left without a holder; an unusable manifest whose holder changes; index.json's images in
    another order while ``order_matters`` -- some node has a platform or artifact type, and
    the first descriptor walked gives it) -- then the rows may be half changed, and are to be
    thrown away."""
    gone = {d.digest for d in plan.deletions}
    if len(s.bodies(gone)) != len(gone):
        return None
    gone_ids = {s.id_of[d] for d in gone}
    touched: set[str] = set()
    for d in gone:
        if any(p not in gone for p, _ in s.named(s.row(d)[PRED])):
            return None  # still referenced (a forced delete): its node stays, changed
        touched.update(x for x, _ in s.named(s.row(d)[SUCC]) if x not in gone)
    # index.json: every node with an entry, before or after, gets its entries and tags anew
    positions: dict[str, list[int]] = {}
    tags: dict[str, set[str]] = {}
    descs: dict[str, list[Descriptor]] = {}
    for e in index.entries:
        positions.setdefault(e.digest, []).append(e.position)
        descs.setdefault(e.digest, []).append(e.descriptor)
        if e.tag is not None:
            tags.setdefault(e.digest, set()).add(e.tag)
    order = [d for d in dict.fromkeys(indexed_before) if d in positions]
    kept_before = set(order)
    if order_matters and order != [d for d in positions if d in kept_before]:
        return None  # walked in another order
    rooted = (set(indexed_before) | positions.keys()) - gone
    s.load("digest", rooted)
    was_root = {d: (bool(s.row(d)[_TAGS]), bool(s.row(d)[_INDEXED])) for d in rooted}
    for d in rooted:
        b = s.row(d)
        b[_TAGS], b[_ENTRIES], b[_INDEXED] = sorted(tags.get(d, ())), positions.get(d, []), d in positions
    for t in touched:
        b = s.row(t)
        b[PRED] = [p for p in b[PRED] if p[0] not in gone_ids]
    dropped = {c.digest for c in plan.index_changes if c.action == "drop"} - gone
    if not all(_refresh(s, t, descs.get(t, ()), manifests) for t in sorted(touched | dropped)):
        return None
    dirty = touched | dropped | rooted
    changed = gone | {d for d in rooted if was_root[d][0] != bool(s.row(d)[_TAGS])}

    def flows_to(n: str) -> list[str]:
        return [*(x for x, _ in s.named(s.row(n)[SUCC])),
                *(p for p, m in s.named(s.row(n)[PRED]) if m & _SUBJECT)]

    def flows_from(n: str) -> list[str]:
        return [*(p for p, _ in s.named(s.row(n)[PRED])),
                *(x for x, m in s.named(s.row(n)[SUCC]) if m & _SUBJECT)]

    for k, col in enumerate(LIVE):  # liveness, per root rule: it only shrinks
        root = _INDEXED if k else _TAGS
        dead = lost_liveness(touched | {d for d in rooted if was_root[d][k] and not s.row(d)[root]},
                             gone, lambda n, c=col: bool(s.row(n)[c]),  # type: ignore[misc]
                             lambda n, c=root: bool(s.row(n)[c]),  # type: ignore[misc]
                             flows_to, flows_from)
        for n in dead:
            s.row(n)[col] = False
        dirty |= dead
        changed |= dead
        for n, _, holder in unusable[k]:
            if n in gone or n in dead or holder in gone or holder in dead:
                return None  # who holds a broken manifest changed: a rebuild says it
    # once per node, after every change: a node a thousand gone images shared is fixed once,
    # not once per image (each fix may scan its predecessors)
    holding = {x for c in changed for x, _ in s.named(s.row(c)[SUCC]) if x not in gone}
    dirty.update(x for x in sorted(holding) if _fix_firsts(s, x, gone_ids))
    return gone_ids, dirty - gone


#: what a store's tables become once it followed an apply (:func:`follow_store`): the ids of
#: the nodes to delete, ``(body, crc, id)`` of each node changed, the plans known and ``meta``
Followed = tuple[list[int], list[tuple[bytes, int, int]], dict[str, Plan], dict[str, Any]]


def follow_store(s: StoreRows, code: str, before: Snapshot, plan: Plan, after: Snapshot,
                 index: Index, names: Sequence[int], junk: Iterable[Junk],
                 manifests: ReadManifests | None = None) -> Followed | None:
    """What the store ``s`` becomes, made by ``code`` from snapshot ``before``, to describe
    ``after``: the layout once ``plan`` was applied in full, ``index`` its index.json,
    ``names`` the :func:`~ocigraph.names_checksum` and ``junk`` of a listing made after
    ``after`` was taken (``manifests``: see :func:`follow_plan`).  ``None`` when the store
    is not the one made by ``code`` from ``before``, the listing is not what the plan leaves
    (another writer came or went), or the result could differ from a rebuild's
    (:func:`follow_plan`) -- then the rows of ``s`` may be half changed."""
    meta = s.meta
    if not (made_from(meta, code, before) and lists_as_planned(meta, plan, names, junk)):
        return None
    followed = follow_plan(s, plan, index, s.indexed(), meta["unusable"], meta["ordered"],
                           manifests)
    if followed is None:
        return None
    gone_ids, dirty = followed
    bodies = [(orjson.dumps(s.rows[d]), s.id_of[d]) for d in dirty]
    return (sorted(gone_ids), [(b, node_crc(b, i), i) for b, i in bodies],
            plans_after(plan, after[1]),
            followed_meta(meta, after, names, len(index.entries), len(gone_ids)))
