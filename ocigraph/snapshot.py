"""A layout's *snapshot*, and the one rule under which a store of facts about the layout is
trusted -- pure values: the shell reads the folders' stamps and the clock and passes them in.

A snapshot is the layout directory's ``"<device>:<inode>"``, index.json's digest, and the
stamps -- inode, mtime, ctime -- of ``blobs/`` and each ``blobs/<alg>/``, read through one
directory handle just before the listing a graph is built from.  It is recorded only when
those folders last changed at least :data:`SETTLE_NS` before that listing (git's racily-clean
rule: a change in the same clock tick cannot hide), and a store is trusted only while a
snapshot read later is the same (:func:`made_from`).  The store's ``meta`` row, whose schema
is :func:`store_meta`'s, records the snapshot beside what it counts.  Also here: whether the
cache is on and where it is (:func:`caching`, :func:`cache_folder`, :func:`store_name`), what
may be stored (:func:`storable`) and when a kept plan answers (:func:`recalls`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import networkx as nx

from ._graph import Liveness
from ._listing import Junk
from ._operations import names_checksum, plan_key
from ._plan import Plan
from ._policy import Policy

__all__ = ["FolderStamp", "Snapshot", "SETTLE_NS", "STORE_FORMAT", "last_change", "settles_in",
           "settled", "store_meta", "made_from", "lists_as_planned", "followed_meta",
           "plans_after", "AppliedReport", "followable", "caching", "cache_folder", "store_name",
           "storable", "recalls"]

#: a folder under the layout as ``(name relative to blobs/, inode, mtime_ns, ctime_ns)``
FolderStamp = tuple[str, int, int, int]
#: the directory's ``"<device>:<inode>"``, index.json's digest, the folders' stamps
Snapshot = tuple[str, str, tuple[FolderStamp, ...]]
#: how long before a listing its folders must have last changed for their stamps to be kept
SETTLE_NS = 2_000_000_000
#: the version of the store's schema; a store of another is somebody else's
STORE_FORMAT = 3


def last_change(folders: Iterable[FolderStamp]) -> int:
    """When the folders last changed (ns): the latest mtime *or ctime* -- an mtime can be set
    back (``cp -a``, ``rsync -t``, ``tar x``), a ctime only moves forward.

    >>> last_change([("", 1, 50, 40), ("sha256", 2, 10, 70)])
    70
    """
    return max(max(mtime, ctime) for _, _, mtime, ctime in folders)


def settles_in(folders: Iterable[FolderStamp], now_ns: int) -> float:
    """Seconds after ``now_ns`` until ``folders``, as stamped, will have settled (0 if they
    have).

    >>> settles_in([("", 1, 0, 500_000_000)], now_ns=1_000_000_000)
    1.5
    >>> settles_in([("", 1, 0, 500_000_000)], now_ns=9_000_000_000)
    0.0
    """
    return max(0.0, (last_change(folders) + SETTLE_NS - now_ns) / 1e9)


def settled(folders: Sequence[FolderStamp], listed_at: int) -> bool:
    """Whether ``folders``, stamped just before a listing begun at ``listed_at`` (ns), can
    later prove that nothing changed: there are some, and they last changed at least
    :data:`SETTLE_NS` before it.

    >>> settled([("", 1, 0, 500_000_000)], listed_at=3_000_000_000)
    True
    >>> settled([("", 1, 0, 500_000_000)], listed_at=2_000_000_000), settled([], 10**12)
    (False, False)
    """
    return bool(folders) and listed_at - last_change(folders) >= SETTLE_NS


def store_meta(graph: nx.DiGraph, facts: Mapping[bool, Liveness], snapshot: Snapshot, *,
               code: str, path: str, blobs: Iterable[str], junk: Iterable[Junk]) -> dict[str, Any]:
    """The ``meta`` row of a store of ``graph``, built whole from the listing ``blobs`` (and
    ``junk``) taken at ``snapshot``, with its ``facts`` under both root rules: the schema
    (:data:`STORE_FORMAT`) and ``code`` that wrote it, the snapshot, the layout's real
    ``path`` (printable, for ``ocigraph cache``), the counts the store checks itself with,
    and whether some node has a platform or artifact type (``ordered``: then the order
    index.json's images are walked in decides them)."""
    origin, fingerprint, folders = snapshot
    return {
        "format": STORE_FORMAT, "code": code, "origin": origin,
        "path": path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
        "fingerprint": fingerprint, "folders": folders,
        "entry_count": len(graph.graph["index"].entries), "nodes": graph.number_of_nodes(),
        "unusable": [facts[False].unusable, facts[True].unusable],
        "junk": [(j.path, j.why) for j in junk], "names": names_checksum(blobs),
        "ordered": any(a["platform"] is not None or a["artifact_type"] is not None
                       for a in graph._node.values())}


def made_from(meta: Mapping[str, Any], code: str, snapshot: Snapshot) -> bool:
    """Whether the store whose row is ``meta`` was made by ``code``, in this schema, from
    ``snapshot`` (``meta`` as read back: its tuples are lists).

    >>> meta = {"format": STORE_FORMAT, "code": "c", "origin": "1:2", "fingerprint": "sha256:f",
    ...         "folders": [["", 3, 4, 5]]}
    >>> made_from(meta, "c", ("1:2", "sha256:f", (("", 3, 4, 5),)))
    True
    >>> made_from(meta, "c", ("1:2", "sha256:f", (("", 3, 4, 6),)))
    False
    """
    return (meta["format"], meta["code"], meta["origin"], meta["fingerprint"],
            tuple(tuple(f) for f in meta["folders"])) == (STORE_FORMAT, code, *snapshot)


def lists_as_planned(meta: Mapping[str, Any], plan: Plan, names: Sequence[int],
                     junk: Iterable[Junk]) -> bool:
    """Whether a listing made once ``plan`` was applied -- its :func:`~ocigraph.names_checksum`
    ``names`` and its ``junk`` -- is exactly what the plan left of the listing ``meta``
    recorded: any other writer in between, and it is not."""
    lost = names_checksum(d.digest for d in plan.deletions if d.present)
    count, total = meta["names"]
    return ([count - lost[0], (total - lost[1]) % (1 << 64)] == list(names)
            and [[j.path, j.why] for j in junk] == meta["junk"])


def followed_meta(meta: Mapping[str, Any], after: Snapshot, names: Sequence[int],
                  entry_count: int, gone: int) -> dict[str, Any]:
    """``meta`` once its store followed an apply that deleted ``gone`` nodes, to the layout
    at snapshot ``after`` whose listing has the checksum ``names`` and whose index.json has
    ``entry_count`` entries."""
    origin, fingerprint, folders = after
    return {**meta, "origin": origin, "fingerprint": fingerprint, "folders": folders,
            "names": list(names), "entry_count": entry_count, "nodes": meta["nodes"] - gone}


def plans_after(plan: Plan, fingerprint: str) -> dict[str, Plan]:
    """The plans a store knows once ``plan`` was applied, index.json now ``fingerprint``:
    after a gc, the same gc's, which finds nothing more to do; after anything else, none."""
    if plan.operation != "gc":
        return {}
    return {plan_key("gc", [], plan.policy): dataclasses.replace(
        plan, deletions=(), index_changes=(), kept=(), index_fingerprint=fingerprint)}


class AppliedReport(Protocol):
    """What :func:`followable` reads of an apply's report (``io_adapters.apply.ApplyReport``)."""

    @property
    def before(self) -> tuple[Any, ...] | None: ...
    @property
    def skipped(self) -> Collection[Any]: ...
    @property
    def already_gone(self) -> Collection[Any]: ...
    @property
    def index_after(self) -> str | None: ...


def followable(report: AppliedReport, after: Snapshot) -> bool:
    """Whether a store can follow, row by row, the apply ``report`` tells of, to the layout
    now at snapshot ``after``: the apply read the snapshot before it, did all of its plan
    (nothing skipped, nothing already gone), and index.json is still the one it wrote."""
    return (report.before is not None and not report.skipped and not report.already_gone
            and after[1] == report.index_after)


def caching(explicit: bool | None, environ: Mapping[str, str]) -> bool:
    """Whether the store is read and written: ``explicit`` if given, else unless
    ``OCIGRAPH_NO_CACHE`` is set in ``environ`` (and not ``0``).

    >>> caching(None, {}), caching(None, {"OCIGRAPH_NO_CACHE": "0"})
    (True, True)
    >>> caching(None, {"OCIGRAPH_NO_CACHE": "1"}), caching(True, {"OCIGRAPH_NO_CACHE": "1"})
    (False, True)
    """
    if explicit is not None:
        return explicit
    return environ.get("OCIGRAPH_NO_CACHE", "") in ("", "0")


def cache_folder(environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """The cache folder named by ``environ``, as path parts: ``$OCIGRAPH_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/ocigraph`` (an absolute one only), else ``$HOME/.cache/ocigraph``;
    ``None`` when none is set.

    >>> cache_folder({"XDG_CACHE_HOME": "relative", "HOME": "/home/u"})
    ('/home/u', '.cache', 'ocigraph')
    """
    explicit = environ.get("OCIGRAPH_CACHE_DIR")
    if explicit:
        return (explicit,)
    xdg = environ.get("XDG_CACHE_HOME")
    if xdg and xdg.startswith("/"):
        return xdg, "ocigraph"
    home = environ.get("HOME")
    return (home, ".cache", "ocigraph") if home else None


def store_name(real_path: bytes) -> str:
    """The name of the store file, in the cache folder, of the layout whose real (resolved,
    absolute) path is ``real_path``: one file per layout path.

    >>> store_name(b"/srv/layout")[-6:], len(store_name(b"/srv/layout"))
    ('.store', 38)
    """
    return f"{hashlib.sha256(real_path).hexdigest()[:32]}.store"


def storable(blobs: int, folders: Sequence[FolderStamp], listed_at: int, disk_errors: int, *,
             min_blobs: int) -> bool:
    """Whether a graph built from a listing of ``blobs`` blobs, begun at ``listed_at`` (ns)
    with ``folders`` stamped just before, may be stored: a layout worth it (``min_blobs`` or
    more: smaller ones plan in milliseconds), folders that had :func:`settled`, and no read
    that said something about the disk rather than a digest (``disk_errors``: a blob
    missing, unreadable, or not matching its digest).

    >>> storable(5000, [("", 1, 0, 0)], 10**10, 0, min_blobs=2048)
    True
    >>> storable(5000, [("", 1, 0, 0)], 10**10, 1, min_blobs=2048)
    False
    """
    return blobs >= min_blobs and settled(folders, listed_at) and disk_errors == 0


def recalls(kept: Plan, operation: str, policy: Policy, fingerprint: str) -> bool:
    """Whether ``kept``, the plan a store keeps under the :func:`~ocigraph.plan_key` of
    ``operation`` and ``policy``, is the plan now that index.json's digest is ``fingerprint``:
    made for that operation and policy (not another's, filed under the wrong key) from that
    index.json.  A plan is a pure function of what the snapshot fixes and the code."""
    return (kept.operation == operation and kept.policy == policy
            and kept.index_fingerprint == fingerprint)
