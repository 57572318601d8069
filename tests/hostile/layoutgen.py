"""Generated layouts on disk, tree snapshots, and a liveness model written without the core.

The model (:func:`model_live`, :func:`model_reachable`) re-implements SEMANTICS §1-§2 with the
standard library only (``json``, ``hashlib``): the reliability tests use it to decide which
blobs must survive, so a bug in ``ocigraph``'s graph code cannot hide itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SIGNATURE = "application/vnd.example.signature.v1"
REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'

# Written out again on purpose (not imported from ocigraph): the model must stay independent.
MODEL_SUCCESSOR_FIELDS: dict[str, tuple[str, ...]] = {
    OCI_MANIFEST: ("subject", "config", "layers"),
    OCI_INDEX: ("subject", "manifests"),
    OCI_ARTIFACT: ("subject", "blobs"),
    DOCKER_MANIFEST: ("config", "layers"),
    DOCKER_LIST: ("manifests",),
}
_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# --- building ------------------------------------------------------------------------------


@dataclass
class LayoutBuilder:
    """Collects blobs and index.json entries in memory; :meth:`write` puts them on disk."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    extra_index_fields: dict[str, Any] = field(default_factory=dict)

    def blob(self, data: bytes | str, media_type: str = LAYER) -> dict[str, Any]:
        raw = data.encode() if isinstance(data, str) else data
        d = sha256(raw)
        self.blobs[d] = raw
        return {"mediaType": media_type, "digest": d, "size": len(raw)}

    def doc(self, doc: dict[str, Any], media_type: str) -> dict[str, Any]:
        return self.blob(canonical(doc), media_type)

    def image(self, name: str, layers: Iterable[dict[str, Any]] = (), *,
              subject: dict[str, Any] | None = None, n_layers: int = 2) -> dict[str, Any]:
        """An OCI image manifest with its own config and ``n_layers`` unique layers (+ ``layers``)."""
        config = self.blob(canonical({"name": name}), CONFIG)
        own = [self.blob(f"layer {i} of {name}") for i in range(n_layers)]
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                               "layers": [*own, *layers]}
        if subject is not None:
            doc["subject"] = subject
        return self.doc(doc, OCI_MANIFEST)

    def signature(self, name: str, subject: dict[str, Any]) -> dict[str, Any]:
        """A referrer: an OCI manifest with ``subject``, an empty config and one signature layer."""
        sig = self.blob(f"signature {name}", SIGNATURE)
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIGNATURE,
               "config": self.blob("{}", "application/vnd.oci.empty.v1+json"),
               "layers": [sig], "subject": subject}
        return self.doc(doc, OCI_MANIFEST)

    def index(self, manifests: list[dict[str, Any]], name: str = "") -> dict[str, Any]:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
               "annotations": {"name": name}}
        return self.doc(doc, OCI_INDEX)

    def entry(self, desc: Mapping[str, Any], tag: str | None = None) -> None:
        e = dict(desc)
        if tag is not None:
            e["annotations"] = {REF_NAME: tag}
        self.entries.append(e)

    def index_json(self) -> bytes:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries,
               **self.extra_index_fields}
        return json.dumps(doc, indent=1).encode()

    def write(self, root: Path) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_bytes(OCI_LAYOUT)
        (root / "index.json").write_bytes(self.index_json())
        for d, data in self.blobs.items():
            alg, enc = d.split(":", 1)
            (root / "blobs" / alg).mkdir(parents=True, exist_ok=True)
            (root / "blobs" / alg / enc).write_bytes(data)
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        return root


def gc_workload(n_garbage_images: int, n_live_images: int = 10, n_dangling: int = 20,
                seed: int = 0) -> LayoutBuilder:
    """A layout whose ``gc`` deletes about ``6 * n_garbage_images + n_dangling`` blobs.

    Live: tagged images, a tagged index of three of them, a signature (untagged index.json
    entry) on each live image, and a signature of that signature.  Garbage: untagged images
    (index.json entries, as oras records old pushes) each with config, two unique layers, one
    layer shared with a live image (kept) and an indexed signature; and dangling blobs.
    """
    rng = random.Random(seed)
    b = LayoutBuilder(extra_index_fields={"annotations": {"org.example.keep": "this field"}})
    live = [b.image(f"live-{i}") for i in range(n_live_images)]
    shared = [b.blob(f"shared base layer {i}") for i in range(3)]
    for i, m in enumerate(live):
        b.entry(m, tag=f"v{i}")
        sig = b.signature(f"live-{i}", m)
        b.entry(sig)
        b.entry(b.signature(f"sig-of-sig-{i}", sig))
    b.entry(b.index(live[:3], "multi"), tag="multi")
    for i in range(n_garbage_images):
        m = b.image(f"garbage-{i}", [rng.choice(shared)])
        b.entry(m)  # untagged: collected by the default policy
        b.entry(b.signature(f"garbage-{i}", m))
    # the shared layers are live through a tagged image that uses them all
    b.entry(b.image("base", shared), tag="base")
    for i in range(n_dangling):
        b.blob(f"dangling {i} {rng.random()}")
    return b


# --- the independent model ------------------------------------------------------------------


_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_DESCRIPTOR_FIELDS = ("subject", "config", "layers", "manifests", "blobs")
SNIFF_LIMIT = 4 * 1024 * 1024  # blobs no descriptor explains are read as possible manifests


def _valid_digest(value: Any) -> bool:
    """A digest of an algorithm whose blobs live under ``blobs/`` (sha256, sha384, sha512)."""
    if not isinstance(value, str) or ":" not in value:
        return False
    alg, enc = value.split(":", 1)
    n = _HEX_LEN.get(alg)
    return n is not None and len(enc) == n and not enc.strip("0123456789abcdef")


def _grammatical_digest(value: Any) -> bool:
    if not isinstance(value, str) or not _GRAMMAR.fullmatch(value):
        return False
    return value.split(":", 1)[0] not in _HEX_LEN or _valid_digest(value)


def _well_formed(d: Any) -> bool:
    """An OCI descriptor as image-spec (and ocigraph's strict parser) accepts it."""
    if not isinstance(d, dict) or not isinstance(d.get("mediaType"), str):
        return False
    if not _grammatical_digest(d.get("digest")):
        return False
    if type(d.get("size")) is not int or d["size"] < 0:
        return False
    if "artifactType" in d and d["artifactType"] is not None and not isinstance(d["artifactType"], str):
        return False
    ann = d.get("annotations")
    if ann is not None and (not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values())):
        return False
    plat = d.get("platform")
    return plat is None or isinstance(plat, dict)


def _read_blob(root: Path, digest: str) -> bytes | None:
    alg, enc = digest.split(":", 1)
    path = root / "blobs" / alg / enc
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.new(alg, data).hexdigest() != enc:
        return None
    return data


def _manifest_fields(raw: bytes) -> dict[str, list[tuple[str, str]]] | None:
    """``field -> [(digest, mediaType)]`` of a manifest whose every descriptor is well formed
    (one bad descriptor makes the whole manifest unusable: its successors are unknown)."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    out: dict[str, list[tuple[str, str]]] = {}
    for name in _DESCRIPTOR_FIELDS:
        value = doc.get(name)
        if value is None:
            continue
        items = [value] if name in ("subject", "config") else value
        if not isinstance(items, list) or not all(_well_formed(d) for d in items):
            return None
        out[name] = [(d["digest"], d["mediaType"]) for d in items]
    out["#mediaType"] = [("", doc["mediaType"])] if isinstance(doc.get("mediaType"), str) else []
    return out


def _content_media_type(fields: Mapping[str, list[tuple[str, str]]]) -> str | None:
    """How to walk a manifest no descriptor points at: its own mediaType, else its fields."""
    declared = fields.get("#mediaType")
    if declared:
        mt = declared[0][1]
        return mt if mt in MODEL_SUCCESSOR_FIELDS else None
    has = {name for name, items in fields.items() if items and name != "#mediaType"}
    if "manifests" in has:
        return OCI_INDEX
    if "blobs" in has:
        return OCI_ARTIFACT
    if has & {"config", "layers", "subject"}:
        return OCI_MANIFEST
    return None


@dataclass(frozen=True)
class ModelGraph:
    succ: Mapping[str, frozenset[str]]
    subject_of: Mapping[str, frozenset[str]]  # referrer -> subjects
    tagged: frozenset[str]
    indexed: frozenset[str]


def model_graph(root: Path, index_bytes: bytes | None = None) -> ModelGraph | None:
    """The graph SEMANTICS §1 describes, built with the standard library; ``None`` when
    index.json does not parse as a JSON object with a list of manifests.

    As ocigraph does, a present blob that no descriptor explains (a referrer that index.json
    does not list) is read, and walked if its content is a manifest.
    """
    try:
        if index_bytes is None and not stat.S_ISREG(os.lstat(root / "index.json").st_mode):
            return None  # a FIFO or folder planted as index.json: never open it
        data = index_bytes if index_bytes is not None else (root / "index.json").read_bytes()
        doc = json.loads(data)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
        return None
    succ: dict[str, set[str]] = {}
    subject_of: dict[str, set[str]] = {}
    tagged, indexed, explained = set(), set(), set()
    todo: list[tuple[str, str]] = []
    for e in doc.get("manifests", []):
        if not isinstance(e, dict) or not _grammatical_digest(e.get("digest")):
            continue
        indexed.add(e["digest"])
        explained.add(e["digest"])
        ann = e.get("annotations")
        if isinstance(ann, dict) and isinstance(ann.get(REF_NAME), str):
            tagged.add(e["digest"])
        if isinstance(e.get("mediaType"), str):
            todo.append((e["digest"], e["mediaType"]))
    walked: set[tuple[str, str]] = set()

    def walk() -> None:
        while todo:
            d, mt = todo.pop()
            if (d, mt) in walked or mt not in MODEL_SUCCESSOR_FIELDS or not _valid_digest(d):
                continue
            walked.add((d, mt))
            raw = _read_blob(root, d)
            fields = None if raw is None else _manifest_fields(raw)
            if fields is None:
                continue
            for name in MODEL_SUCCESSOR_FIELDS[mt]:
                for child, child_mt in fields.get(name, ()):
                    explained.add(child)
                    succ.setdefault(d, set()).add(child)
                    if name == "subject":
                        subject_of.setdefault(d, set()).add(child)
                    todo.append((child, child_mt))

    walk()
    for d in sorted(present_blobs(root) - explained):
        alg, enc = d.split(":", 1)
        try:
            if os.lstat(root / "blobs" / alg / enc).st_size > SNIFF_LIMIT:
                continue
        except OSError:
            continue
        raw = _read_blob(root, d)
        fields = None if raw is None else _manifest_fields(raw)
        mt = None if fields is None else _content_media_type(fields)
        if mt is not None:
            todo.append((d, mt))
    walk()
    return ModelGraph(
        succ={k: frozenset(v) for k, v in succ.items()},
        subject_of={k: frozenset(v) for k, v in subject_of.items()},
        tagged=frozenset(tagged),
        indexed=frozenset(indexed),
    )


def _closure(g: ModelGraph, start: Iterable[str], *, referrers: bool) -> frozenset[str]:
    referrers_of: dict[str, set[str]] = {}
    if referrers:
        for r, subjects in g.subject_of.items():
            for s in subjects:
                referrers_of.setdefault(s, set()).add(r)
    seen = set(start)
    stack = list(seen)
    while stack:
        n = stack.pop()
        for nxt in (*g.succ.get(n, ()), *referrers_of.get(n, ())):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return frozenset(seen)


def model_live(root: Path, keep_untagged: bool = False) -> frozenset[str] | None:
    """Live digests (SEMANTICS §2) of the layout at ``root``, or ``None`` if index.json is unusable."""
    g = model_graph(root)
    if g is None:
        return None
    return _closure(g, g.indexed if keep_untagged else g.tagged, referrers=True)


def model_reachable(root: Path) -> frozenset[str] | None:
    """Everything reachable over successor edges from *every* index.json entry."""
    g = model_graph(root)
    if g is None:
        return None
    return _closure(g, g.indexed, referrers=False)


# --- looking at the tree --------------------------------------------------------------------


def present_blobs(root: Path) -> frozenset[str]:
    """Digests of the regular files under ``blobs/<alg>/`` with a valid digest name."""
    out = set()
    blobs = root / "blobs"
    for alg in _HEX_LEN:
        d = blobs / alg
        if not d.is_dir() or d.is_symlink():
            continue
        for e in os.scandir(d):
            if _valid_digest(f"{alg}:{e.name}") and e.is_file(follow_symlinks=False):
                out.add(f"{alg}:{e.name}")
    return frozenset(out)


def snapshot_tree(*roots: Path) -> dict[str, tuple[str, bytes | str | None, int]]:
    """``relative path -> (kind, content or link target, mtime_ns)`` for every entry under the
    roots, symlinks not followed.  Two equal snapshots mean nothing was created, deleted,
    rewritten or touched."""
    out: dict[str, tuple[str, bytes | str | None, int]] = {}
    for top in roots:
        st = os.lstat(top)
        out[os.fsdecode(top)] = ("root", None, st.st_mtime_ns)
        for dirpath, dirnames, filenames in os.walk(os.fsencode(top)):
            for name in sorted(dirnames) + sorted(filenames):
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                key = os.fsdecode(p)
                if stat.S_ISLNK(st.st_mode):
                    out[key] = ("link", os.fsdecode(os.readlink(p)), st.st_mtime_ns)
                elif stat.S_ISDIR(st.st_mode):
                    out[key] = ("dir", None, st.st_mtime_ns)
                elif stat.S_ISREG(st.st_mode):
                    try:
                        with open(p, "rb") as f:
                            data: bytes | None = f.read()
                    except OSError:
                        data = None
                    out[key] = ("file", data, st.st_mtime_ns)
                else:
                    out[key] = ("other", None, st.st_mtime_ns)
    return out


def diff_snapshots(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Human-readable differences (empty when equal)."""
    out = []
    for k in sorted(before.keys() | after.keys()):
        a, b = before.get(k), after.get(k)
        if a == b:
            continue
        if a is None:
            out.append(f"created {k}")
        elif b is None:
            out.append(f"deleted {k}")
        elif a[1] != b[1]:
            out.append(f"changed {k}")
        else:
            out.append(f"touched {k}")
    return out
