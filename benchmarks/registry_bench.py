"""Planning GC against a live registry: is the plan bounded by requests, not by the core?

    python -m benchmarks.registry_bench [--workers 1,8] [--repeat 3] [--apply]

Starts Debian's docker-registry on 127.0.0.1 (storage in a temporary folder, removed after)
and fills one repository with 1,000 tags and 3,000 manifests by direct HTTP PUTs:

* 280 tagged multi-platform indexes of 5 children each (1,680 manifests);
* 320 tagged images;
* 200 images signed (a referrer with ``subject``, listed in its ``sha256-<hex>`` fallback tag
  index: 400 manifests, 200 tags);
* 200 untagged old images, each with its signature and fallback index (600 manifests, 200
  tags): the garbage a GC plan finds.

Then, for each worker count, it reads the repository (``read_repository``), builds the graph
and plans GC (``og.build_graph`` + ``og.plan_gc``), and prints the number of requests, the time
per request, the concurrency reached (the requests' summed time over the wall time) and the
core's share of the whole.  ``--apply`` applies the last plan too.  Nothing asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests"),
                str(Path(__file__).resolve().parents[1])]

from registry_server import (  # noqa: E402
    HAVE_REGISTRY,
    OCI_INDEX,
    OCI_MANIFEST,
    Pusher,
    start_registry,
)

import ocigraph as og  # noqa: E402
from io_adapters.registry import (  # noqa: E402
    RegistryClient,
    apply_plan,
    plan_prune_repository,
    read_repository,
)

REPO = "bench/app"
SIG = "application/vnd.example.signature"


def populate(push: Pusher, workers: int = 8) -> dict[str, int]:
    """Push the repository described above; returns what was pushed."""
    config = push.blob(REPO, b'{"architecture":"amd64","os":"linux"}',
                       "application/vnd.oci.image.config.v1+json")
    layer = push.blob(REPO, b"a shared layer")
    empty = push.blob(REPO, b"{}", "application/vnd.oci.empty.v1+json")
    sig_layer = push.blob(REPO, b"a signature", "application/octet-stream")

    def image(name: str, tag: str | None = None) -> dict[str, Any]:
        return push.manifest(REPO, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                    "config": config, "layers": [layer],
                                    "annotations": {"name": name}}, tag)

    def signed(subject: dict[str, Any]) -> None:
        sig = push.manifest(REPO, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                   "artifactType": SIG, "config": empty, "layers": [sig_layer],
                                   "subject": {k: subject[k] for k in ("mediaType", "digest", "size")}})
        push.manifest(REPO, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sig]},
                      push.fallback_tag(subject["digest"]))

    def multi(i: int) -> None:
        children = [image(f"index {i} child {c}") for c in range(5)]
        push.index(REPO, f"idx-{i}", children, ["linux/amd64", "linux/arm64", "linux/s390x",
                                               "linux/ppc64le", "linux/riscv64"])

    def single(i: int) -> None:
        img = image(f"image {i}", f"img-{i}")
        if i < 200:
            signed(img)

    def old(i: int) -> None:
        signed(image(f"old image {i}"))  # pushed by digest: untagged

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(multi, range(280)))
        list(pool.map(single, range(320)))
        list(pool.map(old, range(200)))
    return {"tags": 280 + 320 + 200 + 200, "manifests": 280 * 6 + 320 + 200 * 2 + 200 * 3}


def measure(host: str, workers: int) -> tuple[dict[str, Any], og.Plan]:
    client = RegistryClient(host, tls_verify=False, workers=workers)
    with contextlib.closing(client):
        start, cpu = time.perf_counter(), time.process_time()
        snap = read_repository(f"docker://{host}/{REPO}", client=client)
        read_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        plan = og.plan_gc(og.build_graph(snap.layout))
        core_s = time.perf_counter() - start
    return {
        "workers": workers, "requests": snap.requests, "read_s": read_s, "core_s": core_s,
        "client_cpu_s": cpu_s,
        "per_request_ms": 1000 * client.request_seconds / client.requests,
        "concurrency": client.request_seconds / read_s,
        "core_share": core_s / (read_s + core_s),
        "manifests": len(snap.manifests), "tags": len(snap.tags) + len(snap.fallback),
        "planned_manifests": sum(1 for d in plan.deletions if d.digest in snap.manifests),
    }, plan


def measure_prune(host: str, workers: int) -> dict[str, Any]:
    """Plan prune on the repository, each image aged by its own date (its config read once)."""
    client = RegistryClient(host, tls_verify=False, workers=workers)
    rules = og.RetentionRules(keep_last=100, age_from="created")
    with contextlib.closing(client):
        start = time.perf_counter()
        plan, _ = plan_prune_repository(f"docker://{host}/{REPO}", rules, time.time(),
                                        client=client)
        seconds = time.perf_counter() - start
    assert plan.retention is not None
    return {"seconds": seconds, "requests": client.requests, "workers": workers,
            "expired": sum(1 for d in plan.retention.decisions if d.expired)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,8", help="worker counts to measure (default 1,8)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per worker count; best kept")
    ap.add_argument("--apply", action="store_true", help="apply the last GC plan, timed")
    ap.add_argument("--prune", action="store_true",
                    help="also plan prune --keep-last 100 --age-from created (config GETs), timed")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    if not HAVE_REGISTRY:
        print("docker-registry is not installed (apt-get install docker-registry)", file=sys.stderr)
        return 2
    figures: dict[str, Any] = {"machine": platform.platform(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="ocigraph-registry-bench-") as tmp:
        reg = start_registry(Path(tmp))
        try:
            push = Pusher(reg.host)
            start = time.perf_counter()
            figures["pushed"] = populate(push)
            figures["push_s"] = time.perf_counter() - start
            print(f"pushed {figures['pushed']['tags']} tags, {figures['pushed']['manifests']} "
                  f"manifests in {figures['push_s']:.1f} s ({reg.host}, docker-registry)")
            print(f"{'workers':>7} {'requests':>8} {'read':>8} {'per req':>8} {'concur.':>7} "
                  f"{'our CPU':>7} {'core':>7} {'core %':>6}  manifests  planned")
            rows = []
            plan = None
            for workers in (int(w) for w in args.workers.split(",")):
                best, plan = min((measure(reg.host, workers) for _ in range(args.repeat)),
                                 key=lambda fp: fp[0]["read_s"] + fp[0]["core_s"])
                rows.append(best)
                print(f"{workers:>7} {best['requests']:>8} {best['read_s']:>7.2f}s "
                      f"{best['per_request_ms']:>6.2f}ms {best['concurrency']:>7.1f} "
                      f"{best['client_cpu_s']:>6.2f}s "
                      f"{best['core_s']:>6.3f}s {100 * best['core_share']:>5.1f}%  "
                      f"{best['manifests']:>9}  {best['planned_manifests']:>7}")
            figures["rows"] = rows
            if args.prune:
                figures["prune"] = measure_prune(reg.host, rows[-1]["workers"])
                print(f"prune --keep-last 100 --age-from created: {figures['prune']['requests']} "
                      f"requests in {figures['prune']['seconds']:.2f} s, "
                      f"{figures['prune']['expired']} tags expired")
            if args.apply and plan is not None:
                client = RegistryClient(reg.host, tls_verify=False, workers=rows[-1]["workers"])
                with contextlib.closing(client):
                    start = time.perf_counter()
                    result = apply_plan(f"docker://{reg.host}/{REPO}", plan, client=client)
                    apply_s = time.perf_counter() - start
                figures["apply"] = {"seconds": apply_s, "requests": result.requests,
                                    "deleted": len(result.deleted),
                                    "fallback_tags": len(result.referrer_tags),
                                    "skipped": len(result.skipped),
                                    "bytes_unreferenced": result.bytes_unreferenced}
                print(f"apply: {len(result.deleted)} manifests and {len(result.referrer_tags)} "
                      f"fallback tags deleted, {len(result.skipped)} skipped, "
                      f"{result.requests} requests in {apply_s:.2f} s")
        finally:
            reg.stop()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
