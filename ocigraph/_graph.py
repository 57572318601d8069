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

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

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


class _Interner:
    """Share one frozenset per distinct value: a million nodes, a handful of distinct sets."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[frozenset[str], frozenset[str]] = {}

    def __call__(self, items: Iterable[str]) -> frozenset[str]:
        fs = frozenset(items)
        return self._seen.setdefault(fs, fs)


class LayoutGraph(nx.DiGraph):  # type: ignore[misc]
    """The frozen graph :func:`build_graph` returns: a plain networkx ``DiGraph`` that also
    shows itself in Jupyter (a summary table, and a Mermaid picture when it is small)."""

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, str]:
        from .render import graph_mimebundle

        bundle: dict[str, str] = graph_mimebundle(self)
        return bundle


def build_graph(layout: Layout, reporter: Reporter | None = None) -> LayoutGraph:
    """The frozen graph of ``layout``.

    Nodes are digests.  Node attributes:

    ``media_types``  frozenset of every media type a descriptor gave it;
    ``size``         the blob's size if present, else the largest declared size (or 0);
    ``declared_sizes`` frozenset of sizes descriptors declared;
    ``present``      a blob file exists;
    ``tags``         frozenset of tags in index.json; ``entries`` tuple of index.json positions;
    ``indexed``      listed in index.json, tagged or not;
    ``artifact_type`` from the manifest or a descriptor, else ``None``;
    ``status``       ``"blob"`` (not read: no manifest media type), ``"ok"``, ``"missing"``,
                     ``"broken"`` (see ``error``);
    ``error``        why a manifest is unusable, else ``None``;
    ``mtime``        of the blob file, if known;
    ``platform``     from an index descriptor, as sorted pairs, else ``None``.

    Edge attribute ``roles``: frozenset of ``config layer manifest blob subject``.
    Graph attributes: ``index`` (the :class:`~ocigraph.Index`), ``fingerprint``, ``now``.

    >>> from ocigraph import layout_from_bytes
    >>> g = build_graph(layout_from_bytes(b'{"schemaVersion":2,"manifests":[]}', {}))
    >>> g.number_of_nodes(), nx.is_frozen(g)
    (0, True)
    """
    rep = reporter or _NULL_REPORTER
    intern = _Interner()
    media: dict[str, set[str]] = {}
    declared: dict[str, set[int]] = {}
    artifact: dict[str, str] = {}
    platform: dict[str, Any] = {}
    tags: dict[str, set[str]] = {}
    entries: dict[str, list[int]] = {}
    edges: dict[tuple[str, str], set[str]] = {}
    parsed: dict[str, Manifest] = {}
    expanded: set[tuple[str, str]] = set()  # (digest, manifest media type) already walked
    pending: list[tuple[str, str]] = []  # (digest, manifest media type) to walk

    def see(digest: str, media_type: str, size: int, artifact_type: str | None,
            plat: Any) -> None:
        mts = media.get(digest)
        if mts is None:
            media[digest] = mts = set()
            declared[digest] = set()
        mts.add(media_type)
        declared[digest].add(size)
        if artifact_type is not None and digest not in artifact:
            artifact[digest] = artifact_type
        if plat is not None and digest not in platform:
            platform[digest] = plat
        if media_type in SUCCESSOR_FIELDS and (digest, media_type) not in expanded:
            expanded.add((digest, media_type))
            pending.append((digest, media_type))

    rep.phase_started("read")
    for entry in layout.index.entries:
        d = entry.descriptor
        see(d.digest, d.media_type, d.size, d.artifact_type, d.platform)
        entries.setdefault(d.digest, []).append(entry.position)
        if entry.tag is not None:
            tags.setdefault(d.digest, set()).add(entry.tag)

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
                    parsed[dg] = got[dg]
                rep.manifests_read(len(to_read))
            for digest, media_type in level:
                m = parsed.get(digest)
                if m is None:  # an algorithm ocigraph does not read
                    parsed[digest] = Manifest(digest=digest, error="digest algorithm not supported")
                    continue
                fields = SUCCESSOR_FIELDS[media_type]
                for name, desc in m.refs:
                    if name in fields:
                        role = ROLE_OF_FIELD[name]
                        key = (digest, desc.digest)
                        roles = edges.get(key)
                        if roles is None:
                            edges[key] = {role}
                        else:
                            roles.add(role)
                        see(desc.digest, desc.media_type, desc.size, desc.artifact_type,
                            desc.platform)

    expand()
    # A referrer is usually referenced by nothing: it only points at its subject.  So every
    # present blob that no descriptor explains, and that is small enough to be a manifest, is
    # read once; if it is a manifest its content's media type says how to walk it.  Without
    # this, the signature of a live image that index.json does not list would look like garbage.
    blobs = layout.blobs
    unexplained = sorted(d for d, info in blobs.items()
                         if d not in media and d not in parsed and info.size <= SNIFF_LIMIT)
    if unexplained:
        got = layout.manifests.read_manifests(unexplained)
        rep.manifests_read(len(unexplained))
        for dg in unexplained:
            sniffed = got[dg]
            media_type = content_media_type(sniffed)
            if media_type is not None:
                parsed[dg] = sniffed
                see(dg, media_type, blobs[dg].size, sniffed.artifact_type, None)
        expand()
    rep.phase_finished("read")

    rep.phase_started("build")
    g = LayoutGraph(index=layout.index, fingerprint=layout.index.fingerprint, now=layout.now)
    empty: frozenset[str] = frozenset()
    nodes = []
    for digest in media.keys() | blobs.keys():
        info = blobs.get(digest)
        sizes = declared.get(digest, set())
        m = parsed.get(digest)
        if m is None:
            status, error = "blob", None
        elif m.error is not None:
            status, error = ("missing" if m.missing else "broken"), m.error
        elif info is not None and sizes and info.size not in sizes:
            status = "broken"
            error = f"descriptor size {max(sizes)} but the blob has {info.size} bytes"
        else:
            status, error = "ok", None
        art = artifact.get(digest) or (m.artifact_type if m is not None else None)
        nodes.append((digest, {
            "media_types": intern(media.get(digest, ())),
            "size": info.size if info is not None else (max(sizes) if sizes else 0),
            "declared_sizes": frozenset(sizes),
            "present": info is not None,
            "tags": intern(tags.get(digest, ())) if digest in tags else empty,
            "entries": tuple(entries.get(digest, ())),
            "indexed": digest in entries,
            "artifact_type": art,
            "status": status,
            "error": error,
            "mtime": info.mtime if info is not None else None,
            "platform": platform.get(digest),
        }))
    nodes.sort(key=lambda item: item[0])
    g.add_nodes_from(nodes)
    g.add_edges_from((u, v, {"roles": intern(r)}) for (u, v), r in edges.items())
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
    mtime = graph.nodes[digest]["mtime"]
    return now is not None and mtime is not None and now - mtime < policy.grace


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
    looks_like_digest = False
    try:
        parse_digest(ref)
        looks_like_digest = True
    except InvalidDigestError:
        if ref.split(":", 1)[0] in SWEEPABLE_ALGORITHMS:
            raise  # "sha256:abc" is a mistyped digest, not a tag
    if looks_like_digest and ref in graph:
        return ref
    index = graph.graph["index"]
    found: list[str] = []
    for e in index.entries:
        if e.tag == ref and e.digest not in found:
            found.append(e.digest)
    if not found:
        raise UnknownRefError(ref)
    if len(found) > 1:
        raise AmbiguousRefError(ref, tuple(found))
    return found[0]
