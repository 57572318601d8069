"""Check a layout on disk: what is broken, without changing anything.

``fsck`` answers "can every tool still read what index.json promises?".  It reports, never
repairs:

* ``missing``        a blob reachable from index.json (from *every* entry, tagged or not, and
  from every referrer of a reachable node, listed or not) is absent; when an apply's quarantine
  holds it, the detail names that apply (``ocigraph restore`` brings it back);
* ``digest-mismatch`` a present blob's content does not hash to its name (every blob is read;
  large files are hashed in chunks, so memory stays flat);
* ``size-mismatch``   a descriptor reachable from index.json declares a size the blob does not have;
* ``broken-manifest`` a reachable manifest is present and hashes right but cannot be parsed;
* ``unreadable``      a blob file cannot be opened or read;
* ``junk``            something under ``blobs/`` that is not a blob (never touched by ocigraph);
* ``layout``          ``oci-layout``, ``index.json`` or ``blobs/`` itself is unusable (then
  nothing else can be checked).

Everything reachable is checked alike: a signature index.json does not list, whose subject
is reachable, is checked as any listed manifest.

Descriptors of algorithms ocigraph does not store (not sha256/sha384/sha512) are not checked:
their blobs cannot be located, which is not a fault of the layout.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import networkx as nx

import ocigraph as og

from .layout import LayoutDir, read_layout
from .quarantine import QuarantineInfo, quarantined

__all__ = ["Problem", "FsckReport", "fsck", "PROBLEM_KINDS", "hash_file"]

PROBLEM_KINDS = (
    "layout",
    "missing",
    "digest-mismatch",
    "size-mismatch",
    "broken-manifest",
    "unreadable",
    "junk",
)

_CHUNK = 1 << 20


class Problem(NamedTuple):
    """One finding: ``kind`` (see :data:`PROBLEM_KINDS`), ``where`` (a digest or a path relative
    to the layout) and ``detail`` (one sentence)."""

    kind: str
    where: str
    detail: str


@dataclass(frozen=True, slots=True)
class FsckReport:
    """What :func:`fsck` found.  ``ok`` when there are no problems."""

    root: str
    problems: tuple[Problem, ...]
    blobs_checked: int
    bytes_checked: int
    reachable: int
    #: sentences for people about the problems as a whole (what may have caused them)
    hints: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "ocigraphFsck": 1,
            "layout": self.root,
            "ok": self.ok,
            "blobsChecked": self.blobs_checked,
            "bytesChecked": self.bytes_checked,
            "reachable": self.reachable,
            "problems": [
                {"kind": p.kind, "where": p.where, "detail": p.detail} for p in self.problems
            ],
            "hints": list(self.hints),
        }


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


def _check_blob(layout_dir: LayoutDir, digest: str) -> tuple[str, Problem | None, int]:
    alg, encoded = digest.split(":", 1)
    try:
        fd = layout_dir.open_blob(digest)
        if fd is None:
            return digest, None, 0  # removed while we looked: not this check's business
        got, n = hash_file(fd, alg)
    except FileNotFoundError:
        return digest, None, 0  # removed while we looked: not this check's business
    except OSError as exc:
        why = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        return digest, Problem("unreadable", digest, f"cannot read the blob ({why})"), 0
    if got != encoded:
        return digest, Problem(
            "digest-mismatch", digest, f"content hashes to {alg}:{got} ({n} bytes)"
        ), n
    return digest, None, n


def _holders(graph: nx.DiGraph, digest: str) -> str:
    def name(n: str) -> str:
        tags = sorted(graph.nodes[n]["tags"])
        return f"{n} (tag {', '.join(tags)})" if tags else n

    names = [name(p) for p in sorted(graph.pred[digest])]
    if graph.nodes[digest]["indexed"]:
        tags = sorted(graph.nodes[digest]["tags"])
        names.insert(0, f"index.json (tag {', '.join(tags)})" if tags else "index.json")
    if not names:
        return "nothing"
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _reachable(graph: nx.DiGraph) -> frozenset[str]:
    """What index.json reaches: every entry, successors, and referrers of what is reached
    (listed or not), to a fixpoint."""
    return og.live_set(graph, root_set={e.digest for e in graph.graph["index"].entries})


def _held_by(infos: tuple[QuarantineInfo, ...], digest: str) -> str:
    for q in reversed(infos):
        if digest in q.blobs:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(q.created))
            return (f"; the {q.operation} of {when} removed it: it is held in quarantine {q.id} "
                    "(`ocigraph restore` brings that apply back)")
    return ""


#: said when index.json lists what is missing
MISSING_HINT = ("a tool that does not take ocigraph's lock (skopeo, umoci, oras) may have written "
                "index.json from a copy it read before a gc or delete, listing what that removed; "
                "on layouts with such writers run gc and delete with --grace (and --keep-deleted "
                "to be able to undo)")


def fsck(root: Path | str, *, workers: int = 4, reporter: og.Reporter | None = None) -> FsckReport:
    """Check the layout at ``root``; returns an immutable :class:`FsckReport`.

    Never raises for a broken layout: an unusable ``index.json`` or ``oci-layout`` is a
    ``layout`` problem.  Problems are ordered by kind (as in :data:`PROBLEM_KINDS`), then where.
    """
    root = Path(root)
    try:
        disk = read_layout(root, workers=workers)  # fsck trusts nothing it did not read
    except og.OcigraphError as exc:
        return FsckReport(str(root), (Problem("layout", str(root), str(exc)),), 0, 0, 0)
    graph = og.build_graph(disk.layout, reporter)
    problems: list[Problem] = []

    present = disk.layout.blobs
    mismatched: set[str] = set()
    checked = 0
    bytes_checked = 0
    order = sorted(present)
    results: Iterable[tuple[str, Problem | None, int]]
    if workers > 1 and len(order) > 1:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda d: _check_blob(disk.dir, d), order))
    else:
        results = [_check_blob(disk.dir, d) for d in order]
    for digest, problem, nbytes in results:
        checked += 1
        bytes_checked += nbytes
        if problem is not None:
            problems.append(problem)
            mismatched.add(digest)

    reachable = _reachable(graph)
    nodes = graph.nodes
    try:
        held = quarantined(disk.dir)
    except OSError:
        held = ()
    for n in sorted(reachable):
        a = nodes[n]
        if not og.is_sweepable(n):
            continue
        if not a["present"]:
            problems.append(Problem("missing", n, f"referenced by {_holders(graph, n)}"
                                             f"{_held_by(held, n)}"))
            continue
        actual = present[n].size
        wrong = sorted(s for s in a["declared_sizes"] if s != actual)
        if wrong:
            problems.append(Problem(
                "size-mismatch", n,
                f"descriptors declare {', '.join(map(str, wrong))} bytes but the blob has {actual}"
                f" (declared by {_holders(graph, n)})",
            ))
            continue
        if a["status"] == "broken" and n not in mismatched:
            problems.append(Problem("broken-manifest", n, str(a["error"])))

    for j in disk.junk:
        problems.append(Problem("junk", j.path, j.why))

    rank = {k: i for i, k in enumerate(PROBLEM_KINDS)}
    problems.sort(key=lambda p: (rank[p.kind], p.where))
    hints = (MISSING_HINT,) if any(p.kind == "missing" for p in problems) else ()
    return FsckReport(str(root), tuple(problems), checked, bytes_checked, len(reachable), hints)


def format_fsck_text(report: FsckReport) -> str:
    """The report for people: one line per problem, then a summary line."""
    lines = [f"{p.kind}: {p.where}: {p.detail}" for p in report.problems]
    lines += [f"hint: {h}" for h in report.hints]
    summary = (
        f"{report.blobs_checked} blob(s) checked ({og.format_bytes(report.bytes_checked)}), "
        f"{report.reachable} reachable from index.json: "
    )
    if report.ok:
        summary += "no problems"
    else:
        counts: dict[str, int] = {}
        for p in report.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        summary += ", ".join(f"{n} {k}" for k, n in counts.items())
    lines.append(summary)
    return "\n".join(lines)
