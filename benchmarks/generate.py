"""Deterministic synthetic OCI image layouts with the shapes real stores have.

``python -m benchmarks.generate --size 100k --out benchmarks/data/100k/layout``

The same ``(size, seed)`` always gives the same blobs and the same index.json (file mtimes
aside).  Files are written directly (``os.open``/``os.write``), content is tiny: what costs a GC
tool is the number of files and manifests, not their bytes.

What a layout holds, in roughly the proportions of the issue's reference store (20,000 manifests
for 86,000 blobs, about 23% manifests):

* single-platform images, OCI and Docker media types, a few layers each, some of them drawn
  (skewed: a few base layers are very popular) from a pool shared across images;
* multi-platform OCI indexes (with buildx-style attestation manifests) and Docker manifest lists;
* Helm-chart style OCI artifacts, and a few withdrawn ``artifact.manifest.v1`` referrers;
* referrers recorded as untagged index.json entries, as oras does: signatures, SBOMs and
  signatures of SBOMs (referrers of referrers);
* tags: one per image, a second one (``latest``) on some, and untagged entries -- old pushes
  that the default policy collects;
* garbage: dangling blobs nobody references, and orphaned manifests (a tag moved away without a
  GC) with their configs, unique layers and referrers.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["SIZES", "GenStats", "generate", "parse_size", "ensure_layout"]

SIZES: dict[str, int] = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"

SIG_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
NOTARY_TYPE = "application/vnd.cncf.notary.signature"
SBOM_TYPE = "application/spdx+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

PLATFORMS = (("amd64", None), ("arm64", "v8"), ("arm", "v7"), ("ppc64le", None), ("s390x", None))

#: share of each top-level kind (a "push"); tuned so manifests are ~23% of all blobs.
KIND_WEIGHTS = (
    ("oci_image", 46),
    ("docker_image", 18),
    ("oci_index", 17),
    ("docker_list", 8),
    ("helm_chart", 11),
)

_FILLER = bytes(random.Random(12345).getrandbits(8) for _ in range(4096))


def parse_size(text: str) -> int:
    """``10k``, ``100k``, ``1m``, or a plain number of blobs."""
    t = text.strip().lower()
    if t in SIZES:
        return SIZES[t]
    if t.endswith("k"):
        return int(float(t[:-1]) * 1_000)
    if t.endswith("m"):
        return int(float(t[:-1]) * 1_000_000)
    return int(t)


@dataclass
class GenStats:
    """What a generated layout holds (written next to it as ``<layout>.json``)."""

    target: int
    seed: int
    blobs: int = 0
    manifests: int = 0
    index_entries: int = 0
    tagged_entries: int = 0
    untagged_images: int = 0
    referrers: int = 0
    orphaned_manifests: int = 0
    dangling_blobs: int = 0
    shared_pool: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    tags_for_delete: list[str] = field(default_factory=list)


class _Blobs:
    """Writes content-addressed blobs into ``blobs/sha256`` once each."""

    def __init__(self, root: Path) -> None:
        self.dir = str(root / "blobs" / "sha256")
        os.makedirs(self.dir)
        self.written: set[str] = set()
        self.manifests = 0

    def put(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        hexd = hashlib.sha256(data).hexdigest()
        if hexd not in self.written:
            fd = os.open(f"{self.dir}/{hexd}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            self.written.add(hexd)
            if media_type in (OCI_MANIFEST, OCI_INDEX, OCI_ARTIFACT, DOCKER_MANIFEST, DOCKER_LIST):
                self.manifests += 1
        desc: dict[str, Any] = {"mediaType": media_type, "digest": f"sha256:{hexd}", "size": len(data)}
        desc.update(extra)
        return desc

    def put_json(self, doc: dict[str, Any], media_type: str, **extra: Any) -> dict[str, Any]:
        return self.put(orjson.dumps(doc), media_type, **extra)


class _Generator:
    def __init__(self, root: Path, target: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.target = target
        self.blobs = _Blobs(root)
        self.n = 0
        self.index: list[dict[str, Any]] = []
        self.stats = GenStats(target=target, seed=seed)
        self.empty = self.blobs.put(b"{}", OCI_EMPTY)
        # A skewed pool of shared base layers per architecture (about 1.5% of all blobs).
        per_arch = max(4, target * 15 // 1000 // len(PLATFORMS))
        self.pool: dict[str, list[bytes]] = {
            arch: [self._content(f"base-{arch}") for _ in range(per_arch)] for arch, _ in PLATFORMS
        }
        self.stats.shared_pool = per_arch * len(PLATFORMS)
        self.tagged: list[tuple[str, int]] = []  # (tag, kind blob count) of clean single images

    # -- content ----------------------------------------------------------------------------

    def _content(self, what: str) -> bytes:
        self.n += 1
        k = self.rng.randrange(8, 1500)
        return f"{what}:{self.n}:".encode() + _FILLER[:k]

    def _layer(self, media_type: str, arch: str) -> list[dict[str, Any]]:
        """Layers of one image: 0-2 shared base layers (skewed), 1-4 unique ones."""
        rng = self.rng
        layers = []
        pool = self.pool[arch]
        for _ in range(rng.choice((0, 1, 1, 2))):
            layers.append(self.blobs.put(pool[int(len(pool) * rng.random() ** 3)], media_type))
        for _ in range(rng.choice((1, 2, 3, 3, 4, 5, 6))):
            layers.append(self.blobs.put(self._content("layer"), media_type))
        return layers

    def _config(self, media_type: str, arch: str, variant: str | None, layers: list[dict[str, Any]]) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "architecture": arch,
            "os": "linux",
            "created": f"2024-01-01T00:00:{self.n % 60:02d}Z",
            "config": {"Labels": {"gen": str(self.n)}},
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layers]},
        }
        self.n += 1
        if variant:
            doc["variant"] = variant
        return self.blobs.put_json(doc, media_type)

    def _image(self, docker: bool, arch: str = "amd64", variant: str | None = None) -> dict[str, Any]:
        layer_mt = DOCKER_LAYER if docker else OCI_LAYER
        layers = self._layer(layer_mt, arch)
        config = self._config(DOCKER_CONFIG if docker else OCI_CONFIG, arch, variant, layers)
        mt = DOCKER_MANIFEST if docker else OCI_MANIFEST
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt, "config": config, "layers": layers}
        if not docker:
            doc["annotations"] = {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
        return self.blobs.put_json(doc, mt)

    def _multi(self, docker: bool) -> dict[str, Any]:
        rng = self.rng
        n = rng.choice((2, 2, 3, 4, 5))
        manifests = []
        for arch, variant in PLATFORMS[:n]:
            plat = {"architecture": arch, "os": "linux"}
            if variant:
                plat["variant"] = variant
            d = self._image(docker, arch, variant)
            d["platform"] = plat
            manifests.append(d)
        if not docker and rng.random() < 0.5:  # buildx attestation manifests
            for m in list(manifests):
                statement = self.blobs.put(self._content("intoto"), "application/vnd.in-toto+json",
                                           annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"})
                cfg = self._config(OCI_CONFIG, "unknown", None, [statement])
                att = self.blobs.put_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
                                           "layers": [statement]}, OCI_MANIFEST)
                att["platform"] = {"architecture": "unknown", "os": "unknown"}
                att["annotations"] = {"vnd.docker.reference.digest": m["digest"],
                                      "vnd.docker.reference.type": "attestation-manifest"}
                manifests.append(att)
        mt = DOCKER_LIST if docker else OCI_INDEX
        return self.blobs.put_json({"schemaVersion": 2, "mediaType": mt, "manifests": manifests}, mt)

    def _helm(self) -> dict[str, Any]:
        cfg = self.blobs.put_json({"name": f"chart{self.n}", "version": "1.0.0", "apiVersion": "v2"}, HELM_CONFIG)
        self.n += 1
        chart = self.blobs.put(self._content("chart"), HELM_LAYER,
                               annotations={"org.opencontainers.image.title": f"chart{self.n}.tgz"})
        return self.blobs.put_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": HELM_CONFIG,
                                    "config": cfg, "layers": [chart]}, OCI_MANIFEST, artifactType=HELM_CONFIG)

    def _referrer(self, subject: dict[str, Any], artifact_type: str, layer_type: str) -> dict[str, Any]:
        subj = {k: subject[k] for k in ("mediaType", "digest", "size")}
        payload = self.blobs.put(self._content(artifact_type), layer_type)
        if self.rng.random() < 0.02:  # the withdrawn artifact manifest type
            doc = {"mediaType": OCI_ARTIFACT, "artifactType": artifact_type, "blobs": [payload], "subject": subj}
            return self.blobs.put_json(doc, OCI_ARTIFACT, artifactType=artifact_type)
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
               "config": self.empty, "layers": [payload], "subject": subj,
               "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}}
        return self.blobs.put_json(doc, OCI_MANIFEST, artifactType=artifact_type)

    def _referrers(self, subject: dict[str, Any], record: bool) -> None:
        """Signatures, SBOMs and signatures of SBOMs; recorded as untagged index.json entries."""
        rng = self.rng
        out = []
        if rng.random() < 0.30:
            out.append(self._referrer(subject, SIG_TYPE if rng.random() < 0.7 else NOTARY_TYPE,
                                      "application/vnd.dev.cosign.simplesigning.v1+json"))
        if rng.random() < 0.15:
            sbom = self._referrer(subject, SBOM_TYPE, SBOM_TYPE)
            out.append(sbom)
            if rng.random() < 0.5:  # a signature of the SBOM: a referrer of a referrer
                out.append(self._referrer(sbom, SIG_TYPE, "application/vnd.dev.cosign.simplesigning.v1+json"))
        self.stats.referrers += len(out)
        if record:
            for d in out:
                self._entry(d, None)

    # -- index.json -------------------------------------------------------------------------

    def _entry(self, desc: dict[str, Any], tag: str | None) -> None:
        e = {k: v for k, v in desc.items() if k != "platform"}
        if tag is not None:
            e["annotations"] = {**e.get("annotations", {}), REF_NAME: tag}
            self.stats.tagged_entries += 1
        self.index.append(e)

    # -- the store --------------------------------------------------------------------------

    def run(self) -> GenStats:
        rng = self.rng
        kinds = [k for k, _ in KIND_WEIGHTS]
        weights = [w for _, w in KIND_WEIGHTS]
        dangling = self.target * 2 // 100
        push = 0
        while len(self.blobs.written) < self.target - dangling:
            push += 1
            kind = rng.choices(kinds, weights)[0]
            self.stats.kinds[kind] = self.stats.kinds.get(kind, 0) + 1
            if kind == "oci_image":
                desc = self._image(False)
            elif kind == "docker_image":
                desc = self._image(True)
            elif kind == "oci_index":
                desc = self._multi(False)
            elif kind == "docker_list":
                desc = self._multi(True)
            else:
                desc = self._helm()
            fate = rng.random()
            if fate < 0.04:  # orphaned: its tag moved on, no GC since; never recorded
                self.stats.orphaned_manifests += 1
                self._referrers(desc, record=False)
                continue
            if fate < 0.12:  # pushed and left untagged (oras records every push)
                self.stats.untagged_images += 1
                self._entry(desc, None)
                self._referrers(desc, record=True)
                continue
            tag = f"registry.example.com/team{push % 97}/app{push}:v{push % 13}.{push % 7}"
            self._entry(desc, tag)
            if rng.random() < 0.05:
                self._entry(desc, f"registry.example.com/team{push % 97}/app{push}:latest")
            if kind in ("oci_image", "docker_image") and len(self.stats.tags_for_delete) < 20:
                self.stats.tags_for_delete.append(tag)
            self._referrers(desc, record=True)
        while len(self.blobs.written) < self.target:
            self.blobs.put(self._content("dangling"), OCI_LAYER)
            self.stats.dangling_blobs += 1
        self.stats.blobs = len(self.blobs.written)
        self.stats.manifests = self.blobs.manifests
        self.stats.index_entries = len(self.index)
        return self.stats


def generate(out: Path | str, target: int, seed: int = 0) -> GenStats:
    """Write a layout of about ``target`` blobs into ``out`` (which must not exist)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(out)
    started = time.monotonic()
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    gen = _Generator(tmp, target, seed)
    stats = gen.run()
    (tmp / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (tmp / "index.json").write_bytes(orjson.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                   "manifests": gen.index}))
    stats.seconds = round(time.monotonic() - started, 2)
    os.rename(tmp, out)
    Path(str(out) + ".json").write_bytes(orjson.dumps(asdict(stats), option=orjson.OPT_INDENT_2))
    return stats


def load_stats(layout: Path | str) -> GenStats:
    return GenStats(**orjson.loads(Path(str(layout) + ".json").read_bytes()))


def ensure_layout(out: Path | str, target: int, seed: int = 0) -> GenStats:
    """Generate ``out`` unless a layout made with the same target and seed is already there."""
    out = Path(out)
    if out.exists():
        try:
            stats = load_stats(out)
            if stats.target == target and stats.seed == seed:
                return stats
        except (OSError, TypeError, orjson.JSONDecodeError):
            pass
        shutil.rmtree(out)
    return generate(out, target, seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="10k", help="10k, 100k, 1m, or a number of blobs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    stats = generate(args.out, parse_size(args.size), args.seed)
    d = asdict(stats)
    d.pop("tags_for_delete")
    print(orjson.dumps(d, option=orjson.OPT_INDENT_2).decode())
    print(f"manifests/blobs = {stats.manifests / stats.blobs:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
