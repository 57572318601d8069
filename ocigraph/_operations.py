"""Pure pieces of planning on a layout that an adapter would otherwise write itself: which
planner an operation name means, the push times of images, the tags a plan names, and the
keys and checksums a store of plans and blob names needs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

import networkx as nx
import orjson

from ._digest import is_sweepable
from ._model import BlobInfo, Index, Reporter
from ._parse import parse_manifest
from ._plan import Plan
from ._planning import plan_delete, plan_gc, plan_remove, plan_untag
from ._policy import Policy
from ._rules import config_created, image_time, manifest_created
from ._view import GraphSource, WholeGraph

__all__ = ["plan_operation", "push_times", "plan_tags", "plan_key", "names_checksum"]


def plan_operation(graph: nx.DiGraph, operation: str, refs: Sequence[str], policy: Policy,
                   whole: WholeGraph | None = None, reporter: Reporter | None = None) -> Plan:
    """``operation`` (``delete``, ``gc``, ``remove``, ``untag``) on ``graph``.  ``whole``:
    ``graph`` as a source, whose liveness facts the plan then shares (grace 0)."""
    given = whole.facts(policy.keep_untagged) if whole is not None and policy.grace <= 0 else None
    if operation == "delete":
        return plan_delete(graph, refs, policy, reporter, given=given)
    if operation == "gc":
        return plan_gc(graph, policy, reporter, given=given)
    if operation == "remove":
        return plan_remove(graph, refs, policy)
    if operation == "untag":
        return plan_untag(graph, refs)
    raise ValueError(f"unknown operation {operation!r}")


def _config_digest(digest: str, manifest: bytes) -> str | None:
    """The config a manifest names, read as every manifest is read (:func:`parse_manifest`:
    verified against its digest); ``None`` for none, a broken manifest or another algorithm."""
    config = next((d.digest for name, d in parse_manifest(digest, manifest).refs
                   if name == "config"), None)
    return config if config is not None and is_sweepable(config) else None


def push_times(index: Index, blobs: Mapping[str, BlobInfo], age_from: str,
               read: Callable[[str], bytes | None]) -> dict[str, float]:
    """The push time of every image ``index`` lists (RETENTION §1): its manifest blob's mtime,
    or with ``age_from="created"`` the image's own date (``read``: a blob's bytes, if any)."""
    out: dict[str, float] = {}
    for digest in {e.digest for e in index.entries}:
        info = blobs.get(digest)
        annotation = config = None
        if age_from == "created" and info is not None and (data := read(digest)) is not None:
            annotation = manifest_created(data)
            cfg = _config_digest(digest, data)
            raw = read(cfg) if cfg is not None and cfg in blobs else None
            config = None if raw is None else config_created(raw)
        when = image_time(None if info is None else info.mtime, age_from=age_from,
                          annotation=annotation, config=config)
        if when is not None:
            out[digest] = when
    return out


def plan_tags(source: nx.DiGraph | GraphSource, plan: Plan) -> dict[str, list[str]]:
    """The tags of every node ``plan`` names (deletions, reasons, kept nodes), for showing
    it; ``source``: the graph it was made on, or a view of it (:class:`ocigraph.GraphSource`)."""
    attributes = (WholeGraph(source) if isinstance(source, nx.DiGraph) else source).attributes
    named = {d.digest for d in plan.deletions} | {k.digest for k in plan.kept}
    named |= {d.reason.via for d in plan.deletions if d.reason.via is not None}
    named |= {k.via for k in plan.kept if k.via is not None}
    return {n: sorted(a["tags"]) for n, a in attributes(sorted(named)).items() if a["tags"]}


def plan_key(operation: str, refs: Sequence[str], policy: Policy) -> str:
    """The key a plan is kept under: its operation, the refs asked for, its policy."""
    return hashlib.sha256(orjson.dumps([operation, list(refs), policy.to_dict()],
                                       option=orjson.OPT_SORT_KEYS)).hexdigest()


def names_checksum(digests: Iterable[str]) -> list[int]:
    """``[count, sum]`` of blob names, the sum over each digest's first 64 bits (already
    uniformly random) modulo 2**64: order-free, so removing names subtracts theirs.

    >>> a, b = "sha256:" + "1" * 64, "sha256:" + "f" * 64
    >>> (names_checksum([a, b])[1] - names_checksum([b])[1]) % 2**64 == names_checksum([a])[1]
    True
    """
    total = count = 0
    for d in digests:
        total += int(d[d.index(":") + 1:][:16], 16)
        count += 1
    return [count, total % (1 << 64)]
