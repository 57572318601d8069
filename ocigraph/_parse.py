"""Bytes in, values out: index.json and manifests.  No I/O.

Parsing is strict about what GC depends on (digests, sizes, the shape of descriptor lists) and
lenient about everything else (unknown fields are kept in ``raw`` and survive a rewrite).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from ._digest import digest_bytes, is_sweepable, parse_digest, verify
from ._errors import InvalidDigestError, InvalidIndexError, LayoutError
from ._mediatypes import REF_NAME
from ._model import (
    BlobInfo,
    Descriptor,
    Index,
    IndexEntry,
    Layout,
    Manifest,
    freeze_pairs,
)

__all__ = [
    "parse_descriptor",
    "parse_index",
    "parse_manifest",
    "render_index",
    "BytesManifestSource",
    "layout_from_bytes",
]

_LIST_FIELDS = ("layers", "manifests", "blobs")
_ONE_FIELDS = ("subject", "config")


class _BadDescriptor(ValueError):
    pass


def _string_pairs(value: object, what: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _BadDescriptor(f"{what} is not an object")
    for k, v in value.items():
        if not isinstance(v, str):
            raise _BadDescriptor(f"{what}[{k!r}] is not a string")
    return freeze_pairs(value.items())


def parse_descriptor(obj: object, where: str = "descriptor") -> Descriptor:
    """Validate one descriptor object and return it as a :class:`Descriptor`.

    >>> d = parse_descriptor({"mediaType": "text/plain", "digest": "sha256:" + "0" * 64, "size": 3})
    >>> d.size, d.media_type
    (3, 'text/plain')
    >>> parse_descriptor({"digest": "sha256:0", "size": 1, "mediaType": "x"}, "layers[0]")
    Traceback (most recent call last):
    ...
    ocigraph._errors.InvalidDigestError: invalid digest 'sha256:0' in layers[0]: sha256 needs 64 lowercase hex characters
    """
    if not isinstance(obj, dict):
        raise _BadDescriptor(f"{where} is not an object")
    media_type = obj.get("mediaType")
    if not isinstance(media_type, str):
        raise _BadDescriptor(f"{where}.mediaType is missing or not a string")
    if "digest" not in obj:
        raise _BadDescriptor(f"{where} has no digest")
    digest = parse_digest(obj["digest"], where)
    size = obj.get("size")
    if type(size) is not int or size < 0:
        raise _BadDescriptor(f"{where}.size is missing or not a non-negative integer")
    artifact_type = obj.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _BadDescriptor(f"{where}.artifactType is not a string")
    platform = obj.get("platform")
    plat = None
    if platform is not None:
        if not isinstance(platform, dict):
            raise _BadDescriptor(f"{where}.platform is not an object")
        plat = freeze_pairs((k, v) for k, v in platform.items() if isinstance(v, str))
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        annotations=_string_pairs(obj.get("annotations"), f"{where}.annotations"),
        artifact_type=artifact_type,
        platform=plat,
    )


_HEX = "0123456789abcdef"
_intern = sys.intern
_new = tuple.__new__


def _well_formed_descriptor(obj: object) -> Descriptor | None:
    """The common case of :func:`parse_descriptor`, fast: a well-formed descriptor with a sha256
    digest, else ``None`` (then :func:`parse_descriptor` decides, and names the fault).

    It accepts exactly what :func:`parse_descriptor` accepts and returns an equal value; it only
    skips building ``where`` strings and the general digest grammar (a million descriptors).
    """
    if type(obj) is not dict:
        return None
    try:
        media_type = obj["mediaType"]
        digest = obj["digest"]
        size = obj["size"]
    except KeyError:
        return None
    # Only "sha256:" followed by lowercase hex rstrips to "sha256:"; a length of 71 makes it 64.
    if (type(media_type) is not str or type(digest) is not str or type(size) is not int
            or size < 0 or len(digest) != 71 or digest.rstrip(_HEX) != "sha256:"):
        return None
    # A layout has a million descriptors and a dozen media types: one string object each.
    media_type = _intern(media_type)
    if len(obj) == 3:  # most descriptors: nothing else to look at
        return _new(Descriptor, (media_type, digest, size, (), None, None))
    artifact_type = obj.get("artifactType")
    if artifact_type is not None:
        if type(artifact_type) is not str:
            return None
        artifact_type = _intern(artifact_type)
    annotations = obj.get("annotations")
    pairs: tuple[tuple[str, str], ...] = ()
    if annotations:
        if type(annotations) is not dict:
            return None
        for v in annotations.values():
            if type(v) is not str:
                return None
        pairs = tuple(sorted(annotations.items()) if len(annotations) > 1 else annotations.items())
    elif annotations is not None and type(annotations) is not dict:
        return None
    platform = obj.get("platform")
    plat = None
    if platform is not None:
        if type(platform) is not dict:
            return None
        items: Iterable[tuple[Any, Any]] = platform.items()
        for v in platform.values():
            if type(v) is not str:  # e.g. "os.features": a list, left out
                items = [(k, v) for k, v in items if isinstance(v, str)]
                break
        plat = tuple(sorted(items))
    return _new(Descriptor, (media_type, digest, size, pairs, artifact_type, plat))


def parse_index(data: bytes) -> Index:
    """Parse index.json bytes.  Raises :class:`InvalidIndexError` naming the entry at fault.

    >>> idx = parse_index(b'{"schemaVersion": 2, "manifests": []}')
    >>> idx.entries, idx.fingerprint[:7]
    ((), 'sha256:')
    >>> parse_index(b'{"schemaVersion": 2, "manifests": {}}')
    Traceback (most recent call last):
    ...
    ocigraph._errors.InvalidIndexError: index.json: "manifests" is not a list
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidIndexError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidIndexError("not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise InvalidIndexError(f"schemaVersion is {doc.get('schemaVersion')!r}, expected 2")
    manifests = doc.get("manifests", [])
    if not isinstance(manifests, list):
        raise InvalidIndexError('"manifests" is not a list')
    entries = []
    for i, obj in enumerate(manifests):
        try:
            desc = _well_formed_descriptor(obj) or parse_descriptor(obj, f"manifests[{i}]")
        except _BadDescriptor as exc:
            raise InvalidIndexError(str(exc), i) from None
        except InvalidDigestError as exc:
            raise InvalidIndexError(f"invalid digest {exc.shown}: {exc.why}", i) from None
        entries.append(IndexEntry(position=i, descriptor=desc, tag=desc.annotation(REF_NAME)))
    return Index(entries=tuple(entries), raw=bytes(data), fingerprint=digest_bytes(data))


def parse_manifest(digest: str, data: bytes | None) -> Manifest:
    """Verify and parse a manifest's bytes (``None``: the blob is missing).

    Never raises for bad content: the result carries ``error`` instead, so one corrupt manifest
    becomes one broken node rather than a crash.

    >>> m = parse_manifest("sha256:" + "0" * 64, b"{}")
    >>> m.error
    'content does not match its digest'
    """
    if data is None:
        return Manifest(digest=digest, error="blob is missing", missing=True)
    if digest.startswith("sha256:"):  # nearly all of them: no need to ask is_sweepable
        verified = hashlib.sha256(data).hexdigest() == digest[7:]
    elif not is_sweepable(digest):
        return Manifest(digest=digest, size=len(data), error="digest algorithm not supported")
    else:
        verified = verify(digest, data)
    if not verified:
        return Manifest(digest=digest, size=len(data), error="content does not match its digest")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Manifest(digest=digest, size=len(data), error="not valid JSON")
    return manifest_from_document(digest, doc, len(data))


def manifest_from_document(digest: str, doc: Any, size: int | None) -> Manifest:
    """The :class:`Manifest` of an already verified, decoded JSON document."""
    if not isinstance(doc, dict):
        return Manifest(digest=digest, size=size, error="not a JSON object")
    refs: list[tuple[str, Descriptor]] = []
    get = doc.get
    well_formed = _well_formed_descriptor
    try:
        for name in _ONE_FIELDS:
            obj = get(name)
            if obj is not None:
                refs.append((name, well_formed(obj) or parse_descriptor(obj, name)))
        for name in _LIST_FIELDS:
            objs = get(name)
            if objs is None:
                continue
            if not isinstance(objs, list):
                raise _BadDescriptor(f"{name} is not a list")
            refs += [(name, well_formed(o) or parse_descriptor(o, f"{name}[{i}]"))
                     for i, o in enumerate(objs)]
    except (_BadDescriptor, InvalidDigestError) as exc:
        return Manifest(digest=digest, size=size, error=str(exc))
    media_type = doc.get("mediaType")
    artifact_type = doc.get("artifactType")
    return Manifest(
        digest=digest,
        refs=tuple(refs),
        size=size,
        media_type=media_type if isinstance(media_type, str) else None,
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
    )


def render_index(index: Index, changes: Iterable[Any]) -> bytes:
    """New index.json bytes: ``index.raw`` with entries dropped or untagged.

    ``changes`` are :class:`ocigraph.IndexChange` values.  Every other field, annotation and the
    order of the remaining entries are kept.  Raises :class:`LayoutError` if a change does not
    match the entry at its position (the plan belongs to another index.json).
    """
    doc = orjson.loads(index.raw)
    manifests = doc["manifests"]
    drop: set[int] = set()
    for ch in changes:
        pos = ch.position
        if not (0 <= pos < len(manifests)) or manifests[pos].get("digest") != ch.digest:
            raise LayoutError(f"index.json entry {pos} is not {ch.digest}; the plan does not fit")
        if ch.action == "drop":
            drop.add(pos)
        else:
            ann = dict(manifests[pos].get("annotations") or {})
            ann.pop(REF_NAME, None)
            entry = dict(manifests[pos])
            if ann:
                entry["annotations"] = ann
            else:
                entry.pop("annotations", None)
            manifests[pos] = entry
    doc["manifests"] = [m for i, m in enumerate(manifests) if i not in drop]
    return orjson.dumps(doc)


class BytesManifestSource:
    """A :class:`ManifestSource` over an in-memory ``digest -> bytes`` mapping."""

    __slots__ = ("_blobs",)

    def __init__(self, blobs: Mapping[str, bytes]) -> None:
        self._blobs = blobs

    def read_manifests(self, digests: Sequence[str]) -> dict[str, Manifest]:
        return {d: parse_manifest(d, self._blobs.get(d)) for d in digests}


def layout_from_bytes(
    index_json: bytes,
    blobs: Mapping[str, bytes],
    mtimes: Mapping[str, float] | None = None,
    now: float | None = None,
) -> Layout:
    """A :class:`Layout` from index.json bytes and a ``digest -> content`` mapping.

    >>> layout = layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {})
    >>> layout.index.entries, layout.present_digests()
    ((), frozenset())
    """
    for d in blobs:
        parse_digest(d, "blobs")
    mt = mtimes or {}
    return Layout(
        index=parse_index(index_json),
        blobs={d: BlobInfo(size=len(b), mtime=mt.get(d)) for d, b in blobs.items()},
        manifests=BytesManifestSource(dict(blobs)),
        now=now,
    )

