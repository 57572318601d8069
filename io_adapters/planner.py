"""Plan an operation on a layout on disk: from the one store when it was made from the layout's
snapshot as its handle reads it now, else by reading the layout; a graph built is left to the
store by a job for after the answer.  How, and why the store cannot be stale: docs/design.md."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gc
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import networkx as nx

import ocigraph as og
from ocigraph import snapshot as S
from ocigraph.applying import ApplyReport

from . import store as st
from .background import collector_paused
from .cachedir import bound_cache
from .layout import DiskLayout, DiskManifestSource, LayoutDir, open_layout, read_layout, scan_blobs

__all__ = ["Planned", "Prune", "plan_layout", "restore_later"]

Prune = tuple[og.RetentionRules, float]  # prune's rules and its ``now``

#: layouts with fewer blobs are planned every time and never stored: they plan in
#: milliseconds, and test suites make thousands of them
_MIN_BLOBS = 2048
#: the longest a storing job waits for a layout's folders to settle (a clock far off the file
#: system's would otherwise keep it asleep); it waits without the writer's lock
_MAX_SETTLE_WAIT = 3.0


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan, where it came from, and the tags of the nodes it names.  ``how``: ``"built"``
    (the layout read, as ``disk``, and its ``graph`` built), ``"remembered"`` (the plan made
    before on the unchanged layout) or ``"stored"`` (a delete planned on its targets'
    neighbourhood in the store: ``graph`` is that view); ``junk``: what under ``blobs/`` is
    not a blob."""

    dir: LayoutDir
    plan: og.Plan
    tags: dict[str, list[str]]
    how: str
    graph: nx.DiGraph | None
    disk: DiskLayout | None
    junk: tuple[og.Junk, ...]

    def present(self, digest: str) -> bool:
        """Whether the blob of ``digest`` exists: as listed, or (nothing listed) its file."""
        if self.disk is not None:
            return digest in self.disk.layout.blobs
        try:
            return self.dir.lstat_blob(digest) is not None
        except (OSError, og.OcigraphError):
            return False


def _read_and_plan(layout_dir: LayoutDir, policy: og.Policy, reporter: og.Reporter | None,
                   make: Callable[[DiskLayout, nx.DiGraph, og.WholeGraph], og.Plan],
                   ) -> tuple[Planned, DiskLayout, og.WholeGraph]:
    """Read the layout, build its graph and plan on it with ``make``.  With ``grace``, the
    graph's ``now`` is on the file system's clock, as the blob times it is compared with are
    (the plan's snapshot time stays this machine's: apply shifts it itself); a layout we
    cannot write a probe into keeps this machine's."""
    with collector_paused():
        disk = read_layout(layout_dir, reporter=reporter)
        layout = disk.layout
        if policy.grace > 0:
            with contextlib.suppress(OSError):
                layout = dataclasses.replace(layout,
                                             now=(layout.now or 0.0) + disk.dir.clock_offset())
        graph = og.build_graph(layout, reporter, mtimes=policy.grace > 0)
        whole = og.WholeGraph(graph)
        plan = dataclasses.replace(make(disk, graph, whole), origin=layout_dir.origin,
                                   snapshot_time=disk.layout.now)
    return Planned(layout_dir, plan, og.plan_tags(graph, plan), "built", graph, disk,
                   disk.junk), disk, whole


def _prune(rules: og.RetentionRules, now: float, policy: og.Policy, disk: DiskLayout,
           graph: nx.DiGraph, _: og.WholeGraph) -> og.Plan:
    """``ocigraph prune``'s plan (:func:`ocigraph.plan_prune`), the push times read from the
    blobs through the handle."""
    layout = disk.layout
    pushed = og.push_times(layout.index, layout.blobs, rules.age_from,
                           layout.manifests.read_blob)  # type: ignore[attr-defined]
    return og.plan_prune(graph, rules, now=now, push_times=pushed, policy=policy)


def _from_store(layout_dir: LayoutDir, operation: str, refs: Sequence[str], policy: og.Policy,
                cache: bool | None, cache_dir: Path | str | None) -> Planned | Path | None:
    """The plan, answered by the store if it was made from the layout as it is now; ``None``
    otherwise -- or the store's path when it did not know a name: a row may be lost, so if
    reading the layout finds the name, the store goes."""
    if policy.grace > 0 or not S.caching(cache, os.environ):
        return None
    now = time.time()  # the snapshot: as read_layout, before anything is looked at
    layout_dir.check_oci_layout()
    store = st.open_store(layout_dir, cache_dir, cache, st.snapshot_of(layout_dir))
    if store is None:
        return None
    try:
        kept = store.plan(og.plan_key(operation, refs, policy))
        if kept is not None and S.recalls(kept, operation, policy, store.fingerprint):
            plan = dataclasses.replace(kept, snapshot_time=now)
            return Planned(layout_dir, plan, og.plan_tags(store, plan), "remembered", None, None,
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
    return Planned(layout_dir, plan, og.plan_tags(view, plan), "stored", view, None, store.junk)


def _discard(path: Path) -> None:
    """Remove a damaged store so the next full plan stores the layout anew -- unless a writer
    has it now (it replaces it anyway)."""
    claimed = st.claim(path)
    if claimed is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        os.close(claimed)


def _storable(disk: DiskLayout) -> bool:
    """:func:`ocigraph.snapshot.storable`, of a layout as read."""
    return S.storable(
        len(disk.layout.blobs), disk.folders, disk.listed_at,
        getattr(disk.layout.manifests, "disk_errors", 1), min_blobs=_MIN_BLOBS)


#: store files this process has a job on its way for (the job owns the writer's lock), and
#: what this process applied to their layouts since (the job follows it)
_PENDING: set[Path] = set()
_APPLIED: dict[Path, tuple[og.Plan, ApplyReport]] = {}


def _store(disk: DiskLayout, graph: nx.DiGraph, whole: og.WholeGraph, plans: dict[str, og.Plan],
           cache_dir: Path | str | None, defer: Callable[..., None] | None = None) -> None:
    """Keep ``graph`` and ``plans`` if the layout is :func:`_storable`, in a job for ``defer``
    or now; should the layout change before the job runs (``delete --yes`` applies the plan),
    the job follows the change, or stores the layout as it is then."""
    path = st.store_file_for(disk.dir.path, cache_dir)
    if not _storable(disk) or path is None or path in _PENDING:
        return
    plans = {k: p for k, p in plans.items() if p.policy.grace <= 0}  # they depend on the clock
    kept = [graph, whole]  # let go of before a rebuild; otherwise the exit frees them at once

    def work(claimed: int) -> None:
        applied = _APPLIED.pop(path, None)
        unchanged = disk.dir.in_place() and disk.dir.folder_stamps() == disk.folders
        snapshot = (disk.dir.origin, kept[0].graph["fingerprint"], disk.folders)
        if unchanged or (applied is not None and applied[1].before == snapshot):
            facts = {k: kept[1].facts(k) for k in (False, True)}
            st.save_store(path, disk, kept[0], facts, plans if unchanged else {}, claimed)
            if unchanged:
                return
        else:  # changed by someone else since it was read: stored as it is now
            applied = None
        _update(disk.dir, path, claimed, applied, release=kept.clear)

    _storing_job(path, work, defer)


def _storing_job(path: Path, work: Callable[[int], None],
                 defer: Callable[..., None] | None) -> None:
    """Claim the store at ``path`` now (so a deferred job is known to be on its way) and do
    ``work`` holding the claim, here or handed to ``defer``; nothing, if another has it."""
    claimed = st.claim(path)
    if claimed is None:
        return

    def job() -> None:
        try:
            with collector_paused():
                work(claimed)
            bound_cache(path.parent)  # entries of layouts gone or unused, and the size cap
        except og.OcigraphError:
            pass  # the layout went bad under us: only a shortcut is lost
        finally:
            _PENDING.discard(path)
            _APPLIED.pop(path, None)
            st.release(path, claimed)

    _PENDING.add(path)
    if defer is None:
        job()
    else:
        defer(job, owns=(claimed,))


def _settled(layout_dir: LayoutDir, path: Path, claimed: int) -> bool:
    """Whether the layout's folders have settled (stamps taken sooner could hide a change
    still to come), waiting for them at most ``_MAX_SETTLE_WAIT`` and without the writer's
    lock, which is claimed again after (False: another writer has it now)."""
    wait = S.settles_in(layout_dir.folder_stamps(), time.time_ns())
    if wait > _MAX_SETTLE_WAIT or not layout_dir.in_place():
        return False
    if wait > 0:
        fcntl.flock(claimed, fcntl.LOCK_UN)
        time.sleep(wait + 0.01)
        return st.reclaim(path, claimed)
    return True


def _update(layout_dir: LayoutDir, path: Path, claimed: int,
            applied: tuple[og.Plan, ApplyReport] | None = None,
            release: Callable[[], None] | None = None) -> None:
    """Once the folders have settled, bring the store up to the layout as it is now: row by
    row when it was made from the snapshot the ``applied`` plan was applied to (apply's report
    says; :func:`io_adapters.store.follow_apply`), else by reading the layout and building its
    graph (``release`` first lets go of a graph held)."""
    if not _settled(layout_dir, path, claimed):
        return
    if applied is not None and (before := applied[1].before) is not None:
        after = st.snapshot_of(layout_dir)
        listing, junk = scan_blobs(layout_dir)
        if S.followable(applied[1], after) and st.follow_apply(
                path, before, applied[0], after, layout_dir.read_index(),
                og.names_checksum(listing), junk,
                DiskManifestSource(layout_dir, listing).read_manifests):
            return
    if release is not None:
        release()
    gc.collect()  # a graph no longer held (with the collector off, its cycles are still here)
    disk = read_layout(layout_dir)
    graph = og.build_graph(disk.layout)
    if _storable(disk):
        whole = og.WholeGraph(graph)
        st.save_store(path, disk, graph, {k: whole.facts(k) for k in (False, True)}, {}, claimed)


def restore_later(root: Path | str | LayoutDir, cache: bool | None = None,
                  cache_dir: Path | str | None = None,
                  defer: Callable[..., None] | None = None, *,
                  applied: tuple[og.Plan, ApplyReport] | None = None) -> None:
    """After an apply (``applied``: the plan and apply's report), bring the layout's store up to
    date, in a job for ``defer``: row by row if it was current before, else by a rebuild.  No
    store, or a current one, is left alone; a job of this process on its way is told."""
    layout_dir = open_layout(root)
    path = st.store_file_for(layout_dir.path, cache_dir)
    if path is not None and path in _PENDING:
        if applied is not None:
            _APPLIED[path] = applied
        return
    with contextlib.suppress(OSError, og.OcigraphError):
        if not S.caching(cache, os.environ) or path is None or path.stat().st_size == 0:
            return  # (an empty file: a writer's placeholder, no store)
        held = st.open_store(layout_dir, cache_dir, cache)
        if held is not None:  # unchanged after all (an empty plan)
            held.close()
            return
        _storing_job(path, lambda fd: _update(layout_dir, path, fd, applied), defer)


def plan_layout(root: Path | str | LayoutDir, operation: str, refs: Sequence[str],
                policy: og.Policy, *, prune: Prune | None = None,
                reporter: og.Reporter | None = None, cache: bool | None = None,
                cache_dir: Path | str | None = None, store: bool = True,
                defer: Callable[..., None] | None = None) -> Planned:
    """Plan ``operation`` on the layout at ``root`` (a path or an open :class:`LayoutDir`):
    from the store when it describes the layout as it is now, else by reading the layout.
    ``prune``: ``ocigraph prune``'s rules and ``now``, to judge the tags by and plan the
    expired tags' remove with the gc sweep, always on the layout as read.
    ``cache=False`` (or ``OCIGRAPH_NO_CACHE=1``) neither reads nor writes the store;
    ``store=False`` only reads it.  A graph built is stored, in a job for ``defer``."""
    layout_dir = open_layout(root)
    if prune is not None:
        return _read_and_plan(layout_dir, policy, reporter, partial(_prune, *prune, policy))[0]
    from_store = _from_store(layout_dir, operation, refs, policy, cache, cache_dir)
    if isinstance(from_store, Planned):
        return from_store
    planned, disk, whole = _read_and_plan(layout_dir, policy, reporter, lambda _, graph, whole:
                                    og.plan_operation(graph, operation, refs, policy, whole,
                                                      reporter))
    if from_store is not None:  # the layout knew a name the store did not: the store lost it
        _discard(from_store)
    if store and S.caching(cache, os.environ):
        plans = {og.plan_key(operation, refs, policy): planned.plan}
        _store(disk, planned.graph, whole, plans, cache_dir, defer)
    return planned
