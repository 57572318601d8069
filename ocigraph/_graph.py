"""Build the layout's graph, and the queries people ask of it.

Rules that keep this module honest:

* one node per digest string -- never per (mediaType, digest, size): a blob referenced under two
  media types is one node (oras-go #1093);
* an edge ``u -> v`` means "u references v"; a referrer points at its subject (role
  ``subject``), so the subject is a successor of its referrer;
* every attribute value is immutable (frozensets, tuples, str), and the graph is frozen, so a
  graph handed to a notebook cannot be changed behind the planner's back;
* every walk is iterative (no recursion limit on deep nestings) and linear in nodes + edges.
"""

from __future__ import annotations

import functools
import gc
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

import networkx as nx

from ._digest import SWEEPABLE_ALGORITHMS, is_sweepable, parse_digest
from ._errors import AmbiguousRefError, InvalidDigestError, UnknownRefError
from ._mediatypes import OCI_ARTIFACT, OCI_INDEX, OCI_MANIFEST, ROLE_OF_FIELD, SUCCESSOR_FIELDS
from ._model import Layout, Manifest, Reporter
from ._policy import Policy

__all__ = [
    "LayoutGraph",
    "build_graph",
    "referrers_of",
    "successors_of",
    "tags_of",
    "roots",
    "live_set",
    "why_live",
    "resolve_ref",
    "is_young",
]

_NULL_REPORTER = Reporter()

#: Blobs larger than this are never read as possible manifests (registries refuse manifests
#: over 4 MiB; a layer that size is not worth hashing to find out).
SNIFF_LIMIT = 4 * 1024 * 1024


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


_P = ParamSpec("_P")
_R = TypeVar("_R")


def pauses_gc(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with Python's cyclic garbage collector paused, then restore it.

    Building a graph makes millions of small containers; every few hundred allocations the
    collector would walk all the live ones -- at 100k blobs that was half the time of
    :func:`build_graph`.  What is made here is freed by reference counting as usual; the
    collector only runs later.
    """
    @functools.wraps(fn)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()
    return paused


class _Interner:
    """Share one frozenset per distinct value: a million nodes, a handful of distinct sets."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[frozenset[str], frozenset[str]] = {}

    def __call__(self, items: Iterable[str]) -> frozenset[str]:
        fs = frozenset(items)
        return self._seen.setdefault(fs, fs)


def _add(rec: list[Any], slot: int, value: Any) -> None:
    """Add ``value`` to the set in ``rec[slot]``, which holds a single value until there are two
    (one media type and one size per digest is the rule: a set each would double the memory
    of a million-node build)."""
    held = rec[slot]
    if type(held) is set:
        held.add(value)
    elif held != value:
        rec[slot] = {held, value}


class _NodeAttrs:
    """Only a factory for node attribute dicts (see :func:`_node_attrs`)."""


def _node_attrs(media_types: frozenset[str], size: int, declared_sizes: frozenset[int],
                present: bool, tags: frozenset[str], entries: tuple[int, ...], indexed: bool,
                artifact_type: str | None, status: str, error: str | None,
                platform: Any) -> dict[str, Any]:
    """A node's attribute dict: an ordinary ``dict`` with these eleven keys, in this order.

    It is made as the ``__dict__`` of a throwaway instance so that every node shares one keys
    table (CPython's key-sharing dictionaries, PEP 412): about 190 bytes a node instead of 460,
    a quarter of a gigabyte on a million blobs.  Nothing else differs; a dict that gains a key
    simply stops sharing.
    """
    a = _NodeAttrs()
    a.media_types = media_types  # type: ignore[attr-defined]
    a.size = size  # type: ignore[attr-defined]
    a.declared_sizes = declared_sizes  # type: ignore[attr-defined]
    a.present = present  # type: ignore[attr-defined]
    a.tags = tags  # type: ignore[attr-defined]
    a.entries = entries  # type: ignore[attr-defined]
    a.indexed = indexed  # type: ignore[attr-defined]
    a.artifact_type = artifact_type  # type: ignore[attr-defined]
    a.status = status  # type: ignore[attr-defined]
    a.error = error  # type: ignore[attr-defined]
    a.platform = platform  # type: ignore[attr-defined]
    return a.__dict__


class _EdgeAttrs:
    """Only a factory for edge attribute dicts (see :func:`_edge_attrs`)."""


def _edge_attrs(roles: Any) -> dict[str, Any]:
    """An edge's attribute dict, ``{"roles": roles}``, sharing its keys table with every other
    edge's as :func:`_node_attrs` does (about 100 bytes an edge instead of 180)."""
    a = _EdgeAttrs()
    a.roles = roles  # type: ignore[attr-defined]
    return a.__dict__


class LayoutGraph(nx.DiGraph):  # type: ignore[misc]
    """The frozen graph :func:`build_graph` returns: a plain networkx ``DiGraph`` that also
    shows itself in Jupyter (a summary table, and a Mermaid picture when it is small)."""

    def _repr_mimebundle_(self, include: Iterable[str] | None = None,
                          exclude: Iterable[str] | None = None) -> dict[str, str]:
        from .render import graph_mimebundle

        bundle: dict[str, str] = graph_mimebundle(self, include, exclude)
        return bundle


@pauses_gc
def build_graph(layout: Layout, reporter: Reporter | None = None, *,
                file_sizes: bool = False) -> LayoutGraph:
    """The frozen graph of ``layout``.

    ``file_sizes``: give every present blob the size of its file (asking ``layout.blobs`` for
    each; an adapter may ``stat`` them all) rather than trusting the size its descriptors
    agree on -- for reports of disk use; GC never needs it.

    Nodes are digests.  Node attributes:

    ``media_types``  frozenset of every media type a descriptor gave it;
    ``size``         in bytes: for a manifest, what was read; for a present blob no descriptor
                     names or whose descriptors disagree, its file's size; otherwise the size
                     its descriptors declare (GC never opens a layer, so its file is not
                     looked at; with ``file_sizes``, its file's size); 0 when nothing says;
    ``declared_sizes`` frozenset of sizes descriptors declared;
    ``present``      a blob file exists;
    ``tags``         frozenset of tags in index.json; ``entries`` tuple of index.json positions;
    ``indexed``      listed in index.json, tagged or not;
    ``artifact_type`` from the manifest or a descriptor, else ``None``;
    ``status``       ``"blob"`` (not read: no manifest media type), ``"ok"``, ``"missing"``,
                     ``"broken"`` (see ``error``);
    ``error``        why a manifest is unusable, else ``None``;
    ``platform``     from an index descriptor, as sorted pairs, else ``None``.

    Edge attribute ``roles``: frozenset of ``config layer manifest blob subject``.
    Graph attributes: ``index`` (the :class:`~ocigraph.Index`), ``fingerprint``, ``now``, and
    ``blobs``, the layout's present-blob mapping (where ``grace`` finds modification times).

    >>> from ocigraph import layout_from_bytes
    >>> g = build_graph(layout_from_bytes(b'{"schemaVersion":2,"manifests":[]}', {}))
    >>> g.number_of_nodes(), nx.is_frozen(g)
    (0, True)
    """
    rep = reporter or _NULL_REPORTER
    intern = _Interner()
    # Everything known about a digest seen in a descriptor is one record, so that building a
    # node costs one lookup in a big dict rather than eight (on a million nodes those lookups,
    # each a cache miss, were most of the time):
    #   [media types, declared sizes, artifactType, platform,   (first non-None wins)
    #    index.json positions, tags, manifest read, successors, predecessors]
    # Successors and predecessors are networkx's own inner adjacency dicts, filled in the order
    # add_edges_from would fill them (first occurrence of each edge), one attribute dict per
    # edge shared by both sides.
    MEDIA, SIZES, ART, PLAT, POS, TAGS, READ, SUCC, PRED = range(9)
    seen: dict[str, list[Any]] = {}
    parsed: dict[str, Manifest] = {}
    expanded: set[tuple[str, str]] = set()  # (digest, manifest media type) already walked
    pending: list[tuple[str, str]] = []  # (digest, manifest media type) to walk

    def see(digest: str, media_type: str, size: int, artifact_type: str | None,
            plat: Any) -> list[Any]:
        rec = seen.get(digest)
        if rec is None:
            seen[digest] = rec = [media_type, size, artifact_type, plat,
                                  None, None, None, None, None]
        else:
            _add(rec, MEDIA, media_type)
            _add(rec, SIZES, size)
            if rec[ART] is None:
                rec[ART] = artifact_type
            if rec[PLAT] is None:
                rec[PLAT] = plat
        if media_type in SUCCESSOR_FIELDS and (digest, media_type) not in expanded:
            expanded.add((digest, media_type))
            pending.append((digest, media_type))
        return rec

    rep.phase_started("read")
    for entry in layout.index.entries:
        d = entry.descriptor
        rec = see(d.digest, d.media_type, d.size, d.artifact_type, d.platform)
        if rec[POS] is None:
            rec[POS] = []
        rec[POS].append(entry.position)
        if entry.tag is not None:
            if rec[TAGS] is None:
                rec[TAGS] = set()
            rec[TAGS].add(entry.tag)

    def expand() -> None:
        """Walk ``pending`` breadth-first by levels, each level one batch for the source
        (so an adapter can read files in parallel or answer from a cache)."""
        nonlocal pending
        while pending:
            level, pending = pending, []
            to_read = sorted({d for d, _ in level if d not in parsed and is_sweepable(d)})
            if to_read:
                got = layout.manifests.read_manifests(to_read)
                for dg in to_read:
                    parsed[dg] = seen[dg][READ] = got[dg]
                rep.manifests_read(len(to_read))
            for digest, media_type in level:
                m = parsed.get(digest)
                rec = seen[digest]
                if m is None:  # an algorithm ocigraph does not read
                    m = Manifest(digest=digest, error="digest algorithm not supported")
                    parsed[digest] = rec[READ] = m
                    continue
                fields = SUCCESSOR_FIELDS[media_type]
                out = rec[SUCC]
                for name, desc in m.refs:
                    if name in fields:
                        role = ROLE_OF_FIELD[name]
                        child = desc.digest
                        # see(), inlined: this is the hottest loop of a cold run
                        mt = desc.media_type
                        crec = seen.get(child)
                        if crec is None:
                            seen[child] = crec = [mt, desc.size, desc.artifact_type,
                                                  desc.platform, None, None, None, None, None]
                        else:
                            _add(crec, MEDIA, mt)
                            _add(crec, SIZES, desc.size)
                            if crec[ART] is None:
                                crec[ART] = desc.artifact_type
                            if crec[PLAT] is None:
                                crec[PLAT] = desc.platform
                        if mt in SUCCESSOR_FIELDS and (child, mt) not in expanded:
                            expanded.add((child, mt))
                            pending.append((child, mt))
                        if out is None:
                            rec[SUCC] = out = {}
                        attrs = out.get(child)
                        if attrs is None:
                            out[child] = attrs = _edge_attrs({role})
                            into = crec[PRED]
                            if into is None:
                                crec[PRED] = {digest: attrs}
                            else:
                                into[digest] = attrs
                        else:
                            attrs["roles"].add(role)

    expand()
    # A referrer is usually referenced by nothing: it only points at its subject.  So every
    # present blob that no descriptor explains, and that is small enough to be a manifest, is
    # read once; if it is a manifest its content's media type says how to walk it.  Without
    # this, the signature of a live image that index.json does not list would look like garbage.
    blobs = layout.blobs
    unexplained = sorted(d for d in blobs
                         if d not in seen and d not in parsed and blobs[d].size <= SNIFF_LIMIT)
    if unexplained:
        got = layout.manifests.read_manifests(unexplained)
        rep.manifests_read(len(unexplained))
        for dg in unexplained:
            sniffed = got[dg]
            media_type = content_media_type(sniffed)
            if media_type is not None:
                parsed[dg] = sniffed
                see(dg, media_type, blobs[dg].size, sniffed.artifact_type, None)[READ] = sniffed
        expand()
    rep.phase_finished("read")

    rep.phase_started("build")
    g = LayoutGraph(index=layout.index, fingerprint=layout.index.fingerprint, now=layout.now,
                    blobs=blobs)
    empty: frozenset[str] = frozenset()
    no_sizes: frozenset[int] = frozenset()
    one_media: dict[str, frozenset[str]] = {}  # interned {media type}: most nodes have one
    one_role: dict[str, frozenset[str]] = {}
    for rec in seen.values():
        out = rec[SUCC]
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
    # Nodes go into networkx's own dicts, in sorted order, each with a fresh attribute dict and
    # fresh adjacency dicts -- exactly what add_nodes_from + add_edges_from would leave, without
    # copying a million attribute dicts.  The graph is new: no cached view can be stale.
    node_dicts, succ_dicts, pred_dicts = g._node, g._succ, g._pred
    # Records are dropped as their nodes are made, and with them the manifests they hold: the
    # graph's peak memory is the graph's, not the graph's plus everything read to make it.
    seen_pop = seen.pop
    keys = sorted(seen.keys() | blobs.keys())
    parsed.clear()
    expanded.clear()
    for digest in keys:
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
            media_types,
            size,
            frozenset(sizes),
            present,
            empty if node_tags is None else intern(node_tags),
            () if positions is None else tuple(positions),
            positions is not None,
            art,
            status,
            error,
            plat,
        )
        succ_dicts[digest] = {} if out is None else out
        pred_dicts[digest] = {} if into is None else into
    rep.phase_finished("build")
    nx.freeze(g)
    return g


def referrers_of(graph: nx.DiGraph, digest: str) -> tuple[str, ...]:
    """Nodes whose ``subject`` is ``digest`` (direct referrers only), sorted.

    Predecessors whose edge carries the ``subject`` role; an index merely listing the node is not
    a referrer.
    """
    pred = graph.pred[digest]
    return tuple(sorted(p for p, a in pred.items() if "subject" in a["roles"]))


def successors_of(graph: nx.DiGraph, digest: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """``(successor, roles)`` pairs of ``digest``, sorted by successor."""
    return tuple(sorted((s, a["roles"]) for s, a in graph.succ[digest].items()))


def tags_of(graph: nx.DiGraph, digest: str) -> frozenset[str]:
    """The tags index.json gives ``digest``."""
    tags: frozenset[str] = graph.nodes[digest]["tags"]
    return tags


def is_young(graph: nx.DiGraph, digest: str, policy: Policy) -> bool:
    """True when ``policy.grace`` protects the blob: it is younger than grace at snapshot time."""
    if policy.grace <= 0:
        return False
    now = graph.graph.get("now")
    if now is None:
        return False
    info = graph.graph.get("blobs", {}).get(digest)
    mtime = None if info is None else info.mtime
    return mtime is not None and now - mtime < policy.grace


def roots(graph: nx.DiGraph, policy: Policy) -> frozenset[str]:
    """GC roots: tagged nodes; every index.json entry under ``keep_untagged``; young blobs.

    >>> from ocigraph import layout_from_bytes
    >>> roots(build_graph(layout_from_bytes(b'{"schemaVersion":2,"manifests":[]}', {})), Policy())
    frozenset()
    """
    key = "indexed" if policy.keep_untagged else "tags"
    out = {n for n, v in graph.nodes(data=key) if v}
    if policy.grace > 0:
        out.update(n for n in graph if is_young(graph, n, policy))
    return frozenset(out)


def _walk_live(graph: nx.DiGraph, start: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    """Yield ``(node, parent)`` in BFS order over successors and, to a fixpoint, referrers."""
    succ, pred = graph._succ, graph._pred
    seen = set()
    queue: deque[tuple[str, str | None]] = deque()
    for r in sorted(start):
        seen.add(r)
        queue.append((r, None))
    while queue:
        n, parent = queue.popleft()
        yield n, parent
        for s in succ[n]:
            if s not in seen:
                seen.add(s)
                queue.append((s, n))
        for p, attrs in pred[n].items():
            if p not in seen and "subject" in attrs["roles"]:
                seen.add(p)
                queue.append((p, n))


def live_set(graph: nx.DiGraph, policy: Policy | None = None,
             root_set: Iterable[str] | None = None) -> frozenset[str]:
    """Everything live: the successor closure of the roots, plus every referrer of a live node.

    Referrers are followed to a fixpoint, however long the chain (``sig -> sbom -> image``),
    and every node is visited once, so a cycle cannot hang it.
    """
    start = roots(graph, policy or Policy()) if root_set is None else root_set
    return frozenset(n for n, _ in _walk_live(graph, start))


def why_live(graph: nx.DiGraph, digest: str, policy: Policy | None = None) -> tuple[str, ...] | None:
    """A shortest path from a root to ``digest`` (root first), or ``None`` when it is garbage.

    A step from a subject to its referrer appears as is: the referrer is live *because* its
    subject is.
    """
    if digest not in graph:
        raise UnknownRefError(digest)
    parents: dict[str, str | None] = {}
    for n, parent in _walk_live(graph, roots(graph, policy or Policy())):
        parents[n] = parent
        if n == digest:
            path = [n]
            while (p := parents[path[-1]]) is not None:
                path.append(p)
            return tuple(reversed(path))
    return None


def resolve_ref(graph: nx.DiGraph, ref: str) -> str:
    """The digest a tag or digest names.

    A digest must be a node of the graph; a tag must name exactly one digest, else
    :class:`AmbiguousRefError` lists them all.
    """
    if is_view(graph) and ref not in graph:
        raise ValueError(f"a neighbourhood view names its nodes by digest; {ref!r} is not one of "
                         "them (resolve tags in its source: ocigraph.resolve_in)")
    return resolve_with(ref, graph.__contains__, lambda tag: tagged_digests(graph, tag))


def tagged_digests(graph: nx.DiGraph, tag: str) -> list[str]:
    """The digests index.json gives ``tag``, in index.json order (more than one: ambiguous)."""
    found: list[str] = []
    for e in graph.graph["index"].entries:
        if e.tag == tag and e.digest not in found:
            found.append(e.digest)
    return found


def is_view(graph: nx.DiGraph) -> bool:
    """Whether ``graph`` is a neighbourhood view (:func:`ocigraph.neighbourhood`), which
    carries the whole graph's liveness instead of the whole graph."""
    return "liveness" in graph.graph


def resolve_with(ref: str, has: Callable[[str], bool], tagged: Callable[[str], Any]) -> str:
    """:func:`resolve_ref` given ``has(digest)`` (is it a node?) and ``tagged(tag)`` (the
    digests a tag names, in index.json order) -- for sources other than a built graph."""
    looks_like_digest = False
    try:
        parse_digest(ref)
        looks_like_digest = True
    except InvalidDigestError:
        if ref.split(":", 1)[0] in SWEEPABLE_ALGORITHMS:
            raise  # "sha256:abc" is a mistyped digest, not a tag
    if looks_like_digest and has(ref):
        return ref
    found = list(tagged(ref))
    if not found:
        raise UnknownRefError(ref)
    if len(found) > 1:
        raise AmbiguousRefError(ref, tuple(found))
    return str(found[0])
