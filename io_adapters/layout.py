"""Read a layout directory into the core's :class:`ocigraph.Layout` value.

Rules:

* a path is only ever built from a digest that passed :func:`ocigraph.parse_digest` and uses a
  sweepable algorithm -- ``sha256:../../x`` never becomes a path;
* symlinks are never followed: ``oci-layout``, ``index.json``, ``blobs/`` and ``blobs/<alg>/``
  must be real files and folders, blob files are opened with ``O_NOFOLLOW``, and a symlink
  under ``blobs/`` is reported as junk and never touched;
* only what planning needs is read: index.json, the listing of ``blobs/<alg>/`` (names; a
  blob's size and mtime only when planning asks, see :class:`BlobListing`), and the manifests
  reachable through manifest-typed descriptors.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterable, Iterator, KeysView, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import ocigraph as og
from .collector import pauses_collector as pauses_gc

from .cache import cache_enabled, caching_source
from .errors import LayoutAccessError

__all__ = ["Junk", "DiskLayout", "BlobListing", "read_layout", "folder_stamps", "blob_path", "blob_file", "blob_name", "read_regular_file", "DiskManifestSource"]



@dataclass(frozen=True, slots=True)
class Junk:
    """Something under ``blobs/`` that is not a blob ocigraph may sweep; reported, never touched."""

    path: str  # relative to the layout root
    why: str


@dataclass(frozen=True, slots=True)
class DiskLayout:
    """A layout as read from disk: where it is, the core's value, and the junk beside it.

    ``folders``: the :func:`folder_stamps` of ``blobs/`` taken before it was listed, and
    ``listed_at``, the clock then (nanoseconds): what :mod:`io_adapters.store` keeps to know,
    later, that no blob has come or gone since."""

    root: Path
    layout: og.Layout
    junk: tuple[Junk, ...]
    folders: tuple[FolderStamp, ...] = ()
    listed_at: int = 0


def _is_sweepable_hex(alg: str, encoded: str) -> bool:
    """The common case of a valid, sweepable digest, checked without regular expressions."""
    width = og.SWEEPABLE_ALGORITHMS.get(alg)
    return width is not None and len(encoded) == width and not encoded.strip("0123456789abcdef")


def blob_path(root: Path, digest: str) -> Path:
    """``root/blobs/<alg>/<encoded>`` for a valid, sweepable digest; anything else raises."""
    alg, _, encoded = digest.partition(":")
    if not _is_sweepable_hex(alg, encoded):  # the full check, and its error, for the rest
        og.parse_digest(digest)
        if not og.is_sweepable(digest):
            raise og.InvalidDigestError(digest, "not an algorithm ocigraph stores or deletes")
    return root.joinpath("blobs", alg, encoded)


def blob_name(digest: str) -> str:
    """``blobs/<alg>/<encoded>``: a (valid) digest's file relative to the layout, for messages."""
    return "blobs/" + digest.replace(":", "/", 1)


def blob_file(root: Path | str, digest: str) -> str:
    """:func:`blob_path` as a string, without pathlib for the common case: the hot loops
    (reading every manifest, deleting every blob, checking every stamp) call it per blob."""
    alg, _, encoded = digest.partition(":")
    if _is_sweepable_hex(alg, encoded):
        return f"{root}/blobs/{alg}/{encoded}"
    return str(blob_path(Path(root), digest))  # raises for anything else


def read_regular_file(path: Path, what: str | None = None) -> bytes:
    """The bytes of a regular file, refusing symlinks and anything else; errors name the path."""
    name = what or str(path)
    try:
        # O_NONBLOCK: opening a FIFO planted as index.json must not hang (no effect on files).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise LayoutAccessError(name, "missing") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LayoutAccessError(name, "is a symlink; ocigraph does not follow symlinks") from None
        raise LayoutAccessError(name, f"cannot open ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LayoutAccessError(name, "is not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise LayoutAccessError(name, f"cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)


def printable(name: str) -> str:
    """A file name safe to print: undecodable bytes become ``\\xNN`` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_real_dir(path: Path, what: str, *, missing_ok: bool = False) -> None:
    """Refuse ``path`` unless it is a real directory (not a symlink to one); errors name
    ``what``.  With ``missing_ok``, an absent directory passes."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if missing_ok:
            return
        raise LayoutAccessError(what, "missing") from None
    except OSError as exc:
        raise LayoutAccessError(what, f"cannot stat ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise LayoutAccessError(what, "is a symlink; ocigraph does not follow symlinks out of the layout")
    if not stat.S_ISDIR(st.st_mode):
        raise LayoutAccessError(what, "is not a directory")


def read_oci_layout_file(root: Path) -> None:
    """Validate ``oci-layout``: a JSON object whose ``imageLayoutVersion`` is 1.x."""
    data = read_regular_file(root / "oci-layout", "oci-layout")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise LayoutAccessError("oci-layout", "not valid JSON") from None
    version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
    if not isinstance(version, str) or not (version == "1" or version.startswith("1.")):
        raise LayoutAccessError("oci-layout", f"imageLayoutVersion is {version!r}, expected 1.x")


#: a folder under the layout as ``(name relative to blobs/, inode, mtime_ns, ctime_ns)``
FolderStamp = tuple[str, int, int, int]


def folder_stamps(root: Path) -> tuple[FolderStamp, ...]:
    """Stamps of ``blobs/`` and of each ``blobs/<alg>/`` folder of a sweepable algorithm --
    the folders whose listings say which blobs exist.  A blob created, removed or renamed
    changes its folder's mtime and ctime; so does junk appearing beside it.

    Refuses (one line) what :func:`scan_blobs` refuses: ``blobs`` or an algorithm folder that
    is a symlink or not a folder."""
    blobs_dir = root / "blobs"
    check_real_dir(blobs_dir, "blobs")
    out = []
    try:
        st = os.lstat(blobs_dir)
        out.append(("", st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
        names = sorted(os.listdir(blobs_dir))
    except OSError as exc:
        raise LayoutAccessError("blobs", f"cannot list ({exc.strerror})") from None
    for name in names:
        if name not in og.SWEEPABLE_ALGORITHMS:
            continue
        rel = f"blobs/{name}"
        check_real_dir(blobs_dir / name, rel)
        try:
            st = os.lstat(blobs_dir / name)
        except OSError as exc:
            raise LayoutAccessError(rel, f"cannot stat ({exc.strerror})") from None
        out.append((name, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


#: what identifies a file's state: inode, size, mtime and ctime in nanoseconds (``utime`` can
#: set an mtime back; nothing but the kernel sets a ctime, and ``chmod`` moves it)
Stamp = tuple[int, int, int, int]


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class BlobListing(Mapping[str, og.BlobInfo]):
    """The present blobs of a layout, as the core's ``Layout.blobs`` mapping.

    Which blobs exist comes from the listing alone (names, and the file type the directory entry
    carries); a blob's size and mtime come from an ``lstat`` made the first time someone asks
    for them (or from the ``fstat`` of a read, see :meth:`note`).  Planning asks only about the
    blobs it reads or deletes, so a GC of a million blobs does not stat the million layers that
    stay.  A blob gone since the listing answers size 0 and no mtime (apply finds it gone and
    says so); any other failure to stat it is an error naming the file.
    """

    __slots__ = ("_infos", "_root", "_stamps")

    def __init__(self, root: Path, digests: Iterable[str], *, stamps: bool = True) -> None:
        self._root = str(root)
        self._infos: dict[str, og.BlobInfo | None] = dict.fromkeys(digests)
        #: kept only for remembered plans (``stamps``), which check them on the next run
        self._stamps: dict[str, Stamp] | None = {} if stamps else None

    def _stat(self, digest: str) -> og.BlobInfo:
        try:
            st = os.lstat(blob_file(self._root, digest))
        except (FileNotFoundError, NotADirectoryError):
            info = self._infos[digest] = og.BlobInfo(0, None)
            return info
        except OSError as exc:
            raise LayoutAccessError(blob_name(digest), f"cannot stat ({exc.strerror})") from None
        return self.note(digest, st)

    def __getitem__(self, digest: str) -> og.BlobInfo:
        info = self._infos[digest]
        return self._stat(digest) if info is None else info

    def get(self, digest: str, default: Any = None) -> Any:
        if digest not in self._infos:
            return default
        info = self._infos[digest]
        return self._stat(digest) if info is None else info

    def __contains__(self, digest: object) -> bool:
        return digest in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def keys(self) -> KeysView[str]:
        return self._infos.keys()

    def note(self, digest: str, st: os.stat_result) -> og.BlobInfo:
        """Record what a stat of the blob said (the ``fstat`` of a read saves an ``lstat``
        later); returns the blob's info."""
        info = og.BlobInfo(st.st_size, st.st_mtime)
        if digest in self._infos:
            self._infos[digest] = info
            if self._stamps is not None:
                self._stamps[digest] = stamp_of(st)
        return info

    def stamps(self) -> dict[str, Stamp]:
        """:data:`Stamp` of every blob whose size and mtime have been asked for so far (the
        listing's own dict: read it, do not change it; empty unless made with ``stamps``)."""
        return {} if self._stamps is None else self._stamps

    def __repr__(self) -> str:
        return f"<BlobListing of {len(self)} blobs in {self._root}>"


_HEX = "0123456789abcdef"


def _all_digest_names(names: list[str], width: int) -> bool:
    """Every name is ``width`` lowercase hex characters -- checked for all at once: one
    ``bytes.fromhex`` of them joined (which also takes uppercase and spaces, so those are
    ruled out apart) is a tenth of the time of a check per name."""
    if not names:
        return True
    if set(map(len, names)) != {width}:
        return False
    joined = "".join(names)
    if any(c in joined for c in "ABCDEF \t\n\r\x0b\x0c"):
        return False
    try:
        return len(bytes.fromhex(joined)) * 2 == len(joined)
    except ValueError:
        return False


def _scan_one_by_one(path: str, rel: str) -> tuple[list[str], list[os.DirEntry[str]]]:
    """Names of regular files, and the other entries (those whose type cannot even be asked
    included), entry by entry."""
    names: list[str] = []
    others: list[os.DirEntry[str]] = []
    try:
        it = os.scandir(path)
    except OSError as exc:
        raise LayoutAccessError(rel, f"cannot list ({exc.strerror})") from None
    with it:
        for e in it:
            try:
                regular = e.is_file(follow_symlinks=False)
            except OSError:
                regular = False
            if regular:
                names.append(e.name)
            else:
                others.append(e)
    return names, others


def _junk_entry(e: os.DirEntry[str], rel: str, width: int) -> Junk:
    """Why an entry of ``blobs/<alg>/`` is not a blob ocigraph may sweep."""
    name = e.name
    if len(name) != width or name.strip(_HEX):
        return Junk(f"{rel}/{printable(name)}", "not a valid digest name")
    try:
        if e.is_symlink():
            return Junk(f"{rel}/{name}", "symlink (never followed, never deleted)")
        e.is_file(follow_symlinks=False)
    except OSError as exc:
        return Junk(f"{rel}/{name}", f"cannot stat ({exc.strerror})")
    return Junk(f"{rel}/{name}", "not a regular file")


def scan_blobs(root: Path, *, stamps: bool = True) -> tuple[BlobListing, list[Junk]]:
    """List ``blobs/<alg>/`` for every sweepable algorithm: present blobs, and junk.

    Names only: the directory entry's file type tells a regular file from a symlink or
    anything else without a ``stat`` (on file systems that do not fill it in, ``os.scandir``
    stats for us).
    """
    blobs_dir = root / "blobs"
    check_real_dir(blobs_dir, "blobs")
    present: list[str] = []
    junk: list[Junk] = []
    lengths = og.SWEEPABLE_ALGORITHMS
    try:
        top = sorted(os.scandir(blobs_dir), key=lambda e: e.name)
    except OSError as exc:
        raise LayoutAccessError("blobs", f"cannot list ({exc.strerror})") from None
    for alg_entry in top:
        rel = f"blobs/{printable(alg_entry.name)}"
        if alg_entry.name not in lengths:
            junk.append(Junk(rel, "unknown algorithm folder" if alg_entry.is_dir(follow_symlinks=False) else "not an algorithm folder"))
            continue
        check_real_dir(Path(alg_entry.path), rel)
        width = lengths[alg_entry.name]
        prefix = alg_entry.name + ":"
        try:
            it = os.scandir(alg_entry.path)
        except OSError as exc:
            raise LayoutAccessError(rel, f"cannot list ({exc.strerror})") from None
        with it:
            # Regular files by the entries' types (no stat where the file system gives them),
            # in one comprehension (a loop with appends costs a second more at a million
            # entries); everything else is set aside by ``odd`` (it returns None, so the
            # entry is not taken) and reported below.
            others: list[os.DirEntry[str]] = []
            odd = others.append
            try:
                names = [e.name for e in it if e.is_file(follow_symlinks=False) or odd(e)]
            except OSError:  # a type that needed a stat, and the stat failed: go slowly
                names, others = _scan_one_by_one(alg_entry.path, rel)
        if not _all_digest_names(names, width):  # rare: sort the names out one by one
            bad = [n for n in names if len(n) != width or n.strip(_HEX)]
            junk.extend(Junk(f"{rel}/{printable(n)}", "not a valid digest name") for n in bad)
            names = [n for n in names if len(n) == width and not n.strip(_HEX)]
        present.extend(map(prefix.__add__, names))
        for e in others:
            junk.append(_junk_entry(e, rel, width))
    return BlobListing(root, present, stamps=stamps), junk


#: reads timed before choosing threads, and the seconds per read above which threads help
#: (a small file from the page cache takes ~10-40 us; from a disk, hundreds)
_PROBE_READS = 128
_SLOW_READ = 150e-6


class DiskManifestSource:
    """Reads manifests from ``blobs/``, verifies them, parses them; batches in parallel."""

    def __init__(self, root: Path, present: Mapping[str, og.BlobInfo], workers: int = 4) -> None:
        self.root = root
        self.present = present
        self.workers = workers
        self._note = present.note if isinstance(present, BlobListing) else None

    def _read_one(self, digest: str) -> og.Manifest:
        data = self.read_bytes(digest)
        return data if isinstance(data, og.Manifest) else og.parse_manifest(digest, data)

    def read_bytes(self, digest: str) -> bytes | og.Manifest:
        """The blob's bytes, or the :class:`ocigraph.Manifest` that says why there are none."""
        if digest not in self.present:
            return og.parse_manifest(digest, None)
        path = blob_file(self.root, digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return og.parse_manifest(digest, None)
        except OSError as exc:
            return og.Manifest(digest=digest, error=f"cannot read ({exc.strerror})")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # replaced since the listing
                return og.Manifest(digest=digest, error="not a regular file")
            if self._note is not None:
                self._note(digest, st)
            # One read() for the whole file: asking for one byte more than fstat says and
            # getting exactly the size means end of file, so the usual second, empty read()
            # is not needed.  Anything else (a file that changed) is read to the end.
            data = os.read(fd, st.st_size + 1)
            if len(data) != st.st_size:
                chunks = [data]
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                data = b"".join(chunks)
        except OSError as exc:
            return og.Manifest(digest=digest, error=f"cannot read ({exc.strerror})")
        finally:
            os.close(fd)
        return data

    def _read_chunk(self, digests: Sequence[str]) -> list[bytes | og.Manifest]:
        return [self.read_bytes(d) for d in digests]

    def read_blobs(self, digests: Sequence[str]) -> list[bytes | og.Manifest]:
        """:meth:`read_bytes` of each digest, in order; large batches on ``workers`` threads.

        Threads only read (the GIL is released in the system calls); parsing stays in the
        caller's thread.  Work goes to the threads in chunks: one future per file would cost
        more than reading a small file.  And threads only pay when reads wait for the disk:
        from the page cache, four threads read small files several times slower than one
        (they take turns at the GIL).  So a first chunk is read here, timed, and the pool is
        used only if those reads were slow.
        """
        if self.workers <= 1 or len(digests) < 256:
            return self._read_chunk(digests)
        started = time.perf_counter()
        out = self._read_chunk(digests[:_PROBE_READS])
        rest = digests[_PROBE_READS:]
        if (time.perf_counter() - started) / _PROBE_READS < _SLOW_READ:
            out.extend(self._read_chunk(rest))
            return out
        step = max(64, len(rest) // (self.workers * 4) + 1)
        chunks = [rest[i:i + step] for i in range(0, len(rest), step)]
        with ThreadPoolExecutor(self.workers) as pool:
            for part in pool.map(self._read_chunk, chunks):
                out.extend(part)
        return out

    def read_manifests(self, digests: Sequence[str]) -> dict[str, og.Manifest]:
        parse = og.parse_manifest
        return {d: data if isinstance(data, og.Manifest) else parse(d, data)
                for d, data in zip(digests, self.read_blobs(digests), strict=True)}


@pauses_gc  # listing a million blobs makes a million small objects
def read_layout(root: Path | str, *, workers: int = 4, cache: bool | None = None,
                cache_dir: Path | str | None = None) -> DiskLayout:
    """Read ``root`` into a :class:`DiskLayout`.  Raises a one-line :class:`ocigraph.OcigraphError`
    naming the file at fault for anything that makes the layout unusable.

    ``cache``: answer manifests already verified by an earlier run from the cache of
    :mod:`io_adapters.cache` (default: on unless ``OCIGRAPH_NO_CACHE`` is set); ``cache_dir``
    overrides where it lives."""
    root = Path(root)
    # The clock is read before anything is listed: a blob written after this instant is newer
    # than the plan's snapshot, and apply will not delete it.
    listed_at = time.time_ns()
    now = listed_at / 1e9
    check_real_dir(root, str(root))
    read_oci_layout_file(root)
    index = og.parse_index(read_regular_file(root / "index.json", "index.json"))
    folders = folder_stamps(root) if cache_enabled(cache) else ()
    present, junk = scan_blobs(root, stamps=cache_enabled(cache))
    source: og.ManifestSource = DiskManifestSource(root, present, workers)
    if cache_enabled(cache):
        source = caching_source(source, root, cache_dir)
    return DiskLayout(root=root, layout=og.Layout(index=index, blobs=present, manifests=source, now=now),
                      junk=tuple(junk), folders=folders, listed_at=listed_at)
