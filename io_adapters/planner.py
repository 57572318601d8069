"""Plan an operation on a layout on disk, remembering plans across runs.

:func:`plan_layout` is what the command line (and apply's re-check of a saved plan) calls: read
the layout, build the graph, plan.  It remembers the plans it makes, because planning the same
operation on a layout that has not changed gives the same plan.  A plan is a pure function of:

* index.json (its bytes: ``index_fingerprint``),
* which blobs exist (their names),
* what the manifests say -- content-addressed values, so their names say it, as long as each
  file still holds the bytes that were verified,
* the operation, its targets and the policy,
* the code that planned,
* and, only when the policy has a ``grace`` period, the clock and modification times.

So a remembered plan is keyed by a SHA-256 over the first, second, fourth and fifth (the names
of *every* present blob included, in the listing's order: one new or vanished blob anywhere and
the key changes, and the same names listed in another order only miss; the
code as :func:`io_adapters.cache.code_fingerprint`), and it is used only after every blob whose
content planning looked at -- the manifests, the blobs sniffed for referrers -- is found with
the inode, size, mtime and ctime it had (an ``lstat`` each; nothing but the kernel sets a
ctime).  It is not remembered at all:

* when the policy has ``grace`` (it depends on the clock);
* when a read answered something about the disk rather than the digest (a blob missing,
  unreadable or not matching its digest): repaired with ``cp -p``, the same file could come
  back with the same stamps and other content;
* when planning failed (the error is made again);
* for layouts under ``_MIN_BLOBS`` blobs (they plan in milliseconds; test suites make
  thousands).

A recalled plan must also be for the same operation, policy and index.json, and delete only
blobs this run's listing has.  It comes back with this run's ``snapshot_time``: the listing was
just taken and matched, so it is exactly what planning now would make.

Plans live in a folder beside the manifest cache (``<name>.plans/<key>``, see
:mod:`io_adapters.cache`), the ``_KEEP`` most recently made or used per layout, each under the
refs asked for and under the digests they resolved to.  Each file is written to a temporary
file and renamed, and carries a SHA-256 of its body: anything doubtful and it is ignored.  The
checksum guards against damage, not against someone who can write your cache folder.
``OCIGRAPH_NO_CACHE=1`` turns this off with the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import orjson

import ocigraph as og
from .collector import pauses_collector as pauses_gc

from .cache import cache_enabled, cache_file_for, code_fingerprint
from .layout import (
    BlobListing,
    DiskLayout,
    Junk,
    blob_file,
    check_real_dir,
    folder_stamps,
    read_layout,
    read_oci_layout_file,
    read_regular_file,
    stamp_of,
)
from .store import (
    GraphStore,
    claim,
    is_settled,
    open_store,
    save_store,
    settles_in,
    store_file_for,
)

__all__ = ["Planned", "PlanMemo", "plan_layout", "restore_later", "plan_graph", "plan_tags", "expand_short_digests"]

MEMO_FORMAT = 2
_MAGIC = b"ocigraph-plans %d\n" % MEMO_FORMAT
#: plans kept per layout (the last ones made): a dry run and the real run, a few targets
_KEEP = 8
#: layouts with fewer blobs are planned every time
_MIN_BLOBS = 2048


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan, where it came from, and the tags of the nodes it names.

    ``how``: ``"built"`` (the layout was read and its graph built: ``graph``), ``"remembered"``
    (the same plan, made before on the unchanged layout, was recalled: no graph), or
    ``"stored"`` (a delete planned on the neighbourhood of its targets in the layout's stored
    graph, :mod:`io_adapters.store`: ``graph`` is that view).  ``disk`` is the layout as read,
    ``None`` when stored (nothing was listed); ``junk`` what lies under ``blobs/`` that is not
    a blob.
    """

    root: Path
    plan: og.Plan
    tags: dict[str, list[str]]
    how: str
    graph: nx.DiGraph | None
    disk: DiskLayout | None
    junk: tuple[Junk, ...]

    @property
    def remembered(self) -> bool:
        return self.how == "remembered"

    def present(self, digest: str) -> bool:
        """Whether the blob of ``digest`` exists: as listed, or (nothing listed) its file."""
        if self.disk is not None:
            return digest in self.disk.layout.blobs
        try:
            path = blob_file(self.root, digest)
        except og.OcigraphError:
            return False
        return os.path.lexists(path)


_SHORT_DIGEST = re.compile(r"([a-z0-9]+):([0-9a-f]{4,})")


def expand_short_digests(graph: nx.DiGraph | og.GraphSource, refs: Sequence[str]) -> list[str]:
    """Let people type the short digests the text output shows: ``sha256:0123456789ab``
    becomes the one digest of the graph (or graph source) it starts; two candidates are an
    ambiguity error."""
    source = og.WholeGraph(graph) if isinstance(graph, nx.DiGraph) else graph
    out = []
    for ref in refs:
        m = _SHORT_DIGEST.fullmatch(ref)
        if m is None or len(m.group(2)) >= og.SWEEPABLE_ALGORITHMS.get(m.group(1), 0) or source.has(ref):
            out.append(ref)
            continue
        found = list(source.with_prefix(ref))
        if not found:
            raise og.UnknownRefError(ref)
        if len(found) > 1:
            raise og.AmbiguousRefError(ref, tuple(found))
        out.append(found[0])
    return out


def plan_graph(graph: nx.DiGraph, operation: str, refs: Sequence[str], policy: og.Policy,
               whole: og.WholeGraph | None = None) -> og.Plan:
    """``operation`` (``delete``, ``gc``, ``remove``, ``untag``) on ``graph``; short digests
    among ``refs`` are expanded first.  ``whole``: ``graph`` as a source, whose liveness facts
    the plan then shares (grace 0)."""
    refs = expand_short_digests(graph, refs)
    given = whole.facts(policy.keep_untagged) if whole is not None and policy.grace <= 0 else None
    if operation == "delete":
        return og.plan_delete(graph, refs, policy, given=given)
    if operation == "gc":
        return og.plan_gc(graph, policy, given=given)
    if operation == "remove":
        return og.plan_remove(graph, refs, policy)
    if operation == "untag":
        return og.plan_untag(graph, refs)
    raise ValueError(f"unknown operation {operation!r}")


def plan_tags(graph: nx.DiGraph, plan: og.Plan) -> dict[str, list[str]]:
    """Tags of every node ``plan`` names (deletions, reasons, kept nodes), for showing it."""
    named: set[str] = set()
    for d in plan.deletions:
        named.add(d.digest)
        if d.reason.via is not None:
            named.add(d.reason.via)
    for k in plan.kept:
        named.add(k.digest)
        if k.via is not None:
            named.add(k.via)
    nodes = graph.nodes
    return {n: sorted(nodes[n]["tags"]) for n in sorted(named) if n in nodes and nodes[n]["tags"]}


def _memo_dir(root: Path, cache_dir: Path | str | None) -> Path | None:
    path = cache_file_for(root, cache_dir)
    return None if path is None else path.with_suffix(".plans")


def _load(path: Path) -> list[bytes] | None:
    """The parts of a remembered entry, or ``None`` for a missing, foreign or damaged file.

    A file is the magic line, one line per part (JSON), and a last line with the SHA-256 of
    everything between the magic line and it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if not data.startswith(_MAGIC):
        return None
    body, _, checksum = data[len(_MAGIC):].rpartition(b"\n")
    if hashlib.sha256(body + b"\n").hexdigest().encode() != checksum:
        return None
    return body.split(b"\n")


def _save(folder: Path, key: str, parts: Sequence[bytes]) -> None:
    """Write ``parts`` as ``folder/key`` (a temporary file, then a rename), one by one -- a
    million-blob plan is tens of megabytes, never copied into one buffer -- and keep the newest
    ``_KEEP``.  Failing to write only costs the next run its shortcut."""
    with contextlib.suppress(OSError):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC)
                h = hashlib.sha256()
                for part in parts:
                    for chunk in (part, b"\n"):
                        h.update(chunk)
                        f.write(chunk)
                f.write(h.hexdigest().encode())
            os.replace(tmp, folder / key)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # newest first (a recalled plan is touched); another run's temporary files are not ours
        kept = [p for p in folder.iterdir() if not p.name.startswith(".tmp-")]
        old = sorted(kept, key=lambda p: p.stat().st_mtime, reverse=True)[_KEEP:]
        for stale in old:
            with contextlib.suppress(OSError):
                stale.unlink()


def _looked_at(blobs: Any) -> bytes:
    """``{digest: [inode, size, mtime_ns, ctime_ns]}`` of every blob planning examined (the
    manifests, the blobs sniffed for referrers), as JSON: the plan is reused only while their
    files are unchanged."""
    return orjson.dumps(blobs.stamps() if isinstance(blobs, BlobListing) else {})


def _unchanged(disk: DiskLayout, checks: dict[str, Any]) -> bool:
    """Every check still describes its file (one ``lstat`` each).  Only names from this run's
    listing (valid digests all) ever become paths."""
    listed = disk.layout.blobs.keys()
    for digest, stamp in checks.items():
        if digest not in listed:
            return False
        try:
            st = os.lstat(blob_file(disk.root, digest))
        except OSError:
            return False
        if list(stamp_of(st)) != stamp:
            return False
    return True


def _fits(plan: og.Plan, operation: str, policy: og.Policy, disk: DiskLayout) -> bool:
    """A recalled plan is for this operation and policy, on this index.json, and deletes only
    blobs this run's listing has (or knows are absent)."""
    if (plan.operation, plan.policy, plan.index_fingerprint) != (
            operation, policy, disk.layout.index.fingerprint):
        return False
    listed = disk.layout.blobs.keys()
    return all(d.digest in listed for d in plan.deletions if d.present)


class PlanMemo:
    """The remembered plans of one layout as read in this run (see the module's docstring)."""

    def __init__(self, disk: DiskLayout, cache_dir: Path | str | None = None,
                 enabled: bool | None = None) -> None:
        self.disk = disk
        self.folder = _memo_dir(disk.root, cache_dir) if cache_enabled(enabled) else None
        self._names: Any = None  # a hashlib sha256 object

    def _key(self, operation: str, refs: Sequence[str], policy: og.Policy) -> str | None:
        """The key of a plan in the memo, or ``None`` when the plan cannot be remembered."""
        layout = self.disk.layout
        if self.folder is None or policy.grace > 0 or len(layout.blobs) < _MIN_BLOBS:
            return None
        # The names of every blob go into each key: hashed once a run, in the listing's order
        # (sorting a million costs a second; the same names in another order only miss), and
        # only the hash's state kept (the names joined are 70 MB at a million blobs).
        if self._names is None:
            self._names = hashlib.sha256("\n".join(layout.blobs).encode())
        h = self._names.copy()
        h.update(b"\0" + orjson.dumps([MEMO_FORMAT, code_fingerprint(), layout.index.fingerprint,
                                       operation, list(refs), policy.to_dict()],
                                      option=orjson.OPT_SORT_KEYS))
        key: str = h.hexdigest()
        return key

    def recall(self, operation: str, refs: Sequence[str],
               policy: og.Policy) -> tuple[og.Plan, dict[str, list[str]]] | None:
        """The plan made before for this operation on this layout unchanged, with the tags
        it names; ``None`` when there is none that can be trusted."""
        key = self._key(operation, refs, policy)
        if key is None or self.folder is None:  # (the folder for mypy: a key implies one)
            return None
        parts = _load(self.folder / key)
        if parts is None or len(parts) != 3:
            return None
        disk = self.disk
        try:
            plan_json, tags_json, checks_json = parts
            if not _unchanged(disk, orjson.loads(checks_json)):
                return None
            plan = og.Plan.from_json(plan_json)
            tags = {str(k): [str(t) for t in v] for k, v in orjson.loads(tags_json).items()}
        except (og.OcigraphError, KeyError, TypeError, ValueError, AttributeError):
            return None
        if not _fits(plan, operation, policy, disk):
            return None
        with contextlib.suppress(OSError):
            os.utime(self.folder / key)  # in use: the last to be let go
        return dataclasses.replace(plan, snapshot_time=disk.layout.now), tags

    def remember(self, operation: str, refs: Sequence[str], policy: og.Policy,
                 plan: og.Plan, tags: dict[str, list[str]]) -> None:
        """Keep ``plan`` (made on this run's graph) for the next run, under the refs asked
        for and under the digests they named (what a saved plan's re-check asks with).

        Not when a read this run answered something about the disk rather than the digest
        (a blob missing, unreadable, or not matching its digest): the same names and stamps
        could then come back with different content -- a file repaired with ``cp -p``."""
        if getattr(self.disk.layout.manifests, "disk_errors", 1):
            return
        keys = {self._key(operation, names, policy) for names in (refs, plan.targets)}
        if self.folder is None or None in keys:
            return
        parts = [plan.to_json(indent=False), orjson.dumps(tags), _looked_at(self.disk.layout.blobs)]
        for key in keys:
            _save(self.folder, str(key), parts)


def _delete_from_store(root: Path, refs: Sequence[str], policy: og.Policy, cache: bool | None,
                       cache_dir: Path | str | None) -> Planned | Path | None:
    """A delete planned on its targets' neighbourhood in the layout's stored graph, if there is
    one for the layout as it is now (see :mod:`io_adapters.store`); ``None`` otherwise -- or
    the store's path when it did not know a name: a row may be lost, so if reading the layout
    finds the name, the store is discarded."""
    if policy.grace > 0 or not cache_enabled(cache):
        return None
    now = time.time()  # the snapshot: as read_layout, before anything is looked at
    check_real_dir(root, str(root))
    read_oci_layout_file(root)
    store = _current_store(root, cache, cache_dir)
    if store is None:
        return None
    try:
        names = expand_short_digests(store, refs)
        digests: list[str] = []
        for ref in names:
            d = og.resolve_in(store, ref)
            if d not in digests:
                digests.append(d)
        view = og.neighbourhood(store, digests, policy, now=now)
    except og.UnknownRefError:
        return store.path  # a name not found may be a row lost: the layout has the last word
    except og.OcigraphError:
        raise  # a tag on two images, a mistyped digest: the layout would say the same
    except Exception:  # the store is a cache: anything amiss, and the layout is read instead
        _discard(store.path)
        return None
    finally:
        store.close()
    plan = og.plan_delete(view, digests, policy)
    return Planned(root, plan, plan_tags(view, plan), "stored", view, None, store.junk)


def _current_store(root: Path, cache: bool | None, cache_dir: Path | str | None) -> GraphStore | None:
    """The layout's stored graph if it was made from the layout as it is now: index.json's
    bytes and the blob folders' stamps (see :mod:`io_adapters.store`)."""
    fingerprint = og.digest_bytes(read_regular_file(root / "index.json", "index.json"))
    return open_store(root, cache_dir, fingerprint, folder_stamps(root), cache)


def _discard(path: Path) -> None:
    """Remove a damaged store, so that the next plan to build the graph stores it anew --
    unless another process is writing one right now (it replaces this one anyway)."""
    claimed = claim(path)
    if claimed is not None:
        try:
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            os.close(claimed)


def _storable(disk: DiskLayout, cache: bool | None) -> bool:
    """A layout worth storing whose graph can be trusted later: big, settled folders, and no
    read that said something about a file rather than a digest -- unreadable, or not matching
    its digest (see :mod:`io_adapters.store`).  A blob found missing is no such read: it
    coming back changes its folder's stamps."""
    source = disk.layout.manifests
    return (cache_enabled(cache) and len(disk.layout.blobs) >= _MIN_BLOBS and is_settled(disk)
            and getattr(source, "disk_errors", 1) - getattr(source, "missing_reads", 0) == 0)


#: store files this process has a job on its way for (the job owns the writer's lock)
_PENDING: set[Path] = set()


def _store(disk: DiskLayout, graph: nx.DiGraph, whole: og.WholeGraph, cache: bool | None,
           cache_dir: Path | str | None, defer: Callable[..., None] | None = None) -> None:
    """Keep ``graph`` for later deletes, unless it is not :func:`_storable` or is stored
    already.  ``defer``: hand the writing to it (:func:`io_adapters.background.defer`) rather
    than write now.  Should the layout change before the job runs (``delete --yes`` applies
    the plan), the job stores the layout as it is then, like :func:`restore_later`."""
    if not _storable(disk, cache):
        return
    path = _store_path(disk.root, cache_dir)
    if path is None or path in _PENDING:
        return
    held = open_store(disk.root, cache_dir, graph.graph["fingerprint"], disk.folders, cache)
    if held is not None:
        held.close()
        return
    kept = [graph, whole]  # let go of before a rebuild: the job may be the graph's last holder

    def work() -> None:
        if folder_stamps(disk.root) == disk.folders:
            save_store(path, disk, kept[0], {False: kept[1].facts(False), True: kept[1].facts(True)})
        else:  # changed since it was read (an apply, a push): store it as it is now
            kept.clear()
            _rebuild(disk.root, path, cache, cache_dir)

    _storing_job(path, work, defer)


def _store_path(root: Path, cache_dir: Path | str | None) -> Path | None:
    path = store_file_for(root, cache_dir)
    return None if path is None else Path(os.path.abspath(path))


def _storing_job(path: Path, work: Callable[[], None], defer: Callable[..., None] | None) -> None:
    """Claim the writer's lock of the store at ``path`` now (so that a deferred job is known to
    be on its way) and do ``work`` holding it -- here, or handed to ``defer``.  Nothing, if
    another process is storing it."""
    claimed = claim(path)
    if claimed is None:
        return

    def job() -> None:
        try:
            work()
        except og.OcigraphError:
            pass  # the layout went bad under us: only a shortcut is lost
        finally:
            _PENDING.discard(path)
            os.close(claimed)

    _PENDING.add(path)
    if defer is None:
        job()
    else:
        defer(job, owns=(claimed,))


def _rebuild(root: Path, path: Path, cache: bool | None, cache_dir: Path | str | None) -> None:
    """Store the layout at ``root`` as it is now, once its folders have settled: wait until
    ``SETTLE_NS`` after their last change (stamps taken sooner could hide a change still to
    come), read it -- manifests from the manifest cache -- and build its graph.  The caller
    holds the writer's lock."""
    gc.collect()  # a graph no longer held (with the collector off, its cycles are still here)
    wait = settles_in(folder_stamps(root))
    if wait > 0:
        time.sleep(wait + 0.01)
    disk = read_layout(root, cache=cache, cache_dir=cache_dir)
    graph = og.build_graph(disk.layout)
    if _storable(disk, cache):
        whole = og.WholeGraph(graph)
        save_store(path, disk, graph, {False: whole.facts(False), True: whole.facts(True)})


def restore_later(root: Path | str, cache: bool | None = None, cache_dir: Path | str | None = None,
                  defer: Callable[..., None] | None = None) -> None:
    """After an apply changed a layout whose graph was stored: store it again, so that the
    next delete is quick too -- a rebuild (:func:`_rebuild`), meant for ``defer``
    (:func:`io_adapters.background.defer`), done while nobody waits for it.  A layout that
    had no stored graph, or whose store is current, is left alone; so is one this process has
    a storing job on its way for (that job sees the change and stores the layout as it is)."""
    root = Path(os.path.abspath(root))
    path = _store_path(root, cache_dir)
    if not cache_enabled(cache) or path is None or path in _PENDING:
        return
    try:
        if not path.exists():
            return
        held = _current_store(root, cache, cache_dir)
    except (OSError, og.OcigraphError):
        return
    if held is not None:  # unchanged after all (an empty plan)
        held.close()
        return
    _storing_job(path, lambda: _rebuild(root, path, cache, cache_dir), defer)


@pauses_gc  # remembering a plan makes ~100k small lists beside a big graph
def plan_layout(root: Path | str, operation: str, refs: Sequence[str], policy: og.Policy, *,
                reporter: og.Reporter | None = None, cache: bool | None = None,
                cache_dir: Path | str | None = None, store: bool = True,
                defer: Callable[..., None] | None = None) -> Planned:
    """Plan ``operation`` on the layout at ``root``: a delete from the layout's stored graph
    when there is a current one; else a plan made before on the same layout, unchanged; else
    by reading the layout and building its graph (see the module's docstring).

    A graph built is stored for later deletes (unless ``store`` is false); ``defer`` takes
    that job for later (:mod:`io_adapters.background`) instead of doing it before returning.
    """
    root = Path(root)
    suspect = None
    if operation == "delete":
        stored = _delete_from_store(root, refs, policy, cache, cache_dir)
        if isinstance(stored, Planned):
            return stored
        suspect = stored
    disk = read_layout(root, cache=cache, cache_dir=cache_dir)
    memo = PlanMemo(disk, cache_dir, cache)
    recalled = memo.recall(operation, refs, policy) if suspect is None else None
    if recalled is not None:
        return Planned(root, recalled[0], recalled[1], "remembered", None, disk, disk.junk)
    graph = og.build_graph(disk.layout, reporter)
    whole = og.WholeGraph(graph)
    plan = plan_graph(graph, operation, refs, policy, whole)
    if suspect is not None:  # the layout knew a name the store did not: the store lost it
        _discard(suspect)
    tags = plan_tags(graph, plan)
    memo.remember(operation, refs, policy, plan, tags)
    if store:
        _store(disk, graph, whole, cache, cache_dir, defer)
    return Planned(root, plan, tags, "built", graph, disk, disk.junk)
