"""One ``ocigraph`` command with its steps timed: where a whole command's time goes.

    python -m benchmarks.phases ARGS...        (as ``python -m io_adapters ARGS...``)

It runs the command line exactly as ``python -m io_adapters`` does (collector off, the store
left to a detached child, ``os._exit``), with a few of the planner's steps wrapped in timers,
and writes the split as one JSON line to the file named by ``$OCIGRAPH_BENCH_PHASES``.  This
is for the split only: the suite's timed runs are plain ``python -m io_adapters``.  A step the
code no longer has is simply left out.

Steps (seconds, wall clock, in this process):

``import``  starting to import the command line (networkx, the core, the shell);
``store``   :func:`io_adapters.planner._from_store`: the layout's snapshot (oci-layout,
            index.json's digest, the folder stamps), opening the store, and when it answers,
            the remembered plan or the delete planned on the targets' neighbourhood;
``list``    ``read_layout``: index.json and the listing of ``blobs/`` (when the store did not
            answer);
``read``    the core's breadth-first walk: reading, verifying and parsing every manifest (the
            core's ``read`` phase of ``build_graph``);
``build``   making the networkx graph (the core's ``build`` phase);
``plan``    ``og.plan_operation``: the live set or deletion closure and the plan;
``claim``   handing the graph to the store writer (claiming its lock);
``fork``    leaving the store to a detached child;
``other``   the rest: click, rendering and printing the answer.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import gc  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402

SECONDS: dict[str, float] = defaultdict(float)
INFO: dict[str, Any] = {}


def _timed(name: str, fn: Any, after: Any = None) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            got = fn(*args, **kwargs)
        finally:
            SECONDS[name] += time.perf_counter() - t
        if after is not None:
            after(got)
        return got
    return wrapper


class _CoreTimer:
    """Stands in for the reporter ``build_graph`` is given; times its phases."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._started: dict[str, float] = {}

    def phase_started(self, phase: str) -> None:
        self._started[phase] = time.perf_counter()

    def phase_finished(self, phase: str) -> None:
        SECONDS[phase] += time.perf_counter() - self._started.pop(phase)

    def __getattr__(self, name: str) -> Any:  # progress callbacks: to the real reporter
        return getattr(self._inner, name)


def main() -> None:
    gc.disable()
    import ocigraph as og
    from io_adapters import background, cli, planner
    SECONDS["import"] = time.perf_counter() - _T0

    def how(got: Any) -> None:  # a Planned when the store answered
        INFO["how"] = getattr(got, "how", "layout")

    if hasattr(planner, "_from_store"):
        planner._from_store = _timed("store", planner._from_store, how)
    if hasattr(planner, "read_layout"):
        planner.read_layout = _timed("list", planner.read_layout)
    real_build = og.build_graph

    def build_graph(layout: Any, reporter: Any = None, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        timer: Any = _CoreTimer(reporter or og.Reporter())
        graph = real_build(layout, timer, *args, **kwargs)
        SECONDS["build_graph"] += time.perf_counter() - t
        INFO["nodes"], INFO["edges"] = graph.number_of_nodes(), graph.number_of_edges()
        return graph

    og.build_graph = build_graph
    og.plan_operation = _timed("plan", og.plan_operation)
    if hasattr(planner, "_store"):
        planner._store = _timed("claim", planner._store)
    background.run_detached = _timed("fork", background.run_detached)
    background.detach = True
    code = 0
    try:
        cli.main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    s = dict(SECONDS)
    core = s.get("read", 0.0) + s.get("build", 0.0)
    # build_graph outside its two phases (finding referrers, checks) counts as its read
    if "build_graph" in s:
        s["read"] = s.get("read", 0.0) + max(0.0, s.pop("build_graph") - core)
    total = time.perf_counter() - _T0
    s["other"] = max(0.0, total - sum(s.values()))
    out = {"phases": {k: round(v, 4) for k, v in s.items()}, "total": round(total, 4), **INFO}
    target = os.environ.get("OCIGRAPH_BENCH_PHASES")
    if target:
        with open(target, "wb") as f:
            f.write(orjson.dumps(out))
    os._exit(code)


if __name__ == "__main__":
    main()
