"""``ocigraph fsck``: read a layout, hash every blob, and report what is broken, changing nothing.

What counts as broken is the core's (:mod:`ocigraph.check`); this reads: the layout through its
directory handle (an unusable ``oci-layout``, ``index.json`` or ``blobs/`` is a ``layout``
problem), every blob hashed in chunks (``digest-mismatch``, ``unreadable``; memory stays flat),
the junk under ``blobs/``, and the quarantines that may hold what is missing.
"""

from __future__ import annotations

import errno
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ocigraph as og
from ocigraph.check import (
    MISSING_HINT,
    PROBLEM_KINDS,
    FsckReport,
    Problem,
    check_graph,
    format_fsck_text,
)
from ocigraph.present import held_clauses

from .layout import LayoutDir, read_layout
from .quarantine import quarantined

__all__ = ["MISSING_HINT", "PROBLEM_KINDS", "FsckReport", "Problem", "format_fsck_text", "fsck", "hash_file"]

_CHUNK = 1 << 20


def hash_file(path: Path | int, algorithm: str) -> tuple[str, int]:
    """``(hex digest, bytes read)`` of a regular file (a path, or an open descriptor this
    closes), read in chunks; never follows a symlink."""
    h = hashlib.new(algorithm)
    fd = path if isinstance(path, int) else os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    total = 0
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest(), total


def _check_blob(layout_dir: LayoutDir, digest: str) -> tuple[Problem | None, int]:
    alg, encoded = digest.split(":", 1)
    try:
        fd = layout_dir.open_blob(digest)
        if fd is None:
            return None, 0  # removed while we looked: not this check's business
        got, n = hash_file(fd, alg)
    except FileNotFoundError:
        return None, 0
    except OSError as exc:
        why = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        return Problem("unreadable", digest, f"cannot read the blob ({why})"), 0
    if got != encoded:
        return Problem("digest-mismatch", digest, f"content hashes to {alg}:{got} ({n} bytes)"), n
    return None, n


def _held(layout_dir: LayoutDir) -> dict[str, str]:
    """For each quarantined digest, the clause naming the apply that removed it."""
    try:
        infos = quarantined(layout_dir)
    except OSError:
        return {}
    return held_clauses((q.id, q.operation, q.created, q.blobs) for q in infos)


def fsck(root: Path | str, *, workers: int = 4, reporter: og.Reporter | None = None) -> FsckReport:
    """Check the layout at ``root``; never raises for a broken layout."""
    try:
        disk = read_layout(Path(root), workers=workers)  # fsck trusts nothing it did not read
    except og.OcigraphError as exc:
        return FsckReport(str(root), (Problem("layout", str(root), str(exc)),), 0, 0, 0)
    graph = og.build_graph(disk.layout, reporter)
    present = disk.layout.blobs
    order = sorted(present)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(lambda d: _check_blob(disk.dir, d), order))
    found = [p for p, _ in results if p is not None]
    found += [Problem("junk", j.path, j.why) for j in disk.junk]
    return check_graph(graph, str(root), {d: b.size for d, b in present.items()}, found=found,
                       blobs_checked=len(results), bytes_checked=sum(n for _, n in results),
                       held=_held(disk.dir))
