"""The benchmark suite: one command, a table of figures per layout size.

    python -m benchmarks.run --sizes 10k,100k,1m [--repeat N] [--json out.json]

For each size it generates the layout once (``benchmarks/data/<size>/layout``, reused while the
generator's target and seed match), warms the page cache, then measures -- every measurement in
a process of its own, so peak RSS is that run's (``ru_maxrss`` from ``wait4``):

* ``floor``: ``benchmarks/floor.py`` (list ``blobs/sha256``, read and parse every reachable
  manifest, nothing else);
* ``cold``: ``plan gc`` with an empty cache directory (so it includes writing the cache), with
  its phase split; ``nocache``: the same with the cache off;
* ``warm``: ``plan gc`` again with the cache the cold run left -- nothing changed, so the plan
  the cold run made is recalled (:mod:`io_adapters.planner`);
* ``rebuilt``: the same with the plan memo off: the graph is rebuilt from the manifest cache;
* ``delete``: ``plan delete`` of one tagged image, manifest cache warm, plan memo off, the
  stored graph not used (the graph is built: the first delete on a layout just changed);
* ``stored``: ``plan delete`` of three other images from the graph the cold run stored
  (:mod:`io_adapters.store`), the slowest of them; and how long the child the cold run left
  behind took to store it (the cold time does not include it: the command had answered);
* ``apply``: on a copy whose index.json has lost half of its tags, plan a GC (not timed) and
  apply it (timed): deletions per second; and ``unlink``, a plain ``os.unlink`` loop over the
  same files on another copy -- the cost apply cannot go below;
* ``umoci gc`` on a copy, when ``umoci`` is on ``PATH``.

Rounds interleave floor, cold, warm and delete, and the best of ``--repeat`` runs is kept
(machines are noisy; the minimum is the least disturbed run).  Ratios are against the floor
measured in the same run.  Copies are hard links (a real copy of a million small files takes
many minutes here) with index.json copied for real: unlinking a hard link does not free the
inode, so apply, unlink and umoci all delete a little cheaper than on a real store, alike.
Nothing here asserts: figures are printed (and saved with ``--json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from io_adapters.store import SETTLE_NS, wait_for_writer

from .generate import SIZES, ensure_layout, parse_size

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PHASES = ("import", "index", "list", "recall", "cache-load", "read", "parse", "walk", "build",
          "close", "plan", "cache-save", "remember", "store-open", "view")


@dataclass
class Run:
    wall: float
    rss_mb: float
    out: dict[str, Any] = field(default_factory=dict)


def child(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run ``cmd``; its wall time, peak RSS (from ``wait4``) and, if it printed one, its JSON."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=full_env, cwd=cwd)
        assert proc.stdout is not None
        data = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                               f"{err.read().decode(errors='replace')[-2000:]}")
    out: dict[str, Any] = {}
    text = data.decode(errors="replace").strip().splitlines()
    if text and text[-1].startswith("{"):
        out = orjson.loads(text[-1])
    return Run(wall, usage.ru_maxrss / 1024, out)


def py(*args: str) -> list[str]:
    return [sys.executable, *args]


def link_copy(src: Path, dst: Path) -> None:
    """A copy of a layout made of hard links, except index.json (rewritten by apply)."""
    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    (dst / "index.json").unlink()
    shutil.copyfile(src / "index.json", dst / "index.json")


def drop_half_the_tags(root: Path) -> None:
    """Untag every other tagged entry of index.json: a GC with many deletions."""
    doc = orjson.loads((root / "index.json").read_bytes())
    tagged = 0
    for entry in doc["manifests"]:
        ann = entry.get("annotations") or {}
        if "org.opencontainers.image.ref.name" in ann:
            tagged += 1
            if tagged % 2 == 0:
                del ann["org.opencontainers.image.ref.name"]
                if not ann:
                    entry.pop("annotations")
    (root / "index.json").write_bytes(orjson.dumps(doc))


def warm_page_cache(root: Path) -> None:
    """One unrecorded run of ocigraph (no cache) and of the floor: afterwards the blobs both
    read, and every inode, are in the page cache, as they are on a store in daily use."""
    child(py("-m", "benchmarks.measure", "plan-gc", str(root), "--no-cache"))
    child(py("-m", "benchmarks.floor", str(root)))


def best(runs: list[Run], key: str = "wall") -> Run:
    return min(runs, key=lambda r: r.wall if key == "wall" else r.out[key])


def measure_size(name: str, target: int, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    base = args.data / name
    layout = base / "layout"
    log(f"[{name}] layout {layout}")
    stats = ensure_layout(layout, target, args.seed)
    log(f"[{name}] {stats.blobs} blobs, {stats.manifests} manifests, "
        f"{stats.index_entries} index.json entries; warming the page cache")
    warm_page_cache(layout)
    # a layout changed less than SETTLE_NS ago is not stored (io_adapters.store): a layout
    # just generated waits out those seconds, as one in daily use has long since
    newest = max(os.lstat(p).st_mtime_ns for p in (layout / "blobs", layout / "blobs" / "sha256"))
    time.sleep(max(0.0, (newest + SETTLE_NS - time.time_ns()) / 1e9 + 0.1))
    repeat = args.repeat or (5 if target <= 20_000 else 3 if target <= 200_000 else 1)
    ref = stats.tags_for_delete[0]
    floors: list[Run] = []
    colds: list[Run] = []
    warms: list[Run] = []
    rebuilts: list[Run] = []
    deletes: list[Run] = []
    stored: list[Run] = []
    writes: list[dict[str, float]] = []
    nocaches: list[Run] = []
    for i in range(repeat):
        with tempfile.TemporaryDirectory(prefix="ocigraph-bench-cache-") as cache_dir:
            floors.append(child(py("-m", "benchmarks.floor", str(layout))))
            log(f"[{name}] round {i + 1}/{repeat}: floor {floors[-1].wall:.2f}s")
            report_file = Path(cache_dir) / "store-report.json"
            colds.append(child(py("-m", "benchmarks.measure", "plan-gc", str(layout),
                                  "--cache-dir", cache_dir, "--store-report", str(report_file))))
            log(f"[{name}]   cold {colds[-1].wall:.2f}s")
            # the graph is stored by a child the cold run left behind: let it finish first (it
            # lets go of the writer's lock, then reports)
            if colds[-1].out.get("store_pending"):
                wait_for_writer(layout, cache_dir)
                deadline = time.monotonic() + 60
                while not report_file.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if report_file.exists():
                    writes.append(orjson.loads(report_file.read_bytes()))
                    log(f"[{name}]   graph stored in the background: {writes[-1]['seconds']:.2f}s")
            warms.append(child(py("-m", "benchmarks.measure", "plan-gc", str(layout),
                                  "--cache-dir", cache_dir)))
            log(f"[{name}]   warm (plan recalled) {warms[-1].wall:.2f}s")
            rebuilts.append(child(py("-m", "benchmarks.measure", "plan-gc", str(layout),
                                     "--cache-dir", cache_dir, "--no-memo")))
            log(f"[{name}]   warm (graph rebuilt from the manifest cache) {rebuilts[-1].wall:.2f}s")
            # --no-memo: a delete is measured as the first of its kind, never recalled
            deletes.append(child(py("-m", "benchmarks.measure", "plan-delete", str(layout),
                                    "--ref", ref, "--cache-dir", cache_dir, "--no-memo",
                                    "--no-store")))
            log(f"[{name}]   plan delete (manifest cache warm, graph built) {deletes[-1].wall:.2f}s")
            for other in stats.tags_for_delete[1:4]:  # from the stored graph, three images
                stored.append(child(py("-m", "benchmarks.measure", "plan-delete", str(layout),
                                       "--ref", other, "--cache-dir", cache_dir, "--no-memo")))
                log(f"[{name}]   plan delete (from the stored graph: {stored[-1].out.get('how')}, "
                    f"{stored[-1].out.get('nodes')} nodes in view) {stored[-1].wall:.2f}s")
        if not args.skip_nocache:
            nocaches.append(child(py("-m", "benchmarks.measure", "plan-gc", str(layout),
                                     "--no-cache")))
            log(f"[{name}]   cold, cache off {nocaches[-1].wall:.2f}s")
    result: dict[str, Any] = {
        "size": name, "blobs": stats.blobs, "manifests": stats.manifests,
        "index_entries": stats.index_entries, "repeat": repeat,
        "floor": {"wall": best(floors).wall, "inproc": best(floors).out["seconds"],
                  "rss_mb": best(floors).rss_mb, "manifests": best(floors).out["manifests"]},
    }
    if writes:
        result["store_write"] = {"seconds": min(w["seconds"] for w in writes),
                                 "rss_mb": max(w["peak_rss_mb"] for w in writes)}
    if stored:  # the slowest of them: one image's delete must be fast, whichever it is
        worst = max(stored, key=lambda r: r.wall)
        result["stored"] = {"wall": worst.wall, "inproc": worst.out["total"],
                            "rss_mb": worst.rss_mb, "phases": worst.out["phases"],
                            "how": [r.out.get("how") for r in stored],
                            "view_nodes": [r.out.get("nodes") for r in stored],
                            "deletions": worst.out.get("deletions")}
    for key, runs in (("cold", colds), ("warm", warms), ("rebuilt", rebuilts),
                      ("delete", deletes), ("nocache", nocaches)):
        if runs:
            b = best(runs)
            result[key] = {"wall": b.wall, "inproc": b.out["total"], "cpu": b.out["cpu"],
                           "rss_mb": b.rss_mb,
                           "phases": b.out["phases"], "deletions": b.out["deletions"],
                           "remembered": b.out.get("remembered"),
                           "nodes": b.out.get("nodes"), "edges": b.out.get("edges"),
                           "cache_hits": b.out.get("cache_hits"),
                           "max_rss_mb": max(r.rss_mb for r in runs)}
    if not args.skip_apply:
        result["apply"] = measure_apply(base, layout, log, name)
    if not args.skip_umoci and shutil.which("umoci"):
        result["umoci"] = measure_umoci(base, layout, log, name, repeat)
    return result


def measure_apply(base: Path, layout: Path, log: Any, name: str) -> dict[str, Any]:
    work = base / "apply"
    link_copy(layout, work)
    drop_half_the_tags(work)
    paths = base / "apply-paths.txt"
    run = child(py("-m", "benchmarks.measure", "apply", str(work), "--no-cache",
                   "--paths-out", str(paths)))
    log(f"[{name}]   apply: {run.out['deleted']} deletions in {run.out['seconds']:.2f}s")
    shutil.rmtree(work)
    link_copy(layout, work)
    unlink = child(py("-m", "benchmarks.measure", "unlink", "--paths", str(paths),
                      "--root", str(work)))
    log(f"[{name}]   unlink loop: {unlink.out['deleted']} in {unlink.out['seconds']:.2f}s")
    shutil.rmtree(work)
    paths.unlink()
    return {"deleted": run.out["deleted"], "seconds": run.out["seconds"],
            "per_second": run.out["per_second"], "rss_mb": run.rss_mb,
            "unlink_seconds": unlink.out["seconds"], "unlink_per_second": unlink.out["per_second"]}


def measure_umoci(base: Path, layout: Path, log: Any, name: str, repeat: int) -> dict[str, Any]:
    runs = []
    work = base / "umoci"
    for _ in range(repeat):
        link_copy(layout, work)
        runs.append(child(["umoci", "gc", "--layout", str(work)]))
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
        info["lscpu"] = "\n".join(lscpu.splitlines()[:10])
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
    return info


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(results: list[dict[str, Any]]) -> str:
    def s(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if not a or not b else f"{a / b:.2f}x"

    rows = [["size", "blobs", "floor s", "cold s", "cold/floor", "warm s", "warm/cold",
             "rebuilt s", "rebuilt/cold", "delete s", "stored delete s", "nocache s",
             "peak RSS MB", "umoci s", "umoci/cold"]]
    for r in results:
        cold, warm, rebuilt = r.get("cold", {}), r.get("warm", {}), r.get("rebuilt", {})
        umoci = r.get("umoci", {})
        rows.append([r["size"], str(r["blobs"]), s(r["floor"]["wall"]), s(cold.get("wall")),
                     ratio(cold.get("wall"), r["floor"]["wall"]), s(warm.get("wall")),
                     ratio(warm.get("wall"), cold.get("wall")), s(rebuilt.get("wall")),
                     ratio(rebuilt.get("wall"), cold.get("wall")),
                     s(r.get("delete", {}).get("wall")),
                     s(r.get("stored", {}).get("wall")),
                     s(r.get("nocache", {}).get("wall")),
                     f"{max(cold.get('max_rss_mb', 0), warm.get('max_rss_mb', 0), r.get('nocache', {}).get('max_rss_mb', 0)):.0f}",
                     s(umoci.get("wall")), ratio(umoci.get("wall"), cold.get("wall"))])
    out = ["Wall-clock seconds per process (interpreter start and imports included), best of "
           "the rounds.  warm: the same gc again, nothing changed (the plan is recalled); "
           "rebuilt: the same with the plan memo off (graph rebuilt from the manifest cache); "
           "delete: plan delete of one image, manifest cache warm, memo off, graph built; "
           "stored delete: plan delete of another image from the graph the cold run stored "
           "(the slowest of three images).",
           _table(rows), ""]
    rows = [["size", "store write s (background)", "writer peak RSS MB"]]
    for r in results:
        w = r.get("store_write")
        if w:
            rows.append([r["size"], s(w["seconds"]), f"{w['rss_mb']:.0f}"])
    if len(rows) > 1:
        out += ["Storing the graph for later deletes, done by a child the cold run leaves behind "
                "(not part of the cold time: the command has answered by then).", _table(rows), ""]
    out += ["Load average (1, 5, 15 min) before / after each size: " + "; ".join(
        f"{r['size']}: {r['loadavg'][:3]} / {r['loadavg'][3:]}" for r in results if "loadavg" in r), ""]

    rows = [["size", "in-process s: floor", "cold", "cold/floor", "warm", "warm/cold"]]
    for r in results:
        cold, warm = r.get("cold", {}), r.get("warm", {})
        rows.append([r["size"], s(r["floor"]["inproc"]), s(cold.get("inproc")),
                     ratio(cold.get("inproc"), r["floor"]["inproc"]), s(warm.get("inproc")),
                     ratio(warm.get("inproc"), cold.get("inproc"))])
    out += ["The same, timed inside the process (after interpreter start).", _table(rows), ""]

    for kind in ("cold", "warm", "rebuilt", "delete", "stored", "nocache"):
        rows = [["size", *PHASES]]
        for r in results:
            if kind in r:
                ph = r[kind]["phases"]
                rows.append([r["size"], *(s(ph.get(p, 0.0)) for p in PHASES)])
        if len(rows) > 1:
            out += [f"Phases of the best {kind} run (seconds).", _table(rows), ""]

    rows = [["size", "deletions", "apply s", "deletions/s", "unlink loop s", "unlink/s", "apply/unlink"]]
    for r in results:
        a = r.get("apply")
        if a:
            rows.append([r["size"], str(a["deleted"]), s(a["seconds"]), str(a["per_second"]),
                         s(a["unlink_seconds"]), str(a["unlink_per_second"]),
                         ratio(a["seconds"], a["unlink_seconds"])])
    if len(rows) > 1:
        out += ["Apply (GC after untagging half the tags) against a bare os.unlink loop.",
                _table(rows), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ocigraph benchmark suite")
    p.add_argument("--sizes", default="10k,100k", help="comma-separated: 10k,100k,1m or numbers")
    p.add_argument("--repeat", type=int, default=0, help="rounds per size (default: 5/3/1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--skip-apply", action="store_true")
    p.add_argument("--skip-umoci", action="store_true")
    p.add_argument("--skip-nocache", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    results = []
    for name in args.sizes.split(","):
        name = name.strip().lower()
        target = SIZES.get(name) or parse_size(name)
        load_before = os.getloadavg()
        started = time.monotonic()
        result = measure_size(name, target, args, log)
        result["loadavg"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
        result["minutes"] = round((time.monotonic() - started) / 60, 1)
        results.append(result)
        if args.json:  # after every size: a long run keeps what it measured
            args.json.write_bytes(orjson.dumps({"machine": machine(), "results": results},
                                               option=orjson.OPT_INDENT_2))
    info = machine()
    print(f"machine: {info.get('cpu', '?')}, {info['nproc']} CPUs, Python {info['python']}, "
          f"networkx {info.get('networkx', '?')}, orjson {info.get('orjson', '?')}")
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
