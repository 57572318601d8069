"""Build the layout's graph: read index.json and the manifests into records, then assemble the
networkx graph from them.

Rules that keep this module honest:

* one node per digest string -- never per (mediaType, digest, size): a blob referenced under two
  media types is one node (oras-go #1093);
* an edge ``u -> v`` means "u references v"; a referrer points at its subject (role
  ``subject``), so the subject is a successor of its referrer;
* every attribute value is immutable (frozensets, tuples, str), and the graph is frozen, so a
  graph handed to a notebook cannot be changed behind the planner's back;
* every walk is iterative (no recursion limit on deep nestings) and linear in nodes + edges;
* this is the hot path of a million-blob layout: the inner loops make no Python call per edge
  or node beyond what is written in them, and how the graph fits in memory is decided in one
  place (:data:`NODE_SCHEMA` and the factories below it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import networkx as nx

from ._digest import is_sweepable
from ._graph import LayoutGraph
from ._mediatypes import OCI_ARTIFACT, OCI_INDEX, OCI_MANIFEST, ROLE_OF_FIELD, SUCCESSOR_FIELDS
from ._model import BlobInfo, Layout, Manifest, Reporter

__all__ = [
    "NodeAttribute",
    "NODE_SCHEMA",
    "NODE_ATTRIBUTES",
    "encode_node_attrs",
    "decode_node_attrs",
    "encode_node_columns",
    "build_graph",
    "content_media_type",
    "SNIFF_LIMIT",
]

_NULL_REPORTER = Reporter()

#: Blobs larger than this are never read as possible manifests (registries refuse manifests
#: over 4 MiB; a layer that size is not worth hashing to find out).
SNIFF_LIMIT = 4 * 1024 * 1024


# -- the node schema, and how a million nodes fit in memory ------------------------------------


class NodeAttribute(NamedTuple):
    """One key of a node's attribute dict: its name, how JSON holds it (``value`` as is;
    ``set`` a frozenset, as a sorted list; ``tuple`` as a list; ``pairs`` sorted ``(key,
    value)`` pairs or ``None``, as a list of two-item lists or null), and what it means."""

    name: str
    encoding: Literal["value", "set", "tuple", "pairs"]
    doc: str


#: The keys :func:`build_graph` gives every node, in this order -- the one definition that a
#: store of graphs derives its columns from (:func:`encode_node_attrs`).
NODE_SCHEMA: tuple[NodeAttribute, ...] = (
    NodeAttribute("media_types", "set", "every media type a descriptor gave it"),
    NodeAttribute("size", "value",
                  "in bytes: for a manifest, what was read; for a present blob no descriptor "
                  "names or whose descriptors disagree, its file's size; otherwise the size its "
                  "descriptors declare (GC never opens a layer); 0 when nothing says"),
    NodeAttribute("declared_sizes", "set", "the sizes descriptors declared"),
    NodeAttribute("present", "value", "a blob file exists"),
    NodeAttribute("tags", "set", "the tags index.json gives it"),
    NodeAttribute("entries", "tuple", "its index.json positions"),
    NodeAttribute("indexed", "value", "listed in index.json, tagged or not"),
    NodeAttribute("artifact_type", "value", "from the manifest or a descriptor, else None"),
    NodeAttribute("status", "value",
                  '"blob" (not read: no manifest media type), "ok", "missing" or "broken"'),
    NodeAttribute("error", "value", "why a manifest is unusable, else None"),
    NodeAttribute("platform", "pairs", "from an index descriptor, as sorted pairs, else None"),
)

#: The names of :data:`NODE_SCHEMA`, in order.
NODE_ATTRIBUTES: tuple[str, ...] = tuple(a.name for a in NODE_SCHEMA)


def _attribute_factory(names: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """A function taking one value per name, in order, that returns an ordinary ``dict`` of
    them: the ``__dict__`` of a throwaway instance, filled in that order, so that every dict
    it makes shares one keys table (CPython's key-sharing dictionaries, PEP 412): about 190
    bytes a node instead of 460, a quarter of a gigabyte on a million blobs.  Nothing else
    differs; a dict that gains a key simply stops sharing.

    The function is written out as source from ``names``, as ``collections.namedtuple``
    writes its ``__new__``: filling the instance in a loop, or with ``dict.update``, costs
    three times as much per node, and this runs once per node of a million-blob layout.
    """
    if not all(n.isidentifier() for n in names):
        raise ValueError(f"attribute names must be identifiers: {names}")

    class Holder:
        pass

    source = (f"def make({', '.join(names)}):\n    h = Holder()\n"
              + "".join(f"    h.{n} = {n}\n" for n in names) + "    return h.__dict__\n")
    namespace: dict[str, Any] = {"Holder": Holder}
    exec(source, namespace)
    make: Callable[..., dict[str, Any]] = namespace["make"]
    return make


#: A node's attribute dict from its :data:`NODE_ATTRIBUTES` values, in order.
_node_attrs = _attribute_factory(NODE_ATTRIBUTES)


class _EdgeAttrs:
    """Only a factory for edge attribute dicts (see :func:`_edge_attrs`)."""


def _edge_attrs(roles: Any) -> dict[str, Any]:
    """An edge's attribute dict, ``{"roles": roles}``, sharing its keys table with every other
    edge's as :func:`_node_attrs` does (about 100 bytes an edge instead of 180)."""
    a = _EdgeAttrs()
    a.roles = roles  # type: ignore[attr-defined]
    return a.__dict__


class _Interner:
    """Share one frozenset per distinct value: a million nodes, a handful of distinct sets."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[frozenset[Any], frozenset[Any]] = {}

    def __call__(self, items: Iterable[Any]) -> frozenset[Any]:
        fs = frozenset(items)
        return self._seen.setdefault(fs, fs)


def encode_node_attrs(attrs: Mapping[str, Any]) -> list[Any]:
    """A node's attributes as a JSON-able list, in :data:`NODE_ATTRIBUTES` order.

    >>> encode_node_attrs(decode_node_attrs([["b", "a"], 3, [3], True, [], [0], True, None,
    ...                                      "ok", None, [["os", "linux"]]]))[:2]
    [['a', 'b'], 3]
    """
    out: list[Any] = []
    for name, encoding, _ in NODE_SCHEMA:
        value = attrs[name]
        if encoding == "set":
            value = sorted(value)
        elif encoding == "tuple" or (encoding == "pairs" and value is not None):
            value = [list(v) for v in value] if encoding == "pairs" else list(value)
        out.append(value)
    return out


def encode_node_columns(nodes: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """:func:`encode_node_attrs` of many nodes, one column per attribute: a comprehension per
    column rather than a Python call per value, and one sorted list per distinct set (JSON
    encoders take tuples as lists already).

    >>> encode_node_columns([decode_node_attrs([["b", "a"], 3, [3], True, [], [0], True, None,
    ...                                         "ok", None, None])])[:2]
    [[['a', 'b']], [3]]
    """
    listed: dict[frozenset[Any], list[Any]] = {}

    def as_list(fs: frozenset[Any]) -> list[Any]:
        got = listed.get(fs)
        if got is None:
            got = listed[fs] = sorted(fs)
        return got

    columns = []
    for name, encoding, _ in NODE_SCHEMA:
        values = [a[name] for a in nodes]
        if encoding == "set":
            values = [list(v) if len(v) < 2 else as_list(v) for v in values]
        columns.append(values)
    return columns


def decode_node_attrs(values: Sequence[Any]) -> dict[str, Any]:
    """The attribute dict :func:`encode_node_attrs` encoded, as :func:`build_graph` makes it.

    >>> decode_node_attrs([[], 0, [], True, ["v1"], [0], True, None, "blob", None, None])["tags"]
    frozenset({'v1'})
    """
    if len(values) != len(NODE_SCHEMA):
        raise ValueError(f"{len(values)} node attribute values, not {len(NODE_SCHEMA)}")
    decoded = []
    for (_, encoding, _), value in zip(NODE_SCHEMA, values, strict=True):
        if encoding == "set":
            value = frozenset(value)
        elif encoding == "tuple":
            value = tuple(value)
        elif encoding == "pairs" and value is not None:
            value = tuple(tuple(pair) for pair in value)
        decoded.append(value)
    return _node_attrs(*decoded)


# -- reading: index.json and manifests into one record per digest ----------------------------

# Everything known about a digest seen in a descriptor is one record (a list), so that making
# its node costs one lookup in a big dict rather than eight (on a million nodes those lookups,
# each a cache miss, were most of the time).  The slots:
#   media types, declared sizes, artifactType, platform   (a value, or a set once two differ;
#                                                           first non-None artifactType/platform)
#   index.json positions, tags, the manifest read, successors, predecessors
# Successors and predecessors are networkx's own inner adjacency dicts, filled in the order
# add_edges_from would fill them (first occurrence of each edge), one attribute dict per edge
# shared by both sides.
_MEDIA, _SIZES, _ART, _PLAT, _POS, _TAGS, _READ, _SUCC, _PRED = range(9)


def content_media_type(m: Manifest) -> str | None:
    """How to walk a manifest found without a descriptor: the ``mediaType`` its content
    declares, else what its fields imply; ``None`` if it is not a usable manifest.

    >>> content_media_type(Manifest(digest="sha256:" + "0" * 64, media_type=OCI_INDEX))
    'application/vnd.oci.image.index.v1+json'
    >>> content_media_type(Manifest(digest="sha256:" + "0" * 64, error="not valid JSON")) is None
    True
    """
    if m.error is not None:
        return None
    if m.media_type in SUCCESSOR_FIELDS:
        return m.media_type
    if m.media_type is not None:
        return None
    fields = {name for name, _ in m.refs}
    for media_type in (OCI_INDEX, OCI_ARTIFACT, OCI_MANIFEST):
        own = set(SUCCESSOR_FIELDS[media_type]) - {"subject"}
        if fields & own:
            return media_type
    return OCI_MANIFEST if "subject" in fields else None


def _add(rec: list[Any], slot: int, value: Any) -> None:
    """Add ``value`` to the set in ``rec[slot]``, which holds a single value until there are two
    (one media type and one size per digest is the rule: a set each would double the memory
    of a million-node build)."""
    held = rec[slot]
    if type(held) is set:
        held.add(value)
    elif held != value:
        rec[slot] = {held, value}


def _see(seen: dict[str, list[Any]], pending: list[tuple[str, str]],
         expanded: set[tuple[str, str]], digest: str, media_type: str, size: int,
         artifact_type: str | None, plat: Any) -> list[Any]:
    """Record one descriptor of ``digest``; queue the manifest it describes to be walked."""
    rec = seen.get(digest)
    if rec is None:
        seen[digest] = rec = [media_type, size, artifact_type, plat, None, None, None, None, None]
    else:
        _add(rec, _MEDIA, media_type)
        _add(rec, _SIZES, size)
        if rec[_ART] is None:
            rec[_ART] = artifact_type
        if rec[_PLAT] is None:
            rec[_PLAT] = plat
    if media_type in SUCCESSOR_FIELDS and (digest, media_type) not in expanded:
        expanded.add((digest, media_type))
        pending.append((digest, media_type))
    return rec


def _walk(layout: Layout, rep: Reporter, seen: dict[str, list[Any]],
          parsed: dict[str, Manifest], expanded: set[tuple[str, str]],
          pending: list[tuple[str, str]]) -> None:
    """Walk the manifests in ``pending`` (the list is the walk's to keep) and all they lead to,
    breadth-first by levels, each level one batch for the source (so an adapter can read files in parallel or answer from a
    cache).  The hottest loop of a cold run: :func:`_see` is written out in it."""
    while pending:
        level, pending = pending, []
        to_read = sorted({d for d, _ in level if d not in parsed and is_sweepable(d)})
        if to_read:
            got = layout.manifests.read_manifests(to_read)
            for dg in to_read:
                parsed[dg] = seen[dg][_READ] = got[dg]
            rep.manifests_read(len(to_read))
        for digest, media_type in level:
            m = parsed.get(digest)
            rec = seen[digest]
            if m is None:  # an algorithm ocigraph does not read
                m = Manifest(digest=digest, error="digest algorithm not supported")
                parsed[digest] = rec[_READ] = m
                continue
            fields = SUCCESSOR_FIELDS[media_type]
            out = rec[_SUCC]
            for name, desc in m.refs:
                if name not in fields:
                    continue
                child = desc.digest
                mt = desc.media_type
                crec = seen.get(child)
                if crec is None:
                    seen[child] = crec = [mt, desc.size, desc.artifact_type, desc.platform,
                                          None, None, None, None, None]
                else:
                    _add(crec, _MEDIA, mt)
                    _add(crec, _SIZES, desc.size)
                    if crec[_ART] is None:
                        crec[_ART] = desc.artifact_type
                    if crec[_PLAT] is None:
                        crec[_PLAT] = desc.platform
                if mt in SUCCESSOR_FIELDS and (child, mt) not in expanded:
                    expanded.add((child, mt))
                    pending.append((child, mt))
                if out is None:
                    rec[_SUCC] = out = {}
                attrs = out.get(child)
                if attrs is None:
                    out[child] = attrs = _edge_attrs({ROLE_OF_FIELD[name]})
                    into = crec[_PRED]
                    if into is None:
                        crec[_PRED] = {digest: attrs}
                    else:
                        into[digest] = attrs
                else:
                    attrs["roles"].add(ROLE_OF_FIELD[name])


def _read(layout: Layout, rep: Reporter) -> dict[str, list[Any]]:
    """One record per digest a descriptor names: index.json's entries, every manifest they
    lead to, and the referrers nothing lists (found by reading the unexplained small blobs)."""
    seen: dict[str, list[Any]] = {}
    parsed: dict[str, Manifest] = {}
    expanded: set[tuple[str, str]] = set()  # (digest, manifest media type) already walked
    pending: list[tuple[str, str]] = []  # (digest, manifest media type) to walk
    for entry in layout.index.entries:
        d = entry.descriptor
        rec = _see(seen, pending, expanded, d.digest, d.media_type, d.size, d.artifact_type,
                   d.platform)
        if rec[_POS] is None:
            rec[_POS] = []
        rec[_POS].append(entry.position)
        if entry.tag is not None:
            if rec[_TAGS] is None:
                rec[_TAGS] = set()
            rec[_TAGS].add(entry.tag)
    _walk(layout, rep, seen, parsed, expanded, pending)
    # A referrer is usually referenced by nothing: it only points at its subject.  So every
    # present blob that no descriptor explains, and that is small enough to be a manifest, is
    # read once; if it is a manifest its content's media type says how to walk it.  Without
    # this, the signature of a live image that index.json does not list would look like garbage.
    blobs = layout.blobs
    unexplained = sorted(d for d in blobs
                         if d not in seen and d not in parsed and blobs[d].size <= SNIFF_LIMIT)
    if unexplained:
        pending = []  # (the first walk took its own list)
        got = layout.manifests.read_manifests(unexplained)
        rep.manifests_read(len(unexplained))
        for dg in unexplained:
            sniffed = got[dg]
            media_type = content_media_type(sniffed)
            if media_type is not None:
                parsed[dg] = sniffed
                _see(seen, pending, expanded, dg, media_type, blobs[dg].size,
                     sniffed.artifact_type, None)[_READ] = sniffed
        _walk(layout, rep, seen, parsed, expanded, pending)
    return seen


# -- assembling: records into networkx's own dicts ---------------------------------------------


def _intern_roles(seen: Mapping[str, list[Any]], intern: _Interner) -> None:
    """Turn every edge's set of roles into a shared frozenset (most edges have one role)."""
    one_role: dict[str, frozenset[str]] = {}
    for rec in seen.values():
        out = rec[_SUCC]
        if out is None:
            continue
        for attrs in out.values():
            roles = attrs["roles"]
            if len(roles) == 1:
                (role,) = roles
                fs = one_role.get(role)
                if fs is None:
                    one_role[role] = fs = intern(roles)
                attrs["roles"] = fs
            else:
                attrs["roles"] = intern(roles)


def _assemble(g: LayoutGraph, seen: dict[str, list[Any]], blobs: Mapping[str, BlobInfo],
              file_sizes: bool) -> None:
    """Make the nodes and edges of ``g`` from the records, emptying ``seen`` as it goes.

    Nodes go into networkx's own dicts, in sorted order, each with a fresh attribute dict and
    fresh adjacency dicts -- exactly what add_nodes_from + add_edges_from would leave, without
    copying a million attribute dicts.  ``g`` is new: no cached view can be stale.  Records are
    dropped as their nodes are made, and with them the manifests they hold: the peak memory is
    the graph's, not the graph's plus everything read to make it.
    """
    intern = _Interner()
    _intern_roles(seen, intern)
    empty: frozenset[str] = frozenset()
    no_sizes: frozenset[int] = frozenset()
    one_media: dict[str, frozenset[str]] = {}  # interned {media type}: most nodes have one
    node_dicts, succ_dicts, pred_dicts = g._node, g._succ, g._pred
    seen_pop = seen.pop
    for digest in sorted(seen.keys() | blobs.keys()):
        found = seen_pop(digest, None)
        if found is None:  # a blob no descriptor names (its size was needed to sniff it)
            node_dicts[digest] = _node_attrs(empty, blobs[digest].size, no_sizes, True, empty,
                                             (), False, None, "blob", None, None)
            succ_dicts[digest] = {}
            pred_dicts[digest] = {}
            continue
        mts, sizes, art, plat, positions, node_tags, m, out, into = found
        if type(mts) is set:
            media_types = intern(mts)
        elif mts in one_media:
            media_types = one_media[mts]
        else:
            media_types = one_media[mts] = intern((mts,))
        if type(sizes) is not set:
            sizes = (sizes,)
        present = digest in blobs
        # The size: what was read if this is a manifest; the declared size if descriptors
        # agree on one; the file's size (a stat, through the layout's mapping) otherwise.
        if m is not None and m.size is not None and present:
            size = m.size
        elif not present:
            size = max(sizes) if sizes else 0
        elif len(sizes) == 1 and not file_sizes:
            (size,) = sizes
        else:
            size = blobs[digest].size
        if m is None:
            status, error = "blob", None
        elif m.error is not None:
            status, error = ("missing" if m.missing else "broken"), m.error
        elif present and sizes and size not in sizes:
            status = "broken"
            error = f"descriptor size {max(sizes)} but the blob has {size} bytes"
        else:
            status, error = "ok", None
        if not art:
            art = m.artifact_type if m is not None else None
        node_dicts[digest] = _node_attrs(
            media_types, size, frozenset(sizes), present,
            empty if node_tags is None else intern(node_tags),
            () if positions is None else tuple(positions), positions is not None,
            art, status, error, plat,
        )
        succ_dicts[digest] = {} if out is None else out
        pred_dicts[digest] = {} if into is None else into


def build_graph(layout: Layout, reporter: Reporter | None = None, *,
                file_sizes: bool = False, mtimes: bool = False) -> LayoutGraph:
    """The frozen graph of ``layout``.

    Nodes are digests, with the attributes of :data:`NODE_SCHEMA`.  Edge attribute ``roles``:
    frozenset of ``config layer manifest blob subject``.  Graph attributes: ``index`` (the
    :class:`~ocigraph.Index`), ``fingerprint`` and ``now``, and with ``mtimes`` also
    ``mtimes``: a read-only ``{digest: modification time}`` of the present blobs whose time
    the layout knows.

    ``file_sizes``: give every present blob the size of its file (asking ``layout.blobs`` for
    each; an adapter may ``stat`` them all) rather than trusting the size its descriptors
    agree on -- for reports of disk use; GC never needs it.  ``mtimes``: record every present
    blob's modification time (again asking ``layout.blobs`` for each), which a policy with
    ``grace`` needs; without it such a policy is refused on this graph.

    >>> from ocigraph import layout_from_bytes
    >>> g = build_graph(layout_from_bytes(b'{"schemaVersion":2,"manifests":[]}', {}))
    >>> g.number_of_nodes(), nx.is_frozen(g), "mtimes" in g.graph
    (0, True, False)
    """
    rep = reporter or _NULL_REPORTER
    rep.phase_started("read")
    seen = _read(layout, rep)
    rep.phase_finished("read")
    rep.phase_started("build")
    attrs: dict[str, Any] = {"index": layout.index, "fingerprint": layout.index.fingerprint,
                             "now": layout.now}
    if mtimes:
        blobs = layout.blobs
        times = ((d, blobs[d].mtime) for d in blobs)
        attrs["mtimes"] = MappingProxyType({d: t for d, t in times if t is not None})
    g = LayoutGraph(**attrs)
    _assemble(g, seen, layout.blobs, file_sizes)
    rep.phase_finished("build")
    nx.freeze(g)
    return g
