"""Read a layout directory into the core's :class:`ocigraph.Layout` value.

Rules:

* a path is only ever built from a digest that passed :func:`ocigraph.parse_digest` and uses a
  sweepable algorithm -- ``sha256:../../x`` never becomes a path;
* symlinks are never followed: ``oci-layout``, ``index.json``, ``blobs/`` and ``blobs/<alg>/``
  must be real files and folders, blob files are opened with ``O_NOFOLLOW``, and a symlink
  under ``blobs/`` is reported as junk and never touched;
* only what planning needs is read: index.json, the listing of ``blobs/<alg>/`` (names, sizes,
  mtimes), and the manifests reachable through manifest-typed descriptors.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson

import ocigraph as og

from .errors import LayoutAccessError

__all__ = ["Junk", "DiskLayout", "read_layout", "blob_path", "read_regular_file", "DiskManifestSource"]


@dataclass(frozen=True, slots=True)
class Junk:
    """Something under ``blobs/`` that is not a blob ocigraph may sweep; reported, never touched."""

    path: str  # relative to the layout root
    why: str


@dataclass(frozen=True, slots=True)
class DiskLayout:
    """A layout as read from disk: where it is, the core's value, and the junk beside it."""

    root: Path
    layout: og.Layout
    junk: tuple[Junk, ...]


def blob_path(root: Path, digest: str) -> Path:
    """``root/blobs/<alg>/<encoded>`` for a valid, sweepable digest; anything else raises."""
    og.parse_digest(digest)
    if not og.is_sweepable(digest):
        raise og.InvalidDigestError(digest, "not an algorithm ocigraph stores or deletes")
    alg, encoded = digest.split(":", 1)
    return root / "blobs" / alg / encoded


def read_regular_file(path: Path, what: str | None = None) -> bytes:
    """The bytes of a regular file, refusing symlinks and anything else; errors name the path."""
    name = what or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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


def _check_dir(path: Path, what: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
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


def scan_blobs(root: Path) -> tuple[dict[str, og.BlobInfo], list[Junk]]:
    """List ``blobs/<alg>/`` for every sweepable algorithm: present blobs, and junk."""
    blobs_dir = root / "blobs"
    _check_dir(blobs_dir, "blobs")
    present: dict[str, og.BlobInfo] = {}
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
        _check_dir(Path(alg_entry.path), rel)
        width = lengths[alg_entry.name]
        prefix = alg_entry.name + ":"
        try:
            it = os.scandir(alg_entry.path)
        except OSError as exc:
            raise LayoutAccessError(rel, f"cannot list ({exc.strerror})") from None
        with it:
            for e in it:
                name = printable(e.name)
                if len(name) != width or name.strip("0123456789abcdef"):
                    junk.append(Junk(f"{rel}/{name}", "not a valid digest name"))
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError as exc:
                    junk.append(Junk(f"{rel}/{name}", f"cannot stat ({exc.strerror})"))
                    continue
                if stat.S_ISREG(st.st_mode):
                    present[prefix + name] = og.BlobInfo(size=st.st_size, mtime=st.st_mtime)
                elif stat.S_ISLNK(st.st_mode):
                    junk.append(Junk(f"{rel}/{name}", "symlink (never followed, never deleted)"))
                else:
                    junk.append(Junk(f"{rel}/{name}", "not a regular file"))
    return present, junk


class DiskManifestSource:
    """Reads manifests from ``blobs/``, verifies them, parses them; batches in parallel."""

    def __init__(self, root: Path, present: Mapping[str, og.BlobInfo], workers: int = 4) -> None:
        self.root = root
        self.present = present
        self.workers = workers

    def _read_one(self, digest: str) -> og.Manifest:
        if digest not in self.present:
            return og.parse_manifest(digest, None)
        path = blob_path(self.root, digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return og.parse_manifest(digest, None)
        except OSError as exc:
            return og.Manifest(digest=digest, error=f"cannot read ({exc.strerror})")
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        except OSError as exc:
            return og.Manifest(digest=digest, error=f"cannot read ({exc.strerror})")
        finally:
            os.close(fd)
        return og.parse_manifest(digest, b"".join(chunks))

    def read_manifests(self, digests: Sequence[str]) -> dict[str, og.Manifest]:
        if self.workers <= 1 or len(digests) < 64:
            return {d: self._read_one(d) for d in digests}
        with ThreadPoolExecutor(self.workers) as pool:
            return dict(zip(digests, pool.map(self._read_one, digests, chunksize=64), strict=True))


def read_layout(root: Path | str, *, workers: int = 4) -> DiskLayout:
    """Read ``root`` into a :class:`DiskLayout`.  Raises a one-line :class:`ocigraph.OcigraphError`
    naming the file at fault for anything that makes the layout unusable."""
    root = Path(root)
    # The clock is read before anything is listed: a blob written after this instant is newer
    # than the plan's snapshot, and apply will not delete it.
    now = time.time()
    _check_dir(root, str(root))
    read_oci_layout_file(root)
    index = og.parse_index(read_regular_file(root / "index.json", "index.json"))
    present, junk = scan_blobs(root)
    source = DiskManifestSource(root, present, workers)
    return DiskLayout(root=root, layout=og.Layout(index=index, blobs=present, manifests=source, now=now),
                      junk=tuple(junk))
