"""One measurement, in a process of its own (so peak RSS is this run's): prints one JSON line.

    python -m benchmarks.measure plan-gc LAYOUT [--cache-dir D | --no-cache] [--no-memo]
    python -m benchmarks.measure plan-delete LAYOUT --ref TAG [--cache-dir D] [--no-memo] [--no-store]
    python -m benchmarks.measure apply LAYOUT [--paths-out FILE] [--no-cache]
    python -m benchmarks.measure unlink --paths FILE --root COPY

Phases of a plan (seconds, wall clock, this process):

``import``     importing ocigraph and the adapter (networkx is most of it);
``index``      read_layout minus the listing and the cache load: checks, index.json;
``list``       scan_blobs: listing ``blobs/<alg>/`` and one ``lstat`` per blob;
``recall``     looking for a remembered plan (:mod:`io_adapters.planner`): a hit ends here;
``cache-load`` reading and checking the manifest cache (on the first manifest read);
``read``       the adapter's file reads (``read_blobs``);
``parse``      verifying and parsing what was read, and answering from the cache;
``walk``       the core's breadth-first walk around the reads (edges, nodes seen);
``build``      making the networkx graph;
``close``      the live set (or the deletion closure);
``plan``       ordering the deletions, checks, the plan value;
``cache-save`` writing new cache entries;
``remember``   saving the plan for the next run;

Storing the graph for later deletes (:mod:`io_adapters.store`) is left, as by the ``ocigraph``
command, to a child that outlives the measured process; with ``--store-report FILE`` the child
writes its own time and peak RSS there.

A delete answered from the stored graph has its own phases instead:

``store-open`` checking the layout (oci-layout, index.json's fingerprint, the folder stamps)
               and opening the store;
``view``       resolving the targets and gathering their neighbourhood from the store;
``plan``       the delete planned on that view.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402

import ocigraph as og  # noqa: E402
from io_adapters import background, planner  # noqa: E402
from io_adapters import cache as cache_mod  # noqa: E402
from io_adapters import layout as layout_mod  # noqa: E402
from io_adapters.apply import apply_plan  # noqa: E402
from io_adapters.planner import PlanMemo, plan_tags  # noqa: E402

_T_IMPORTED = time.perf_counter()


class PhaseTimer(og.Reporter):
    """Collects the core's phase hooks (and the adapter's, via :meth:`timed`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[str, float] = {}

    def phase_started(self, phase: str) -> None:
        self._started[phase] = time.perf_counter()

    def phase_finished(self, phase: str) -> None:
        self.seconds[phase] += time.perf_counter() - self._started.pop(phase)

    def timed(self, name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t
        return wrapper


def _instrumented_read(path: str, args: argparse.Namespace, timer: PhaseTimer) -> Any:
    """read_layout, with the listing, the cache load and every adapter read timed apart."""
    real_scan = layout_mod.scan_blobs
    layout_mod.scan_blobs = timer.timed("list", real_scan)  # type: ignore[assignment]
    # the cache file is loaded on the first manifest read, later: its timer stays in place
    cache_mod.ManifestCache.load = timer.timed("cache-load", cache_mod.ManifestCache.load)  # type: ignore[method-assign]
    try:
        t = time.perf_counter()
        disk = layout_mod.read_layout(path, workers=args.workers, cache=not args.no_cache,
                                      cache_dir=args.cache_dir)
        total = time.perf_counter() - t
    finally:
        layout_mod.scan_blobs = real_scan  # type: ignore[assignment]
    timer.seconds["index"] = total - timer.seconds["list"]
    source = disk.layout.manifests
    disk_source = getattr(source, "inner", source)
    disk_source.read_blobs = timer.timed("read", disk_source.read_blobs)
    if hasattr(source, "cache"):
        source.cache.finish_batch = timer.timed("cache-save", source.cache.finish_batch)
    source.read_manifests = timer.timed("read_manifests", source.read_manifests)
    return disk


def _finish(timer: PhaseTimer, extra: dict[str, Any], source: Any) -> dict[str, Any]:
    s = timer.seconds
    s["import"] = _T_IMPORTED - _T0
    rm = s.pop("read_manifests", 0.0)
    # the core's "read" phase = its walk + read_manifests; read_manifests = read + parse + save
    core_read = s.pop("core-read", 0.0)
    s["walk"] = max(core_read - rm, 0.0)
    s["parse"] = max(rm - s.get("read", 0.0) - s.get("cache-save", 0.0) - s.get("cache-load", 0.0),
                     0.0)
    out: dict[str, Any] = {
        "phases": {k: round(v, 4) for k, v in sorted(s.items())},
        "total": round(time.perf_counter() - _T0, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu": round(time.process_time(), 4),
    }
    if hasattr(source, "hits"):
        out["cache_hits"] = source.hits
        out["cache_misses"] = source.misses
    out.update(extra)
    return out


class _CoreTimer(PhaseTimer):
    """The core calls its walk-and-read phase ``read``; keep that apart from the adapter's."""

    def phase_started(self, phase: str) -> None:
        super().phase_started("core-read" if phase == "read" else phase)

    def phase_finished(self, phase: str) -> None:
        super().phase_finished("core-read" if phase == "read" else phase)


def _stored_delete(args: argparse.Namespace, refs: list[str], policy: og.Policy,
                   timer: PhaseTimer) -> dict[str, Any] | None:
    """planner._delete_from_store, with its steps timed apart; ``None`` when there is no
    current store."""
    real_open, real_view = planner.open_store, og.neighbourhood
    planner.open_store = timer.timed("store-open", real_open)  # type: ignore[assignment]
    og.neighbourhood = timer.timed("view", real_view)
    real_plan = og.plan_delete
    og.plan_delete = timer.timed("plan", real_plan)
    try:
        t = time.perf_counter()
        got = planner._delete_from_store(Path(args.layout), refs, policy, not args.no_cache,
                                         args.cache_dir)
        total = time.perf_counter() - t
    finally:
        planner.open_store, og.neighbourhood, og.plan_delete = real_open, real_view, real_plan  # type: ignore[assignment]
    if got is None:
        return None
    s = timer.seconds
    s["store-open"] += total - s["store-open"] - s["view"] - s["plan"]  # the checks before it
    assert got.graph is not None
    return _finish(timer, {"how": "stored", "nodes": got.graph.number_of_nodes(),
                           "edges": got.graph.number_of_edges(),
                           "deletions": len(got.plan.deletions),
                           "index_changes": len(got.plan.index_changes)}, None)


def _timed_job(job: Any, report: str | None) -> Any:
    """``job``, writing how long it took (wall, and peak RSS of the process doing it) to
    ``report`` as a JSON line."""
    def timed() -> None:
        t = time.perf_counter()
        job()
        if report:  # whole or not at all: the suite reads it as soon as it appears
            with open(report + ".tmp", "wb") as f:
                f.write(orjson.dumps({
                    "seconds": round(time.perf_counter() - t, 4),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                }))
            os.replace(report + ".tmp", report)
    return timed


def plan(args: argparse.Namespace) -> dict[str, Any]:
    timer = _CoreTimer()
    operation, refs, policy = ("gc", [], og.Policy()) if args.op == "plan-gc" else \
        ("delete", [args.ref], og.Policy())
    if operation == "delete" and not args.no_store:
        stored = _stored_delete(args, refs, policy, timer)
        if stored is not None:
            return stored
    disk = _instrumented_read(args.layout, args, timer)
    memo = PlanMemo(disk, args.cache_dir, enabled=not (args.no_cache or args.no_memo))
    t = time.perf_counter()
    recalled = memo.recall(operation, refs, policy)
    timer.seconds["recall"] = time.perf_counter() - t
    if recalled is not None:
        p = recalled[0]
        extra: dict[str, Any] = {"how": "remembered"}
    else:
        graph = og.build_graph(disk.layout, timer)
        whole = og.WholeGraph(graph)
        timer.phase_started("close")
        facts = whole.facts(policy.keep_untagged)
        timer.phase_finished("close")
        if operation == "gc":
            p = og.plan_gc(graph, policy, reporter=timer, given=facts)
        else:
            p = og.plan_delete(graph, refs, policy, reporter=timer, given=facts)
        t = time.perf_counter()
        memo.remember(operation, refs, policy, p, plan_tags(graph, p))
        timer.seconds["remember"] = time.perf_counter() - t
        if not args.no_store:  # as the ocigraph command: after the answer, in a child
            planner._store(disk, graph, whole, not args.no_cache, args.cache_dir,
                           defer=lambda job, owns: background.defer(_timed_job(job, args.store_report),
                                                                    owns=owns))
        extra = {"how": "built", "nodes": graph.number_of_nodes(),
                 "edges": graph.number_of_edges(), "store_pending": background.pending()}
    extra.update(deletions=len(p.deletions), index_changes=len(p.index_changes))
    return _finish(timer, extra, disk.layout.manifests)


def apply(args: argparse.Namespace) -> dict[str, Any]:
    disk = layout_mod.read_layout(args.layout, workers=args.workers, cache=not args.no_cache,
                                  cache_dir=args.cache_dir)
    p = og.plan_gc(og.build_graph(disk.layout))
    t = time.perf_counter()
    report = apply_plan(args.layout, p)
    seconds = time.perf_counter() - t
    if args.paths_out:  # relative to the layout: ``unlink --root`` replays them on a copy
        with open(args.paths_out, "w") as f:
            for d in report.deleted:
                alg, hexd = d.split(":", 1)
                f.write(f"blobs/{alg}/{hexd}\n")
    return {"seconds": round(seconds, 4), "deleted": len(report.deleted),
            "index_changes": len(p.index_changes),
            "per_second": round(len(report.deleted) / seconds) if seconds else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def unlink(args: argparse.Namespace) -> dict[str, Any]:
    with open(args.paths) as f:
        paths = [os.path.join(args.root, p) for p in f.read().split()]
    t = time.perf_counter()
    for p in paths:
        os.unlink(p)
    seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 4), "deleted": len(paths),
            "per_second": round(len(paths) / seconds) if seconds else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one ocigraph measurement; prints a JSON line")
    p.add_argument("op", choices=["plan-gc", "plan-delete", "apply", "unlink"])
    p.add_argument("layout", nargs="?")
    p.add_argument("--ref")
    p.add_argument("--cache-dir")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-memo", action="store_true", help="plan even if a plan is remembered")
    p.add_argument("--no-store", action="store_true",
                   help="neither plan a delete from the stored graph nor store one")
    p.add_argument("--store-report", help="where the detached store writer reports its time")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--paths-out")
    p.add_argument("--paths")
    p.add_argument("--root", default=".")
    args = p.parse_args(argv)
    gc.disable()  # as the ocigraph command does
    if args.op in ("plan-gc", "plan-delete"):
        out = plan(args)
    elif args.op == "apply":
        out = apply(args)
    else:
        out = unlink(args)
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    sys.stdout.flush()
    background.run_detached()  # as the ocigraph command: the graph is stored by a child
    os._exit(0)  # as the ocigraph command does: no object-by-object teardown of the graph


if __name__ == "__main__":
    raise SystemExit(main())
