"""build_graph builds exactly the graph a plain networkx builder builds.

``build_graph`` fills networkx's inner dicts itself (key-sharing attribute dicts, interned
frozensets, no add_edges_from) to fit a million blobs; the reference below does the same job
the obvious way -- a FIFO walk of the manifests, then ``add_nodes_from`` and
``add_edges_from`` -- and the two must agree on everything a caller can see: nodes and their
order, every attribute and its key order, edges and roles, and the order of every adjacency.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import networkx as nx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ocigraph as og
from ocigraph.testing import GeneratedLayout, generated_layouts

MANIFEST_FIELDS = {  # SEMANTICS §1, written out here again
    "application/vnd.oci.image.manifest.v1+json": ("subject", "config", "layers"),
    "application/vnd.oci.image.index.v1+json": ("subject", "manifests"),
    "application/vnd.oci.artifact.manifest.v1+json": ("subject", "blobs"),
    "application/vnd.docker.distribution.manifest.v2+json": ("config", "layers"),
    "application/vnd.docker.distribution.manifest.list.v2+json": ("manifests",),
}
ROLES = {"subject": "subject", "config": "config", "layers": "layer", "manifests": "manifest",
         "blobs": "blob"}
KNOWN_ALGORITHMS = ("sha256", "sha384", "sha512")
LARGEST_MANIFEST = 4 * 1024 * 1024


def walk_media_type(m: og.Manifest) -> str | None:
    """How a manifest nothing describes is walked: its declared media type, else the one its
    fields imply (an index, an artifact, an image; an image if it has only a subject)."""
    if m.error is not None:
        return None
    if m.media_type is not None:
        return m.media_type if m.media_type in MANIFEST_FIELDS else None
    fields = {name for name, _ in m.refs}
    for media_type in ("application/vnd.oci.image.index.v1+json",
                       "application/vnd.oci.artifact.manifest.v1+json",
                       "application/vnd.oci.image.manifest.v1+json"):
        if fields & (set(MANIFEST_FIELDS[media_type]) - {"subject"}):
            return media_type
    return "application/vnd.oci.image.manifest.v1+json" if "subject" in fields else None


def reference_graph(layout: og.Layout, *, file_sizes: bool = False) -> nx.DiGraph:
    """The graph of ``layout``, built plainly: descriptors and edges in walk order, then
    ``add_nodes_from`` in digest order and ``add_edges_from`` in walk order."""
    described: dict[str, list[tuple[str, int, Any, Any]]] = {}  # digest -> descriptors seen
    read: dict[str, og.Manifest] = {}
    edges: list[tuple[str, str, str]] = []
    walked: set[tuple[str, str]] = set()
    queue: deque[tuple[str, str]] = deque()

    def describe(digest: str, media_type: str, size: int, artifact_type: Any, platform: Any):
        described.setdefault(digest, []).append((media_type, size, artifact_type, platform))
        if media_type in MANIFEST_FIELDS and (digest, media_type) not in walked:
            walked.add((digest, media_type))
            queue.append((digest, media_type))

    def walk() -> None:
        while queue:
            digest, media_type = queue.popleft()
            if digest not in read:
                if digest.split(":")[0] in KNOWN_ALGORITHMS:
                    read[digest] = layout.manifests.read_manifests([digest])[digest]
                else:
                    read[digest] = og.Manifest(digest, error="digest algorithm not supported")
                    continue
            for name, d in read[digest].refs:
                if name in MANIFEST_FIELDS[media_type]:
                    edges.append((digest, d.digest, ROLES[name]))
                    describe(d.digest, d.media_type, d.size, d.artifact_type, d.platform)

    for e in layout.index.entries:
        d = e.descriptor
        describe(d.digest, d.media_type, d.size, d.artifact_type, d.platform)
    walk()
    blobs = layout.blobs
    for digest in sorted(blobs):
        if digest not in described and digest not in read and blobs[digest].size <= LARGEST_MANIFEST:
            m = layout.manifests.read_manifests([digest])[digest]
            media_type = walk_media_type(m)
            if media_type is not None:
                read[digest] = m
                describe(digest, media_type, blobs[digest].size, m.artifact_type, None)
    walk()

    g = nx.DiGraph(index=layout.index, fingerprint=layout.index.fingerprint, now=layout.now)
    nodes = []
    for digest in sorted(described.keys() | blobs.keys()):
        seen = described.get(digest, [])
        sizes = {size for _, size, _, _ in seen}
        present = digest in blobs
        m = read.get(digest)
        if m is not None and m.size is not None and present:
            size = m.size
        elif not present:
            size = max(sizes, default=0)
        elif len(sizes) == 1 and not file_sizes:
            (size,) = sizes
        else:
            size = blobs[digest].size
        if m is None:
            status, error = "blob", None
        elif m.error is not None:
            status, error = ("missing" if m.missing else "broken"), m.error
        elif present and sizes and size not in sizes:
            status, error = "broken", f"descriptor size {max(sizes)} but the blob has {size} bytes"
        else:
            status, error = "ok", None
        artifact_type = next((a for _, _, a, _ in seen if a is not None), None)
        if not artifact_type:
            artifact_type = m.artifact_type if m is not None else None
        positions = tuple(e.position for e in layout.index.entries if e.digest == digest)
        nodes.append((digest, {
            "media_types": frozenset(mt for mt, _, _, _ in seen),
            "size": size,
            "declared_sizes": frozenset(sizes),
            "present": present,
            "tags": frozenset(e.tag for e in layout.index.entries
                              if e.digest == digest and e.tag is not None),
            "entries": positions,
            "indexed": bool(positions),
            "artifact_type": artifact_type,
            "status": status,
            "error": error,
            "platform": next((p for _, _, _, p in seen if p is not None), None),
        }))
    g.add_nodes_from(nodes)
    roles: dict[tuple[str, str], set[str]] = {}
    for u, v, role in edges:
        roles.setdefault((u, v), set()).add(role)
    g.add_edges_from((u, v, {"roles": frozenset(r)}) for (u, v), r in roles.items())
    return g


def assert_same_graph(built: nx.DiGraph, ref: nx.DiGraph) -> None:
    assert list(built.nodes) == list(ref.nodes)
    for n in ref:
        assert list(built.nodes[n].items()) == list(ref.nodes[n].items()), n
        assert list(built.succ[n]) == list(ref.succ[n]), f"successor order of {n}"
        assert list(built.pred[n]) == list(ref.pred[n]), f"predecessor order of {n}"
        for s in ref.succ[n]:
            assert built.succ[n][s] == ref.succ[n][s]
            assert built.succ[n][s] is built.pred[s][n]  # one attribute dict per edge, as networkx
    assert list(built.edges) == list(ref.edges)
    assert built.graph == ref.graph
    assert type(built) is og.LayoutGraph and nx.is_frozen(built)


LAYOUTS = st.one_of(
    generated_layouts(ambiguous_tags=True),
    generated_layouts(max_images=6, max_referrers=6, max_layers=4, max_dangling=4),
)


@settings(max_examples=300)
@given(LAYOUTS, st.booleans())
def test_build_graph_builds_what_a_plain_networkx_builder_builds(g: GeneratedLayout,
                                                                 file_sizes: bool) -> None:
    layout = g.layout()
    assert_same_graph(og.build_graph(layout, file_sizes=file_sizes),
                      reference_graph(layout, file_sizes=file_sizes))


def test_the_reference_sees_what_the_build_attributes_mean() -> None:
    """The reference is not vacuous: one image, checked by hand."""
    layer = b"layer"
    config = b"{}"
    blobs = {og.digest_bytes(layer): layer, og.digest_bytes(config): config}
    manifest = orjson.dumps({
        "schemaVersion": 2, "mediaType": og.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": og.digest_bytes(config), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": og.digest_bytes(layer), "size": 5}],
    })
    blobs[og.digest_bytes(manifest)] = manifest
    index = orjson.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": og.OCI_MANIFEST, "digest": og.digest_bytes(manifest), "size": len(manifest),
         "annotations": {og.REF_NAME: "v1"}}]})
    ref = reference_graph(og.layout_from_bytes(index, blobs))
    m = og.digest_bytes(manifest)
    assert ref.nodes[m]["tags"] == {"v1"} and ref.nodes[m]["status"] == "ok"
    assert list(ref.succ[m]) == [og.digest_bytes(config), og.digest_bytes(layer)]
    assert ref.edges[m, og.digest_bytes(layer)]["roles"] == {"layer"}
    assert_same_graph(og.build_graph(og.layout_from_bytes(index, blobs)), ref)


# -- the node schema ---------------------------------------------------------------------------


@settings(max_examples=200)
@given(LAYOUTS)
def test_node_attributes_follow_the_schema_and_round_trip_through_json(g: GeneratedLayout) -> None:
    graph = og.build_graph(g.layout())
    for n, attrs in graph.nodes(data=True):
        assert tuple(attrs) == og.NODE_ATTRIBUTES
        encoded = og.encode_node_attrs(attrs)
        assert orjson.loads(orjson.dumps(encoded)) == encoded  # plain JSON
        decoded = og.decode_node_attrs(orjson.loads(orjson.dumps(encoded)))
        assert decoded == attrs and tuple(decoded) == og.NODE_ATTRIBUTES, n


def test_the_schema_names_every_attribute_once_with_its_meaning() -> None:
    assert len(set(og.NODE_ATTRIBUTES)) == len(og.NODE_SCHEMA) == 11
    assert all(a.doc and a.encoding in ("value", "set", "tuple", "pairs") for a in og.NODE_SCHEMA)
    with pytest.raises(ValueError, match="10 node attribute values"):
        og.decode_node_attrs([None] * 10)


def test_mtimes_are_copied_into_an_immutable_mapping_only_when_asked() -> None:
    blobs = {og.digest_bytes(b"a"): b"a", og.digest_bytes(b"b"): b"b"}
    times = {og.digest_bytes(b"a"): 5.0}  # the layout knows no time for b
    layout = og.layout_from_bytes(b'{"schemaVersion":2,"manifests":[]}', blobs, times, now=9.0)
    without = og.build_graph(layout)
    with_times = og.build_graph(layout, mtimes=True)
    assert "mtimes" not in without.graph
    assert dict(with_times.graph["mtimes"]) == times
    with pytest.raises(TypeError):
        with_times.graph["mtimes"][og.digest_bytes(b"b")] = 1.0  # type: ignore[index]
    assert og.young_nodes(with_times, og.Policy(grace=10)) == {og.digest_bytes(b"a")}
    assert og.young_nodes(with_times, og.Policy(grace=4)) == frozenset()
    assert og.is_young(with_times, og.digest_bytes(b"a"), og.Policy(grace=10))
    assert_same_graph(without, reference_graph(layout))
    assert with_times.graph["index"] is without.graph["index"]
