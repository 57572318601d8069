"""Figures for ``plan_prune`` and its space budget, in memory (no disk, no CLI).

    python -m benchmarks.prune [--sizes 1k,10k] [--repeat 3]

For each size, a synthetic layout of that many images in four repositories: each image has its
own config and layer, shares one base layer with every other image (a node with as many
predecessors as there are images), has a signature (a referrer), and every tenth image is
also listed by a tagged two-image index.  Push times are one second apart.  Then, with the
graph built once (not timed):

* ``keep-last``: ``--keep-last N/8`` (the rules expire most tags; the budget is not used);
* ``budget half``: ``--max-size`` at half of the live bytes (the budget evicts about half);
* ``budget all``: ``--max-size 0`` (the budget evicts every image, one at a time).

Python's cyclic collector is paused around the build and each prune, as the command line
does (``io_adapters.background``).  Each line gives the best wall-clock time of ``--repeat`` runs, the space accounting's steps
(:class:`ocigraph.PruneReporter`), and steps per image: linear work keeps that ratio flat from
one size to the next.  Nothing here asserts; the test suite checks the step count's growth.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson

import ocigraph as og
from io_adapters.background import collector_paused

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"


def synthetic(n: int) -> tuple[og.Layout, dict[str, float]]:
    """The layout described in the module's docstring, and its push times."""
    blobs: dict[str, bytes] = {}

    def put(data: bytes, media_type: str) -> dict[str, Any]:
        d = og.digest_bytes(data)
        blobs[d] = data
        return {"mediaType": media_type, "digest": d, "size": len(data)}

    base = put(b"base layer" * 100, LAYER)
    entries: list[dict[str, Any]] = []
    push: dict[str, float] = {}
    previous: dict[str, Any] | None = None
    for i in range(n):
        cfg = put(b'{"image": %d}' % i, CONFIG)
        man = put(orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_MANIFEST, "config": cfg,
                                "layers": [base, put(b"layer %d" % i * 20, LAYER)]}),
                  og.OCI_MANIFEST)
        put(orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_MANIFEST, "config": cfg,
                          "layers": [put(b"signature %d" % i, LAYER)], "subject": man,
                          "artifactType": "application/x-sig"}), og.OCI_MANIFEST)
        push[man["digest"]] = float(i)
        entries.append(man | {"annotations": {og.REF_NAME: f"repo{i % 4}:{i}"}})
        if i % 10 == 9 and previous is not None:
            idx = put(orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_INDEX,
                                    "manifests": [previous, man]}), og.OCI_INDEX)
            push[idx["digest"]] = i + 0.5
            entries.append(idx | {"annotations": {og.REF_NAME: f"repo{i % 4}:multi-{i}"}})
        previous = man
    index = orjson.dumps({"schemaVersion": 2, "manifests": entries})
    return og.layout_from_bytes(index, blobs), push


class Steps(og.PruneReporter):
    def __init__(self) -> None:
        self.steps = 0

    def liveness_steps(self, count: int) -> None:
        self.steps += count


def measure(graph: og.LayoutGraph, rules: og.RetentionRules, push: dict[str, float],
            repeat: int) -> tuple[float, int, og.Plan]:
    best = float("inf")
    steps = 0
    plan = None
    for _ in range(repeat):
        rep = Steps()
        with collector_paused():  # as the command line runs it
            start = time.perf_counter()
            plan = og.plan_prune(graph, rules, now=1e9, push_times=push, reporter=rep)
            best = min(best, time.perf_counter() - start)
        steps = rep.steps
    assert plan is not None
    return best, steps, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1k,10k")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'images':>7} {'blobs':>7} {'build':>7}  {'case':<12} {'prune':>8} {'steps':>9} "
          f"{'steps/img':>9} {'expired':>8} {'freed':>10}")
    for word in args.sizes.split(","):
        n = int(float(word.lower().replace("k", "e3").replace("m", "e6")))
        layout, push = synthetic(n)
        with collector_paused():
            start = time.perf_counter()
            graph = og.build_graph(layout)
            build = time.perf_counter() - start
        live = sum(a["size"] for _, a in graph.nodes(data=True) if a["present"])
        for case, rules in (("keep-last", og.retention_rules(keep_last=max(1, n // 8))),
                            ("budget half", og.retention_rules(max_size=live // 2)),
                            ("budget all", og.retention_rules(max_size=0))):
            took, steps, plan = measure(graph, rules, push, args.repeat)
            assert plan.retention is not None
            print(f"{n:>7} {len(layout.blobs):>7} {build:>6.2f}s  {case:<12} {took:>7.3f}s "
                  f"{steps:>9} {steps / n:>9.1f} {len(plan.retention.expired()):>8} "
                  f"{og.format_bytes(plan.bytes_freed):>10}")


if __name__ == "__main__":
    main()
