"""Functional test cases as data: load the JSON files in ``tests/cases/`` and turn them into bytes.

A case names its blobs by short *ids* (``b0``, ``img``) instead of digests, so that a reader can
follow the scenario and its expectations.  :func:`materialize` computes every digest, generates
manifest and index JSON, and builds ``index.json``; :func:`write_layout` puts the result on disk
as an OCI image layout (for the CLI and adapter tests).

The rules that keep the cases honest:

* Generated JSON is canonical (orjson, sorted keys), so a digest depends only on the case.
* Two ids may never share a digest; a case that tries is rejected, because its expectations
  (sets of ids) would silently merge.
* A reference is an id, or ``{"ref": id, "mediaType": ...}`` to describe the same blob under
  another media type (oras-go #1093).  Descriptor size and digest always come from the blob.
* A blob with ``"present": false`` gets a digest (it is still referenced) but no bytes.

Case file format (all keys but ``description`` and ``final`` required)::

    name          the file's stem
    source        where the scenario comes from (an oras-go test, an issue, SEMANTICS.md)
    description   what it pins, in a sentence or two
    blobs         [{id, kind: blob|manifest|index|artifact, mediaType, ...}]
    index         [{ref: id, tag?: str, mediaType?: str}]      index.json entries, in order
    stray         optional [{path, content?}] files (no content: a directory) under the layout
                  that are not blobs the core should see; only :func:`write_layout` writes them
    steps         [{op, ..., expect}] applied in order, see ``tests/test_cases.py``
    final         {present: [id], index: [{ref, tag?}]}
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "CASES_DIR",
    "CaseError",
    "Materialized",
    "load_case",
    "load_cases",
    "materialize",
    "tag_ref",
    "core_ref",
    "write_layout",
]

CASES_DIR = Path(__file__).resolve().parent / "cases"

REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'
TAG_PREFIX = "tag:"

# The descriptor-list fields each generated kind carries, in document order.  ``subject`` and
# ``artifactType`` are added to any kind that sets them.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "blob": (),
    "manifest": ("config", "layers"),
    "index": ("manifests",),
    "artifact": ("blobs",),
}
# Fields that hold one descriptor rather than a list of them.
SINGLE_FIELDS = frozenset({"config", "subject"})
# The withdrawn artifact manifest had no schemaVersion; image manifests and indexes (OCI and
# Docker alike) have 2.
SCHEMA_VERSIONED = frozenset({"manifest", "index"})

HASHES: dict[str, Callable[[bytes], Any]] = {
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}

STEP_OPS = frozenset({"delete", "gc", "untag", "remove", "predecessors"})
POLICY_FIELDS = frozenset(
    {"preset", "keep_untagged", "cascade_referrers", "guard", "force", "grace"}
)

_BLOB_KEYS = frozenset(
    {
        "id",
        "kind",
        "mediaType",
        "content",
        "alg",
        "present",
        "subject",
        "artifactType",
        "annotations",
    }
    | {f for fields in KIND_FIELDS.values() for f in fields}
)
_PLAIN_BLOB_KEYS = frozenset({"id", "kind", "mediaType", "content", "alg", "present"})
_CASE_KEYS = frozenset(
    {"name", "source", "description", "blobs", "index", "stray", "steps", "final"}
)
_STEP_KEYS = frozenset(
    {"op", "targets", "refs", "of", "policy", "expect", "apply", "include_absent", "note"}
)
_EXPECT_KEYS = frozenset({"deleted", "error", "mentions", "index", "predecessors"})


class CaseError(ValueError):
    """A case file is malformed (a bug in the case, not in ocigraph)."""


def tag_ref(name: str) -> str:
    """The case syntax for a tag target: ``tag_ref("latest") == "tag:latest"``."""
    return TAG_PREFIX + name


@dataclass(frozen=True)
class Materialized:
    """A case turned into bytes.

    index_json   the bytes of index.json
    blobs        digest -> content, present blobs only (what ``og.layout_from_bytes`` takes)
    ids          id -> digest, for every blob the case defines (present or not)
    sizes        id -> size in bytes
    stray        relative path -> bytes, or None for a directory (see :func:`write_layout`)
    """

    index_json: bytes
    blobs: Mapping[str, bytes]
    ids: Mapping[str, str]
    sizes: Mapping[str, int]
    stray: Mapping[str, bytes | None]

    def digest(self, blob_id: str) -> str:
        try:
            return self.ids[blob_id]
        except KeyError:
            raise CaseError(f"unknown blob id {blob_id!r}") from None

    def digests(self, blob_ids: Iterable[str]) -> frozenset[str]:
        return frozenset(self.digest(i) for i in blob_ids)

    def id_of(self, digest: str) -> str:
        """The id of a digest, or the digest itself when the case does not define it."""
        for blob_id, d in self.ids.items():
            if d == digest:
                return blob_id
        return digest

    def names(self, digests: Iterable[str]) -> list[str]:
        """Sorted ids for a set of digests: readable assertion messages."""
        return sorted(self.id_of(d) for d in digests)

    def ref(self, target: str, *, bare_is_tag: bool = False) -> str:
        """The string the core accepts for a case target.

        ``"tag:NAME"`` is the tag NAME; an id is its digest.  With ``bare_is_tag`` (untag refs),
        a string that is no id is taken as a tag name, as in ``{"op": "untag", "refs": ["v1"]}``;
        a bare ref that is also an id is refused as ambiguous (write ``tag:NAME``).
        """
        if target.startswith(TAG_PREFIX):
            return target[len(TAG_PREFIX) :]
        if target in self.ids:
            if bare_is_tag:
                raise CaseError(f"untag ref {target!r} is also a blob id: write 'tag:{target}'")
            return self.ids[target]
        if bare_is_tag:
            return target
        raise CaseError(f"target {target!r} is neither a blob id nor 'tag:NAME'")

    def mention(self, item: str) -> str:
        """What must appear in an error message for an expected mention: a digest or tag name."""
        if item.startswith(TAG_PREFIX):
            return item[len(TAG_PREFIX) :]
        return self.ids.get(item, item)


def core_ref(m: Materialized, target: str) -> str:
    """Module-level spelling of :meth:`Materialized.ref`."""
    return m.ref(target)


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def compute_digest(data: bytes, alg: str = "sha256") -> str:
    try:
        return f"{alg}:{HASHES[alg](data).hexdigest()}"
    except KeyError:
        raise CaseError(f"unknown digest algorithm {alg!r}; use one of {sorted(HASHES)}") from None


# --- loading and checking -------------------------------------------------------------------


def load_case(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        case = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise CaseError(f"{path.name}: not JSON: {e}") from None
    if not isinstance(case, dict):
        raise CaseError(f"{path.name}: a case is a JSON object")
    if case.get("name") != path.stem:
        raise CaseError(f"{path.name}: name {case.get('name')!r} differs from the file name")
    check_case(case)
    return case


def load_cases(directory: str | os.PathLike[str] = CASES_DIR) -> list[dict[str, Any]]:
    """Every case in ``directory``, checked, sorted by name (stable pytest ids)."""
    cases = [load_case(p) for p in sorted(Path(directory).glob("*.json"))]
    if not cases:
        raise CaseError(f"no case files in {directory}")
    return cases


def _ref_id(ref: Any, where: str) -> str:
    if isinstance(ref, str):
        return ref
    if (
        isinstance(ref, dict)
        and isinstance(ref.get("ref"), str)
        and set(ref) <= {"ref", "mediaType"}
    ):
        return str(ref["ref"])
    raise CaseError(
        f"{where}: a reference is an id or {{'ref': id, 'mediaType': ...}}, got {ref!r}"
    )


def _references(blob: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(field, reference) for every reference a blob entry makes, in document order."""
    out: list[tuple[str, Any]] = []
    for name in ("subject", *KIND_FIELDS[blob["kind"]]):
        value = blob.get(name)
        if value is None:
            continue
        if name in SINGLE_FIELDS:
            out.append((name, value))
        else:
            if not isinstance(value, list):
                raise CaseError(f"blob {blob['id']}: {name} must be a list")
            out.extend((name, v) for v in value)
    return out


def check_case(case: Mapping[str, Any]) -> None:
    """Reject unknown keys, unknown ids and malformed steps before any test runs."""
    name = case.get("name", "?")

    def fail(msg: str) -> None:
        raise CaseError(f"{name}: {msg}")

    if unknown := set(case) - _CASE_KEYS:
        fail(f"unknown keys {sorted(unknown)}")
    for key in ("name", "source", "blobs", "index", "steps"):
        if key not in case:
            fail(f"missing {key!r}")
    ids: set[str] = set()
    for blob in case["blobs"]:
        if not isinstance(blob, dict) or not isinstance(blob.get("id"), str):
            fail(f"a blob needs a string id: {blob!r}")
        if blob["id"] in ids:
            fail(f"duplicate blob id {blob['id']!r}")
        ids.add(blob["id"])
        if unknown := set(blob) - _BLOB_KEYS:
            fail(f"blob {blob['id']}: unknown keys {sorted(unknown)}")
        if blob.get("kind") not in KIND_FIELDS:
            fail(f"blob {blob['id']}: kind must be one of {sorted(KIND_FIELDS)}")
        if not isinstance(blob.get("mediaType"), str):
            fail(f"blob {blob['id']}: mediaType is required")
        if blob["kind"] == "blob":
            if not isinstance(blob.get("content"), str):
                fail(f"blob {blob['id']}: a plain blob needs string content")
            if extra := set(blob) & (_BLOB_KEYS - _PLAIN_BLOB_KEYS):
                fail(f"blob {blob['id']}: a plain blob has no {sorted(extra)}")
        elif "content" in blob:
            fail(f"blob {blob['id']}: a generated {blob['kind']} takes no content")
        if blob.get("alg", "sha256") not in HASHES:
            fail(f"blob {blob['id']}: unknown alg {blob['alg']!r}")
    for blob in case["blobs"]:
        for field_name, ref in _references(blob):
            if _ref_id(ref, f"{name}: blob {blob['id']}.{field_name}") not in ids:
                fail(f"blob {blob['id']}.{field_name} references unknown id {ref!r}")
    for entry in case["index"]:
        if entry.get("ref") not in ids or not set(entry) <= {"ref", "tag", "mediaType"}:
            fail(f"bad index entry {entry!r}")
    for i, step in enumerate(case["steps"]):
        where = f"step {i}"
        if step.get("op") not in STEP_OPS:
            fail(f"{where}: op must be one of {sorted(STEP_OPS)}")
        if unknown := set(step) - _STEP_KEYS:
            fail(f"{where}: unknown keys {sorted(unknown)}")
        expect = step.get("expect")
        if not isinstance(expect, dict) or (unknown := set(expect) - _EXPECT_KEYS):
            fail(f"{where}: expect must be an object with keys from {sorted(_EXPECT_KEYS)}")
        if step["op"] == "predecessors":
            if step.get("of") not in ids or "predecessors" not in expect:
                fail(f"{where}: predecessors needs 'of' (an id) and expect.predecessors")
            continue
        if ("deleted" in expect) == ("error" in expect):
            fail(f"{where}: expect needs exactly one of 'deleted' and 'error'")
        policy = step.get("policy", "default")
        if isinstance(policy, dict) and (unknown := set(policy) - POLICY_FIELDS):
            fail(f"{where}: unknown policy fields {sorted(unknown)}")
        list_key = {"delete": "targets", "untag": "refs", "remove": "refs"}.get(step["op"])
        if list_key is not None and not isinstance(step.get(list_key), list):
            fail(f"{where}: {step['op']} needs a list {list_key!r}")
        for listed in (expect.get("deleted", []), expect.get("predecessors", [])):
            if missing := set(listed) - ids:
                fail(f"{where}: expectation names unknown ids {sorted(missing)}")
    for item in case.get("stray", []):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("path"), str)
            or not set(item)
            <= {
                "path",
                "content",
            }
        ):
            fail(f"bad stray item {item!r}: {{'path': str, 'content'?: str}}")
    final = case.get("final", {})
    if missing := set(final.get("present", [])) - ids:
        fail(f"final.present names unknown ids {sorted(missing)}")


# --- materialising ---------------------------------------------------------------------------


def materialize(case: Mapping[str, Any]) -> Materialized:
    """Compute the bytes of every blob and of index.json for a (checked) case."""
    check_case(case)
    by_id = {b["id"]: b for b in case["blobs"]}
    content: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    media_types = {b["id"]: b["mediaType"] for b in case["blobs"]}

    def descriptor(ref: Any, visiting: tuple[str, ...]) -> dict[str, Any]:
        ref_id = _ref_id(ref, case["name"])
        build(ref_id, visiting)
        media_type = (
            ref["mediaType"]
            if isinstance(ref, dict) and "mediaType" in ref
            else media_types[ref_id]
        )
        return {"mediaType": media_type, "digest": digests[ref_id], "size": len(content[ref_id])}

    def build(blob_id: str, visiting: tuple[str, ...] = ()) -> None:
        if blob_id in digests:
            return
        if blob_id in visiting:
            # Content addressing makes a cycle impossible in a real layout.
            raise CaseError(f"{case['name']}: reference cycle {' -> '.join((*visiting, blob_id))}")
        blob = by_id[blob_id]
        path = (*visiting, blob_id)
        if blob["kind"] == "blob":
            data = blob["content"].encode()
        else:
            doc: dict[str, Any] = {"mediaType": blob["mediaType"]}
            if blob["kind"] in SCHEMA_VERSIONED:
                doc["schemaVersion"] = 2
            for field_name in KIND_FIELDS[blob["kind"]]:
                value = blob.get(field_name)
                if field_name in SINGLE_FIELDS:
                    if value is None:
                        raise CaseError(f"{case['name']}: manifest {blob_id} needs a config")
                    doc[field_name] = descriptor(value, path)
                else:
                    doc[field_name] = [descriptor(v, path) for v in value or []]
            if blob.get("subject") is not None:
                doc["subject"] = descriptor(blob["subject"], path)
            if blob.get("artifactType") is not None:
                doc["artifactType"] = blob["artifactType"]
            if blob.get("annotations"):
                doc["annotations"] = dict(blob["annotations"])
            data = canonical_json(doc)
        content[blob_id] = data
        digests[blob_id] = compute_digest(data, blob.get("alg", "sha256"))

    for blob_id in by_id:
        build(blob_id)

    seen: dict[str, str] = {}
    for blob_id, d in digests.items():
        if d in seen:
            raise CaseError(
                f"{case['name']}: ids {seen[d]!r} and {blob_id!r} have the same digest {d}; "
                "give one of them different content or annotations"
            )
        seen[d] = blob_id

    entries = []
    for entry in case["index"]:
        desc = descriptor({k: v for k, v in entry.items() if k in ("ref", "mediaType")}, ())
        if entry.get("tag") is not None:
            desc["annotations"] = {REF_NAME: entry["tag"]}
        entries.append(desc)
    index_json = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})

    stray: dict[str, bytes | None] = {}
    for item in case.get("stray", []):
        rel = item["path"]
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise CaseError(f"{case['name']}: stray path {rel!r} must stay inside the layout")
        stray[rel] = item["content"].encode() if "content" in item else None

    return Materialized(
        index_json=index_json,
        blobs={digests[i]: content[i] for i, b in by_id.items() if b.get("present", True)},
        ids=dict(digests),
        sizes={i: len(c) for i, c in content.items()},
        stray=stray,
    )


def write_layout(m: Materialized, path: str | os.PathLike[str]) -> Path:
    """Write ``m`` as an OCI image layout under ``path`` (created if needed); return the root.

    Writes ``oci-layout``, ``index.json``, ``blobs/<alg>/<encoded>`` for every present blob, and
    the case's stray files and directories (which a sweep must leave alone).
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_bytes(OCI_LAYOUT_FILE)
    (root / "index.json").write_bytes(m.index_json)
    for digest, data in m.blobs.items():
        alg, encoded = digest.split(":", 1)
        blob_dir = root / "blobs" / alg
        blob_dir.mkdir(parents=True, exist_ok=True)
        (blob_dir / encoded).write_bytes(data)
    for rel, stray_data in m.stray.items():
        target = root / rel
        if stray_data is None:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(stray_data)
    return root
