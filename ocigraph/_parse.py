"""Bytes in, values out: index.json and manifests.  No I/O.

Parsing is strict about what GC depends on (digests, sizes, the shape of descriptor lists) and
lenient about everything else (unknown fields are kept in ``raw`` and survive a rewrite).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

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
    "restore_index_entries",
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


_INT64_MIN, _UINT64_END = -(2**63), 2**64


def _int_as_orjson_reads_it(text: str) -> int | float:
    if len(text) > 21:  # beyond 64 bits (and maybe beyond int()'s digit limit)
        return float(text)
    value = int(text)
    return value if _INT64_MIN <= value < _UINT64_END else float(text)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _loads_beyond_double(data: bytes, refused: orjson.JSONDecodeError) -> Any:
    """Read JSON that orjson refused, if only a number was out of its reach.

    orjson refuses a number beyond a double's range (``1e400``), which JSON allows: one in a
    field ocigraph does not own must not make the layout unreadable (render_index keeps its
    text).  The standard library reads it (as an infinity); integers are read as orjson reads
    them, and whatever else orjson refused (``NaN``, a lone surrogate) stays refused.
    """
    try:
        doc = json.loads(data.decode("utf-8"), parse_int=_int_as_orjson_reads_it,
                         parse_constant=_no_constant)
        orjson.dumps(doc)  # refuses strings orjson would not have read: lone surrogates
    except (ValueError, RecursionError, orjson.JSONEncodeError):
        raise InvalidIndexError(f"not valid JSON ({refused})") from None
    return doc


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
        doc = _loads_beyond_double(data, exc)
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


# -- rewriting index.json ---------------------------------------------------------------------
#
# index.json carries what ocigraph does not own: vendor fields, annotations, numbers no double
# holds (123456789012345678901234567890, 1.5e-400, 18446744073709551616).  Decoding it and
# encoding it again would round those through floats, so a rewrite never re-encodes anything:
# it finds the spans of the ``manifests`` elements (and, to untag, of the ref.name members of an
# entry's annotations) in the text and splices them out.  Everything else is copied as written,
# whitespace included.
#
# Only the containers being edited are walked here: the top-level object, the manifests array,
# an untagged entry and its annotations.  Every other value is stepped over by the standard
# library's C scanner, which decodes keys as orjson does (escapes included: "m\u0061nifests" is
# "manifests"); of duplicate keys the last counts, as in parse_index.

_SPACE = re.compile(r"[ \t\n\r]*")
# (value, end) of the JSON value at an index; raises StopIteration if there is none there
_scan_value: Callable[[str, int], tuple[Any, int]] = (
    json.JSONDecoder().scan_once)  # type: ignore[attr-defined]


class _Items(NamedTuple):
    """The items of one array or object in the text: ``text[open_at]`` is its ``[`` or ``{``."""

    items: list[_Item]
    open_at: int
    close_at: int


class _Item(NamedTuple):
    """One array element or object member: ``text[start:end]``, from a member's key."""

    start: int
    end: int
    key: str | None  # decoded; None for an array element
    value_at: int
    inner: _Items | None = None  # the items of a value the walk descended into


class _NotJSON(ValueError):
    pass


_SPACE_CHARS = frozenset(" \t\n\r")


def _after_space(text: str, i: int) -> int:
    if text[i:i + 1] not in _SPACE_CHARS:  # most often: no regex call
        return i
    m = _SPACE.match(text, i)
    return m.end() if m else i


def _items_at(text: str, open_at: int, descend: str | None = None) -> _Items:
    """Walk the array or object opening at ``text[open_at]``.  The array value of a member
    named ``descend`` is walked too (``inner``) instead of being stepped over."""
    is_object = text[open_at] == "{"
    close = "}" if is_object else "]"
    items: list[_Item] = []
    i = _after_space(text, open_at + 1)
    if text[i:i + 1] == close:
        return _Items(items, open_at, i)
    while True:
        start = i
        key = None
        if is_object:
            if text[i:i + 1] != '"':
                raise _NotJSON(f"expected a key at character {i}")
            key, i = _scan_value(text, i)
            i = _after_space(text, i)
            if text[i:i + 1] != ":":
                raise _NotJSON(f"expected ':' at character {i}")
            i = _after_space(text, i + 1)
        value_at = i
        inner = None
        if descend is not None and key == descend and text[i:i + 1] == "[":
            inner = _items_at(text, i)
            i = inner.close_at + 1
        else:
            try:  # decoded and dropped: holding 100k entries would cost more than a rescan
                _, i = _scan_value(text, i)
            except StopIteration:
                raise _NotJSON(f"expected a value at character {i}") from None
        items.append(_Item(start, i, key, value_at, inner))
        i = _after_space(text, i)
        c = text[i:i + 1]
        if c == ",":
            i = _after_space(text, i + 1)
        elif c == close:
            return _Items(items, open_at, i)
        else:
            raise _NotJSON(f"expected ',' or {close!r} at character {i}")


def _spliced(text: str, box: _Items, edits: Mapping[int, str | None]) -> str:
    """The text of ``box`` with item ``k`` replaced by ``edits[k]``, or left out if that is
    ``None``.  Each item kept keeps the separator written before it, except the first one
    written, which takes the space after the opening bracket: no comma is left dangling."""
    items = box.items
    out = [text[box.open_at]]
    written = False
    k = 0
    for edited in [*sorted(edits), len(items)]:
        if k < edited:  # items k .. edited-1 unchanged: one slice
            if written:
                out.append(text[items[k - 1].end:items[edited - 1].end])
            else:
                out.append(text[box.open_at + 1:items[0].start])
                out.append(text[items[k].start:items[edited - 1].end])
            written = True
        if edited < len(items) and (new := edits[edited]) is not None:
            out.append(text[items[edited - 1].end:items[edited].start] if written
                       else text[box.open_at + 1:items[0].start])
            out.append(new)
            written = True
        k = edited + 1
    if written:
        out.append(text[items[-1].end:box.close_at])
    out.append(text[box.close_at])
    return "".join(out)


def _untagged_entry(text: str, entry: _Item) -> str:
    """The text of ``entry`` without ``org.opencontainers.image.ref.name`` in its annotations.

    Every ``annotations`` member loses it (a duplicate key read by another tool must not keep
    the tag); one left empty goes, as ocigraph always wrote an untagged entry."""
    if text[entry.value_at] != "{":
        return text[entry.start:entry.end]
    members = _items_at(text, entry.value_at)
    edits: dict[int, str | None] = {}
    for k, member in enumerate(members.items):
        if member.key != "annotations" or text[member.value_at] != "{":
            continue
        annotations = _items_at(text, member.value_at)
        tags = {j: None for j, a in enumerate(annotations.items) if a.key == REF_NAME}
        if len(tags) == len(annotations.items):
            if tags:
                edits[k] = None
        else:
            edits[k] = (text[member.start:member.value_at]
                        + _spliced(text, annotations, tags))
    if not edits:
        return text[entry.start:entry.end]
    return text[entry.start:entry.value_at] + _spliced(text, members, edits)


def _digest_at(text: str, entry: _Item) -> object:
    value = _scan_value(text, entry.value_at)[0]
    return value.get("digest") if isinstance(value, dict) else None


def _manifests_in(text: str) -> _Items | None:
    """The top-level ``manifests`` array of an index.json text (the last one, as parsers
    read a duplicate key), or ``None``; raises :class:`_NotJSON` for a text not an object."""
    top_at = _after_space(text, 0)
    if text[top_at:top_at + 1] != "{":
        raise _NotJSON("not a JSON object")
    top = _items_at(text, top_at, descend="manifests")
    listed = [m.inner for m in top.items if m.key == "manifests" and m.inner is not None]
    return listed[-1] if listed else None


def _tag_in(entry: object) -> object:
    ann = entry.get("annotations") if isinstance(entry, dict) else None
    return ann.get(REF_NAME) if isinstance(ann, dict) else None


def restore_index_entries(current: bytes, before: bytes,
                          changes: Iterable[tuple[int, str, str]]) -> bytes:
    """index.json ``current`` with the entries that ``changes`` -- ``(position in before,
    digest, "drop" | "untag")``, as a plan made from ``before`` changed them -- put back as
    ``before`` wrote them: a dropped entry is appended, an untagged one gets its tag back in
    place (appended if it is gone too); an entry already there is left alone.  Every other
    byte of ``current`` is kept (the lossless rule of :func:`render_index`).  Raises
    :class:`ValueError`, with the reason, when a tag put back now names another digest, or
    either text is not an object with a manifests array.

    >>> d, e = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    >>> entry = '{"digest": "%s", "n": 1e400, "annotations": {"%s": "v1"}}' % (d, REF_NAME)
    >>> before = ('{"manifests": [%s, {"digest": "%s"}]}' % (entry, e)).encode()
    >>> restore_index_entries(b'{"x": 18446744073709551616, "manifests": []}', before,
    ...                       [(0, d, "untag")]).decode() == '{"x": 18446744073709551616, "manifests": [%s]}' % entry
    True
    """
    try:
        old_text, text = before.decode("utf-8"), current.decode("utf-8")
        old, now = _manifests_in(old_text), _manifests_in(text)
        if old is None or now is None:
            raise _NotJSON("no manifests array")
        values = [_scan_value(text, e.value_at)[0] for e in now.items]
        edits: dict[int, str | None] = {}
        added: list[str] = []
        tags = {_tag_in(v): v.get("digest") for v in values if _tag_in(v) is not None}
        for position, digest, action in changes:
            item = old.items[position]
            if _scan_value(old_text, item.value_at)[0] in values:
                continue
            tag = _tag_in(_scan_value(old_text, item.value_at)[0])
            if tag is not None and tags.setdefault(tag, digest) != digest:
                raise ValueError(f"tag {tag!r} now names {tags[tag]}, not {digest}")
            untagged = json.loads(_untagged_entry(old_text, item))
            where = values.index(untagged) if action == "untag" and untagged in values else None
            if where is None or where in edits:
                added.append(old_text[item.start:item.end])
            else:
                edits[where] = old_text[item.start:item.end]
    except (_NotJSON, UnicodeDecodeError, json.JSONDecodeError, StopIteration, IndexError,
            RecursionError):
        raise ValueError("index.json is not a JSON object with a manifests list") from None
    if not edits and not added:
        return current
    if not now.items:
        return (text[:now.open_at + 1] + ", ".join(added) + text[now.close_at:]).encode("utf-8")
    last = len(now.items) - 1
    if added:
        kept = edits.get(last) or text[now.items[last].start:now.items[last].end]
        edits[last] = ", ".join([kept, *added])
    new = _spliced(text, now, edits)
    return (text[:now.open_at] + new + text[now.close_at + 1:]).encode("utf-8")


def render_index(index: Index, changes: Iterable[Any]) -> bytes:
    """New index.json bytes: ``index.raw`` with entries dropped or untagged.

    ``changes`` are :class:`ocigraph.IndexChange` values.  The text is edited in place: every
    other field, annotation, entry, number and string is kept exactly as written, and so are
    the order and the whitespace; untagging removes the ref.name annotation (and
    ``annotations`` if nothing else is left in it).  Raises :class:`LayoutError` if a change does
    not match the entry at its position (the plan belongs to another index.json).

    >>> from ocigraph import IndexChange
    >>> d = "sha256:" + "a" * 64
    >>> raw = ('{"schemaVersion": 2, "x": 123456789012345678901234567890, "manifests": ['
    ...        '{"mediaType": "t", "digest": "%s", "size": 1, "n": 1.5e-400, '
    ...        '"annotations": {"org.opencontainers.image.ref.name": "v1", "k": "é"}}]}' % d)
    >>> new = render_index(parse_index(raw.encode()), [IndexChange(0, d, "v1", "untag")])
    >>> new.decode() == raw.replace('"org.opencontainers.image.ref.name": "v1", ', "")
    True
    >>> render_index(parse_index(new), [IndexChange(0, d, None, "drop")]).decode()
    '{"schemaVersion": 2, "x": 123456789012345678901234567890, "manifests": []}'
    """
    wanted = list(changes)
    if not wanted:
        return index.raw
    try:
        text = index.raw.decode("utf-8")
        manifests = _manifests_in(text)
        entries = manifests.items if manifests is not None else []
        edits: dict[int, str | None] = {}
        for ch in wanted:
            pos = ch.position
            if not (0 <= pos < len(entries)) or _digest_at(text, entries[pos]) != ch.digest:
                raise LayoutError(
                    f"index.json entry {pos} is not {ch.digest}; the plan does not fit")
            if ch.action == "drop":
                edits[pos] = None
            elif ch.action == "untag":
                if pos not in edits:
                    edits[pos] = _untagged_entry(text, entries[pos])
            else:
                raise ValueError(f"unknown index.json change {ch.action!r}")
    except (_NotJSON, UnicodeDecodeError, json.JSONDecodeError, StopIteration,
            RecursionError) as exc:
        # parse_index read these bytes, so only an Index made by hand can get here
        raise InvalidIndexError(f"cannot be rewritten, not valid JSON ({exc})") from None
    assert manifests is not None  # a change matched an entry
    new = _spliced(text, manifests, edits)
    return (text[:manifests.open_at] + new + text[manifests.close_at + 1:]).encode("utf-8")


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

