"""A tiny in-memory layout builder for tests: content in, digests and a core Layout out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

import ocigraph as og

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"


class Builder:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.entries: list[dict[str, Any]] = []
        self.absent: set[str] = set()

    def blob(self, content: bytes | str, media_type: str = LAYER, alg: str = "sha256",
             present: bool = True) -> dict[str, Any]:
        data = content.encode() if isinstance(content, str) else content
        d = og.digest_bytes(data, alg)
        if present:
            self.blobs[d] = data
        else:
            self.absent.add(d)
        return {"mediaType": media_type, "digest": d, "size": len(data)}

    def _doc(self, doc: dict[str, Any], media_type: str, present: bool = True) -> dict[str, Any]:
        return self.blob(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS), media_type, present=present)

    def manifest(self, config: dict[str, Any] | None = None, layers: list[dict[str, Any]] = (),  # type: ignore[assignment]
                 subject: dict[str, Any] | None = None, media_type: str = og.OCI_MANIFEST,
                 artifact_type: str | None = None, present: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                               "config": config or self.blob("{}", CONFIG), "layers": list(layers)}
        if subject is not None:
            doc["subject"] = subject
        if artifact_type is not None:
            doc["artifactType"] = artifact_type
        return self._doc(doc, media_type, present)

    def index(self, manifests: list[dict[str, Any]], subject: dict[str, Any] | None = None,
              media_type: str = og.OCI_INDEX) -> dict[str, Any]:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
        if subject is not None:
            doc["subject"] = subject
        return self._doc(doc, media_type)

    def entry(self, desc: dict[str, Any], tag: str | None = None) -> None:
        e = dict(desc)
        if tag is not None:
            e["annotations"] = {og.REF_NAME: tag}
        self.entries.append(e)

    def index_json(self) -> bytes:
        return orjson.dumps({"schemaVersion": 2, "manifests": self.entries})

    def layout(self, mtimes: dict[str, float] | None = None, now: float | None = None) -> og.Layout:
        return og.layout_from_bytes(self.index_json(), self.blobs, mtimes, now)

    def graph(self, **kw: Any) -> og.LayoutGraph:
        """The layout's graph, with the blobs' modification times (``grace`` needs them)."""
        return og.build_graph(self.layout(**kw), mtimes=True)


def two_images_and_a_signature() -> tuple[Builder, dict[str, dict[str, Any]]]:
    """``app:1`` and ``app:0`` sharing a layer, a signature of ``app:1`` that nobody lists, and a
    dangling blob; their descriptors by name (``img``, ``old``, ``sig``)."""
    b = Builder()
    shared = b.blob("shared")
    img = b.manifest(layers=[shared, b.blob("a1")])
    b.entry(img, "app:1")
    old = b.manifest(layers=[shared, b.blob("old")])
    b.entry(old, "app:0")
    sig = b.manifest(layers=[b.blob("sig")], subject=img, artifact_type="application/x-sig")
    b.blob("dangling")
    return b, {"img": img, "old": old, "sig": sig}


def write_layout(root: Path, index_json: bytes, blobs: Mapping[str, bytes]) -> Path:
    """Write a layout at ``root`` (which must not exist): ``oci-layout``, ``index.json`` and
    ``blobs/<alg>/<encoded>`` for every blob (``blobs/sha256/`` always)."""
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_bytes(index_json)
    for digest, data in blobs.items():
        alg, encoded = digest.split(":", 1)
        (root / "blobs" / alg).mkdir(exist_ok=True)
        (root / "blobs" / alg / encoded).write_bytes(data)
    return root


def many_images(count: int = 420) -> tuple[Builder, list[str]]:
    """``count`` tagged images of a config and four layers, one layer shared by all: with the
    default 420, 2,101 blobs -- just above the size a layout must have to be stored
    (``io_adapters.planner._MIN_BLOBS``), written in a fraction of a second.  Its tags."""
    b = Builder()
    base = b.blob("base")
    tags = []
    for i in range(count):
        img = b.manifest(config=b.blob(f'{{"n":{i}}}', CONFIG),
                         layers=[base, *(b.blob(f"{i}-{k}") for k in range(3))])
        tags.append(f"img:{i}")
        b.entry(img, tags[-1])
    return b, tags
