"""A small, realistic OCI image layout to explore, plan against and break: the notebooks' store.

:func:`demo_content` makes the layout in memory (index.json bytes, blob bytes, and a name for
every blob); :func:`write_demo_layout` writes it to a directory.  Both are deterministic: the
same ``seed`` and options give the same bytes, so the same digests.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

import ocigraph as og

__all__ = ["DEMO_IMAGES", "DemoContent", "demo_content", "write_demo_layout"]

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

    def layout(self) -> og.Layout:
        """The core's value for this content, without touching a disk."""
        return og.layout_from_bytes(self.index_json, dict(self.blobs))


class _Store:
    """Collects blobs and names; hands out descriptors."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.labels: dict[str, str] = {}

    def add(self, label: str, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = og.digest_bytes(data)
        self.blobs[digest] = data
        self.labels[label] = digest
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def document(self, label: str, doc: dict[str, Any], media_type: str,
                 **extra: Any) -> dict[str, Any]:
        return self.add(label, orjson.dumps(doc), media_type, **extra)


def _timestamp(rng: random.Random, year: int = 2024) -> str:
    return (f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z")


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
    unknown = sorted(set(images) - set(DEMO_IMAGES))
    if unknown:
        raise ValueError(f"unknown demo image(s) {', '.join(unknown)}; choose from {', '.join(DEMO_IMAGES)}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    rng = random.Random(seed)
    store = _Store()
    entries: list[dict[str, Any]] = []
    layers: dict[str, dict[str, Any]] = {}

    def layer(name: str, media_type: str = OCI_LAYER) -> dict[str, Any]:
        """The descriptor of a layer, made once per name (so shared layers are one blob)."""
        if name not in layers:
            size = max(1, round(LAYER_KIB[name] * KiB * scale))
            layers[name] = store.add(f"layer:{name}", rng.randbytes(size), OCI_LAYER)
        return {**layers[name], "mediaType": media_type}

    def config(label: str, arch: str, stack: list[dict[str, Any]], cmd: list[str],
               docker: bool = False) -> dict[str, Any]:
        created = _timestamp(rng)
        doc = {
            "created": created,
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
                       "Cmd": cmd, "WorkingDir": "/srv"},
            "rootfs": {"type": "layers",
                       "diff_ids": [og.digest_bytes(b"diff " + d["digest"].encode()) for d in stack]},
            "history": [{"created": created, "created_by": f"layer {i}"} for i in range(len(stack))],
        }
        return store.document(f"{label}:config", doc, DOCKER_CONFIG if docker else OCI_CONFIG)

    def image(label: str, arch: str, names: list[str], cmd: list[str], *,
              docker: bool = False, **extra: Any) -> dict[str, Any]:
        media = DOCKER_LAYER if docker else OCI_LAYER
        stack = [layer(n, media) for n in names]
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": og.DOCKER_MANIFEST if docker else og.OCI_MANIFEST,
            "config": config(label, arch, stack, cmd, docker),
            "layers": stack,
        }
        if not docker:
            doc["annotations"] = {CREATED: _timestamp(rng)}
        return store.document(label, doc, doc["mediaType"], **extra)

    def multi_platform(label: str, build: Any, docker: bool = False) -> dict[str, Any]:
        children = [build(arch, platform={"architecture": arch, "os": "linux"}) for arch in ARCHES]
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": og.DOCKER_LIST if docker else og.OCI_INDEX,
            "manifests": children,
        }
        if not docker:
            doc["annotations"] = {CREATED: _timestamp(rng)}
        return store.document(label, doc, doc["mediaType"])

    def tag(desc: dict[str, Any], *names: str) -> None:
        if not names:
            entries.append(desc)
        for name in names:
            entries.append({**desc, "annotations": {og.REF_NAME: name}})
            store.labels[name] = desc["digest"]

    def subject_of(desc: dict[str, Any]) -> dict[str, Any]:
        return {k: desc[k] for k in ("mediaType", "digest", "size")}

    def referrer(label: str, subject: dict[str, Any], artifact_type: str, payload: bytes,
                 payload_type: str, **payload_annotations: str) -> dict[str, Any]:
        empty = store.add("empty-config", b"{}", OCI_EMPTY)
        blob = store.add(f"{label}:payload", payload, payload_type)
        if payload_annotations:
            blob["annotations"] = payload_annotations
        doc = {
            "schemaVersion": 2,
            "mediaType": og.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": empty,
            "layers": [blob],
            "subject": subject_of(subject),
            "annotations": {CREATED: _timestamp(rng)},
        }
        return store.document(label, doc, og.OCI_MANIFEST, artifactType=artifact_type)

    def signature(subject: dict[str, Any], label: str) -> dict[str, Any]:
        payload = orjson.dumps({
            "critical": {
                "identity": {"docker-reference": "registry.example/demo"},
                "image": {"docker-manifest-digest": subject["digest"]},
                "type": "cosign container image signature",
            },
            "optional": None,
        })
        sig = base64.b64encode(rng.randbytes(72)).decode()
        return referrer(label, subject, SIGNATURE_TYPE, payload, SIGNATURE_PAYLOAD,
                        **{"dev.cosignproject.cosign/signature": sig})

    def sbom(subject: dict[str, Any], label: str, packages: int) -> dict[str, Any]:
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
        return referrer(label, subject, SBOM_TYPE, orjson.dumps(doc), SBOM_TYPE)

    def provenance(subject: dict[str, Any], label: str) -> dict[str, Any]:
        doc = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.example/demo", "digest": {"sha256": subject["digest"][7:]}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"buildDefinition": {"buildType": "https://example.invalid/ci",
                                              "resolvedDependencies": [
                                                  {"digest": {"sha256": rng.randbytes(32).hex()}}
                                                  for _ in range(40)]}},
        }
        return referrer(label, subject, PROVENANCE_TYPE, orjson.dumps(doc), PROVENANCE_TYPE)

    wanted = set(images)
    for version in ("1.0", "1.1"):
        name = f"app-{version}"
        if name not in wanted:
            continue
        per_arch: dict[str, dict[str, Any]] = {}

        def app(arch: str, name: str = name, per_arch: dict[str, dict[str, Any]] = per_arch,
                **extra: Any) -> dict[str, Any]:
            per_arch[arch] = image(f"{name}/{arch}", arch,
                                   [f"base/{arch}", f"python/{arch}", name],
                                   ["python", "-m", "app"], **extra)
            return per_arch[arch]

        index = multi_platform(name, app)
        tag(index, *((name, "latest") if version == "1.1" else (name,)))
        if referrers:
            signature(index, f"sig:{name}")
            if version == "1.1":
                bom = sbom(index, f"sbom:{name}", packages=120)
                tag(bom)  # pushed by oras: an untagged index.json entry
                signature(bom, f"sig:sbom:{name}")
                provenance(per_arch["amd64"], f"provenance:{name}/amd64")

    if "worker-2.3" in wanted:
        worker = image("worker-2.3", "amd64", ["base/amd64", "python/amd64", "worker-2.3"],
                       ["python", "-m", "worker"])
        tag(worker, "worker-2.3")
        if referrers:
            sbom(worker, "sbom:worker-2.3", packages=90)

    if "legacy-0.9" in wanted:
        def legacy(arch: str, **extra: Any) -> dict[str, Any]:
            return image(f"legacy-0.9/{arch}", arch, [f"base/{arch}", f"legacy-0.9/{arch}"],
                         ["/usr/bin/legacy"], docker=True, **extra)

        tag(multi_platform("legacy-0.9", legacy, docker=True), "legacy-0.9")

    if garbage:
        old = image("worker-2.2", "amd64", ["base/amd64", "python/amd64", "worker-2.2"],
                    ["python", "-m", "worker"])
        tag(old)  # an earlier push, recorded untagged
        if referrers:
            signature(old, "sig:worker-2.2")
        image("app-0.9/amd64", "amd64", ["base/amd64", "python/amd64", "app-0.9"],
              ["python", "-m", "app"])  # its index was deleted by a tool without GC
        size = max(1, round(LAYER_KIB["dangling"] * KiB * scale))
        store.add("dangling", rng.randbytes(size), OCI_LAYER)  # an interrupted push left it

    index_json = orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_INDEX, "manifests": entries},
                              option=orjson.OPT_INDENT_2)
    tags = tuple(sorted(e["annotations"][og.REF_NAME] for e in entries if "annotations" in e))
    return DemoContent(index_json=index_json, blobs=MappingProxyType(store.blobs),
                       labels=MappingProxyType(dict(sorted(store.labels.items()))), tags=tags)


def write_demo_layout(path: Path | str, *, seed: int = 0, images: Sequence[str] = DEMO_IMAGES,
                      referrers: bool = True, garbage: bool = True, scale: float = 1.0) -> Path:
    """Write :func:`demo_content` as an OCI image layout at ``path`` and return ``path``.

    ``path`` must not exist or be an empty directory: this never writes over a layout.
    The options are those of :func:`demo_content`.
    """
    root = Path(path)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty directory")
    demo = demo_content(seed=seed, images=images, referrers=referrers, garbage=garbage, scale=scale)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for digest, data in demo.blobs.items():
        (blobs / digest.split(":", 1)[1]).write_bytes(data)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_bytes(demo.index_json)
    return root
