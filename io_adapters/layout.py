"""A layout on disk, opened once: :class:`LayoutDir`, the shell's one way to read and change it,
:class:`LayoutLock` on that handle, and :func:`read_layout`, which reads it into the core's
``Layout`` (docs/design.md)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import ocigraph as og
from ocigraph import LayoutAccessError, LayoutMovedError, printable
from ocigraph.snapshot import FolderStamp

from .background import collector_paused

__all__ = ["LayoutDir", "DiskLayout", "BlobListing", "read_layout", "open_layout", "blob_path",
           "DiskManifestSource", "TEMP_PREFIX", "PROBE_PREFIX", "read_at", "write_at",
           "LayoutLock", "lock_holder", "locked"]

#: the prefix of the temporary file a new index.json is written to, beside it
TEMP_PREFIX = ".index.json.ocigraph-"
#: the prefix of the empty file that reads the file system's clock (:meth:`LayoutDir.clock_offset`)
PROBE_PREFIX = ".ocigraph-clock-"

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted as index.json must not hang (no effect on files).
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

def blob_path(root: Path | str, digest: str) -> Path:
    """``root/blobs/<alg>/<encoded>`` (for tests and messages; the shell uses :class:`LayoutDir`)."""
    return Path(root, "blobs", *og.blob_parts(digest))


class _NotRegular(OSError):
    pass


def _read_open(f: int, seen: Callable[[os.stat_result], object] | None = None) -> bytes:
    """The bytes of the open file ``f``, which must be a regular file (else :class:`_NotRegular`);
    ``seen`` hears what its ``fstat`` said, before the read."""
    st = os.fstat(f)
    if not stat.S_ISREG(st.st_mode):
        raise _NotRegular(errno.EINVAL, "is not a regular file")
    if seen is not None:
        seen(st)
    # One read() for the whole file (a 34 MB index.json: no chunks to join): asking for one
    # byte more than fstat says and getting exactly the size means end of file; else read on
    # to the end, should the file have changed meanwhile.
    data = os.read(f, st.st_size + 1)
    if len(data) != st.st_size:
        chunks = [data]
        while chunk := os.read(f, 1 << 20):
            chunks.append(chunk)
        data = b"".join(chunks)
    return data


def read_at(fd: int, name: str) -> bytes:
    """The bytes of the regular file ``name`` in the folder ``fd`` (never through a symlink)."""
    f = os.open(name, _FILE_FLAGS, dir_fd=fd)
    try:
        return _read_open(f)
    finally:
        os.close(f)


def write_at(fd: int, name: str, data: bytes, tmp: str) -> None:
    """Replace ``name`` in the folder ``fd`` with ``data``: the temp file ``tmp`` beside it,
    fsync, rename -- readers see the old file or the new one, never half of one.  On an
    ``OSError``, ``name`` is unchanged and no temp file is left.  The caller fsyncs ``fd``."""
    f = os.open(tmp, _NEW_FILE, 0o644, dir_fd=fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(f, view):]
            os.fsync(f)
        finally:
            os.close(f)
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=fd)
        raise


def _open_error(what: str, exc: OSError, link: bool = False) -> LayoutAccessError:
    """The one-line error for a failed open of ``what`` (:func:`ocigraph.open_failure`)."""
    return LayoutAccessError(what, og.open_failure(exc.errno, exc.strerror, link))


class LayoutDir:
    """The root directory of a layout, opened once (docs/design.md).

    ``origin`` (``"<device>:<inode>"``) is what a plan made from it records, so that apply can
    refuse any other directory.  Close it, or use it as a context manager.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fds: dict[str, int] = {}
        try:
            self.fd = os.open(self.path, DIR_FLAGS)
        except OSError as exc:
            why = og.open_failure(exc.errno, exc.strerror, os.path.islink(self.path), root=True)
            raise LayoutAccessError(printable(str(self.path)), why) from None
        st = os.fstat(self.fd)
        self.device, self.inode = st.st_dev, st.st_ino

    @property
    def origin(self) -> str:
        return f"{self.device}:{self.inode}"

    def close(self) -> None:
        fds, self._fds = [*self._fds.values(), getattr(self, "fd", -1)], {}
        self.fd = -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> LayoutDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LayoutDir {self.path} ({self.origin})>"

    def in_place(self) -> bool:
        """Whether the path still names this directory, and ``blobs/`` and each open
        ``blobs/<alg>/`` under it are still the folders this handle opened."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
            if (st.st_dev, st.st_ino) != (self.device, self.inode):
                return False
            return all(os.path.samestat(os.stat(rel, dir_fd=self.fd, follow_symlinks=False),
                                        os.fstat(fd))
                       for rel, fd in self._fds.items())
        except OSError:
            return False

    def require_in_place(self) -> None:
        """Raise :class:`LayoutMovedError` unless :meth:`in_place`."""
        if not self.in_place():
            raise LayoutMovedError(printable(str(self.path)))

    def read_file(self, name: str) -> bytes:
        """The bytes of the regular file ``name`` at the top of the layout; errors name it."""
        try:
            return read_at(self.fd, name)
        except _NotRegular:
            raise LayoutAccessError(name, "is not a regular file") from None
        except OSError as exc:
            if exc.filename is not None:  # (the open failed)
                raise _open_error(name, exc) from None
            raise LayoutAccessError(name, f"cannot read ({exc.strerror})") from None

    def check_oci_layout(self) -> None:
        """Validate ``oci-layout`` (:func:`ocigraph.oci_layout_problem`); without one, the
        folder is not a layout, which the error says of the folder."""
        try:
            problem = og.oci_layout_problem(self.read_file("oci-layout"))
        except LayoutAccessError as exc:
            if exc.why != "missing":
                raise
            has_index = "index.json" in os.listdir(self.fd)  # (asking the handle, as ever)
            raise LayoutAccessError(printable(str(self.path)),
                                    og.not_a_layout(has_index)) from None
        if problem is not None:
            raise LayoutAccessError("oci-layout", problem)

    def read_index(self) -> og.Index:
        return og.parse_index(self.read_file("index.json"))

    def replace_index(self, data: bytes) -> None:
        """Replace ``index.json`` atomically (:func:`write_at`).  Every failure is one line:
        before the rename, index.json is unchanged; after it (the folder cannot be synced) it
        is new but may not survive a power loss, so the caller must delete nothing it dropped."""
        tmp = f"{TEMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}.tmp"
        try:
            write_at(self.fd, "index.json", data, tmp)
        except OSError as exc:
            if not self.in_place():  # removed, or moved and replaced: say that, not ENOENT
                raise LayoutMovedError(printable(str(self.path))) from None
            raise LayoutAccessError("index.json", f"cannot write the new index.json "
                                    f"({exc.strerror}); it was left unchanged") from None
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise LayoutAccessError("index.json", f"rewritten, but the layout folder could not "
                                    f"be synced ({exc.strerror}), so no blob was deleted") from None

    def remove_stale_temp_files(self) -> None:
        """Remove temp files a killed ocigraph left (only ours, by prefix; call under the lock)."""
        with contextlib.suppress(OSError), os.scandir(self.fd) as it:
            for e in it:
                if e.name.startswith((TEMP_PREFIX, PROBE_PREFIX)) and e.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.unlink(e.name, dir_fd=self.fd)

    def clock_offset(self) -> float:
        """Seconds the file system's clock is ahead of this machine's: a new file's mtime
        against the clock around it.  The file is unnamed (``O_TMPFILE``) or, where there are
        no such files (NFS), a named one at the root, removed at once."""
        name, start = f"{PROBE_PREFIX}{os.getpid()}", time.time()
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
        except OSError:
            fd = os.open(name, _NEW_FILE & ~os.O_EXCL | os.O_TRUNC, 0o644, dir_fd=self.fd)
        else:
            name = ""
        try:
            mtime = os.fstat(fd).st_mtime
        finally:
            os.close(fd)
            if name:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self.fd)
        return mtime - (start + time.time()) / 2

    # -- folders -------------------------------------------------------------------------------

    def open_folder(self, rel: str, *, create: bool = False, at: int | None = None) -> int | None:
        """A new descriptor (the caller closes it) of the folder ``rel`` (``a/b``) under the
        root (or under the folder ``at``), each part opened relative to its parent, never
        through a symlink; a missing part is created (its parent then fsynced) when
        ``create``, else the answer is ``None``.  Other failures raise ``OSError``."""
        fd = os.dup(self.fd if at is None else at)
        try:
            for name in rel.split("/"):
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        return None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                    os.fsync(fd)
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            found, fd = fd, -1
            return found
        finally:
            if fd >= 0:
                os.close(fd)

    def folder(self, rel: str, *, missing_ok: bool = False) -> int | None:
        """The descriptor of ``blobs`` or ``blobs/<alg>``, opened once and kept (no symlinks)."""
        fd = self._fds.get(rel)
        if fd is not None:
            return fd
        parent, _, name = rel.rpartition("/")
        at = self.fd if not parent else self.folder(parent, missing_ok=missing_ok)
        if at is None:
            return None
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=at)
        except OSError as exc:  # (O_NOFOLLOW: a symlink to a folder fails with ENOTDIR)
            if missing_ok and exc.errno == errno.ENOENT:
                return None
            link = exc.errno == errno.ENOTDIR and stat.S_ISLNK(
                os.stat(name, dir_fd=at, follow_symlinks=False).st_mode)
            raise _open_error(rel, exc, link) from None
        self._fds[rel] = fd
        return fd

    def _algorithm_folders(self) -> list[tuple[str, bool]]:
        """``(name, is a real folder)`` of each entry of ``blobs/``, sorted."""
        try:
            with os.scandir(self.folder("blobs")) as it:
                return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
        except OSError as exc:
            raise LayoutAccessError("blobs", f"cannot list ({exc.strerror})") from None

    def folder_stamps(self) -> tuple[FolderStamp, ...]:
        """Stamps of ``blobs/`` and of each sweepable ``blobs/<alg>/`` (the folders whose
        listings say which blobs exist), from their open descriptors."""
        st = os.fstat(self.folder("blobs"))  # type: ignore[arg-type]
        out: list[FolderStamp] = [("", st.st_ino, st.st_mtime_ns, st.st_ctime_ns)]
        for name, _ in self._algorithm_folders():
            if name in og.SWEEPABLE_ALGORITHMS:
                st = os.fstat(self.folder(f"blobs/{name}"))  # type: ignore[arg-type]
                out.append((name, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(out)

    def blob_at(self, digest: str, *, missing_ok: bool = True) -> tuple[int | None, str]:
        """``(descriptor of blobs/<alg>, file name)`` of a digest (:func:`ocigraph.blob_parts`)."""
        alg, encoded = og.blob_parts(digest)
        return self.folder(f"blobs/{alg}", missing_ok=missing_ok), encoded

    def lstat_blob(self, digest: str) -> os.stat_result | None:
        """The blob file's ``lstat``; ``None`` when it is gone."""
        fd, name = self.blob_at(digest)
        try:
            return None if fd is None else os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open_blob(self, digest: str) -> int | None:
        """A read-only descriptor of the blob file (never through a symlink); ``None`` if gone."""
        fd, name = self.blob_at(digest)
        try:
            return None if fd is None else os.open(name, _FILE_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return None


class BlobListing(og.ListedBlobs):
    """:class:`ocigraph.ListedBlobs` that ``lstat`` a blob when first asked: a blob gone since
    the listing answers size 0 and no mtime; any other failure to stat it is an error naming it.
    """

    __slots__ = ("_dir",)

    def __init__(self, layout_dir: LayoutDir, digests: Iterable[str]) -> None:
        super().__init__(digests)
        self._dir = layout_dir

    def look(self, digest: str) -> og.BlobInfo:
        try:
            st = self._dir.lstat_blob(digest)
        except OSError as exc:
            raise LayoutAccessError(og.blob_name(digest), f"cannot stat ({exc.strerror})") from None
        return og.BlobInfo(0, None) if st is None else og.BlobInfo(st.st_size, st.st_mtime)

    def __repr__(self) -> str:
        return f"<BlobListing of {len(self)} blobs in {self._dir.path}>"


def _entry_kind(e: os.DirEntry[str]) -> str:
    """What an entry of a blob folder that is not a regular file is, for
    :func:`ocigraph.entry_junk`: ``symlink``, ``other``, or why that cannot be told."""
    try:
        return "symlink" if e.is_symlink() else "other"
    except OSError as exc:
        return f"cannot stat ({exc.strerror})"


def _list_folder(fd: int, rel: str) -> tuple[list[str], list[os.DirEntry[str]]]:
    """Names of the regular files of a blob folder, and its other entries.

    File types come from the directory entries (no stat where the file system gives them), in
    one comprehension (a loop with appends costs a second more at a million entries); every
    other entry is set aside by ``odd`` (it returns None, so the entry is not taken)."""
    others: list[os.DirEntry[str]] = []
    odd = others.append
    try:
        with os.scandir(fd) as it:
            try:
                return [e.name for e in it if e.is_file(follow_symlinks=False) or odd(e)], others
            except OSError:
                pass  # a type that needed a stat, and the stat failed: go entry by entry
        names: list[str] = []
        others = []
        with os.scandir(fd) as it:
            for e in it:
                try:
                    regular = e.is_file(follow_symlinks=False)
                except OSError:
                    regular = False
                (names.append(e.name) if regular else others.append(e))
        return names, others
    except OSError as exc:
        raise LayoutAccessError(rel, f"cannot list ({exc.strerror})") from None


def scan_blobs(layout_dir: LayoutDir) -> tuple[BlobListing, list[og.Junk]]:
    """List ``blobs/<alg>/`` for every sweepable algorithm: present blobs, and junk (which is
    which, the core says: :func:`ocigraph.blob_names`, :func:`ocigraph.entry_junk`)."""
    present: list[str] = []
    junk: list[og.Junk] = []
    for name, is_dir in layout_dir._algorithm_folders():
        odd = og.algorithm_folder_junk(name, is_dir)
        if odd is not None:
            junk.append(odd)
            continue
        rel = f"blobs/{name}"
        names, others = _list_folder(layout_dir.folder(rel), rel)  # type: ignore[arg-type]
        digests, bad_names = og.blob_names(name, names)
        present.extend(digests)
        junk.extend(bad_names)
        junk.extend(og.entry_junk(name, e.name, _entry_kind(e)) for e in others)
    return BlobListing(layout_dir, present), junk


#: reads timed before choosing threads, and the seconds per read above which threads help
#: (a small file from the page cache takes ~10-40 us; from a disk, hundreds)
_PROBE_READS = 128
_SLOW_READ = 150e-6


class DiskManifestSource(og.BlobManifestSource):
    """Reads manifests from ``blobs/`` through the layout's handle, in parallel batches when
    reads are slow, for the core to verify, parse and count (``og.BlobManifestSource``)."""

    def __init__(self, layout_dir: LayoutDir, present: Mapping[str, og.BlobInfo],
                 workers: int = 4) -> None:
        self.dir = layout_dir
        self.present = present
        self.workers = workers
        self._note = present.note if isinstance(present, og.ListedBlobs) else None

    def read_bytes(self, digest: str) -> bytes | og.Manifest:
        """The blob's bytes, or the :class:`ocigraph.Manifest` that says why there are none."""
        fd = None
        try:
            fd = self.dir.open_blob(digest) if digest in self.present else None
            if fd is None:  # (not listed, or gone since)
                return og.parse_manifest(digest, None)
            return _read_open(fd, None if self._note is None else partial(self._note, digest))
        except _NotRegular:  # replaced since the listing
            return og.Manifest(digest=digest, error="not a regular file")
        except OSError as exc:
            return og.Manifest(digest=digest, error=f"cannot read ({exc.strerror})")
        finally:
            if fd is not None:
                os.close(fd)

    def _read_chunk(self, digests: Sequence[str]) -> list[bytes | og.Manifest]:
        return [self.read_bytes(d) for d in digests]

    def read_blobs(self, digests: Sequence[str]) -> list[bytes | og.Manifest]:
        """:meth:`read_bytes` of each digest, in order; large batches on ``workers`` threads,
        but only if a first, timed chunk shows reads wait for a disk (from the page cache,
        threads only take turns at the GIL)."""
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


@dataclass(frozen=True, slots=True)
class DiskLayout:
    """A layout as read: its handle, the core's value, the junk beside it, its blob folders'
    stamps taken just before they were listed, and the clock then (``listed_at``, ns)."""

    dir: LayoutDir
    layout: og.Layout
    junk: tuple[og.Junk, ...]
    folders: tuple[FolderStamp, ...] = ()
    listed_at: int = 0


def open_layout(root: Path | str | LayoutDir) -> LayoutDir:
    """``root`` as a :class:`LayoutDir` (opened now, unless it is one)."""
    return root if isinstance(root, LayoutDir) else LayoutDir(root)


@collector_paused()  # listing a million blobs makes a million small objects
def read_layout(root: Path | str | LayoutDir, *, workers: int = 4,
                reporter: og.Reporter | None = None) -> DiskLayout:
    """Read the layout at ``root`` (a path, or an open :class:`LayoutDir`); anything that makes
    it unusable is a one-line :class:`ocigraph.OcigraphError` naming the file at fault.
    ``reporter`` hears of the ``list`` phase (the core reports the others)."""
    layout_dir = open_layout(root)
    # The clock is read before anything is listed: a blob written after this instant is newer
    # than the plan's snapshot, and apply will not delete it.
    listed_at = time.time_ns()
    layout_dir.check_oci_layout()
    index = layout_dir.read_index()
    folders = layout_dir.folder_stamps()
    hooks = og.Reporter() if reporter is None else reporter  # (a Reporter's hooks do nothing)
    hooks.phase_started("list")
    present, junk = scan_blobs(layout_dir)
    hooks.phase_finished("list")
    source = DiskManifestSource(layout_dir, present, workers)
    return DiskLayout(layout_dir, og.Layout(index=index, blobs=present, manifests=source,
                                            now=listed_at / 1e9),
                      tuple(junk), folders, listed_at)


# -- the lock: a cross-process flock on the layout's directory, through its handle (no lock file)

def lock_holder(path: Path) -> int | None:
    """The pid holding a ``flock`` on ``path``, if /proc/locks says; else ``None``."""
    try:
        st = os.stat(path)
        locks = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return og.flock_holder(locks, os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


class LayoutLock:
    """``with LayoutLock(root, timeout=10) as lock:`` -- exclusive, waits up to ``timeout``
    seconds.  ``root``: a path (opened here) or an open :class:`LayoutDir` (``lock.dir``)."""

    def __init__(self, root: Path | str | LayoutDir, timeout: float = 10.0, poll: float = 0.05) -> None:
        self.dir = open_layout(root)
        self.timeout, self.poll = timeout, poll
        self.held = False

    def acquire(self) -> None:
        # "." opened relative to the handle: the same directory, with an open file description
        # of its own (flock is per description), so two locks in one process exclude each other
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.dir.fd)
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd, self.held = fd, True
                return
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= self.timeout:
                    os.close(fd)
                    raise og.LayoutLockedError(str(self.dir.path), lock_holder(self.dir.path),
                                               round(waited, 1)) from None
                time.sleep(min(self.poll, max(self.timeout - waited, 0.001)))

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)

    def __enter__(self) -> LayoutLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked(layout_dir: LayoutDir, lock: LayoutLock | None, timeout: float) -> Iterator[LayoutLock]:
    """``lock`` when the caller holds it, else the layout's lock, taken for the block."""
    if lock is not None and lock.held:
        yield lock
    else:
        with LayoutLock(layout_dir, timeout) as taken:
            yield taken
