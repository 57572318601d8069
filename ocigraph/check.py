"""Check a graph for what is broken: what ``ocigraph fsck`` reports, without any I/O.

The question is "can every tool still read what index.json promises?".  An adapter reads the
store (a layout's blobs, hashed; a registry's manifests) and builds the graph; the problems it
found while reading (a blob that does not hash to its name, one it could not read, junk beside
the blobs) come in as :class:`Problem` values, and :func:`check_graph` adds what the graph
itself shows:

* ``missing``         a blob reachable from index.json (from *every* entry, tagged or not, and
  from every referrer of a reachable node, listed or not) is absent;
* ``size-mismatch``   a reachable descriptor declares a size the blob does not have;
* ``broken-manifest`` a reachable manifest is present and hashes right but cannot be parsed.

Everything reachable is checked alike: a signature index.json does not list, whose subject is
reachable, is checked as any listed manifest.  Descriptors of algorithms ocigraph does not
store are not checked: their blobs cannot be located, which is not a fault of the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import networkx as nx

from ._digest import is_sweepable
from ._graph import live_set
from ._plan import format_bytes

__all__ = ["PROBLEM_KINDS", "MISSING_HINT", "Problem", "FsckReport", "check_graph",
           "format_fsck_text", "blob_problem"]

#: kinds in report order; ``unreadable``, ``digest-mismatch``, ``junk`` and ``layout`` are found
#: by the adapter while reading
PROBLEM_KINDS = ("layout", "missing", "digest-mismatch", "size-mismatch", "broken-manifest",
                 "unreadable", "junk")

#: said when something index.json reaches is missing
MISSING_HINT = ("a tool that does not take ocigraph's lock (skopeo, umoci, oras) may have written "
                "index.json from a copy it read before a gc or delete, listing what that removed; "
                "on layouts with such writers run gc and delete with --grace (and --keep-deleted "
                "to be able to undo)")


class Problem(NamedTuple):
    """One finding: ``kind`` (see :data:`PROBLEM_KINDS`), ``where`` (a digest or a path relative
    to the store) and ``detail`` (one sentence)."""

    kind: str
    where: str
    detail: str


@dataclass(frozen=True, slots=True)
class FsckReport:
    """What a check found; ``ok`` when there are no problems."""

    root: str
    problems: tuple[Problem, ...]
    blobs_checked: int
    bytes_checked: int
    reachable: int
    #: sentences about the problems as a whole (what may have caused them)
    hints: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {"ocigraphFsck": 1, "layout": self.root, "ok": self.ok,
                "blobsChecked": self.blobs_checked, "bytesChecked": self.bytes_checked,
                "reachable": self.reachable,
                "problems": [{"kind": p.kind, "where": p.where, "detail": p.detail}
                             for p in self.problems],
                "hints": list(self.hints)}


def blob_problem(digest: str, read: tuple[str, int] | str) -> Problem | None:
    """What reading the blob ``digest`` found: ``read`` is ``(hex digest, bytes read)`` of its
    content, or why it could not be read; ``None`` when the content hashes to its name.

    >>> d = "sha256:" + "a" * 64
    >>> blob_problem(d, ("a" * 64, 3)) is None
    True
    >>> blob_problem(d, ("b" * 64, 3)).detail == f"content hashes to sha256:{'b' * 64} (3 bytes)"
    True
    >>> blob_problem(d, "Input/output error")[::2] == ("unreadable", "cannot read the blob "
    ...                                                "(Input/output error)")
    True
    """
    if isinstance(read, str):
        return Problem("unreadable", digest, f"cannot read the blob ({read})")
    alg, encoded = digest.split(":", 1)
    got, size = read
    if got != encoded:
        return Problem("digest-mismatch", digest, f"content hashes to {alg}:{got} ({size} bytes)")
    return None


def _holders(graph: nx.DiGraph, digest: str) -> str:
    """Who refers to ``digest``: index.json and predecessors, with tags, the first three."""
    def name(n: str) -> str:
        tags = sorted(graph.nodes[n]["tags"])
        return f"{n} (tag {', '.join(tags)})" if tags else n

    names = [name(p) for p in sorted(graph.pred[digest])]
    if graph.nodes[digest]["indexed"]:
        tags = sorted(graph.nodes[digest]["tags"])
        names.insert(0, f"index.json (tag {', '.join(tags)})" if tags else "index.json")
    if not names:
        return "nothing"
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_graph(graph: nx.DiGraph, root: str, sizes: Mapping[str, int], *,
                found: Iterable[Problem] = (), blobs_checked: int = 0,
                bytes_checked: int = 0, held: Mapping[str, str] | None = None) -> FsckReport:
    """The report for ``graph`` (built from the store named ``root``).

    ``found``: the problems the adapter found while reading; a ``digest-mismatch`` there is not
    reported again as a broken manifest.  ``sizes``: each present blob's actual size (a node's
    ``size`` is what its descriptors declare).  ``held``: for a digest that is gone but kept somewhere
    it can come back from (a quarantine), a clause saying where, appended to ``missing``.
    Problems are ordered by kind (as in :data:`PROBLEM_KINDS`), then where.
    """
    problems = list(found)
    mismatched = {p.where for p in problems if p.kind == "digest-mismatch"}
    reachable = live_set(graph, root_set={e.digest for e in graph.graph["index"].entries})
    held = held or {}
    for n in sorted(reachable):
        a = graph.nodes[n]
        if not is_sweepable(n):
            continue
        if not a["present"]:
            problems.append(Problem("missing", n, f"referenced by {_holders(graph, n)}"
                                                  f"{held.get(n, '')}"))
            continue
        actual = sizes[n]
        wrong = sorted(s for s in a["declared_sizes"] if s != actual)
        if wrong:
            problems.append(Problem(
                "size-mismatch", n,
                f"descriptors declare {', '.join(map(str, wrong))} bytes but the blob has {actual}"
                f" (declared by {_holders(graph, n)})"))
        elif a["status"] == "broken" and n not in mismatched:
            problems.append(Problem("broken-manifest", n, str(a["error"])))
    rank = {k: i for i, k in enumerate(PROBLEM_KINDS)}
    problems.sort(key=lambda p: (rank[p.kind], p.where))
    hints = (MISSING_HINT,) if any(p.kind == "missing" for p in problems) else ()
    return FsckReport(root, tuple(problems), blobs_checked, bytes_checked, len(reachable), hints)


def format_fsck_text(report: FsckReport) -> str:
    """The report for people: one line per problem, the hints, then a summary line."""
    lines = [f"{p.kind}: {p.where}: {p.detail}" for p in report.problems]
    lines += [f"hint: {h}" for h in report.hints]
    summary = (f"{report.blobs_checked} blob(s) checked ({format_bytes(report.bytes_checked)}), "
               f"{report.reachable} reachable from index.json: ")
    if report.ok:
        return "\n".join([*lines, summary + "no problems"])
    counts: dict[str, int] = {}
    for p in report.problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return "\n".join([*lines, summary + ", ".join(f"{n} {k}" for k, n in counts.items())])
