"""Before/after: the same commands on the same layouts, with two code trees, alternately.

    git -C . worktree add /tmp/og-before fea36ec          # the code before, read-only
    python -m benchmarks.compare --before /tmp/og-before --sizes 100k,1m
    python -m benchmarks.compare --from-json a.json b.json      # pool saved runs' rounds

Each tree is copied (``ocigraph/``, ``io_adapters/``) when the run starts and run as
``python -m io_adapters ...`` with ``PYTHONPATH`` = that copy and a temporary folder as the
working directory, so each command imports that tree's code: the run prints
``io_adapters.__file__`` and ``ocigraph.__file__`` as each tree's commands see them, and
stops if either lies outside its tree.  ``--after`` defaults to this checkout.

Per size, per round, for each tree (the order alternates round by round), with an empty cache
folder (``OCIGRAPH_CACHE_DIR``) of its own:

1. ``cold``: ``gc LAYOUT --dry-run``; **store write after cold gc**: the detached child it
   leaves behind, from the command's exit until the writer's lock in the cache folder is free
   (:mod:`benchmarks.proc`);
2. ``warm``: ``gc LAYOUT --dry-run`` again;
3. ``stored delete``: ``plan delete LAYOUT TAG`` for three tagged images, the slowest;
4. on a hard-linked copy of the layout (first ``--yes-rounds`` rounds): a cold
   ``gc --dry-run`` to fill the cache (not reported), then ``gc COPY --yes`` (timed), then
   **store write after gc --yes**: the background work that brings the store up to date
   (it waits for the folders to settle, 2 s, in both trees), and a ``gc COPY --dry-run``
   after it (``warm after apply``);
5. with ``--apply`` (the same rounds): ``apply_plan`` alone on another copy whose index.json
   lost half of its tags (:mod:`benchmarks.measure`; the plan is made first, not timed).
   The copy is of hard links (``--apply``), where an unlink only drops a name, or of files
   (``--apply files``), where it frees the blob as it does in a real layout.

A round in which the layout's ctimes changed (another process hard-linking or touching it) is
noted: the old code's remembered plans check every manifest's ctime, and miss then.

Best of the rounds for times, the largest for peak RSS.  Ratios are after/before.  The
acceptance bar printed at the end: nothing worse by more than 10%, and a stored delete at 1m
under 1 s.  Also, once per size with the "after" tree, ``sh -c "python -m io_adapters gc L
--dry-run | cat"``: the pipeline must end when the command does, not when its background
writer does.
"""

from __future__ import annotations

import argparse
import os
import shlex
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
from .run import fresh, machine, ocigraph

HERE = Path(__file__).resolve().parent

#: (key, label, lower is better: all of them)
ROWS = (
    ("cold", "cold gc --dry-run s"),
    ("warm", "warm gc --dry-run s"),
    ("stored", "stored plan delete s (slowest of 3)"),
    ("rss", "peak RSS MB (cold)"),
    ("write_cold", "store write after cold gc s (bg)"),
    ("end_to_end", "cold gc + its store write, start to done s"),
    ("writer_rss", "store writer peak RSS MB"),
    ("yes", "gc --yes s (store filled)"),
    ("write_yes", "store write after gc --yes s (bg)"),
    ("warm_after_yes", "gc --dry-run after gc --yes s"),
    ("apply", "apply s (benchmarks.measure, half the tags dropped)"),
)
#: rows the acceptance bar checks
CHECKED = ("cold", "warm", "stored", "rss", "write_cold", "write_yes", "apply")


def _ctimes(layout: Path) -> list[int]:
    """The ctimes of index.json and a few blobs: they change when another process hard-links
    (``cp -al``) or touches the layout -- which makes the old code's remembered plans miss
    (it checks every manifest's ctime), so a round where they changed is noted."""
    out = [os.lstat(layout / "index.json").st_ctime_ns]
    with os.scandir(layout / "blobs" / "sha256") as it:
        for _, e in zip(range(3), it, strict=False):
            out.append(e.stat(follow_symlinks=False).st_ctime_ns)
    return out


def round_for(tree: Tree, ws: Path, layout: Path, base: Path, tags: list[str], yes: bool,
              log: Any, label: str, apply: str | None = None) -> dict[str, Any]:
    """One round of one tree: ``{key: wall seconds, key_cpu: CPU seconds, ...}``."""
    L = str(layout)
    out: dict[str, Any] = {"notes": []}
    ctimes = _ctimes(layout)
    cache = fresh(ws, f"cache-{tree.name}")
    cold = ocigraph(tree, ws, cache, "gc", L, "--dry-run")
    out["cold"], out["cold_cpu"], out["rss"] = cold.wall, cold.cpu, cold.rss_mb
    out["write_cold"], out["write_cold_cpu"] = cold.bg_seconds, cold.bg_cpu
    out["writer_rss"] = cold.bg_rss_mb
    out["eof"] = cold.eof_after_exit
    # what each tree leaves in the cache folder shows which code ran: before, a manifest
    # cache (.cache), the graph (.graph) and plan files; after, one store (.store)
    out["cache_files"] = sorted({"".join(p.suffixes) or p.name for p in cache.iterdir()})
    log(f"{label} {tree.name}: cold {cold.wall:.2f}s (CPU {cold.cpu:.2f}s, {cold.rss_mb:.0f} MB), "
        f"store written {cold.bg_seconds or 0:.2f}s after the answer (CPU {cold.bg_cpu or 0:.2f}s); "
        f"cache folder: {', '.join(out['cache_files'])}")
    warm = ocigraph(tree, ws, cache, "gc", L, "--dry-run")
    out["warm"], out["warm_cpu"] = warm.wall, warm.cpu
    if warm.had_writer:
        out["notes"].append("warm gc started a store writer")
    stored: list[Run] = []
    for tag in tags[1:4]:
        stored.append(ocigraph(tree, ws, cache, "plan", "delete", L, tag))
        if stored[-1].had_writer:
            out["notes"].append(f"plan delete {tag} started a store writer")
    out["stored"] = max(r.wall for r in stored)
    out["stored_cpu"] = max(r.cpu for r in stored)
    log(f"{label} {tree.name}: warm {warm.wall:.2f}s (CPU {warm.cpu:.2f}s), stored deletes "
        + ", ".join(f"{r.wall:.2f}s (CPU {r.cpu:.2f}s)" for r in stored))
    if _ctimes(layout) != ctimes:
        out["notes"].append(f"round {label.split()[-1]}: the layout's ctimes changed during the "
                            "round (another process linked or touched it)")
        log(f"{label} {tree.name}: NOTE the layout's ctimes changed during the round")
    if yes:
        copy = base / f"copy-{tree.name}"
        link_copy(layout, copy)
        wait_settled(copy)
        cache2 = fresh(ws, f"cache-{tree.name}-copy")
        prime = ocigraph(tree, ws, cache2, "gc", str(copy), "--dry-run")
        r = ocigraph(tree, ws, cache2, "gc", str(copy), "--yes")
        out["yes"], out["yes_cpu"] = r.wall, r.cpu
        out["write_yes"], out["write_yes_cpu"] = r.bg_seconds, r.bg_cpu
        after = ocigraph(tree, ws, cache2, "gc", str(copy), "--dry-run")
        out["warm_after_yes"], out["warm_after_yes_cpu"] = after.wall, after.cpu
        if after.had_writer:
            out["notes"].append("gc --dry-run after gc --yes started a store writer")
        log(f"{label} {tree.name}: copy: cold {prime.wall:.2f}s, gc --yes {r.wall:.2f}s (CPU "
            f"{r.cpu:.2f}s), store brought up to date {r.bg_seconds or 0:.2f}s after the answer "
            f"(CPU {r.bg_cpu or 0:.2f}s), gc --dry-run then {after.wall:.2f}s (CPU {after.cpu:.2f}s)")
        shutil.rmtree(copy)
        shutil.rmtree(cache2)
    if apply:  # apply_plan alone, timed in-process (the plan is made first, not timed)
        copy = base / f"apply-{tree.name}"
        if apply == "files":  # each blob an inode of its own, as in a layout tools wrote
            shutil.rmtree(copy, ignore_errors=True)
            subprocess.run(["cp", "-a", str(layout), str(copy)], check=True)
            os.sync()  # (the copy's writeback is not the apply's to pay)
        else:
            link_copy(layout, copy)
        drop_half_the_tags(copy)
        r = run_python(tree, ["-m", "benchmarks.measure", "apply", str(copy)], ws, None,
                       with_benchmarks=True)
        out["apply"] = r.json()["seconds"]
        log(f"{label} {tree.name}: apply {r.json()['deleted']} deletions in {out['apply']:.2f}s")
        shutil.rmtree(copy)
    shutil.rmtree(cache)
    return out


def pipe_check(tree: Tree, ws: Path, layout: Path) -> dict[str, Any]:
    """``python -m io_adapters gc L --dry-run | cat``: when does the pipeline end?"""
    cache = fresh(ws, "cache-pipe")
    cmd = f"{shlex.quote(sys.executable)} -m io_adapters gc {shlex.quote(str(layout))} --dry-run | cat"
    r = run_command(["sh", "-c", cmd], tree.env(cache), ws, cache_dir=cache)
    shutil.rmtree(cache)
    return {"pipeline": r.wall, "write_after": r.bg_seconds, "out_bytes": len(r.out)}


def compare_size(name: str, target: int, args: argparse.Namespace, trees: list[Tree],
                 ws: Path, log: Any) -> dict[str, Any]:
    base = args.data / name
    layout = base / "layout"
    stats = ensure_layout(layout, target, args.seed)
    log(f"[{name}] {layout}: {stats.blobs} blobs, {stats.manifests} manifests; warming the "
        "page cache")
    ocigraph(trees[-1], ws, None, "plan", "gc", str(layout), env={"OCIGRAPH_NO_CACHE": "1"})
    run_python(trees[-1], ["-m", "benchmarks.floor", str(layout)], ws, None, with_benchmarks=True)
    wait_settled(layout)
    big = target > 200_000
    repeat = args.repeat or (2 if big else 3)
    yes_rounds = args.yes_rounds if args.yes_rounds is not None else (1 if big else repeat)
    got: dict[str, list[dict[str, Any]]] = {t.name: [] for t in trees}
    for i in range(repeat):
        order = trees if i % 2 == 0 else trees[::-1]
        for tree in order:
            got[tree.name].append(round_for(tree, ws, layout, base, stats.tags_for_delete,
                                            i < yes_rounds, log, f"[{name}] round {i + 1}/{repeat}",
                                            apply=args.apply if i < yes_rounds else None))
    result: dict[str, Any] = {"size": name, "blobs": stats.blobs, "repeat": repeat,
                              "yes_rounds": yes_rounds, "rounds": got}
    summarize(result)
    if not args.skip_pipe:
        result["pipe"] = pipe_check(trees[-1], ws, layout)
        p = result["pipe"]
        log(f"[{name}] `gc --dry-run | cat` ({trees[-1].name}) ended after {p['pipeline']:.2f}s; "
            f"the store writer went on {p['write_after'] or 0:.2f}s after that")
    return result


def summarize(result: dict[str, Any]) -> None:
    """``result["best"]``: per tree, the best of its rounds (the largest peak RSS)."""
    result["best"] = {}
    for name, rounds in result["rounds"].items():
        for r in rounds:  # the writer starts at the fork, before the command has exited: the
            # time from the start of the command until the store is written is fair to both
            for suffix in ("", "_cpu"):
                if r.get("cold" + suffix) is not None and r.get("write_cold" + suffix) is not None:
                    r["end_to_end" + suffix] = r["cold" + suffix] + r["write_cold" + suffix]
        b: dict[str, Any] = {}
        for key, _ in ROWS:
            for k in (key, key + "_cpu"):
                vals = [r[k] for r in rounds if r.get(k) is not None]
                if vals:
                    b[k] = max(vals) if "rss" in k else min(vals)
        b["notes"] = sorted({n for r in rounds for n in r["notes"]})
        b["cache_files"] = rounds[0].get("cache_files")
        b["eof"] = max((r["eof"] for r in rounds if r.get("eof") is not None), default=None)
        result["best"][name] = b


def merge(files: list[Path]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The results saved by several runs (``--json``), the rounds of each size pooled."""
    by_size: dict[str, dict[str, Any]] = {}
    described: dict[str, str] = {}
    for f in files:
        doc = orjson.loads(f.read_bytes())
        described = doc.get("code", described)
        for r in doc["results"]:
            into = by_size.setdefault(r["size"], {**r, "rounds": {}, "repeat": 0, "yes_rounds": 0})
            into["repeat"] += r["repeat"]
            into["yes_rounds"] += min(r["yes_rounds"], r["repeat"])
            for name, rounds in r["rounds"].items():
                into["rounds"].setdefault(name, []).extend(rounds)
            into["pipe"] = r.get("pipe") or into.get("pipe")
    results = list(by_size.values())
    for r in results:
        summarize(r)
    return results, described


def report(results: list[dict[str, Any]], before: str, after: str, markdown: bool) -> str:
    out = [f"Best of the rounds (peak RSS: the largest).  wall: seconds from start to exit (for "
           f"a store write: from the command's exit until the writer's lock was free); CPU: "
           f"user + system seconds of that process, steadier on a shared machine.  "
           f"'!': {after} more than 10% above {before}.", ""]
    failures: dict[str, list[str]] = {"wall": [], "CPU": []}

    def cell(v: float | None, key: str) -> str:
        return "-" if v is None else f"{v:,.0f}" if "rss" in key else f"{v:.2f}"

    for r in results:
        b, a = r["best"][before], r["best"][after]
        rows = [["", f"{before} wall", f"{after} wall", "ratio", f"{before} CPU", f"{after} CPU",
                 "ratio"]]
        for key, label in ROWS:
            if b.get(key) is None and a.get(key) is None:
                continue
            row = [label]
            for k, kind in ((key, "wall"), (key + "_cpu", "CPU")):
                x, y = b.get(k), a.get(k)
                if "rss" in key and kind == "CPU":
                    row += ["", "", ""]
                    continue
                ratio = f"{y / x:.2f}" if x and y is not None else "-"
                if key in CHECKED and x and y is not None and y > 1.10 * x:
                    ratio += " !"
                    failures["wall" if "rss" in key else kind].append(
                        f"{r['size']} {label} {y / x:.2f}x")
                row += [cell(x, key), cell(y, key), ratio]
            rows.append(row)
        out += [f"{r['size']} ({r['blobs']:,} blobs): best of {r['repeat']} rounds "
                f"(gc --yes: {r['yes_rounds']}), trees alternating", table(rows, markdown), ""]
        out.append("cache folder after a cold gc: " + "; ".join(
            f"{name}: {', '.join(r['best'][name].get('cache_files') or ['?'])}"
            for name in (before, after)))
        for name in (before, after):
            if r["best"][name]["notes"]:
                out.append(f"  {name}: " + "; ".join(r["best"][name]["notes"]))
        if r["blobs"] >= 900_000:
            stored = a.get("stored")
            ok = stored is not None and stored < 1.0
            if not ok:
                failures["wall"].append(f"{r['size']} stored delete {stored:.2f} s")
            out.append(f"stored delete at {r['size']} ({after}): {stored:.2f} s wall, "
                       f"{a.get('stored_cpu', 0):.2f} s CPU ({'under' if ok else 'NOT under'} 1 s)")
        p = r.get("pipe")
        if p:
            out.append(f"`gc --dry-run | cat` ({after}): the pipeline ended {p['pipeline']:.2f} s "
                       f"after it started; the store writer finished "
                       f"{p['write_after'] or 0:.2f} s after that (stdout/stderr of the timed "
                       f"cold runs reached end-of-file {1000 * (a.get('eof') or 0):+.0f} ms after "
                       "the command's exit)")
        out.append("")
    for kind in ("wall", "CPU"):
        out.append(f"acceptance by {kind} time (none worse by more than 10%"
                   + (", stored delete at 1m under 1 s" if kind == "wall" and
                      any(r["blobs"] >= 900_000 for r in results) else "")
                   + "): " + ("met" if not failures[kind] else
                              "NOT met: " + "; ".join(failures[kind])))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ocigraph before/after comparison")
    p.add_argument("--before", type=Path, help="the old code (a worktree)")
    p.add_argument("--after", type=Path, default=REPO, help="the new code (default: this tree)")
    p.add_argument("--sizes", default="100k,1m")
    p.add_argument("--repeat", type=int, default=0, help="rounds (default 3, 2 above 200k blobs)")
    p.add_argument("--yes-rounds", type=int, default=None,
                   help="rounds with the gc --yes copy (default: every round; 1 above 200k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--skip-pipe", action="store_true")
    p.add_argument("--apply", nargs="?", const="links", choices=["links", "files"],
                   help="also time apply_plan on a copy with half the tags dropped (in the "
                        "gc --yes rounds): of hard links (default; an unlink frees no inode), "
                        "or 'files', a full copy (cp -a: each unlink frees its blob, as in a "
                        "layout tools wrote)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--from-json", type=Path, nargs="+", metavar="FILE",
                   help="measure nothing: print the report of runs saved with --json, their "
                        "rounds pooled")
    args = p.parse_args(argv)
    args.data = args.data.resolve()
    if args.from_json:
        results, described = merge(args.from_json)
        print(f"before = {described.get('before', '?')}, after = {described.get('after', '?')}; "
              f"pooled from {', '.join(map(str, args.from_json))}")
        print(report(results, "before", "after", args.markdown))
        return 0
    if args.before is None:
        p.error("--before is required")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    ws = workspace("ocigraph-compare-")
    try:
        trees = [snapshot_tree(args.before.resolve(), ws / "before", "before", ws),
                 snapshot_tree(args.after.resolve(), ws / "after", "after", ws)]
        described = {"before": git_describe(args.before), "after": git_describe(args.after)}
        for t in trees:
            log(f"{t.name} = {described[t.name]} ({getattr(args, t.name)}); its commands "
                f"import {t.where(ws)}")
        results = []
        for name in args.sizes.split(","):
            name = name.strip().lower()
            target = SIZES.get(name) or parse_size(name)
            load = os.getloadavg()
            started = time.monotonic()
            res = compare_size(name, target, args, trees, ws, log)
            res["loadavg"] = [round(x, 2) for x in (*load, *os.getloadavg())]
            res["minutes"] = round((time.monotonic() - started) / 60, 1)
            results.append(res)
            log(report([res], "before", "after", args.markdown))
            if args.json:
                args.json.write_bytes(orjson.dumps({"machine": machine(), "code": described,
                                                    "results": results},
                                                   option=orjson.OPT_INDENT_2))
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    info = machine()
    print(f"machine: {info.get('cpu', '?')}, {info['nproc']} CPUs, Python {info['python']}; "
          f"before = {described['before']}, after = {described['after']}")
    print(report(results, "before", "after", args.markdown))
    print("load average (1, 5, 15 min) before / after: " + "; ".join(
        f"{r['size']}: {r['loadavg'][:3]} / {r['loadavg'][3:]} ({r['minutes']} min)"
        for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
