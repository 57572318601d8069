"""Plan an operation on a layout on disk: from the one store when it describes the layout as
it is, else by reading the layout and building its graph.

:func:`plan_layout` is what the command line (and apply's re-check of a saved plan) calls.
Through the layout's one directory handle (:class:`io_adapters.layout.LayoutDir`) it reads the
layout's snapshot (:mod:`io_adapters.store`); if the store was made from that snapshot, it
answers from it:

* a plan made before for the same operation, refs and policy is the plan now (a plan is a
  pure function of index.json, the blobs present, what the manifests say, the operation and
  the code -- all fixed by the snapshot -- and, with ``grace``, of the clock: such plans are
  never kept);
* a ``delete`` is planned on its targets' neighbourhood in the stored graph
  (:func:`ocigraph.neighbourhood`).

Otherwise it reads the layout, builds its graph and plans; a graph built is left to the store
(with the plan) by a job meant to run after the command's answer
(:mod:`io_adapters.background`).  Every plan records the handle's ``origin``, so that apply
refuses to change any other directory.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import orjson

import ocigraph as og

from .apply import ApplyReport
from .cachedir import bound_cache
from .collector import collector_paused
from .layout import DiskLayout, Junk, LayoutDir, open_layout, read_layout, scan_blobs
from .store import (
    GraphStore,
    cache_enabled,
    claim,
    follow_apply,
    is_settled,
    names_checksum,
    open_store,
    plan_key,
    save_store,
    settles_in,
    snapshot_of,
    store_file_for,
)

__all__ = ["Planned", "plan_layout", "plan_prune_layout", "restore_later", "plan_graph",
           "plan_tags", "push_times"]

#: layouts with fewer blobs are planned every time and never stored: they plan in
#: milliseconds, and test suites make thousands of them
_MIN_BLOBS = 2048
#: how long a storing job waits for a layout's folders to settle before it gives up: a clock
#: far off the file system's would otherwise keep it asleep
_MAX_SETTLE_WAIT = 3.0


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan, where it came from, and the tags of the nodes it names.

    ``how``: ``"built"`` (the layout was read and its graph built: ``graph``), ``"remembered"``
    (the plan made before on the unchanged layout, from the store: no graph), or ``"stored"``
    (a delete planned on its targets' neighbourhood in the store: ``graph`` is that view).
    ``disk`` is the layout as read (``None`` unless built); ``junk`` what lies under ``blobs/``
    that is not a blob; ``dir`` the layout's handle.
    """

    dir: LayoutDir
    plan: og.Plan
    tags: dict[str, list[str]]
    how: str
    graph: nx.DiGraph | None
    disk: DiskLayout | None
    junk: tuple[Junk, ...]

    @property
    def root(self) -> Path:
        return self.dir.path

    @property
    def remembered(self) -> bool:
        return self.how == "remembered"

    def present(self, digest: str) -> bool:
        """Whether the blob of ``digest`` exists: as listed, or (nothing listed) its file."""
        if self.disk is not None:
            return digest in self.disk.layout.blobs
        try:
            return self.dir.lstat_blob(digest) is not None
        except (OSError, og.OcigraphError):
            return False


def plan_graph(graph: nx.DiGraph, operation: str, refs: Sequence[str], policy: og.Policy,
               whole: og.WholeGraph | None = None, reporter: og.Reporter | None = None) -> og.Plan:
    """``operation`` (``delete``, ``gc``, ``remove``, ``untag``) on ``graph``.  ``whole``:
    ``graph`` as a source, whose liveness facts the plan then shares (grace 0)."""
    given = whole.facts(policy.keep_untagged) if whole is not None and policy.grace <= 0 else None
    if operation == "delete":
        return og.plan_delete(graph, refs, policy, reporter, given=given)
    if operation == "gc":
        return og.plan_gc(graph, policy, reporter, given=given)
    if operation == "remove":
        return og.plan_remove(graph, refs, policy)
    if operation == "untag":
        return og.plan_untag(graph, refs)
    raise ValueError(f"unknown operation {operation!r}")


def push_times(disk: DiskLayout, rules: og.RetentionRules) -> dict[str, float]:
    """The push time of every image index.json lists (RETENTION §1): its manifest blob's
    mtime, or with ``age_from="created"`` the image's own date, read through the handle."""
    out: dict[str, float] = {}
    created = rules.age_from == "created"
    for digest in {e.digest for e in disk.layout.index.entries}:
        info = disk.layout.blobs.get(digest)
        mtime = None if info is None else info.mtime
        annotation = config = None
        if created and info is not None:
            data = disk.layout.manifests.read_blobs([digest])[0]  # type: ignore[attr-defined]
            if isinstance(data, bytes):
                annotation = og.manifest_created(data)
                cfg = _config_digest(data)
                if cfg is not None and cfg in disk.layout.blobs:
                    raw = disk.layout.manifests.read_blobs([cfg])[0]  # type: ignore[attr-defined]
                    config = og.config_created(raw) if isinstance(raw, bytes) else None
        when = og.image_time(mtime, age_from=rules.age_from, annotation=annotation, config=config)
        if when is not None:
            out[digest] = when
    return out


def _config_digest(manifest: bytes) -> str | None:
    try:
        doc = orjson.loads(manifest)
        digest = doc["config"]["digest"]
        return digest if isinstance(digest, str) and og.is_sweepable(digest) else None
    except (orjson.JSONDecodeError, KeyError, TypeError, og.OcigraphError):
        return None


def plan_prune_layout(root: Path | str | LayoutDir, rules: og.RetentionRules, policy: og.Policy,
                      now: float, *, reporter: og.Reporter | None = None) -> Planned:
    """``ocigraph prune``: judge the layout's tags by ``rules`` at ``now`` and plan the expired
    tags' remove with the gc sweep (:func:`ocigraph.plan_prune`), on the whole graph."""
    layout_dir = open_layout(root)
    with collector_paused():
        disk = read_layout(layout_dir, reporter=reporter)
        graph = og.build_graph(disk.layout, reporter, mtimes=policy.grace > 0)
        plan = og.plan_prune(graph, rules, now=now, push_times=push_times(disk, rules),
                             policy=policy)
    plan = dataclasses.replace(plan, origin=layout_dir.origin)
    return Planned(layout_dir, plan, plan_tags(graph, plan), "built", graph, disk, disk.junk)


def _named(plan: og.Plan) -> set[str]:
    named = {d.digest for d in plan.deletions} | {k.digest for k in plan.kept}
    named |= {d.reason.via for d in plan.deletions if d.reason.via is not None}
    named |= {k.via for k in plan.kept if k.via is not None}
    return named


def plan_tags(graph: nx.DiGraph | GraphStore, plan: og.Plan) -> dict[str, list[str]]:
    """Tags of every node ``plan`` names (deletions, reasons, kept nodes), for showing it."""
    named = sorted(_named(plan))
    if isinstance(graph, GraphStore):
        attrs: Mapping[str, Mapping[str, object]] = graph.attributes(named)
    else:
        attrs = {n: graph.nodes[n] for n in named if n in graph.nodes}
    return {n: sorted(a["tags"]) for n, a in attrs.items() if a["tags"]}  # type: ignore[call-overload]


def _from_store(layout_dir: LayoutDir, operation: str, refs: Sequence[str], policy: og.Policy,
                cache: bool | None, cache_dir: Path | str | None) -> Planned | Path | None:
    """The plan, answered by the store if it was made from the layout as it is now (see
    :mod:`io_adapters.store`); ``None`` otherwise -- or the store's path when it did not know
    a name: a row may be lost, so if reading the layout finds the name, the store goes."""
    if policy.grace > 0 or not cache_enabled(cache):
        return None
    now = time.time()  # the snapshot: as read_layout, before anything is looked at
    layout_dir.check_oci_layout()
    store = open_store(layout_dir, cache_dir, cache, snapshot_of(layout_dir))
    if store is None:
        return None
    try:
        kept = store.plan(plan_key(operation, refs, policy))
        if (kept is not None and kept.operation == operation and kept.policy == policy
                and kept.index_fingerprint == store.fingerprint):
            plan = dataclasses.replace(kept, snapshot_time=now)
            return Planned(layout_dir, plan, plan_tags(store, plan), "remembered", None, None,
                           store.junk)
        if operation != "delete":
            return None
        digests = list(og.resolve_refs(store, refs))
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
    plan = dataclasses.replace(og.plan_delete(view, digests, policy), origin=layout_dir.origin)
    return Planned(layout_dir, plan, plan_tags(view, plan), "stored", view, None, store.junk)


def _discard(path: Path) -> None:
    """Remove a damaged store, so that the next full plan stores the layout anew -- unless
    another process is writing one right now (it replaces this one anyway)."""
    claimed = claim(path)
    if claimed is not None:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(claimed)


def _storable(disk: DiskLayout, cache: bool | None) -> bool:
    """A layout worth storing whose graph can be trusted later: big, settled folders, and no
    read that said something about a file rather than a digest (see :mod:`io_adapters.store`)."""
    return (cache_enabled(cache) and len(disk.layout.blobs) >= _MIN_BLOBS and is_settled(disk)
            and getattr(disk.layout.manifests, "disk_errors", 1) == 0)


#: store files this process has a job on its way for (the job owns the writer's lock), and
#: what this process applied to their layouts since (the job follows it)
_PENDING: set[Path] = set()
_APPLIED: dict[Path, tuple[og.Plan, ApplyReport]] = {}


def _store_path(layout_dir: LayoutDir, cache_dir: Path | str | None) -> Path | None:
    path = store_file_for(layout_dir.path, cache_dir)
    return None if path is None else Path(os.path.abspath(path))


def _store(disk: DiskLayout, graph: nx.DiGraph, whole: og.WholeGraph, plans: dict[str, og.Plan],
           cache: bool | None, cache_dir: Path | str | None,
           defer: Callable[..., None] | None = None) -> None:
    """Keep ``graph`` and ``plans`` for later, unless the layout is not :func:`_storable`.
    ``defer``: hand the writing to it (:func:`io_adapters.background.defer`) rather than write
    now.  Should the layout change before the job runs (``delete --yes`` applies the plan),
    the job stores the layout as it is then, like :func:`restore_later`."""
    if not _storable(disk, cache):
        return
    plans = {k: p for k, p in plans.items() if p.policy.grace <= 0}  # they depend on the clock
    path = _store_path(disk.dir, cache_dir)
    if path is None or path in _PENDING:
        return
    kept = [graph, whole]  # let go of before a rebuild: the job may be the graph's last holder

    def work() -> None:
        applied = _APPLIED.pop(path, None)
        unchanged = disk.dir.in_place() and disk.dir.folder_stamps() == disk.folders
        snapshot = (disk.dir.origin, kept[0].graph["fingerprint"], disk.folders)
        if unchanged or (applied is not None and applied[1].before == snapshot):
            facts = {False: kept[1].facts(False), True: kept[1].facts(True)}
            save_store(path, disk, kept[0], facts, plans if unchanged else {})
            kept.clear()
            if applied is not None and not unchanged:  # the graph as read; then what changed
                _follow(disk.dir, path, cache, *applied)
        else:  # changed by someone else since it was read: store it as it is now
            kept.clear()
            _rebuild(disk.dir, path, cache)

    _storing_job(path, work, defer)


def _storing_job(path: Path, work: Callable[[], None], defer: Callable[..., None] | None) -> None:
    """Claim the writer's lock of the store at ``path`` now (so that a deferred job is known to
    be on its way) and do ``work`` holding it -- here, or handed to ``defer``.  Nothing, if
    another process is storing it."""
    claimed = claim(path)
    if claimed is None:
        return

    def job() -> None:
        try:
            with collector_paused():
                work()
            bound_cache(path.parent)  # entries of layouts gone or unused, and the size cap
        except og.OcigraphError:
            pass  # the layout went bad under us: only a shortcut is lost
        finally:
            _PENDING.discard(path)
            _APPLIED.pop(path, None)
            os.close(claimed)

    _PENDING.add(path)
    if defer is None:
        job()
    else:
        defer(job, owns=(claimed,))


def _rebuild(layout_dir: LayoutDir, path: Path, cache: bool | None) -> None:
    """Store the layout as it is now, once its folders have settled (stamps taken sooner could
    hide a change still to come): read it and build its graph.  Gives up when the folders
    would settle only after ``_MAX_SETTLE_WAIT`` (a clock off the file system's).  The caller
    holds the writer's lock."""
    gc.collect()  # a graph no longer held (with the collector off, its cycles are still here)
    wait = settles_in(layout_dir.folder_stamps())
    if wait > _MAX_SETTLE_WAIT or not layout_dir.in_place():
        return
    if wait > 0:
        time.sleep(wait + 0.01)
    disk = read_layout(layout_dir)
    graph = og.build_graph(disk.layout)
    if _storable(disk, cache):
        whole = og.WholeGraph(graph)
        save_store(path, disk, graph, {False: whole.facts(False), True: whole.facts(True)}, {})


def _follow(layout_dir: LayoutDir, path: Path, cache: bool | None, plan: og.Plan,
            report: ApplyReport) -> None:
    """Bring the store to the layout as ``plan`` left it, changing the rows the plan touched
    (:func:`io_adapters.store.follow_apply`), once the blob folders have settled -- a new
    snapshot is taken only then, and a listing after it must show exactly what the plan
    left; anything else (another writer, a change the store cannot follow exactly) and the
    layout is stored anew (:func:`_rebuild`).  The caller holds the writer's lock."""
    wait = settles_in(layout_dir.folder_stamps())
    if wait > _MAX_SETTLE_WAIT or not layout_dir.in_place():
        return
    if wait > 0:
        time.sleep(wait + 0.01)
    after = snapshot_of(layout_dir)
    listing, junk = scan_blobs(layout_dir)
    done = (report.before is not None and not report.skipped and not report.already_gone
            and after[1] == report.index_after
            and follow_apply(path, report.before, plan, after, layout_dir.read_index(),
                             names_checksum(listing), junk))
    if not done:
        _rebuild(layout_dir, path, cache)


def restore_later(root: Path | str | LayoutDir, cache: bool | None = None,
                  cache_dir: Path | str | None = None,
                  defer: Callable[..., None] | None = None, *,
                  applied: tuple[og.Plan, ApplyReport] | None = None) -> None:
    """After an apply changed a layout that had a store: bring the store up to date, so that
    the next command is quick too -- following the change row by row when the store was
    current before it (``applied``: the plan and apply's report; :func:`_follow`), else a
    rebuild (:func:`_rebuild`); meant for ``defer``, done while nobody waits for it.  A layout
    that had no store, or whose store is current, is left alone; so is one this process has a
    storing job on its way for (that job sees the change and stores the layout as it is)."""
    layout_dir = open_layout(root)
    path = _store_path(layout_dir, cache_dir)
    if path is not None and path in _PENDING:
        if applied is not None:
            _APPLIED[path] = applied
        return
    if not cache_enabled(cache) or path is None or not path.exists():
        return
    try:
        held = open_store(layout_dir, cache_dir, cache)
    except (OSError, og.OcigraphError):
        return
    if held is not None:  # unchanged after all (an empty plan)
        held.close()
        return
    if applied is not None and applied[1].before is not None:
        plan, report = applied
        _storing_job(path, lambda: _follow(layout_dir, path, cache, plan, report), defer)
    else:
        _storing_job(path, lambda: _rebuild(layout_dir, path, cache), defer)


def plan_layout(root: Path | str | LayoutDir, operation: str, refs: Sequence[str],
                policy: og.Policy, *, reporter: og.Reporter | None = None,
                cache: bool | None = None, cache_dir: Path | str | None = None,
                store: bool = True, defer: Callable[..., None] | None = None) -> Planned:
    """Plan ``operation`` on the layout at ``root`` (a path or an open :class:`LayoutDir`):
    from the store when it describes the layout as it is now, else by reading the layout
    (see the module's docstring).  ``cache=False`` (or ``OCIGRAPH_NO_CACHE=1``) neither reads
    nor writes the store; ``store=False`` only reads it.  A graph built is stored for later;
    ``defer`` takes that job for after the answer (:mod:`io_adapters.background`)."""
    layout_dir = open_layout(root)
    from_store = _from_store(layout_dir, operation, refs, policy, cache, cache_dir)
    if isinstance(from_store, Planned):
        return from_store
    with collector_paused():
        disk = read_layout(layout_dir, reporter=reporter)
        graph = og.build_graph(disk.layout, reporter, mtimes=policy.grace > 0)
        whole = og.WholeGraph(graph)
        plan = dataclasses.replace(plan_graph(graph, operation, refs, policy, whole, reporter),
                                   origin=layout_dir.origin)
    if from_store is not None:  # the layout knew a name the store did not: the store lost it
        _discard(from_store)
    if store and cache_enabled(cache):
        _store(disk, graph, whole, {plan_key(operation, refs, policy): plan}, cache, cache_dir,
               defer)
    return Planned(layout_dir, plan, plan_tags(graph, plan), "built", graph, disk, disk.junk)
