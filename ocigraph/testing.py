"""Hypothesis strategies for OCI image layouts, so you can property-test your own GC rules.

Needs the optional ``testing`` extra (``pip install 'ocigraph[testing]'``).  Everything here is
pure, like the rest of the core: a strategy builds index.json and blob bytes in memory and hands
them to :func:`ocigraph.layout_from_bytes`; nothing touches the file system.

What a generated layout can hold (each one switchable, see :func:`generated_layouts`):

* OCI image manifests (config + layers) and Docker v2 manifests;
* OCI image indexes and Docker manifest lists (multi-platform), nested in one another;
* layers shared between images, and one blob referenced under two media types;
* referrers (signatures, SBOMs: OCI manifests with ``subject``; OCI artifact manifests with
  ``subject`` and ``blobs``; indexes with ``subject``) on images, on indexes and on other
  referrers (chains such as ``sig -> sbom -> image``);
* index.json entries that are tagged (sometimes two tags on one digest), untagged, or missing
  (a manifest nobody lists: an orphan), and tagged or untagged entries for plain blobs;
* dangling present blobs, absent blobs (referenced, not present; always leaves, so every
  layout stays plannable), and sha512 digests.

Generated layouts are always valid and plannable: every manifest is present, hashes to its
digest, declares the right size, and there is no cycle.  The JSON is a deterministic function of
Hypothesis' choices, and the value's ``description`` (also passed to :func:`hypothesis.note`,
and its ``repr``) says what was generated, one line per blob.

Every layout is a pure function of a small :class:`Recipe` (what Hypothesis chose); all-zero
choices give the simplest layout of that size:

>>> g = build_layout(Recipe(layers=1, steps=1, dangling=0, shape=bytes([0, 0, 1]),
...                         flags=b"", entries=b"", order=b""))
>>> print(g.description)
3 present blob(s), 0 absent, 1 index.json entry
  L0    sha256:26a89af864a0  layer
  cfg0  sha256:6682f471c2bb  config
  img0  sha256:fc735f5896ea  oci image: config cfg0, layers [L0]
index.json:
  [0] img0  tag t0
>>> import ocigraph as og
>>> og.plan_gc(og.build_graph(g.layout())).is_empty
True
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import orjson
from hypothesis import event, note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ._digest import short_digest
from ._mediatypes import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_ARTIFACT,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
)
from ._model import Layout
from ._parse import layout_from_bytes
from ._policy import PRESETS, Policy

__all__ = [
    "FEATURES",
    "GeneratedLayout",
    "Options",
    "Recipe",
    "build_layout",
    "recipes",
    "generated_layouts",
    "layouts",
    "delete_targets",
    "layout_and_targets",
    "policies",
]

T = TypeVar("T")

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar")
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
PLAIN_BLOB = "application/octet-stream"
LABEL_ANNOTATION = "org.example.ocigraph.label"
ARCHES = ("amd64", "arm64", "s390x", "ppc64le")

#: artifact kind -> (artifactType, media type of its payload blob)
ARTIFACT_KINDS: dict[str, tuple[str, str]] = {
    "signature": ("application/vnd.dev.cosign.artifact.sig.v1+json",
                  "application/vnd.dev.cosign.simplesigning.v1+json"),
    "sbom": ("application/spdx+json", "application/spdx+json"),
    "attestation": ("application/vnd.in-toto+json", "application/vnd.in-toto+json"),
}

#: Every feature a generated layout may report in :attr:`GeneratedLayout.features` (and as a
#: Hypothesis ``event``, visible with ``--hypothesis-show-statistics``).
FEATURES = (
    "oci-image", "docker-image", "oci-index", "docker-list", "nested-index",
    "referrer", "referrer-chain", "referrer-of-index", "artifact-manifest", "index-referrer",
    "shared-blob", "two-media-types", "two-tags", "untagged-entry", "unlisted-manifest",
    "tagged-blob", "dangling-blob", "absent-blob", "sha512", "ambiguous-tag",
)

ARTIFACT_NAMES = tuple(sorted(ARTIFACT_KINDS))

# Placements of a manifest in index.json; the first is what Hypothesis shrinks towards.
_PLACEMENTS = ("tag", "untagged", "none", "two-tags", "tag+untagged")


@dataclass(frozen=True, eq=False, repr=False)
class GeneratedLayout:
    """A generated layout: its bytes, names for its blobs, and what it holds.

    index_json   the bytes of index.json
    blobs        digest -> content of every *present* blob (what ``layout_from_bytes`` takes)
    labels       label (``img0``, ``L2``, ``ref1``...) -> digest, for every generated blob,
                 present or absent
    tags         tag -> the digests it names, in index.json order (two or more: ambiguous)
    absent       digests that are referenced but not present
    known        every digest the layout's graph has a node for (present blobs, index.json
                 entries, and what any manifest references), sorted
    features     which of :data:`FEATURES` this layout exhibits
    description  one line per blob and per index.json entry, for ``note()`` and ``repr``
    """

    index_json: bytes
    blobs: Mapping[str, bytes]
    labels: Mapping[str, str]
    tags: Mapping[str, tuple[str, ...]]
    absent: frozenset[str]
    known: tuple[str, ...]
    features: frozenset[str]
    description: str = field(default="")

    def layout(self) -> Layout:
        """A fresh :class:`~ocigraph.Layout` of these bytes."""
        return layout_from_bytes(self.index_json, self.blobs)

    def label_of(self, digest: str) -> str:
        """The label of a digest (the digest itself if it is not a generated one)."""
        for label, d in self.labels.items():
            if d == digest:
                return label
        return digest

    @property
    def unambiguous_tags(self) -> tuple[str, ...]:
        """Tags that name exactly one digest, sorted: the ones a delete may name."""
        return tuple(sorted(t for t, ds in self.tags.items() if len(ds) == 1))

    def __repr__(self) -> str:
        return f"GeneratedLayout(\n{self.description}\n)"


@dataclass(slots=True)
class _Blob:
    label: str
    digest: str
    media_type: str  # the media type descriptors give it by default
    size: int
    present: bool
    what: str
    refs: list[str] = field(default_factory=list)  # digests it references (manifests only)


class _Builder:
    """Accumulates blobs and descriptors; all bytes are built here, directly."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.nodes: list[_Blob] = []
        self.by_digest: dict[str, _Blob] = {}
        self.media_of: dict[str, set[str]] = {}  # digest -> media types descriptors gave it
        self.holders: dict[str, set[str]] = {}  # digest -> digests of manifests referencing it
        self.features: set[str] = set()

    def add(self, label: str, data: bytes, media_type: str, alg: str, what: str,
            present: bool = True) -> _Blob:
        digest = f"{alg}:{hashlib.new(alg, data).hexdigest()}"
        if digest in self.by_digest:  # content is labelled, so this cannot happen
            raise AssertionError(f"{label} and {self.by_digest[digest].label} share {digest}")
        if alg != "sha256":
            self.features.add("sha512")
        blob = _Blob(label, digest, media_type, len(data), present, what)
        if present:
            self.blobs[digest] = data
        self.nodes.append(blob)
        self.by_digest[digest] = blob
        return blob

    def manifest(self, label: str, doc: dict[str, Any], media_type: str, alg: str,
                 what: str) -> _Blob:
        # Two manifests could otherwise have the same content (one index listing the same
        # children as another); the label annotation keeps one node per label.
        doc = dict(doc, annotations={LABEL_ANNOTATION: label})
        blob = self.add(label, orjson.dumps(doc), media_type, alg, what)
        for name in ("subject", "config"):
            if name in doc:
                blob.refs.append(doc[name]["digest"])
        for name in ("layers", "manifests", "blobs"):
            blob.refs.extend(d["digest"] for d in doc.get(name, ()))
        for d in blob.refs:
            self.holders.setdefault(d, set()).add(blob.digest)
        return blob

    def descriptor(self, blob: _Blob, media_type: str | None = None,
                   **extra: Any) -> dict[str, Any]:
        mt = media_type or blob.media_type
        self.media_of.setdefault(blob.digest, set()).add(mt)
        out: dict[str, Any] = {"mediaType": mt, "digest": blob.digest, "size": blob.size}
        out.update(extra)
        return out


@dataclass(frozen=True, slots=True)
class Recipe:
    """Everything Hypothesis chose for one layout: a few counts and four byte strings read as
    choices.

    Drawing a handful of values instead of one per decision keeps generation fast (a Hypothesis
    draw costs a fraction of a millisecond, and a layout makes a hundred decisions); reading an
    exhausted or zeroed buffer gives the simplest choice everywhere, so shrinking still works.
    :func:`build_layout` turns a recipe into bytes, deterministically.
    """

    layers: int
    steps: int
    dangling: int
    shape: bytes  # the kind of each manifest and what it references
    flags: bytes  # per blob: sha512? absent?
    entries: bytes  # index.json placements, tags and order
    order: bytes = b""


class _Choices:
    """Reads a byte string as a sequence of choices; 0 (the simplest) once it runs out."""

    __slots__ = ("_at", "_data")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def below(self, n: int) -> int:
        """A choice in ``range(n)``."""
        if n <= 1 or self._at >= len(self._data):
            return 0
        value = self._data[self._at]
        self._at += 1
        return value % n

    def rare(self, one_in: int) -> bool:
        """True about once in ``one_in``; False when shrunk."""
        return self.below(one_in) == one_in - 1

    def distinct(self, n: int, k: int) -> list[int]:
        """``k`` distinct choices in ``range(n)`` (fewer if ``n < k``)."""
        rest = list(range(n))
        return [rest.pop(self.below(len(rest))) for _ in range(min(k, n))]

    def shuffled(self, items: Sequence[T]) -> list[T]:
        """``items`` in a chosen order (Fisher-Yates; all zeros keeps the order)."""
        out = list(items)
        for i in range(len(out) - 1):
            j = i + self.below(len(out) - i)
            out[i], out[j] = out[j], out[i]
        return out


def _note(text: str) -> None:
    with contextlib.suppress(InvalidArgument):  # drawn outside a test, e.g. with .example()
        note(text)


def _events(features: frozenset[str]) -> None:
    with contextlib.suppress(InvalidArgument):  # drawn outside a test
        for f in sorted(features):
            event(f"layout has {f}")


@dataclass(frozen=True, slots=True)
class Options:
    """What :func:`generated_layouts` may generate (see its docstring)."""

    max_images: int = 4
    max_indexes: int = 2
    max_referrers: int = 4
    max_layers: int = 5
    max_dangling: int = 2
    docker: bool = True
    referrers: bool = True
    artifact_manifests: bool = True
    absent_blobs: bool = True
    unlisted: bool = True
    sha512: bool = True
    ambiguous_tags: bool = False

    def __post_init__(self) -> None:
        for name in ("max_images", "max_indexes", "max_referrers", "max_layers", "max_dangling"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise InvalidArgument(f"{name} must be a non-negative integer, got {value!r}")

    @property
    def max_steps(self) -> int:
        return self.max_images + self.max_indexes + self.max_referrers


def recipes(options: Options) -> st.SearchStrategy[Recipe]:
    """The raw choices behind :func:`generated_layouts`.

    The byte strings have a fixed length (enough for the largest layout), so their bytes are
    uniform choices; shrinking zeroes them, which reads as "the simplest choice".
    """

    def choices(n: int) -> st.SearchStrategy[bytes]:
        return st.binary(min_size=n, max_size=n)

    steps, dangling = options.max_steps, options.max_dangling
    return st.builds(
        Recipe,
        layers=st.integers(1, options.max_layers) if options.max_layers else st.just(0),
        steps=st.integers(0, steps),
        dangling=st.integers(0, dangling),
        shape=choices(12 * steps),
        flags=choices(2 * options.max_layers + dangling + 3 * steps),
        entries=choices(2 * (steps + dangling)),
        order=choices(2 * (steps + dangling)),
    )


class _Making:
    """What the steps of :func:`build_layout` share: the options, the blobs made so far and the
    choices still to read (each step reads them in the order it always has, so a recipe keeps
    giving the same bytes)."""

    def __init__(self, recipe: Recipe, opts: Options) -> None:
        self.opts = opts
        self.b = _Builder()
        self.shape, self.flags = _Choices(recipe.shape), _Choices(recipe.flags)
        self.placing, self.ordering = _Choices(recipe.entries), _Choices(recipe.order)
        self.pool: list[_Blob] = []
        self.manifests: list[_Blob] = []
        self.configs: list[_Blob] = []
        self.referrer_digests: set[str] = set()
        self.empty: _Blob | None = None

    def alg(self) -> str:
        return "sha512" if self.opts.sha512 and self.flags.rare(5) else "sha256"


def _make_image(m: _Making, n: int) -> None:
    b, shape, opts, pool = m.b, m.shape, m.opts, m.pool
    is_docker = opts.docker and shape.rare(3)
    mt = DOCKER_MANIFEST if is_docker else OCI_MANIFEST
    if m.configs and shape.rare(6):  # the same config blob in another image
        cfg = m.configs[shape.below(len(m.configs))]
    else:
        cfg_doc = {"architecture": ARCHES[n % len(ARCHES)], "os": "linux",
                   "config": {"Labels": {"org.example.image": f"img{n}"}},
                   "rootfs": {"type": "layers", "diff_ids": []}}
        cfg = b.add(f"cfg{n}", orjson.dumps(cfg_doc),
                    DOCKER_CONFIG if is_docker else OCI_CONFIG, m.alg(), "config")
        m.configs.append(cfg)
    layers = [pool[shape.below(len(pool))] for _ in range(shape.below(4))] if pool else []
    if is_docker:
        cfg_desc = b.descriptor(cfg, DOCKER_CONFIG)
        layer_descs = [b.descriptor(x, DOCKER_LAYER) for x in layers]
    else:
        cfg_desc = b.descriptor(cfg, OCI_CONFIG)
        layer_descs = [b.descriptor(x, OCI_LAYER_TYPES[shape.below(2)]) for x in layers]
    doc = {"schemaVersion": 2, "mediaType": mt, "config": cfg_desc, "layers": layer_descs}
    what = (f"{'docker' if is_docker else 'oci'} image: config {cfg.label}, layers "
            f"[{' '.join(x.label for x in layers)}]")
    m.manifests.append(b.manifest(f"img{n}", doc, mt, m.alg(), what))
    b.features.add("docker-image" if is_docker else "oci-image")


def _make_index(m: _Making, n: int) -> None:
    b, shape, manifests = m.b, m.shape, m.manifests
    is_docker = m.opts.docker and shape.rare(3)
    mt = DOCKER_LIST if is_docker else OCI_INDEX
    children = [manifests[i] for i in shape.distinct(len(manifests), 1 + shape.below(3))]
    descs = [b.descriptor(c, platform={"architecture": ARCHES[j % len(ARCHES)], "os": "linux"})
             for j, c in enumerate(children)]
    if any(c.media_type in (OCI_INDEX, DOCKER_LIST) for c in children):
        b.features.add("nested-index")
    doc = {"schemaVersion": 2, "mediaType": mt, "manifests": descs}
    what = f"{'docker list' if is_docker else 'oci index'}: [{' '.join(c.label for c in children)}]"
    manifests.append(b.manifest(f"idx{n}", doc, mt, m.alg(), what))
    b.features.add("docker-list" if is_docker else "oci-index")


def _make_referrer(m: _Making, n: int) -> None:
    b, shape, manifests = m.b, m.shape, m.manifests
    subject = manifests[-1 - shape.below(len(manifests))]  # shrinks to the latest
    b.features.add("referrer")
    if subject.digest in m.referrer_digests:
        b.features.add("referrer-chain")
    if subject.media_type in (OCI_INDEX, DOCKER_LIST):
        b.features.add("referrer-of-index")
    form = shape.below(6)  # 0-3: image manifest, 4: artifact manifest, 5: index
    if form == 4 and not m.opts.artifact_manifests:
        form = 0
    art = ARTIFACT_NAMES[shape.below(len(ARTIFACT_NAMES))]
    artifact_type, payload_type = ARTIFACT_KINDS[art]
    label = f"ref{n}"
    subj = b.descriptor(subject)
    if form == 5:
        children = [manifests[i] for i in shape.distinct(len(manifests), shape.below(3))]
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": artifact_type,
               "manifests": [b.descriptor(c) for c in children], "subject": subj}
        what = f"oci index {art} of {subject.label}: [{' '.join(c.label for c in children)}]"
        blob = b.manifest(label, doc, OCI_INDEX, m.alg(), what)
        b.features.add("index-referrer")
    else:
        payload = b.add(f"{label}.payload", f"{label}: {art} of {subject.label}\n".encode(),
                        payload_type, m.alg(), f"{art} payload")
        if form == 4:
            doc = {"mediaType": OCI_ARTIFACT, "artifactType": artifact_type,
                   "blobs": [b.descriptor(payload)], "subject": subj}
            blob = b.manifest(label, doc, OCI_ARTIFACT, m.alg(),
                              f"artifact manifest {art} of {subject.label}")
            b.features.add("artifact-manifest")
        else:
            if m.empty is None:
                m.empty = b.add("empty", b"{}", EMPTY_TYPE, "sha256", "empty config")
            doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                   "config": b.descriptor(m.empty), "layers": [b.descriptor(payload)],
                   "subject": subj}
            blob = b.manifest(label, doc, OCI_MANIFEST, m.alg(),
                              f"oci manifest {art} of {subject.label}")
    m.referrer_digests.add(blob.digest)
    manifests.append(blob)


def _make_manifests(m: _Making, steps: int) -> None:
    """Manifests, in a chosen order, so indexes and referrers may point at anything earlier."""
    opts = m.opts
    kinds = ["image"] + (["index"] if opts.max_indexes else []) + (["referrer"] if opts.referrers else [])
    budget = {"image": opts.max_images, "index": opts.max_indexes, "referrer": opts.max_referrers}
    count = {"image": 0, "index": 0, "referrer": 0}
    make = {"image": _make_image, "index": _make_index, "referrer": _make_referrer}
    for _ in range(min(steps, opts.max_steps)):
        kind = kinds[m.shape.below(len(kinds))]
        if count[kind] >= budget[kind] or (kind != "image" and not m.manifests):
            kind = "image"
            if count[kind] >= budget[kind]:
                continue
        n = count[kind]
        count[kind] += 1
        make[kind](m, n)


def _make_entries(m: _Making, dangling: list[_Blob]
                  ) -> tuple[list[tuple[_Blob, str | None]], dict[str, list[str]]]:
    """index.json's entries, in a chosen order, and the digests each tag names."""
    opts, placing = m.opts, m.placing
    entries: list[tuple[_Blob, str | None]] = []
    tags: dict[str, list[str]] = {}
    placements = _PLACEMENTS if opts.unlisted else tuple(p for p in _PLACEMENTS if p != "none")

    def new_tag(blob: _Blob) -> str:
        if opts.ambiguous_tags and tags and placing.rare(6):
            name = sorted(tags)[placing.below(len(tags))]
        else:
            name = f"t{len(tags)}"
        if blob.digest not in tags.setdefault(name, []):
            tags[name].append(blob.digest)
        return name

    for blob in m.manifests:
        where = placements[placing.below(len(placements))]
        if where in ("tag", "two-tags", "tag+untagged"):
            entries.append((blob, new_tag(blob)))
        if where == "two-tags":
            entries.append((blob, new_tag(blob)))
        if where in ("untagged", "tag+untagged"):
            entries.append((blob, None))
    for blob in dangling:
        where = ("none", "tag", "untagged")[placing.below(3)]
        if where != "none":
            entries.append((blob, new_tag(blob) if where == "tag" else None))
    return m.ordering.shuffled(entries), tags


def _features(m: _Making, entries: Sequence[tuple[_Blob, str | None]],
              tags: Mapping[str, list[str]], dangling: list[_Blob], listed: set[str]) -> None:
    """Add to the builder's features what only the whole layout shows."""
    b = m.b
    f = b.features
    if any(len(h) > 1 for h in b.holders.values()):
        f.add("shared-blob")
    if any(len(mt) > 1 for mt in b.media_of.values()):
        f.add("two-media-types")
    if any(tag is None for _, tag in entries):
        f.add("untagged-entry")
    if any(x.digest not in listed and x.digest not in b.holders for x in m.manifests):
        f.add("unlisted-manifest")
    if any(tag is not None and blob.what == "dangling blob" for blob, tag in entries):
        f.add("tagged-blob")
    if dangling:
        f.add("dangling-blob")
    if any(not x.present for x in m.pool if x.digest in b.holders):
        f.add("absent-blob")
    tag_count: dict[str, int] = {}
    for blob, tag in entries:
        if tag is not None:
            tag_count[blob.digest] = tag_count.get(blob.digest, 0) + 1
    if any(n > 1 for n in tag_count.values()):
        f.add("two-tags")
    if any(len(ds) > 1 for ds in tags.values()):
        f.add("ambiguous-tag")


def _description(b: _Builder, nodes: Sequence[_Blob], entries: Sequence[tuple[_Blob, str | None]],
                 listed: set[str]) -> str:
    """One line per blob and per index.json entry."""
    width = max((len(x.label) for x in nodes), default=4)
    n_absent = sum(1 for x in nodes if not x.present)
    lines = [f"{len(b.blobs)} present blob(s), {n_absent} absent, {len(entries)} index.json "
             f"entr{'y' if len(entries) == 1 else 'ies'}"]
    for x in nodes:
        state = "" if x.present else " (absent)"
        if x.digest not in b.holders and x.digest not in listed and x.what != "dangling blob":
            state += " (referenced by nothing)"
        lines.append(f"  {x.label:<{width}}  {short_digest(x.digest)}  {x.what}{state}")
    lines.append("index.json:")
    for i, (blob, tag) in enumerate(entries):
        lines.append(f"  [{i}] {blob.label}" + (f"  tag {tag}" if tag is not None else "  untagged"))
    return "\n".join(lines)


def build_layout(recipe: Recipe, options: Options | None = None) -> GeneratedLayout:
    """The layout a recipe describes: a pure, deterministic function of its arguments."""
    opts = options or Options()
    m = _Making(recipe, opts)
    b = m.b
    # the layer pool: shared between images; some absent (always leaves)
    m.pool = [
        b.add(f"L{i}", b"layer %d\n" % i, OCI_LAYER_TYPES[0], m.alg(), "layer",
              present=not (opts.absent_blobs and m.flags.rare(6)))
        for i in range(min(recipe.layers, opts.max_layers))
    ]
    _make_manifests(m, recipe.steps)
    # dangling blobs: present, referenced by no manifest; maybe listed in index.json
    dangling = [
        b.add(f"blob{i}", b"dangling %d\n" % i, PLAIN_BLOB, m.alg(), "dangling blob")
        for i in range(min(recipe.dangling, opts.max_dangling))
    ]
    entries, tags = _make_entries(m, dangling)
    index_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            b.descriptor(blob, annotations={REF_NAME: tag}) if tag is not None else b.descriptor(blob)
            for blob, tag in entries
        ],
    }
    # what the graph will know: present blobs, index.json entries, and everything a manifest
    # references (every manifest is present, so the core reads it: listed, referenced, or found
    # as an unexplained blob)
    listed = {blob.digest for blob, _ in entries}
    known = listed | b.blobs.keys() | b.holders.keys()
    _features(m, entries, tags, dangling, listed)
    nodes = [x for x in b.nodes if x.digest in known]
    return GeneratedLayout(
        index_json=orjson.dumps(index_doc),
        blobs=MappingProxyType(dict(b.blobs)),
        labels=MappingProxyType({x.label: x.digest for x in nodes}),
        tags=MappingProxyType({t: tuple(ds) for t, ds in tags.items()}),
        absent=frozenset(x.digest for x in nodes if not x.present),
        known=tuple(sorted(known)),
        features=frozenset(b.features),
        description=_description(b, nodes, entries, listed),
    )


def generated_layouts(
    *,
    max_images: int = 4,
    max_indexes: int = 2,
    max_referrers: int = 4,
    max_layers: int = 5,
    max_dangling: int = 2,
    docker: bool = True,
    referrers: bool = True,
    artifact_manifests: bool = True,
    absent_blobs: bool = True,
    unlisted: bool = True,
    sha512: bool = True,
    ambiguous_tags: bool = False,
) -> st.SearchStrategy[GeneratedLayout]:
    """Random valid layouts, with their bytes and a description (:class:`GeneratedLayout`).

    max_images, max_indexes, max_referrers
        how many image manifests, indexes/lists and referrers at most (each may be 0)
    max_layers
        size of the layer pool images draw from (shared layers come from here)
    max_dangling
        present blobs no manifest references (some get an index.json entry)
    docker
        also Docker v2 manifests and manifest lists
    referrers, artifact_manifests
        referrers at all; and among them withdrawn OCI artifact manifests
    absent_blobs
        some pool layers are referenced but not present
    unlisted
        manifests may have no index.json entry (orphans, or children only an index lists)
    sha512
        some blobs use sha512 digests
    ambiguous_tags
        now and then one tag on two digests (a delete naming it is refused; GC keeps both)

    Each value's description goes to ``note()`` and its features to ``event()``.
    """
    options = Options(
        max_images=max_images, max_indexes=max_indexes, max_referrers=max_referrers,
        max_layers=max_layers, max_dangling=max_dangling, docker=docker, referrers=referrers,
        artifact_manifests=artifact_manifests, absent_blobs=absent_blobs, unlisted=unlisted,
        sha512=sha512, ambiguous_tags=ambiguous_tags,
    )
    return recipes(options).map(lambda r: _reported(build_layout(r, options)))


def _reported(g: GeneratedLayout) -> GeneratedLayout:
    _note(g.description)
    _events(g.features)
    return g


def layouts(**options: Any) -> st.SearchStrategy[Layout]:
    """Random valid :class:`~ocigraph.Layout` values; ``options`` as for
    :func:`generated_layouts`.  Each layout's description goes to ``note()``."""
    return generated_layouts(**options).map(GeneratedLayout.layout)


def delete_targets(
    generated: GeneratedLayout,
    *,
    min_size: int = 1,
    max_size: int = 3,
    tags: bool = True,
    digests: bool = True,
) -> st.SearchStrategy[list[str]]:
    """Refs to delete, drawn from ``generated``: unambiguous tags and digests of its graph's
    nodes (present or absent).  Possibly repeated, possibly a tag and its digest."""
    pool: list[str] = []
    if tags:
        pool.extend(generated.unambiguous_tags)
    if digests:
        pool.extend(generated.known)
    if not pool:
        if min_size > 0:
            raise InvalidArgument("this layout has nothing to target; use min_size=0")
        return st.just([])
    return st.lists(st.sampled_from(pool), min_size=min_size, max_size=max_size)


def layout_and_targets(
    *, min_size: int = 1, max_size: int = 3, **options: Any
) -> st.SearchStrategy[tuple[Layout, list[str]]]:
    """A layout and a non-empty list of tags/digests to delete from it.

    Layouts with nothing to delete (no node at all) are not generated.
    """
    if min_size < 1:
        raise InvalidArgument("min_size must be at least 1")

    @st.composite
    def strategy(draw: st.DrawFn) -> tuple[Layout, list[str]]:
        g = draw(generated_layouts(**options).filter(lambda g: bool(g.known)))
        refs = draw(delete_targets(g, min_size=min_size, max_size=max_size))
        _note(f"targets: {[g.label_of(r) for r in refs]}")
        return g.layout(), refs

    return strategy()


def policies(
    *,
    presets: Sequence[str] = tuple(PRESETS),
    force: bool | None = None,
) -> st.SearchStrategy[Policy]:
    """Policies: the presets as they are, and presets with any combination of
    ``keep_untagged``, ``cascade_referrers``, ``guard`` and ``force`` overridden.  ``grace`` is
    always 0 (generated layouts have no modification times).

    ``force`` pins that field (``None``: drawn).
    """
    names = st.sampled_from(list(presets))
    forces = st.booleans() if force is None else st.just(force)
    plain = names.map(Policy.preset) if force is None else st.builds(Policy.preset, names, force=forces)
    custom = st.builds(Policy.preset, names, keep_untagged=st.booleans(),
                       cascade_referrers=st.booleans(), guard=st.booleans(), force=forces)
    return st.one_of(plain, custom)
