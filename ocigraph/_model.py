"""The core's input values: what a layout holds, as immutable data.

The core never sees a path.  A :class:`Layout` carries the parsed ``index.json`` (with its raw
bytes, so a new index.json can keep every field it had), the present blobs with their sizes and
modification times, and a :class:`ManifestSource` that answers "what does this manifest say?".
``io_adapters`` builds one from a directory; :func:`layout_from_bytes` builds one from memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

__all__ = [
    "Descriptor",
    "IndexEntry",
    "Index",
    "BlobInfo",
    "Manifest",
    "ManifestSource",
    "Layout",
    "Reporter",
]

Pairs = tuple[tuple[str, str], ...]


class Descriptor(NamedTuple):
    """An OCI content descriptor, reduced to what GC needs (annotations kept as sorted pairs).

    A named tuple, not a frozen dataclass: a layout holds a million descriptors, and a tuple is
    built in one C call (``tuple.__new__(Descriptor, fields)``, as the parser and the manifest
    cache do) where a frozen dataclass spends a Python call and one ``object.__setattr__`` per
    field.  Being a tuple, it also equals a plain tuple of the same fields.
    """

    media_type: str
    digest: str
    size: int
    annotations: Pairs = ()
    artifact_type: str | None = None
    platform: Pairs | None = None

    def annotation(self, key: str) -> str | None:
        for k, v in self.annotations:
            if k == key:
                return v
        return None


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One entry of index.json's ``manifests``: its position, descriptor and tag (if any)."""

    position: int
    descriptor: Descriptor
    tag: str | None

    @property
    def digest(self) -> str:
        return self.descriptor.digest


@dataclass(frozen=True, slots=True)
class Index:
    """A parsed index.json.  ``raw`` is the exact bytes it came from; ``fingerprint`` their digest."""

    entries: tuple[IndexEntry, ...]
    raw: bytes = field(repr=False)
    fingerprint: str


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A present blob file: its size in bytes and modification time (seconds since the epoch)."""

    size: int
    mtime: float | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a manifest says about its successors.

    ``refs`` lists ``(field, descriptor)`` for every descriptor in ``subject``, ``config``,
    ``layers``, ``manifests`` and ``blobs``, in document order; which of them are successors
    depends on the media type of the descriptor that references the manifest (see
    :data:`ocigraph.SUCCESSOR_FIELDS`).  ``error`` is set when the manifest is missing, does not
    hash to its digest, or does not parse; then ``refs`` is empty.
    """

    digest: str
    refs: tuple[tuple[str, Descriptor], ...] = ()
    size: int | None = None
    media_type: str | None = None
    artifact_type: str | None = None
    error: str | None = None
    missing: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class ManifestSource(Protocol):
    """Answers the core's one question about content: what do these manifests say?

    ``read_manifests`` gets a batch of digests (all valid, all of a sweepable algorithm) and
    returns a :class:`Manifest` for each; an absent one comes back with ``missing=True``.  A
    batch lets an adapter read files in parallel and answer from a cache.
    """

    def read_manifests(self, digests: Sequence[str]) -> Mapping[str, Manifest]: ...


class Reporter:
    """Progress hooks, all no-ops (as resolvelib's BaseReporter).  Subclass what you need."""

    def phase_started(self, phase: str) -> None:
        """A phase begins: ``read``, ``build``, ``close`` or ``plan``."""

    def phase_finished(self, phase: str) -> None:
        """The phase named last in :meth:`phase_started` has ended."""

    def manifests_read(self, count: int) -> None:
        """``count`` more manifests have been read."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Everything the core knows about one layout.

    ``now`` is the adapter's clock reading when the snapshot was taken (the core has no clock);
    it is needed only for ``grace``.
    """

    index: Index
    blobs: Mapping[str, BlobInfo]
    manifests: ManifestSource = field(repr=False)
    now: float | None = None

    def present_digests(self) -> frozenset[str]:
        return frozenset(self.blobs)

    def tags(self) -> dict[str, tuple[str, ...]]:
        """tag -> the digests it names, in index.json order (more than one is ambiguous)."""
        out: dict[str, list[str]] = {}
        for e in self.index.entries:
            if e.tag is not None and e.digest not in out.setdefault(e.tag, []):
                out[e.tag].append(e.digest)
        return {t: tuple(ds) for t, ds in out.items()}


def freeze_pairs(items: Iterable[tuple[str, str]]) -> Pairs:
    return tuple(sorted(items))
