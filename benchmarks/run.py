"""The benchmark suite: one command, a table of figures per layout size.

    python -m benchmarks.run --sizes 10k,100k,1m [--repeat N] [--json out.json]

For each size it generates the layout once (``benchmarks/data/<size>/layout``, reused while the
generator's target and seed match), warms the page cache, then measures whole commands --
``python -m io_adapters ...``, each a process of its own, ``OCIGRAPH_CACHE_DIR`` a temporary
folder (:mod:`benchmarks.proc`; peak RSS is ``ru_maxrss`` from ``wait4``):

* ``floor``: ``benchmarks/floor.py`` (list ``blobs/sha256``, read and parse every reachable
  manifest, nothing else);
* ``cold``: ``plan gc`` and ``gc --dry-run``, each with an empty cache folder (the layout is
  read and its graph built);
* ``store write``: how long the child a cold run leaves behind took to write the store
  (:mod:`io_adapters.store`), from the command's exit until the store's writer lock was free,
  and its peak RSS (the cold time does not include it: the command had answered);
* ``warm``: ``gc --dry-run`` again once that write is done: the plan is answered from the
  store;
* ``stored delete``: ``plan delete`` of three tagged images from the store, the slowest;
* ``delete, store off``: ``plan delete`` of one image with ``OCIGRAPH_NO_CACHE=1`` (the graph
  is built);
* ``apply``: on a copy whose index.json has lost half of its tags, plan a GC (not timed) and
  apply it (timed): deletions per second; and ``unlink``, a plain ``os.unlink`` loop over the
  same files on another copy -- the cost apply cannot go below;
* ``umoci gc`` on a copy, when ``umoci`` is on ``PATH``;
* a phase split of a cold ``plan gc``, a warm ``gc --dry-run`` and a stored ``plan delete``
  (:mod:`benchmarks.phases`; extra runs, not the timed ones).

The code measured is a copy of ``ocigraph/`` and ``io_adapters/`` taken when the run starts
(others may edit the tree meanwhile; the store is keyed by a digest of the code).  Rounds
interleave the measurements and the best of ``--repeat`` is kept (the machine is shared; the
minimum is the least disturbed run).  Ratios are against the floor measured in the same run.
Copies are hard links with index.json copied for real.  Nothing here asserts: figures are
printed (and saved with ``--json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from .generate import SIZES, ensure_layout, parse_size
from .proc import (
    REPO,
    Run,
    Tree,
    best,
    drop_half_the_tags,
    git_describe,
    link_copy,
    run_command,
    run_python,
    snapshot_tree,
    table,
    wait_settled,
    workspace,
)

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
PHASES = ("import", "store", "list", "read", "build", "plan", "claim", "fork", "other")


def ocigraph(tree: Tree, ws: Path, cache: Path | None, *args: str,
             env: dict[str, str] | None = None) -> Run:
    return run_python(tree, ["-m", "io_adapters", *args], ws, cache, env=env)


def fresh(ws: Path, name: str) -> Path:
    d = ws / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    return d


def _summary(runs: list[Run]) -> dict[str, Any]:
    b = best(runs)
    out: dict[str, Any] = {"wall": b.wall, "rss_mb": max(r.rss_mb for r in runs),
                           "cpu": min(r.cpu for r in runs),
                           "walls": [round(r.wall, 3) for r in runs]}
    writes = [r.bg_seconds for r in runs if r.bg_seconds is not None]
    if writes:
        out["store_write"] = min(writes)
        out["store_write_cpu"] = min(r.bg_cpu for r in runs if r.bg_cpu is not None) \
            if any(r.bg_cpu is not None for r in runs) else None
        out["writer_rss_mb"] = max(r.bg_rss_mb or 0.0 for r in runs)
    eofs = [r.eof_after_exit for r in runs if r.eof_after_exit is not None]
    if eofs:
        out["eof_after_exit"] = max(eofs)
    return out


def measure_size(name: str, target: int, args: argparse.Namespace, tree: Tree, ws: Path,
                 log: Any) -> dict[str, Any]:
    base = args.data / name
    layout = base / "layout"
    log(f"[{name}] layout {layout}")
    stats = ensure_layout(layout, target, args.seed)
    log(f"[{name}] {stats.blobs} blobs, {stats.manifests} manifests, "
        f"{stats.index_entries} index.json entries; warming the page cache")
    L = str(layout)
    ocigraph(tree, ws, None, "plan", "gc", L, env={"OCIGRAPH_NO_CACHE": "1"})
    run_python(tree, ["-m", "benchmarks.floor", L], ws, None, with_benchmarks=True)
    wait_settled(layout)
    repeat = args.repeat or (5 if target <= 20_000 else 3 if target <= 200_000 else 1)
    tags = stats.tags_for_delete
    runs: dict[str, list[Run]] = {k: [] for k in ("floor", "cold_plan", "cold_gc", "warm",
                                                  "stored", "nostore")}
    notes: list[str] = []
    for i in range(repeat):
        runs["floor"].append(run_python(tree, ["-m", "benchmarks.floor", L], ws, None,
                                        with_benchmarks=True))
        log(f"[{name}] round {i + 1}/{repeat}: floor {runs['floor'][-1].wall:.2f}s")
        r = ocigraph(tree, ws, fresh(ws, "cache-a"), "plan", "gc", L)
        runs["cold_plan"].append(r)
        log(f"[{name}]   cold plan gc {r.wall:.2f}s, store written {r.bg_seconds or 0:.2f}s later")
        cache = fresh(ws, "cache-b")
        r = ocigraph(tree, ws, cache, "gc", L, "--dry-run")
        runs["cold_gc"].append(r)
        log(f"[{name}]   cold gc --dry-run {r.wall:.2f}s, store written {r.bg_seconds or 0:.2f}s later")
        r = ocigraph(tree, ws, cache, "gc", L, "--dry-run")
        runs["warm"].append(r)
        if r.had_writer:
            notes.append(f"round {i + 1}: the warm run started a store writer (not answered "
                         "from the store)")
        log(f"[{name}]   warm gc --dry-run {r.wall:.2f}s")
        for tag in tags[1:4]:
            r = ocigraph(tree, ws, cache, "plan", "delete", L, tag)
            if r.had_writer:
                notes.append(f"round {i + 1}: plan delete {tag} started a store writer (not "
                             "answered from the store)")
            runs["stored"].append(r)
            log(f"[{name}]   stored plan delete {tag} {r.wall:.2f}s")
        r = ocigraph(tree, ws, None, "plan", "delete", L, tags[0],
                     env={"OCIGRAPH_NO_CACHE": "1"})
        runs["nostore"].append(r)
        log(f"[{name}]   plan delete, store off {r.wall:.2f}s")
    result: dict[str, Any] = {
        "size": name, "blobs": stats.blobs, "manifests": stats.manifests,
        "index_entries": stats.index_entries, "repeat": repeat, "notes": notes,
        "floor": {**_summary(runs["floor"]), "inproc": best(runs["floor"]).json()["seconds"]},
    }
    for key in ("cold_plan", "cold_gc", "warm", "nostore"):
        result[key] = _summary(runs[key])
    # one image's delete must be fast, whichever it is: per round the slowest of three images,
    # then the best round
    per_round = [max(runs["stored"][3 * i:3 * i + 3], key=lambda r: r.wall) for i in range(repeat)]
    result["stored"] = _summary(per_round)
    result["stored"]["cpu"] = min(max(r.cpu for r in runs["stored"][3 * i:3 * i + 3])
                                  for i in range(repeat))
    if not args.skip_phases:
        result["phases"] = measure_phases(name, tree, ws, L, tags[1], log)
    if not args.skip_apply:
        result["apply"] = measure_apply(base, layout, tree, ws, log, name)
    if not args.skip_umoci and shutil.which("umoci"):
        result["umoci"] = measure_umoci(base, layout, ws, log, name, repeat)
    return result


def measure_phases(name: str, tree: Tree, ws: Path, layout: str, tag: str,
                   log: Any) -> dict[str, Any]:
    cache = fresh(ws, "cache-p")
    out: dict[str, Any] = {}
    for kind, args in (("cold plan gc", ["plan", "gc", layout]),
                       ("warm gc --dry-run", ["gc", layout, "--dry-run"]),
                       ("stored plan delete", ["plan", "delete", layout, tag])):
        target = ws / "phases.json"
        target.unlink(missing_ok=True)
        r = run_python(tree, ["-m", "benchmarks.phases", *args], ws, cache,
                       env={"OCIGRAPH_BENCH_PHASES": str(target)}, with_benchmarks=True)
        got = orjson.loads(target.read_bytes())
        got["wall"] = r.wall
        out[kind] = got
        log(f"[{name}]   phases of {kind} ({got.get('how')}): "
            + ", ".join(f"{k} {v:.2f}" for k, v in got["phases"].items()))
    return out


def measure_apply(base: Path, layout: Path, tree: Tree, ws: Path, log: Any,
                  name: str) -> dict[str, Any]:
    work = base / "apply"
    link_copy(layout, work)
    drop_half_the_tags(work)
    paths = ws / "apply-paths.txt"
    run = run_python(tree, ["-m", "benchmarks.measure", "apply", str(work),
                            "--paths-out", str(paths)], ws, None, with_benchmarks=True)
    a = run.json()
    log(f"[{name}]   apply: {a['deleted']} deletions in {a['seconds']:.2f}s")
    shutil.rmtree(work)
    link_copy(layout, work)
    u = run_python(tree, ["-m", "benchmarks.measure", "unlink", "--paths", str(paths),
                          "--root", str(work)], ws, None, with_benchmarks=True).json()
    log(f"[{name}]   unlink loop: {u['deleted']} in {u['seconds']:.2f}s")
    shutil.rmtree(work)
    paths.unlink()
    return {"deleted": a["deleted"], "seconds": a["seconds"], "per_second": a["per_second"],
            "rss_mb": run.rss_mb, "unlink_seconds": u["seconds"],
            "unlink_per_second": u["per_second"]}


def measure_umoci(base: Path, layout: Path, ws: Path, log: Any, name: str,
                  repeat: int) -> dict[str, Any]:
    runs = []
    work = base / "umoci"
    left = 0
    for _ in range(repeat):
        link_copy(layout, work)
        runs.append(run_command(["umoci", "gc", "--layout", str(work)], dict(os.environ), ws))
        log(f"[{name}]   umoci gc {runs[-1].wall:.2f}s")
        left = len(os.listdir(work / "blobs" / "sha256"))
        shutil.rmtree(work)
    b = best(runs)
    return {"wall": b.wall, "rss_mb": b.rss_mb, "blobs_left": left}


# -- report -------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    info = {"python": platform.python_version(), "nproc": str(os.cpu_count()),
            "platform": platform.platform()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        import networkx

        info["networkx"], info["orjson"] = networkx.__version__, orjson.__version__
    except ImportError:
        pass
    if shutil.which("umoci"):
        with_v = subprocess.run(["umoci", "--version"], capture_output=True, text=True)
        info["umoci"] = with_v.stdout.strip().split()[-1] if with_v.stdout.strip() else "?"
    return info


def s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def report(results: list[dict[str, Any]], markdown: bool = False) -> str:
    rows = [["size", "blobs", "floor", "cold plan gc", "cold gc --dry-run", "cold/floor",
             "store write (bg)", "warm gc --dry-run", "warm/cold", "stored delete",
             "delete, store off", "peak RSS MB", "writer RSS MB", "umoci gc", "umoci/cold"]]
    for r in results:
        cp, cg, warm = r["cold_plan"], r["cold_gc"], r["warm"]
        umoci = r.get("umoci", {})
        writes = [x for x in (cp.get("store_write"), cg.get("store_write")) if x is not None]
        rows.append([r["size"], f"{r['blobs']:,}", s(r["floor"]["wall"]), s(cp["wall"]),
                     s(cg["wall"]), ratio(cg["wall"], r["floor"]["wall"]),
                     s(min(writes) if writes else None), s(warm["wall"]),
                     ratio(warm["wall"], cg["wall"]), s(r["stored"]["wall"]),
                     s(r["nostore"]["wall"]),
                     f"{max(cp['rss_mb'], cg['rss_mb'], r['nostore']['rss_mb']):,.0f}",
                     f"{max(cp.get('writer_rss_mb', 0), cg.get('writer_rss_mb', 0)):,.0f}",
                     s(umoci.get("wall")), ratio(umoci.get("wall"), cg["wall"])])
    out = ["Wall-clock seconds per process (interpreter start and imports included), best of "
           "the rounds; stored delete: the slowest of three images per round, best round.",
           table(rows, markdown), ""]
    rows = [["size", "floor", "cold plan gc", "cold gc --dry-run", "store write (bg)",
             "warm gc --dry-run", "stored delete", "delete, store off"]]
    for r in results:
        writes = [x for x in (r["cold_plan"].get("store_write_cpu"),
                              r["cold_gc"].get("store_write_cpu")) if x is not None]
        rows.append([r["size"], s(r["floor"]["cpu"]), s(r["cold_plan"]["cpu"]),
                     s(r["cold_gc"]["cpu"]), s(min(writes) if writes else None),
                     s(r["warm"]["cpu"]), s(r["stored"]["cpu"]), s(r["nostore"]["cpu"])])
    out += ["CPU seconds (user + system) of the same processes, best of the rounds: steadier "
            "than wall-clock time when the machine is shared.", table(rows, markdown), ""]
    notes = [f"{r['size']}: {n}" for r in results for n in r.get("notes", [])]
    if notes:
        out += ["Notes:", *notes, ""]
    eof = [(r["size"], max(r[k].get("eof_after_exit", 0.0) for k in ("cold_plan", "cold_gc")),
            r["cold_gc"].get("store_write")) for r in results]
    out += ["Detached writer and the caller's pipes: stdout/stderr reached end-of-file "
            + "; ".join(f"{size}: {e * 1000:+.0f} ms after the cold command exited (its store "
                        f"write went on {s(w)} s)" for size, e, w in eof), ""]

    rows = [["run", *PHASES, "total", "answered"]]
    for r in results:
        for kind, got in r.get("phases", {}).items():
            ph = got["phases"]
            rows.append([f"{kind} {r['size']}", *(s(ph.get(p)) for p in PHASES),
                         s(got["total"]), str(got.get("how"))])
    if len(rows) > 1:
        out += ["Where a command's time goes (benchmarks.phases, seconds; one extra run each).",
                table(rows, markdown), ""]

    rows = [["size", "deletions", "apply s", "deletions/s", "unlink loop s", "unlink/s",
             "apply/unlink"]]
    for r in results:
        a = r.get("apply")
        if a:
            rows.append([r["size"], f"{a['deleted']:,}", s(a["seconds"]), f"{a['per_second']:,}",
                         s(a["unlink_seconds"]), f"{a['unlink_per_second']:,}",
                         ratio(a["seconds"], a["unlink_seconds"])])
    if len(rows) > 1:
        out += ["Apply (GC after untagging half the tags) against a bare os.unlink loop.",
                table(rows, markdown), ""]
    out += ["Load average (1, 5, 15 min) before / after each size: " + "; ".join(
        f"{r['size']}: {r['loadavg'][:3]} / {r['loadavg'][3:]}" for r in results), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ocigraph benchmark suite")
    p.add_argument("--sizes", default="10k,100k", help="comma-separated: 10k,100k,1m or numbers")
    p.add_argument("--repeat", type=int, default=0, help="rounds per size (default: 5/3/1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--tree", type=Path, default=REPO,
                   help="the code to measure (a folder with ocigraph/ and io_adapters/)")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--skip-apply", action="store_true")
    p.add_argument("--skip-umoci", action="store_true")
    p.add_argument("--skip-phases", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.data = args.data.resolve()

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    ws = workspace("ocigraph-bench-")
    try:
        tree = snapshot_tree(args.tree.resolve(), ws / "code", "ocigraph", ws)
        log(f"measuring a copy of {args.tree} ({git_describe(args.tree)}): {tree.where(ws)}")
        results = []
        for name in args.sizes.split(","):
            name = name.strip().lower()
            target = SIZES.get(name) or parse_size(name)
            load_before = os.getloadavg()
            started = time.monotonic()
            result = measure_size(name, target, args, tree, ws, log)
            result["loadavg"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
            result["minutes"] = round((time.monotonic() - started) / 60, 1)
            results.append(result)
            if args.json:  # after every size: a long run keeps what it measured
                args.json.write_bytes(orjson.dumps(
                    {"machine": machine(), "code": git_describe(args.tree), "results": results},
                    option=orjson.OPT_INDENT_2))
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    info = machine()
    print(f"machine: {info.get('cpu', '?')}, {info['nproc']} CPUs, Python {info['python']}, "
          f"networkx {info.get('networkx', '?')}, orjson {info.get('orjson', '?')}, "
          f"umoci {info.get('umoci', '-')}; code {git_describe(args.tree)}")
    print(report(results, args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
