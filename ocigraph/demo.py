"""A small, realistic OCI image layout to explore, plan against and break: the notebooks' store.

:func:`demo_content` makes the layout in memory (index.json bytes, blob bytes, and a name for
every blob); ``io_adapters.demo.write_demo_layout`` writes it to a directory.  Both are
deterministic: the same ``seed`` and options give the same bytes, so the same digests.  This
module is pure: values in, values out, no files and no clock (the bytes come from a
``random.Random`` seeded with ``seed``).

What the default layout holds -- every shape GC has to get right, at sizes worth charting:

* ``app-1.0`` and ``app-1.1`` (also tagged ``latest``): OCI image indexes for ``linux/amd64``
  and ``linux/arm64``, with ``platform`` fields; each platform manifest has a config, the OS
  base layer of its architecture (about 1 MiB, shared by every image of that architecture),
  a Python runtime layer (shared by the app and the worker) and the app's code layer (shared by
  both platforms of one version).
* ``worker-2.3``: a single-platform OCI image manifest.
* ``legacy-0.9``: a Docker manifest list of two Docker v2 manifests.  They use the *same* base
  layer blobs as the OCI images, under Docker's layer media type: one node, two media types.
* Referrers (OCI manifests with ``subject`` and ``artifactType``): a cosign-style signature of
  each app index, an SPDX SBOM of ``app-1.1`` with a signature of its own (a referrer of a
  referrer), an in-toto provenance of ``app-1.1``'s amd64 manifest, an SBOM of ``worker-2.3``.
  The SBOM of ``app-1.1`` is listed in index.json untagged, as ``oras`` records what it pushes.
* Garbage, as real stores collect it: ``worker-2.2``, an earlier push recorded as an untagged
  index.json entry (with its signature), ``app-0.9/amd64``, a manifest nothing lists any more
  (an orphan, with its config and code layer), and ``dangling``, a 256 KiB blob left by an
  interrupted push.

Every blob is present and hashes to its name, and every descriptor declares the true size, so
``fsck`` finds nothing wrong: the garbage is only garbage, not damage.  Layers are random bytes
(incompressible, like real gzip layers); configs, SBOMs and signatures are plausible JSON.

>>> demo = demo_content(scale=0.01)
>>> demo.tags
('app-1.0', 'app-1.1', 'latest', 'legacy-0.9', 'worker-2.3')
>>> demo.labels["latest"] == demo.labels["app-1.1"]
True
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from ._digest import digest_bytes
from ._mediatypes import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, REF_NAME
from ._model import Layout
from ._parse import layout_from_bytes

__all__ = ["DEMO_IMAGES", "LAYER_KIB", "DemoContent", "demo_content"]

#: The images :func:`demo_content` can hold, in index.json order.
DEMO_IMAGES = ("app-1.0", "app-1.1", "worker-2.3", "legacy-0.9")

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SIGNATURE_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
SBOM_TYPE = "application/spdx+json"
PROVENANCE_TYPE = "application/vnd.in-toto+json"
CREATED = "org.opencontainers.image.created"

KiB = 1024

#: Sizes of the layers (and of the dangling blob), in KiB, before ``scale``.
LAYER_KIB: Mapping[str, int] = MappingProxyType({
    "base/amd64": 1024, "base/arm64": 960,
    "python/amd64": 384, "python/arm64": 352,
    "app-1.0": 96, "app-1.1": 112,
    "worker-2.3": 160, "worker-2.2": 144,
    "legacy-0.9/amd64": 192, "legacy-0.9/arm64": 176,
    "app-0.9": 128,
    "dangling": 256,
})

ARCHES = ("amd64", "arm64")


@dataclass(frozen=True)
class DemoContent:
    """A demo layout in memory.

    index_json  the bytes of index.json
    blobs       digest -> content, every blob of the layout
    labels      name -> digest for every blob, e.g. ``app-1.1`` (the index), ``app-1.1/amd64``
                (a platform manifest), ``app-1.1/amd64:config``, ``layer:base/amd64``,
                ``sbom:app-1.1``, ``sig:sbom:app-1.1``, ``sbom:app-1.1:payload``,
                ``empty-config``, ``dangling``; every tag is also a label
    tags        the tags, sorted
    """

    index_json: bytes
    blobs: Mapping[str, bytes] = field(repr=False)
    labels: Mapping[str, str] = field(repr=False)
    tags: tuple[str, ...]

    def names(self) -> dict[str, str]:
        """digest -> its label (the first one in label order, tags excluded unless nothing
        else names the digest): for tables that should say ``layer:base/amd64``, not hex."""
        out: dict[str, str] = {}
        for label, digest in sorted(self.labels.items()):
            if label not in self.tags:
                out.setdefault(digest, label)
        for label, digest in sorted(self.labels.items()):
            out.setdefault(digest, label)
        return out

    def layout(self) -> Layout:
        """The core's value for this content, without touching a disk."""
        return layout_from_bytes(self.index_json, dict(self.blobs))


class _Store:
    """Collects blobs and names; hands out descriptors."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.labels: dict[str, str] = {}

    def add(self, label: str, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = digest_bytes(data)
        self.blobs[digest] = data
        self.labels[label] = digest
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def document(self, label: str, doc: dict[str, Any], media_type: str,
                 **extra: Any) -> dict[str, Any]:
        return self.add(label, orjson.dumps(doc), media_type, **extra)


def _timestamp(rng: random.Random, year: int = 2024) -> str:
    return (f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z")


def _subject_of(desc: dict[str, Any]) -> dict[str, Any]:
    return {k: desc[k] for k in ("mediaType", "digest", "size")}


class _Builder:
    """What one :func:`demo_content` call threads through its parts: the seeded random bytes,
    the blobs and labels made so far, index.json's entries, and the layers made (one blob per
    layer name, so shared layers are shared).  The order of the calls fixes every byte."""

    def __init__(self, seed: int, scale: float) -> None:
        self.rng = random.Random(seed)
        self.scale = scale
        self.store = _Store()
        self.entries: list[dict[str, Any]] = []
        self.layers: dict[str, dict[str, Any]] = {}

    def random_bytes(self, name: str) -> bytes:
        """Random bytes of the scaled size :data:`LAYER_KIB` gives ``name`` (at least 1)."""
        size = max(1, round(LAYER_KIB[name] * KiB * self.scale))
        return self.rng.randbytes(size)

    def layer(self, name: str, media_type: str = OCI_LAYER) -> dict[str, Any]:
        """The descriptor of a layer, made once per name (so shared layers are one blob)."""
        if name not in self.layers:
            self.layers[name] = self.store.add(f"layer:{name}", self.random_bytes(name), OCI_LAYER)
        return {**self.layers[name], "mediaType": media_type}

    def config(self, label: str, arch: str, stack: list[dict[str, Any]], cmd: list[str],
               docker: bool = False) -> dict[str, Any]:
        created = _timestamp(self.rng)
        doc = {
            "created": created,
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
                       "Cmd": cmd, "WorkingDir": "/srv"},
            "rootfs": {"type": "layers",
                       "diff_ids": [digest_bytes(b"diff " + d["digest"].encode()) for d in stack]},
            "history": [{"created": created, "created_by": f"layer {i}"} for i in range(len(stack))],
        }
        return self.store.document(f"{label}:config", doc, DOCKER_CONFIG if docker else OCI_CONFIG)

    def image(self, label: str, arch: str, names: list[str], cmd: list[str], *,
              docker: bool = False, **extra: Any) -> dict[str, Any]:
        media = DOCKER_LAYER if docker else OCI_LAYER
        stack = [self.layer(n, media) for n in names]
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": self.config(label, arch, stack, cmd, docker),
            "layers": stack,
        }
        if not docker:
            doc["annotations"] = {CREATED: _timestamp(self.rng)}
        return self.store.document(label, doc, doc["mediaType"], **extra)

    def multi_platform(self, label: str, build: Callable[..., dict[str, Any]],
                       docker: bool = False) -> dict[str, Any]:
        children = [build(arch, platform={"architecture": arch, "os": "linux"}) for arch in ARCHES]
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST if docker else OCI_INDEX,
            "manifests": children,
        }
        if not docker:
            doc["annotations"] = {CREATED: _timestamp(self.rng)}
        return self.store.document(label, doc, doc["mediaType"])

    def tag(self, desc: dict[str, Any], *names: str) -> None:
        if not names:
            self.entries.append(desc)
        for name in names:
            self.entries.append({**desc, "annotations": {REF_NAME: name}})
            self.store.labels[name] = desc["digest"]

    def referrer(self, label: str, subject: dict[str, Any], artifact_type: str, payload: bytes,
                 payload_type: str, **payload_annotations: str) -> dict[str, Any]:
        empty = self.store.add("empty-config", b"{}", OCI_EMPTY)
        blob = self.store.add(f"{label}:payload", payload, payload_type)
        if payload_annotations:
            blob["annotations"] = payload_annotations
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": empty,
            "layers": [blob],
            "subject": _subject_of(subject),
            "annotations": {CREATED: _timestamp(self.rng)},
        }
        return self.store.document(label, doc, OCI_MANIFEST, artifactType=artifact_type)

    def signature(self, subject: dict[str, Any], label: str) -> dict[str, Any]:
        payload = orjson.dumps({
            "critical": {
                "identity": {"docker-reference": "registry.example/demo"},
                "image": {"docker-manifest-digest": subject["digest"]},
                "type": "cosign container image signature",
            },
            "optional": None,
        })
        sig = base64.b64encode(self.rng.randbytes(72)).decode()
        return self.referrer(label, subject, SIGNATURE_TYPE, payload, SIGNATURE_PAYLOAD,
                             **{"dev.cosignproject.cosign/signature": sig})

    def sbom(self, subject: dict[str, Any], label: str, packages: int) -> dict[str, Any]:
        rng = self.rng
        doc = {
            "spdxVersion": "SPDX-2.3",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": label,
            "creationInfo": {"created": _timestamp(rng), "creators": ["Tool: demo-sbom"]},
            "packages": [
                {"SPDXID": f"SPDXRef-Package-{i}", "name": f"pkg-{rng.getrandbits(32):08x}",
                 "versionInfo": f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
                 "checksums": [{"algorithm": "SHA256", "checksumValue": rng.randbytes(32).hex()}]}
                for i in range(packages)
            ],
        }
        return self.referrer(label, subject, SBOM_TYPE, orjson.dumps(doc), SBOM_TYPE)

    def provenance(self, subject: dict[str, Any], label: str) -> dict[str, Any]:
        doc = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.example/demo", "digest": {"sha256": subject["digest"][7:]}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"buildDefinition": {"buildType": "https://example.invalid/ci",
                                              "resolvedDependencies": [
                                                  {"digest": {"sha256": self.rng.randbytes(32).hex()}}
                                                  for _ in range(40)]}},
        }
        return self.referrer(label, subject, PROVENANCE_TYPE, orjson.dumps(doc), PROVENANCE_TYPE)

    def content(self) -> DemoContent:
        """The layout made so far, as a :class:`DemoContent`."""
        index_json = orjson.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries},
                                  option=orjson.OPT_INDENT_2)
        tags = tuple(sorted(e["annotations"][REF_NAME] for e in self.entries if "annotations" in e))
        return DemoContent(index_json=index_json, blobs=MappingProxyType(self.store.blobs),
                           labels=MappingProxyType(dict(sorted(self.store.labels.items()))), tags=tags)


def _check_options(images: Sequence[str], scale: float) -> None:
    unknown = sorted(set(images) - set(DEMO_IMAGES))
    if unknown:
        raise ValueError(f"unknown demo image(s) {', '.join(unknown)}; choose from {', '.join(DEMO_IMAGES)}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale!r}")


def _add_app(b: _Builder, version: str, referrers: bool) -> None:
    """``app-<version>``: a two-platform OCI index, tagged (``1.1`` also as ``latest``), and
    with ``referrers`` its signature; ``1.1`` also gets a signed SBOM and a provenance."""
    name = f"app-{version}"
    per_arch: dict[str, dict[str, Any]] = {}

    def app(arch: str, **extra: Any) -> dict[str, Any]:
        per_arch[arch] = b.image(f"{name}/{arch}", arch,
                                 [f"base/{arch}", f"python/{arch}", name],
                                 ["python", "-m", "app"], **extra)
        return per_arch[arch]

    index = b.multi_platform(name, app)
    b.tag(index, *((name, "latest") if version == "1.1" else (name,)))
    if referrers:
        b.signature(index, f"sig:{name}")
        if version == "1.1":
            bom = b.sbom(index, f"sbom:{name}", packages=120)
            b.tag(bom)  # pushed by oras: an untagged index.json entry
            b.signature(bom, f"sig:sbom:{name}")
            b.provenance(per_arch["amd64"], f"provenance:{name}/amd64")


def _add_worker(b: _Builder, referrers: bool) -> None:
    """``worker-2.3``: a single-platform OCI manifest, tagged, with ``referrers`` an SBOM."""
    worker = b.image("worker-2.3", "amd64", ["base/amd64", "python/amd64", "worker-2.3"],
                     ["python", "-m", "worker"])
    b.tag(worker, "worker-2.3")
    if referrers:
        b.sbom(worker, "sbom:worker-2.3", packages=90)


def _add_legacy(b: _Builder) -> None:
    """``legacy-0.9``: a Docker manifest list of two Docker v2 manifests, tagged."""
    def legacy(arch: str, **extra: Any) -> dict[str, Any]:
        return b.image(f"legacy-0.9/{arch}", arch, [f"base/{arch}", f"legacy-0.9/{arch}"],
                       ["/usr/bin/legacy"], docker=True, **extra)

    b.tag(b.multi_platform("legacy-0.9", legacy, docker=True), "legacy-0.9")


def _add_garbage(b: _Builder, referrers: bool) -> None:
    """``worker-2.2`` (an untagged entry, signed with ``referrers``), the orphan
    ``app-0.9/amd64`` and the ``dangling`` blob."""
    old = b.image("worker-2.2", "amd64", ["base/amd64", "python/amd64", "worker-2.2"],
                  ["python", "-m", "worker"])
    b.tag(old)  # an earlier push, recorded untagged
    if referrers:
        b.signature(old, "sig:worker-2.2")
    b.image("app-0.9/amd64", "amd64", ["base/amd64", "python/amd64", "app-0.9"],
            ["python", "-m", "app"])  # its index was deleted by a tool without GC
    b.store.add("dangling", b.random_bytes("dangling"), OCI_LAYER)  # an interrupted push left it


def demo_content(
    *,
    seed: int = 0,
    images: Sequence[str] = DEMO_IMAGES,
    referrers: bool = True,
    garbage: bool = True,
    scale: float = 1.0,
) -> DemoContent:
    """The demo layout, in memory.

    seed       changes every random byte (so every digest), never the shape or the sizes
    images     which of :data:`DEMO_IMAGES` to include (in any order; index.json follows
               :data:`DEMO_IMAGES`)
    referrers  signatures, SBOMs and provenance on the images
    garbage    ``worker-2.2`` (untagged entry, signed), the orphan ``app-0.9/amd64`` and the
               ``dangling`` blob
    scale      multiplies every layer size (``0.01`` for a fast test; at least 1 byte each)
    """
    _check_options(images, scale)
    b = _Builder(seed, scale)
    wanted = set(images)
    for version in ("1.0", "1.1"):
        if f"app-{version}" in wanted:
            _add_app(b, version, referrers)
    if "worker-2.3" in wanted:
        _add_worker(b, referrers)
    if "legacy-0.9" in wanted:
        _add_legacy(b)
    if garbage:
        _add_garbage(b, referrers)
    return b.content()
