"""SIGKILL an applying ``ocigraph gc`` at many instants of a large apply, and check each wreck.

``python benchmarks/crash_kill.py`` (defaults: a plan of about 1,040 deletions, 215 kill points)

For every kill point: copy a fresh layout, run a GC in a child process that SIGKILLs itself at
that point (``tests/hostile/killpoints.py``: an audit hook, no hook in production code), then

1. index.json parses, every blob reachable from it is present, and every blob that was live
   before the run (by an independent model written with ``json`` + ``hashlib``) is present;
2. run GC again to completion: the blob set and index.json bytes equal those of one
   uninterrupted run on a copy, and no temp file is left.

Kill points: before the lock, before the temp index.json is created, half-way through writing
it, after writing it but before the rename, after the rename but before the folder fsync, and
before the N-th move of a blob into the quarantine and before the N-th unlink of its purge,
for N spread evenly over the whole plan.  Exit status 1 if any point
fails.  ``--json`` writes every point's result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests"),
                str(Path(__file__).resolve().parents[1])]

from hostile.killpoints import (  # noqa: E402
    NAMED_POINTS,
    check_valid_layout,
    compare_with_reference,
    make_workload,
    run_child,
    run_gc_in_process,
)
from hostile.layoutgen import present_blobs  # noqa: E402


def kill_points(deletions: int, unlink_points: int) -> list[str]:
    """The named points, then ``unlink_points`` counts spread over the plan, each both as a
    move into the quarantine (``move:N``) and as an unlink of its purge (``unlink:N``)."""
    step = deletions / unlink_points
    ns = sorted({1, 2, deletions} | {max(1, round(step * k)) for k in range(1, unlink_points)})
    return [*NAMED_POINTS, *(f"{kind}:{n}" for kind in ("move", "unlink") for n in ns)]


def run_point(point: str, template: Path, reference: Path, live: frozenset[str], work: Path,
              recover_via: str) -> dict[str, object]:
    root = work / point.replace(":", "_")
    shutil.copytree(template, root)
    started = time.monotonic()
    proc = run_child(root, point)
    result: dict[str, object] = {"point": point, "returncode": proc.returncode}
    problems: list[str] = []
    if proc.returncode != -signal.SIGKILL:
        problems.append(f"child was not killed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    problems += [f"after kill: {p}" for p in check_valid_layout(root, live)]
    result["deleted_before_kill"] = len(present_blobs(template)) - len(present_blobs(root))
    try:
        if recover_via == "cli":
            again = run_child(root, via="cli")
            if again.returncode != 0:
                problems.append(f"recovery gc failed: {again.stderr.strip()}")
        else:
            run_gc_in_process(root)
    except Exception as exc:  # a failing recovery is a finding, not a crash of this script
        problems.append(f"recovery gc raised {type(exc).__name__}: {exc}")
    problems += [f"after recovery: {p}" for p in compare_with_reference(root, reference)]
    result["problems"] = problems
    result["seconds"] = round(time.monotonic() - started, 3)
    shutil.rmtree(root, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--garbage-images", type=int, default=170,
                    help="garbage images (6 deletions each, plus 20 dangling blobs)")
    ap.add_argument("--live-images", type=int, default=50)
    ap.add_argument("--unlink-points", type=int, default=105,
                    help="counts spread over the plan, each a move and an unlink kill point "
                         "(5 named points are added)")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="kill points run in parallel")
    ap.add_argument("--recover-via", choices=("adapter", "cli"), default="adapter")
    ap.add_argument("--json", type=Path, default=None, help="write every point's result here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where to build the layouts (default: the system temp folder; "
                         "/dev/shm is much faster)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ocigraph-crash-", dir=args.workdir))
    t0 = time.monotonic()
    w = make_workload(work, args.garbage_images, args.live_images)
    template, reference, live, deletions = w.template, w.reference, w.live, w.deletions
    points = kill_points(deletions, args.unlink_points)
    print(f"layout: {len(present_blobs(template))} blobs, {len(live)} live, plan deletes "
          f"{deletions}; {len(points)} kill points, {args.jobs} at a time", flush=True)

    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_point, p, template, reference, live, work, args.recover_via)
                   for p in points]
        for i, fut in enumerate(futures, 1):
            r = fut.result()
            results.append(r)
            mark = "ok" if not r["problems"] else "FAIL"
            print(f"[{i:3}/{len(points)}] {r['point']:<16} {mark:<4} killed after "
                  f"{r['deleted_before_kill']:>5} deletions  {r['seconds']:.2f}s", flush=True)
            for p in r["problems"]:  # type: ignore[attr-defined]
                print(f"      {p}", flush=True)

    failed = [r for r in results if r["problems"]]
    print(f"{len(points) - len(failed)}/{len(points)} kill points ok over a plan of {deletions} "
          f"deletions in {time.monotonic() - t0:.1f}s")
    if args.json is not None:
        args.json.write_text(json.dumps({"deletions": deletions, "points": results}, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
