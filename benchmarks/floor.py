"""The floor: the least work any GC of a layout must do, as a plain Python script.

It lists ``blobs/sha256`` (names only, no stat), reads ``index.json``, and walks breadth-first
from it, reading and parsing (orjson) every reachable manifest once -- single-threaded, with
``os.open``/``os.read`` (the cheapest way Python has to read a small file).  It does not verify
digests, validate descriptors, build a graph or decide anything: ocigraph does all of that on
top, so ``ocigraph / floor`` is the price of doing it.

``python -m benchmarks.floor LAYOUT`` prints a JSON line: seconds, manifests read, blobs listed,
peak RSS.
"""

from __future__ import annotations

import os
import resource
import sys
import time

import orjson

__all__ = ["floor"]

_MANIFEST_TYPES = frozenset({
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.artifact.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})
_FIELDS = ("subject", "config", "layers", "manifests", "blobs")


def floor(root: str) -> dict[str, float | int]:
    started = time.perf_counter()
    blob_dir = os.path.join(root, "blobs", "sha256")
    present = set(os.listdir(blob_dir))
    listed = time.perf_counter()
    with open(os.path.join(root, "index.json"), "rb") as f:
        index = orjson.loads(f.read())
    seen: set[str] = set()
    level = [d for d in index.get("manifests", ()) if d.get("mediaType") in _MANIFEST_TYPES]
    read = 0
    while level:
        nxt = []
        for desc in level:
            digest = desc["digest"]
            if digest in seen:
                continue
            seen.add(digest)
            alg, _, hexd = digest.partition(":")
            if alg != "sha256" or hexd not in present:
                continue
            fd = os.open(os.path.join(blob_dir, hexd), os.O_RDONLY)
            try:
                data = os.read(fd, 1 << 20)
            finally:
                os.close(fd)
            doc = orjson.loads(data)
            read += 1
            for name in _FIELDS:
                v = doc.get(name)
                if v is None:
                    continue
                for child in (v if isinstance(v, list) else (v,)):
                    if child.get("mediaType") in _MANIFEST_TYPES:
                        nxt.append(child)
        level = nxt
    done = time.perf_counter()
    return {"seconds": done - started, "list_seconds": listed - started, "manifests": read,
            "blobs": len(present)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = floor(args[0])
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(orjson.dumps(out).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
