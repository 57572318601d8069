"""A cache of what manifests say, keyed by digest: the warm path of ``read_layout``.

A manifest is an immutable, content-addressed value: once its bytes have been verified against
its digest, what they say (its descriptors, or that they are not a manifest at all) can never
change.  So the cache maps a digest to the :class:`ocigraph.Manifest` parsed from verified bytes,
and nothing else.  Rules that keep it honest:

* **only verified content is stored.**  A blob that is missing, unreadable or that does not hash
  to its digest is never cached: those answers describe the disk, not the digest, and are read
  again next time.  A blob that verified but is not a manifest (a layer, a config found while
  looking for referrers nobody lists) *is* cached -- "not a manifest" is a fact about the digest.
* **the disk still decides presence.**  An entry is used only if the blob is present in this
  run's listing with the size and modification time it had when it was verified; otherwise the
  blob is read again (missing, replaced or truncated files are seen as they are now).
* **a damaged cache is never trusted.**  The file is a header naming the layout (real path,
  device, inode) followed by segments, each with its length and SHA-256.  Any mismatch -- bad
  magic, another layout, a truncated or garbled segment, undecodable JSON -- and the whole file is
  ignored and rewritten from scratch on the next save.
* **it lives outside the layout** (ocigraph touches nothing in a layout but ``blobs/`` and
  ``index.json``): ``$OCIGRAPH_CACHE_DIR``, else ``$XDG_CACHE_HOME/ocigraph``, else
  ``~/.cache/ocigraph``; one file per layout, named by a hash of its real path.
  ``OCIGRAPH_NO_CACHE=1`` (or ``read_layout(..., cache=False)``) turns it off.
* **it does not pile up.**  A layout with fewer than ``_MIN_ENTRIES`` verified manifests gets no
  file (it is fast anyway, and test suites make thousands of small layouts); writing a new file
  removes cache files nobody has read for 30 days.
* **writes are atomic or self-checking.**  New entries are appended as one checksummed segment
  (under an ``flock`` of the cache file, one ``write``); a fresh or compacted file is written to a
  temporary file and renamed over the old one.  A crash mid-append leaves a segment whose
  checksum fails, so the file is ignored, never misread.  Failing to write a cache never fails
  the run.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice, repeat
from pathlib import Path
from typing import Any

import orjson

import ocigraph as og
from .collector import pauses_collector as pauses_gc

__all__ = [
    "CACHE_FORMAT",
    "code_fingerprint",
    "CachingManifestSource",
    "ManifestCache",
    "cache_enabled",
    "default_cache_dir",
    "cache_file_for",
]

CACHE_FORMAT = 2
_MAGIC = b"ocigraph-manifest-cache %d\n" % CACHE_FORMAT
_FIELDS = ("subject", "config", "layers", "manifests", "blobs")
_FIELD_CODE = {name: i for i, name in enumerate(_FIELDS)}
_HEX = "0123456789abcdef"
#: compact the file (rewrite it whole) when it has more segments than this, or when more than
#: half of its entries name blobs that are gone.
_MAX_SEGMENTS = 64
#: entries per segment: a segment is encoded (and decoded) in memory at once.
_SEGMENT_ENTRIES = 50_000
#: a layout with fewer verified manifests than this gets no cache file: it is read in a blink
#: anyway, and test suites and CI jobs that make thousands of small temporary layouts would
#: otherwise leave a file for each.
_MIN_ENTRIES = 512
#: cache files (of any layout) unused for this long are removed when a new one is written;
#: a cache that is read is touched at most once a day, so only abandoned ones age.
_MAX_AGE = 30 * 86400
_TOUCH_AFTER = 86400

# What parse_manifest answers for bytes that do not hash to their digest: the one parse result
# that describes the disk rather than the digest.  Asked of the core, not copied from it.
_MISMATCH = og.parse_manifest("sha256:" + "0" * 64, b"ocigraph").error


def cache_enabled(explicit: bool | None = None) -> bool:
    """``explicit`` if given, else on unless ``OCIGRAPH_NO_CACHE`` is set to a non-empty value
    other than ``0``."""
    if explicit is not None:
        return explicit
    return os.environ.get("OCIGRAPH_NO_CACHE", "") in ("", "0")


def default_cache_dir() -> Path | None:
    """``$OCIGRAPH_CACHE_DIR``, ``$XDG_CACHE_HOME/ocigraph`` or ``~/.cache/ocigraph``."""
    explicit = os.environ.get("OCIGRAPH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ocigraph"
    home = os.environ.get("HOME")
    if home:
        return Path(home) / ".cache" / "ocigraph"
    return None


_CODE: list[str] = []


def code_fingerprint() -> str:
    """A digest of ocigraph's own source (the core and the adapter): what is cached was
    computed by code, and a cache written by other code -- an upgrade, a fix, a checkout -- is
    somebody else's."""
    if not _CODE:
        h = hashlib.sha256()
        for package in (og, sys.modules[__package__ or "io_adapters"]):
            folder = Path(package.__file__ or "").parent
            for path in sorted(folder.glob("*.py")):
                h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        _CODE.append(h.hexdigest())
    return _CODE[0]


def _identity(root: Path) -> dict[str, Any]:
    real = os.path.realpath(root)
    st = os.stat(real)
    return {"layout": real, "dev": st.st_dev, "ino": st.st_ino, "code": code_fingerprint()}


def cache_file_for(root: Path | str, cache_dir: Path | str | None = None) -> Path | None:
    """Where the cache of the layout at ``root`` lives (``None``: nowhere to put one)."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if base is None:
        return None
    real = os.path.realpath(root)
    name = hashlib.sha256(os.fsencode(real)).hexdigest()[:32]
    return base / f"{name}.cache"


# -- encoding ---------------------------------------------------------------------------------

@pauses_gc  # a segment is a million small containers
def _encode(entries: Sequence[tuple[og.Manifest, float | None]]) -> bytes:
    """One segment body: columns, so that decoding is a few C-level passes over lists.

    ``s`` names the descriptor media types once.  Each distinct descriptor is stored once, in
    the columns ``dm`` (index into ``s``), ``dd`` (digest) and ``ds`` (size), plus a row
    ``[i, annotations, artifact_type, platform]`` in ``dx`` for the few that have any of those.
    Manifests are the columns ``md``, ``ms``, ``mt`` (mtime), ``mm``, ``ma``, ``me`` (error)
    and ``mn`` (how many refs); their refs, concatenated, are ``rf`` (field code) and ``ri``
    (descriptor index).
    """
    refs = [r for m, _ in entries for r in m.refs]
    pos: dict[og.Descriptor, int] = {}
    setdefault = pos.setdefault
    ri = [setdefault(d, len(pos)) for _, d in refs]
    media_types, digests, sizes, annotations, artifact_types, platforms = (
        zip(*pos, strict=True) if pos else ((),) * 6)
    code = {t: i for i, t in enumerate(dict.fromkeys(media_types))}
    rest = zip(annotations, artifact_types, platforms, strict=True)
    extras = [[i, [list(p) for p in ann] or None, art,
               None if plat is None else [list(p) for p in plat]]
              for i, (ann, art, plat) in enumerate(rest)
              if ann or art is not None or plat is not None]
    return orjson.dumps({
        "s": list(code), "dm": list(map(code.__getitem__, media_types)), "dd": digests,
        "ds": sizes, "dx": extras,
        "md": [m.digest for m, _ in entries], "ms": [m.size for m, _ in entries],
        "mt": [mtime for _, mtime in entries], "mm": [m.media_type for m, _ in entries],
        "ma": [m.artifact_type for m, _ in entries], "me": [m.error for m, _ in entries],
        "mn": [len(m.refs) for m, _ in entries],
        "rf": [_FIELD_CODE[name] for name, _ in refs], "ri": ri,
    })


_COLUMNS = ("s", "dm", "dd", "ds", "dx", "md", "ms", "mt", "mm", "ma", "me", "mn", "rf", "ri")


def _check(values: list[Any], *types: type) -> None:
    """Raise unless every value is of exactly one of ``types`` (one C-level pass)."""
    if not set(map(type, values)).issubset(types):
        raise ValueError("bad cache column")


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in value)


def _decode(body: bytes, into: dict[str, tuple[og.Manifest, float | None]]) -> None:
    """Decode one segment into ``digest -> (manifest, mtime)``; raises on anything malformed.

    Descriptors and refs are built by ``map`` and ``zip`` over whole columns: no Python code
    runs per descriptor except for the few with annotations, an artifact type or a platform.
    """
    doc = orjson.loads(body)
    columns = [doc[c] for c in _COLUMNS]
    if set(map(type, columns)) != {list}:
        raise ValueError("bad cache column")
    s, dm, dd, ds, dx, md, ms, mt, mm, ma, me, mn, rf, ri = columns
    if not (len(dm) == len(dd) == len(ds) and len(rf) == len(ri) == sum(mn)
            and len(md) == len(ms) == len(mt) == len(mm) == len(ma) == len(me) == len(mn)):
        raise ValueError("cache columns of different lengths")
    for column, kinds in ((s, (str,)), (dd, (str,)), (ds, (int,)), (md, (str,)),
                          (me, (str, type(None))), (mn, (int,))):
        _check(column, *kinds)
    # Indices past the end raise IndexError below; negative ones would wrap around silently.
    if any(column and min(column) < 0 for column in (dm, rf, ri, mn)):
        raise ValueError("negative index in cache")
    media_types = [sys.intern(t) for t in s]  # a dozen for a million descriptors
    new = functools.partial(tuple.__new__, og.Descriptor)
    descs = list(map(new, zip(map(media_types.__getitem__, dm), dd, ds,
                              repeat(()), repeat(None), repeat(None))))
    for i, ann, art, plat in dx:
        if type(i) is not int or i < 0 or (art is not None and type(art) is not str):
            raise ValueError("bad descriptor row")
        descs[i] = new((media_types[dm[i]], dd[i], ds[i], _pairs(ann) if ann else (),
                        None if art is None else sys.intern(art),
                        None if plat is None else _pairs(plat)))
    flat = zip(map(_FIELDS.__getitem__, rf), map(descs.__getitem__, ri), strict=True)
    refs = [tuple(islice(flat, n)) for n in mn]
    into.update(zip(md, zip(map(og.Manifest, md, refs, ms, mm, ma, me), mt, strict=True),
                    strict=True))


def _remove_abandoned(directory: Path) -> None:
    """Remove cache files and stored graphs (:mod:`io_adapters.store`) nobody has read for
    ``_MAX_AGE``, and temp files a killed run left."""
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        for e in it:
            name = e.name
            kind = name[32:]
            ours = len(name) == 38 and kind in (".cache", ".graph") and not name[:32].strip(_HEX)
            temp = name.startswith(".tmp-") and name.endswith((".cache", ".graph"))
            if not (ours or temp) or not e.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                if now - e.stat(follow_symlinks=False).st_mtime > (_MAX_AGE if ours else 3600):
                    os.unlink(e.path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class ManifestCache:
    """The cache file of one layout.

    :meth:`load` reads it; :meth:`get` answers; :meth:`finish_batch` saves what a batch of reads
    verified (appending a segment, or rewriting the file when it is not one we trust, has too
    many segments, or is mostly entries for blobs that are gone) and forgets the entries it
    handed out -- the caller owns those manifests now, and memory is not spent on them twice.
    """

    def __init__(self, path: Path, identity: Mapping[str, Any]) -> None:
        self.path = path
        self.identity = dict(identity)
        self.entries: dict[str, tuple[og.Manifest, float | None]] = {}
        self.segments = 0
        #: the file on disk is one we read and trust (so appending to it is safe)
        self.valid_on_disk = False
        #: the next save rewrites the file whole
        self.rewrite_due = True
        #: why the file was not used, for tests and ``--verbose`` output
        self.rejected: str | None = None

    # -- reading ------------------------------------------------------------------------

    def load(self, present: Mapping[str, og.BlobInfo]) -> None:
        """Read the file; on any doubt keep nothing (``rejected`` says why)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self.rejected = "no cache file"
            return
        except OSError as exc:
            self.rejected = f"cannot read ({exc.strerror})"
            return
        try:
            entries, segments = self._parse(data)
        except (ValueError, KeyError, IndexError, TypeError, orjson.JSONDecodeError) as exc:
            self.rejected = f"ignored: {exc}"
            return
        del data
        self.entries, self.segments, self.valid_on_disk = entries, segments, True
        with contextlib.suppress(OSError):
            if time.time() - os.stat(self.path).st_mtime > _TOUCH_AFTER:
                os.utime(self.path)  # in use: not one for _remove_abandoned
        gone = sum(1 for d in entries if d not in present)  # blobs GC has removed since
        self.rewrite_due = segments >= _MAX_SEGMENTS or (gone * 2 > len(entries) and gone > 1000)

    @pauses_gc  # decoding makes a million small containers
    def _parse(self, data: bytes) -> tuple[dict[str, tuple[og.Manifest, float | None]], int]:
        if not data.startswith(_MAGIC):
            raise ValueError("not an ocigraph cache of this format")
        pos = len(_MAGIC)
        end = data.index(b"\n", pos)
        if orjson.loads(data[pos:end]) != self.identity:
            raise ValueError("written for another layout")
        pos = end + 1
        entries: dict[str, tuple[og.Manifest, float | None]] = {}
        segments = 0
        while pos < len(data):
            end = data.index(b"\n", pos)
            tag, length_text, checksum = data[pos:end].split(b" ")
            length = int(length_text)
            start = end + 1
            body = data[start:start + length]
            if tag != b"S" or len(body) != length or data[start + length:start + length + 1] != b"\n":
                raise ValueError("truncated segment")
            if hashlib.sha256(body).hexdigest().encode() != checksum:
                raise ValueError("segment checksum mismatch")
            _decode(body, entries)
            segments += 1
            pos = start + length + 1
        return entries, segments

    def get(self, digest: str, info: og.BlobInfo | None) -> og.Manifest | None:
        """The cached manifest, if the blob is present now as it was when it was verified."""
        hit = self.entries.get(digest)
        if hit is None or info is None:
            return None
        m, mtime = hit
        if m.size != info.size or mtime != info.mtime:
            return None
        return m

    # -- writing ------------------------------------------------------------------------

    def finish_batch(self, requested: Iterable[str],
                     new: Sequence[tuple[og.Manifest, float | None]],
                     present: Mapping[str, og.BlobInfo]) -> None:
        """Save ``new`` (verified this batch), then forget every entry of ``requested``."""
        try:
            if self.rewrite_due:
                for m, mtime in new:
                    self.entries[m.digest] = (m, mtime)
                if not self.valid_on_disk and len(self.entries) < _MIN_ENTRIES:
                    return  # too small for a file so far: keep it all until the next batch
                for d in [d for d in self.entries if d not in present]:
                    del self.entries[d]
                self._rewrite()
            elif new:
                self._append(new)
        except OSError:  # a cache that cannot be written only makes the next run slower
            self.valid_on_disk = False
        self.rewrite_due = False  # once a run, whether it worked or not
        pop = self.entries.pop
        for d in requested:
            pop(d, None)

    @staticmethod
    def _write_segments(fd: int, entries: Sequence[tuple[og.Manifest, float | None]]) -> int:
        """Write ``entries`` as segments of at most ``_SEGMENT_ENTRIES`` (one encoded at a time,
        so a million entries never sit in memory twice); returns how many."""
        count = 0
        for i in range(0, len(entries), _SEGMENT_ENTRIES):
            body = _encode(entries[i:i + _SEGMENT_ENTRIES])
            _write_all(fd, b"S %d %s\n" % (len(body), hashlib.sha256(body).hexdigest().encode()))
            _write_all(fd, body)
            _write_all(fd, b"\n")
            count += 1
        return count

    def _rewrite(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_abandoned(self.path.parent)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".cache")
        try:
            try:
                _write_all(fd, _MAGIC + orjson.dumps(self.identity) + b"\n")
                segments = self._write_segments(fd, list(self.entries.values()))
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.valid_on_disk, self.segments = True, segments

    def _append(self, entries: Sequence[tuple[og.Manifest, float | None]]) -> None:
        if not self.valid_on_disk:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # two ocigraph runs never interleave their segments
            self.segments += self._write_segments(fd, entries)
        finally:
            os.close(fd)


class CachingManifestSource:
    """A :class:`ocigraph.ManifestSource` that answers from a :class:`ManifestCache` and reads
    (in parallel, through ``inner``) only what it does not know yet."""

    def __init__(self, inner: Any, cache: ManifestCache) -> None:
        self.inner = inner  # a DiskManifestSource: .present, .read_blobs()
        self.cache = cache
        self.hits = 0
        self.misses = 0
        self.loaded = False
        #: reads whose answer described the disk, not the digest (missing, unreadable, not
        #: matching its digest): a plan made from them is not one to remember
        self.disk_errors = 0
        #: of those, the blobs found missing (a change of the folder's listing, not of a file)
        self.missing_reads = 0

    @property
    def present(self) -> Mapping[str, og.BlobInfo]:
        present: Mapping[str, og.BlobInfo] = self.inner.present
        return present

    def ensure_loaded(self) -> None:
        """Load the cache file, once: on first use, so a run that reads no manifest (a plan
        recalled by :mod:`io_adapters.planner`) does not pay for it."""
        if not self.loaded:
            self.loaded = True
            self.cache.load(self.inner.present)

    def read_manifests(self, digests: Sequence[str]) -> dict[str, og.Manifest]:
        present = self.inner.present
        self.ensure_loaded()
        get, known = self.cache.get, self.cache.entries
        out: dict[str, og.Manifest] = {}
        misses: list[str] = []
        for d in digests:
            # (a blob is stat'ed only to check an entry; a read notes its fstat in the listing)
            m = get(d, present.get(d)) if d in known else None
            if m is None:
                misses.append(d)
            else:
                out[d] = m
        self.hits += len(digests) - len(misses)
        self.misses += len(misses)
        new: list[tuple[og.Manifest, float | None]] = []
        parse = og.parse_manifest
        for d, data in zip(misses, self.inner.read_blobs(misses) if misses else (), strict=True):
            if isinstance(data, og.Manifest):  # missing or unreadable: about the disk, not cached
                out[d] = data
                self.disk_errors += 1
                self.missing_reads += data.missing
                continue
            m = out[d] = parse(d, data)
            info = present.get(d)
            if m.error != _MISMATCH and info is not None and info.size == len(data):
                new.append((m, info.mtime))
            else:
                self.disk_errors += 1
        self.cache.finish_batch(digests, new, present)
        return out


def caching_source(inner: Any, root: Path, cache_dir: Path | str | None = None) -> Any:
    """``inner`` wrapped in a cache for the layout at ``root``; ``inner`` itself when there is
    nowhere to keep one."""
    path = cache_file_for(root, cache_dir)
    if path is None:
        return inner
    try:
        identity = _identity(root)
    except OSError:
        return inner
    cache = ManifestCache(path, identity)
    return CachingManifestSource(inner, cache)
