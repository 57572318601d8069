"""What a layout's files say, judged without touching them: the adapter lists, opens and
stats; these functions decide what it found.

* Which entries under ``blobs/`` are blobs ocigraph may sweep, and why the others are junk
  (:class:`Junk`: reported, never touched) -- an algorithm folder ocigraph does not know, a
  name that is not a digest's, a symlink, anything but a regular file.
* Whether an ``oci-layout`` file names a layout version ocigraph reads, and why a folder
  without one is not a layout.
* The one-line reason a failed open gives, from its ``errno``.
* Which process ``/proc/locks`` says holds the ``flock`` on a layout's folder.
* Whether a manifest read that failed says something about the disk rather than the digest
  (:func:`is_disk_error`): a graph built from such a read is not worth keeping.

Two values an adapter fills in: :class:`ListedBlobs`, the present blobs as a listing names
them, each blob's size and mtime found out only when asked; and :class:`BlobManifestSource`,
manifests parsed from the blobs an adapter reads, counting the reads that failed on the disk.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Iterator, KeysView, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from ._digest import SWEEPABLE_ALGORITHMS, are_digest_names, digest_bytes, printable
from ._model import BlobInfo, Manifest
from ._parse import parse_manifest

__all__ = ["Junk", "JUNK_KINDS", "blob_name", "algorithm_folder_junk", "blob_names", "entry_junk",
           "not_a_layout", "NO_LAYOUT_HERE", "oci_layout_problem", "open_failure", "is_disk_error", "FileStat", "ListedBlobs",
           "BlobManifestSource", "flock_holder"]

_HEX = "0123456789abcdef"

#: why an entry of ``blobs/<alg>/`` with a digest's name is junk, by what the listing says it is
JUNK_KINDS: dict[str, str] = {
    "symlink": "symlink (never followed, never deleted)",
    "other": "not a regular file",
}


@dataclass(frozen=True, slots=True)
class Junk:
    """Something under ``blobs/`` that is not a blob ocigraph may sweep; reported, never touched."""

    path: str  # relative to the layout root
    why: str


def blob_name(digest: str) -> str:
    """``blobs/<alg>/<encoded>``: a (valid) digest's file relative to the layout, for messages.

    >>> blob_name("sha256:" + "a" * 64) == "blobs/sha256/" + "a" * 64
    True
    """
    return "blobs/" + digest.replace(":", "/", 1)


def _is_digest_name(name: str, width: int) -> bool:
    return len(name) == width and not name.strip(_HEX)


def algorithm_folder_junk(name: str, is_dir: bool) -> Junk | None:
    """The junk an entry of ``blobs/`` is (``is_dir``: a real folder, not a symlink to one);
    ``None`` for the folder of an algorithm ocigraph sweeps, which is listed.

    >>> algorithm_folder_junk("sha256", True) is None
    True
    >>> algorithm_folder_junk("blake3", True), algorithm_folder_junk("sha256", False)
    (Junk(path='blobs/blake3', why='unknown algorithm folder'), None)
    >>> algorithm_folder_junk("README", False).why
    'not an algorithm folder'
    """
    if name in SWEEPABLE_ALGORITHMS:
        return None
    return Junk(f"blobs/{printable(name)}",
                "unknown algorithm folder" if is_dir else "not an algorithm folder")


def blob_names(alg: str, names: list[str]) -> tuple[list[str], list[Junk]]:
    """The digests named by the regular files ``names`` of ``blobs/<alg>/`` (a sweepable
    algorithm), and the junk among them: names that are not the algorithm's lowercase hex.
    A million names are checked at once (:func:`ocigraph.are_digest_names`); only a listing
    with a bad name is sorted name by name.

    >>> blob_names("sha256", ["a" * 64, "x.tmp"])
    (['sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'], [Junk(path='blobs/sha256/x.tmp', why='not a valid digest name')])
    """
    width = SWEEPABLE_ALGORITHMS[alg]
    junk: list[Junk] = []
    if not are_digest_names(names, width):  # rare: sort the names out one by one
        junk = [Junk(f"blobs/{alg}/{printable(n)}", "not a valid digest name")
                for n in names if not _is_digest_name(n, width)]
        names = [n for n in names if _is_digest_name(n, width)]
    return list(map((alg + ":").__add__, names)), junk


def entry_junk(alg: str, name: str, kind: str) -> Junk:
    """Why an entry of ``blobs/<alg>/`` that is not a regular file is junk: its name, unless
    that is a digest's, else its ``kind`` -- a key of :data:`JUNK_KINDS`, or the reason the
    adapter could not tell (``"cannot stat (...)"``).

    >>> entry_junk("sha256", "b" * 64, "symlink").why
    'symlink (never followed, never deleted)'
    >>> entry_junk("sha256", "tmp", "symlink").why
    'not a valid digest name'
    >>> entry_junk("sha256", "c" * 64, "cannot stat (Permission denied)").why
    'cannot stat (Permission denied)'
    """
    if not _is_digest_name(name, SWEEPABLE_ALGORITHMS[alg]):
        return Junk(f"blobs/{alg}/{printable(name)}", "not a valid digest name")
    return Junk(f"blobs/{alg}/{name}", JUNK_KINDS.get(kind, kind))


def not_a_layout(has_index: bool) -> str:
    """Why a folder without an ``oci-layout`` file is not a layout (``has_index``: it has an
    index.json, the usual mistake).

    >>> not_a_layout(True)
    'not an OCI image layout (it has an index.json but no oci-layout file)'
    """
    hint = "it has an index.json but no oci-layout file" if has_index else "no oci-layout file"
    return f"not an OCI image layout ({hint})"


def oci_layout_problem(data: bytes) -> str | None:
    """What is wrong with the bytes of an ``oci-layout`` file; ``None`` for a JSON object whose
    ``imageLayoutVersion`` is 1.x.

    >>> oci_layout_problem(b'{"imageLayoutVersion": "1.0.0"}') is None
    True
    >>> oci_layout_problem(b'{"imageLayoutVersion": "2.0"}')
    "imageLayoutVersion is '2.0', expected 1.x"
    >>> oci_layout_problem(b"{")
    'not valid JSON'
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "not valid JSON"
    version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
    if not isinstance(version, str) or not (version == "1" or version.startswith("1.")):
        return f"imageLayoutVersion is {version!r}, expected 1.x"
    return None


#: why a layout path that names nothing is refused, and what to give instead
NO_LAYOUT_HERE = ("no such directory; give the path of an OCI image layout (a folder holding "
                  "oci-layout, index.json and blobs/)")


def open_failure(code: int | None, strerror: str | None, link: bool = False, *,
                 root: bool = False) -> str:
    """The reason a failed open of a layout's file or folder gives, from its ``errno``
    ``code``; ``link``: the adapter found a symlink there (an ``O_DIRECTORY | O_NOFOLLOW`` open
    of one fails with ENOTDIR, not ELOOP); ``root``: it is the layout's own folder, where
    nothing means no layout was named (:data:`NO_LAYOUT_HERE`).

    >>> open_failure(errno.ENOENT, "No such file or directory", link=True)
    'missing'
    >>> open_failure(errno.ENOENT, "No such file or directory", root=True) == NO_LAYOUT_HERE
    True
    >>> open_failure(errno.ELOOP, "Too many levels of symbolic links")
    'is a symlink; ocigraph does not follow symlinks'
    >>> open_failure(errno.EACCES, "Permission denied")
    'cannot open (Permission denied)'
    """
    if code == errno.ENOENT:
        return NO_LAYOUT_HERE if root else "missing"
    if code == errno.ELOOP or link:
        return "is a symlink; ocigraph does not follow symlinks"
    if code == errno.ENOTDIR:
        return "is not a directory"
    return f"cannot open ({strerror})"


def flock_holder(proc_locks: str, major: int, minor: int, inode: int) -> int | None:
    """The pid that ``proc_locks`` (the text of ``/proc/locks``) says holds a ``flock`` on the
    file of inode ``inode`` on device ``major:minor``; ``None`` if no line says so.

    >>> locks = ("1: POSIX  ADVISORY  WRITE 77 fd:01:5678 0 EOF\\n"
    ...          "2: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF\\n")
    >>> flock_holder(locks, 0xfd, 1, 5678), flock_holder(locks, 0xfd, 1, 567)
    (1234, None)
    """
    want = f"{major:02x}:{minor:02x}:{inode}"
    for parts in map(str.split, proc_locks.splitlines()):
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want:
            return int(parts[4]) if parts[4].isdigit() else None
    return None


#: what the core answers for bytes that do not hash to their digest (asked of it, not copied)
_MISMATCH = parse_manifest(digest_bytes(b"a"), b"b").error


def is_disk_error(m: Manifest) -> bool:
    """Whether a read said something about the file rather than the digest: unreadable, not a
    regular file, or not matching its digest -- a file repaired in place (``cp -p``) could
    come back with other bytes and the same folder stamps.  Bytes that hash right but do not
    parse are a fact about the digest; a blob missing is a fact about the folder (it coming
    back changes the folder's stamps).

    >>> d = digest_bytes(b"{}")
    >>> is_disk_error(parse_manifest(d, b"[]")), is_disk_error(parse_manifest(d, None))
    (True, False)
    >>> is_disk_error(Manifest(d, error="cannot read (Input/output error)"))
    True
    """
    e = m.error
    return e is not None and not m.missing and (
        e == _MISMATCH or e == "not a regular file" or e.startswith("cannot read"))


class FileStat(Protocol):
    """What :meth:`ListedBlobs.note` reads of a stat of a blob (an ``os.stat_result``)."""

    @property
    def st_size(self) -> int: ...

    @property
    def st_mtime(self) -> float: ...


class ListedBlobs(Mapping[str, BlobInfo]):
    """The present blobs of a layout as a listing names them, as :attr:`Layout.blobs`: which
    exist comes from the names alone; a blob's size and mtime from :meth:`look` the first time
    someone asks (or from a stat the adapter made anyway, :meth:`note`), then kept.  Planning
    asks only about the blobs it reads or deletes, so a GC of a million blobs need not stat
    the layers that stay.  An adapter subclasses it and defines :meth:`look`.

    >>> class Sized(ListedBlobs):
    ...     def look(self, digest):
    ...         return BlobInfo(len(digest), None)
    >>> blobs = Sized(["sha256:a", "sha256:bb"])
    >>> "sha256:a" in blobs, len(blobs), blobs.examined()
    (True, 2, set())
    >>> blobs["sha256:bb"], blobs.examined()
    (BlobInfo(size=9, mtime=None), {'sha256:bb'})
    """

    __slots__ = ("_infos",)

    def __init__(self, digests: Iterable[str]) -> None:
        self._infos: dict[str, BlobInfo | None] = dict.fromkeys(digests)

    def look(self, digest: str) -> BlobInfo:
        """Find out a listed blob's size and mtime (the adapter's part)."""
        raise NotImplementedError

    def __getitem__(self, digest: str) -> BlobInfo:
        info = self._infos[digest]
        if info is None:
            info = self._infos[digest] = self.look(digest)
        return info

    def __contains__(self, digest: object) -> bool:
        return digest in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def keys(self) -> KeysView[str]:
        return self._infos.keys()

    def note(self, digest: str, st: FileStat) -> BlobInfo:
        """Record what a stat of the blob said; returns the blob's info."""
        info = BlobInfo(st.st_size, st.st_mtime)
        if digest in self._infos:
            self._infos[digest] = info
        return info

    def examined(self) -> set[str]:
        """The blobs whose size and mtime have been asked for (or read) so far."""
        return {d for d, info in self._infos.items() if info is not None}


class BlobManifestSource:
    """A :class:`ManifestSource` over an adapter's reads of blobs: :meth:`read_blobs` (the
    adapter's part) answers each digest's bytes, or the :class:`Manifest` that says why there
    are none; this parses them, verified against their digests.

    ``disk_errors`` counts reads that said something about the disk rather than the digest
    (:func:`is_disk_error`): a graph built from such reads is not worth keeping.

    >>> class InMemory(BlobManifestSource):
    ...     def read_blobs(self, digests):
    ...         return [b"{}" for d in digests]
    >>> source, d = InMemory(), digest_bytes(b"{}")
    >>> source.read_manifests([d])[d].ok, source.read_blob(d), source.disk_errors
    (True, b'{}', 0)
    >>> source.read_manifests([digest_bytes(b"[]")]) and source.disk_errors
    1
    """

    disk_errors: int = 0

    def read_blobs(self, digests: Sequence[str]) -> list[bytes | Manifest]:
        """Each digest's bytes, in order, or the :class:`Manifest` that says why there are none."""
        raise NotImplementedError

    def read_blob(self, digest: str) -> bytes | None:
        """One blob's bytes, if it could be read."""
        data = self.read_blobs([digest])[0]
        return data if isinstance(data, bytes) else None

    def read_manifests(self, digests: Sequence[str]) -> dict[str, Manifest]:
        parse = parse_manifest
        out = {d: data if isinstance(data, Manifest) else parse(d, data)
               for d, data in zip(digests, self.read_blobs(digests), strict=True)}
        self.disk_errors += sum(map(is_disk_error, out.values()))
        return out
