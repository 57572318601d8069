"""``ocigraph fsck``: read a layout through its handle and hash every blob, changing nothing;
what counts as broken is the core's (:mod:`ocigraph.check`; docs/design.md)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ocigraph as og
from ocigraph import check
from ocigraph.applying import os_error_why
from ocigraph.check import MISSING_HINT, format_fsck_text
from ocigraph.present import held_clauses

from .layout import LayoutDir, read_layout
from .quarantine import quarantined

__all__ = ["MISSING_HINT", "format_fsck_text", "fsck", "hash_file"]


def hash_file(fd: int, algorithm: str) -> tuple[str, int]:
    """``(hex digest, bytes read)`` of the open file ``fd``; closes ``fd``."""
    with open(fd, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest(), f.tell()


def _check_blob(layout_dir: LayoutDir, digest: str) -> tuple[check.Problem | None, int]:
    try:
        fd = layout_dir.open_blob(digest)
        if fd is None:
            return None, 0  # removed while we looked: not this check's business
        got, n = hash_file(fd, digest.split(":", 1)[0])
    except FileNotFoundError:
        return None, 0
    except OSError as exc:
        return check.blob_problem(digest, os_error_why(exc)), 0
    return check.blob_problem(digest, (got, n)), n


def _held(layout_dir: LayoutDir) -> dict[str, str]:
    """For each quarantined digest, the clause naming the apply that removed it."""
    try:
        infos = quarantined(layout_dir)
    except OSError:
        return {}
    return held_clauses((q.id, q.operation, q.created, q.blobs) for q in infos)


def fsck(root: Path | str, *, workers: int = 4,
         reporter: og.Reporter | None = None) -> check.FsckReport:
    """Check the layout at ``root``; never raises for a broken layout."""
    try:
        disk = read_layout(Path(root), workers=workers)  # fsck trusts nothing it did not read
    except og.OcigraphError as exc:
        problem = check.Problem("layout", str(root), str(exc))
        return check.FsckReport(str(root), (problem,), 0, 0, 0)
    graph = og.build_graph(disk.layout, reporter)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(lambda d: _check_blob(disk.dir, d), sorted(disk.layout.blobs)))
    found = [p for p, _ in results if p is not None]
    found += [check.Problem("junk", j.path, j.why) for j in disk.junk]
    sizes = {d: b.size for d, b in disk.layout.blobs.items()}
    return check.check_graph(graph, str(root), sizes, found=found, blobs_checked=len(results),
                             bytes_checked=sum(n for _, n in results), held=_held(disk.dir))
