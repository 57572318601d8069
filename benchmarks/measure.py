"""Apply against a bare unlink loop, each in a process of its own; prints one JSON line.

    python -m benchmarks.measure apply COPY [--paths-out FILE]
    python -m benchmarks.measure unlink --paths FILE --root COPY2

``apply`` plans a GC of ``COPY`` as the command line does (``plan_layout``, store off; not
timed), then times ``apply_plan`` alone: deletions per second.  With ``--paths-out`` it writes
the paths it deleted, relative to the layout, so that ``unlink`` can replay them with a plain
``os.unlink`` loop on an identical copy -- the cost apply cannot go below.

Whole commands (``gc --dry-run``, ``plan delete``, ...) are measured by running
``python -m io_adapters`` itself (:mod:`benchmarks.proc`); :mod:`benchmarks.phases` splits one.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from typing import Any

import orjson


def apply(args: argparse.Namespace) -> dict[str, Any]:
    import ocigraph as og
    from io_adapters.apply import apply_plan
    from io_adapters.planner import plan_layout

    planned = plan_layout(args.layout, "gc", [], og.Policy.preset("default"), cache=False)
    p = planned.plan
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
    p = argparse.ArgumentParser(description="apply, or a bare unlink loop; prints a JSON line")
    p.add_argument("op", choices=["apply", "unlink"])
    p.add_argument("layout", nargs="?")
    p.add_argument("--paths-out")
    p.add_argument("--paths")
    p.add_argument("--root", default=".")
    args = p.parse_args(argv)
    gc.disable()  # as the ocigraph command does
    out = apply(args) if args.op == "apply" else unlink(args)
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    sys.stdout.flush()
    os._exit(0)  # as the ocigraph command does: no object-by-object teardown of the graph


if __name__ == "__main__":
    raise SystemExit(main())
