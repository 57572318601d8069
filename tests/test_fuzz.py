"""Fuzz: mutate valid layouts (bytes and JSON of index.json and manifests), run the CLI.

Properties, for every mutated layout:

* never a traceback, never an "internal error": the CLI ends in exit 0 or in exactly one
  ``ocigraph: error:`` line with exit 1;
* a refused ``gc`` changes no file at all;
* a ``gc`` that runs never deletes a live blob -- liveness computed *before* the run by the
  independent model in ``tests/hostile/layoutgen.py`` (``json`` + ``hashlib``, not the core) --
  and changes nothing but blob files and index.json; afterwards every blob the new index.json
  reaches is still present (if it was before).

Mutations: bit flips, truncation, splices, deletions and JSON-token insertions in the bytes of
index.json or of a manifest (which then no longer matches its digest), and JSON-level edits
(type swaps, deleted keys, duplicated entries, digests and media types swapped for other real
ones, tags added or removed) of index.json or of a manifest that is then re-hashed and
re-linked into its referrers, so the mutated manifest is one with a valid digest.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hostile.corpus import build_base
from hostile.layoutgen import (
    CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    LAYER,
    OCI_ARTIFACT,
    OCI_INDEX,
    OCI_LAYOUT,
    OCI_MANIFEST,
    REF_NAME,
    canonical,
    diff_snapshots,
    model_live,
    model_reachable,
    present_blobs,
    sha256,
    snapshot_tree,
)
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from io_adapters.cli import cli

BASE_BUILDER, BASE = build_base()
BASE_INDEX = BASE_BUILDER.index_json()
BASE_BLOBS = dict(BASE_BUILDER.blobs)
MEDIA_TYPES = [OCI_MANIFEST, OCI_INDEX, OCI_ARTIFACT, DOCKER_MANIFEST, DOCKER_LIST, CONFIG, LAYER,
               "text/plain"]
TOKENS = [b'"', b"{", b"}", b"[", b"]", b",", b":", b"null", b"-1", b"1e999", b"true",
          b'"sha256:', b"\\u0000", b"\\ud800", b"\xff", b" ", b"0" * 30]


def _is_manifest(data: bytes) -> bool:
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("mediaType") in (OCI_MANIFEST, OCI_INDEX)


MANIFESTS = sorted(d for d, data in BASE_BLOBS.items() if _is_manifest(data))
DIGESTS = sorted(BASE_BLOBS)


# --- byte-level mutations ----------------------------------------------------------------------


@st.composite
def mutate_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    n = len(data)
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "delete", "token"]))
    i = draw(st.integers(0, max(n - 1, 0)))
    if kind == "flip" and n:
        return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1:]
    if kind == "truncate":
        return data[:i]
    if kind == "splice":
        j = draw(st.integers(0, n))
        k = draw(st.integers(j, min(n, j + 64)))
        return data[:i] + data[j:k] + data[i:]
    if kind == "delete":
        return data[:i] + data[i + draw(st.integers(1, 16)):]
    return data[:i] + draw(st.sampled_from(TOKENS)) + data[i:]


# --- JSON-level mutations ------------------------------------------------------------------------


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


REPLACEMENTS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(0, 2000),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
    st.sampled_from(DIGESTS), st.sampled_from(MEDIA_TYPES), st.just([]), st.just({}),
    st.sampled_from(["sha256:../../etc/passwd", "", "SHA256:" + "A" * 64, "md5:abc"]),
)


@st.composite
def mutate_json(draw: st.DrawFn, doc: Any) -> Any:
    doc = json.loads(json.dumps(doc))  # a private copy
    paths = _paths(doc)
    kind = draw(st.sampled_from(["replace", "delete", "duplicate", "digest", "media", "tag"]))
    if kind == "digest":
        targets = [p for p in paths if p and p[-1] == "digest"]
        value: Any = draw(st.sampled_from(DIGESTS))
    elif kind == "media":
        targets = [p for p in paths if p and p[-1] == "mediaType"]
        value = draw(st.sampled_from(MEDIA_TYPES))
    elif kind == "tag":
        entries = [p for p in paths if len(p) == 2 and p[0] == "manifests"]
        if entries:
            entry = _get(doc, draw(st.sampled_from(entries)))
            if isinstance(entry, dict):
                if isinstance(entry.get("annotations"), dict) and REF_NAME in entry["annotations"]:
                    del entry["annotations"][REF_NAME]
                else:
                    entry["annotations"] = {REF_NAME: draw(st.sampled_from(["v1", "v2", "new"]))}
        return doc
    else:
        targets = [p for p in paths if p]
        value = draw(REPLACEMENTS)
    if not targets:
        return doc
    path = draw(st.sampled_from(targets))
    parent = _get(doc, path[:-1])
    if kind == "delete":
        del parent[path[-1]]
    elif kind == "duplicate" and isinstance(parent, list):
        parent.insert(path[-1], json.loads(json.dumps(parent[path[-1]])))
    else:
        parent[path[-1]] = value
    return doc


def _replace_refs(doc: Any, old: str, new: str, size: int) -> Any:
    if isinstance(doc, dict):
        out = {k: _replace_refs(v, old, new, size) for k, v in doc.items()}
        if out.get("digest") == old:
            out["digest"], out["size"] = new, size
        return out
    if isinstance(doc, list):
        return [_replace_refs(v, old, new, size) for v in doc]
    return doc


def relink(blobs: dict[str, bytes], index: bytes, old: str, data: bytes,
           keep_old: bool) -> tuple[dict[str, bytes], bytes]:
    """Store ``data`` as the new version of blob ``old`` under its own digest, and rewrite every
    manifest (re-hashed in turn) and index.json that referenced ``old`` to reference it."""
    blobs = dict(blobs)
    queue = [(old, data)]
    for _ in range(20):  # a mutation can make a loop of references: stop re-linking then
        if not queue:
            break
        old, data = queue.pop()
        new = sha256(data)
        if not keep_old:
            blobs.pop(old, None)
        blobs[new] = data
        needle = old.encode()
        for d, raw in list(blobs.items()):
            if d != new and needle in raw:
                try:
                    doc = json.loads(raw)
                except ValueError:
                    continue
                queue.append((d, canonical(_replace_refs(doc, old, new, len(data)))))
        if needle in index:
            with contextlib.suppress(ValueError):  # an earlier mutation broke it: leave it
                index = json.dumps(_replace_refs(json.loads(index), old, new, len(data))).encode()
    return blobs, index


@st.composite
def mutated_layouts(draw: st.DrawFn) -> tuple[bytes, dict[str, bytes]]:
    index, blobs = BASE_INDEX, dict(BASE_BLOBS)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["index-bytes", "index-json", "index-json",
                                      "manifest-bytes", "manifest-json", "manifest-json"]))
        if where == "index-bytes":
            index = draw(mutate_bytes(index))
        elif where == "index-json":
            try:
                doc = json.loads(index)
            except ValueError:
                continue
            index = json.dumps(draw(mutate_json(doc)), allow_nan=False).encode()
        else:
            candidates = sorted(d for d in MANIFESTS if d in blobs) or sorted(blobs)
            d = draw(st.sampled_from(candidates))
            if where == "manifest-bytes":
                blobs[d] = draw(mutate_bytes(blobs[d]))
            else:
                try:
                    doc = json.loads(blobs[d])
                except ValueError:
                    continue
                new = canonical(draw(mutate_json(doc)))
                blobs, index = relink(blobs, index, d, new, draw(st.booleans()))
    return index, blobs


def write(root: Path, index: bytes, blobs: dict[str, bytes]) -> None:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_bytes(OCI_LAYOUT)
    (root / "index.json").write_bytes(index)
    for d, data in blobs.items():
        (root / "blobs" / "sha256" / d.split(":", 1)[1]).write_bytes(data)


POLICIES = [[], ["--policy", "spec"], ["--policy", "oras"], ["--keep-untagged"]]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_layouts(), st.sampled_from(range(len(POLICIES))), st.sampled_from(["show", "fsck",
                                                                                  "plan", "none"]))
def test_gc_of_a_mutated_layout_never_crashes_and_never_deletes_a_live_blob(
    layout: tuple[bytes, dict[str, bytes]], policy: int, also: str
) -> None:
    index, blobs = layout
    note(f"index.json: {index[:2000]!r}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "layout"
        write(root, index, blobs)
        options = POLICIES[policy]
        live = model_live(root, keep_untagged="spec" in options or "--keep-untagged" in options) or frozenset()
        present = present_blobs(root)
        missing_before = (model_reachable(root) or frozenset()) - present
        before = snapshot_tree(root)
        runner = CliRunner()

        if also != "none":
            args = {"show": ["show", str(root)], "fsck": ["fsck", str(root)],
                    "plan": ["plan", "gc", *options, str(root)]}[also]
            side = runner.invoke(cli, args)
            assert "Traceback" not in side.output and "internal error" not in side.output
            assert side.exception is None or isinstance(side.exception, SystemExit), side.exception
            assert side.exit_code in (0, 1), side.output
            assert diff_snapshots(before, snapshot_tree(root)) == []

        result = runner.invoke(cli, ["gc", "--yes", *options, str(root)])
        text = result.stdout + result.stderr
        assert "Traceback" not in text and "internal error" not in text, text
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        after = snapshot_tree(root)
        event(f"gc exit {result.exit_code}")
        if result.exit_code != 0:
            assert result.exit_code == 1, text
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("ocigraph: error: "), result.stderr
            assert diff_snapshots(before, after) == [], "a refused gc changed files"
            return
        now = present_blobs(root)
        event("gc deleted blobs" if now != present else "gc deleted nothing")
        lost = (live & present) - now
        assert not lost, f"live blobs deleted: {sorted(lost)}"
        for line in diff_snapshots(before, after):
            verb, path = line.split(" ", 1)
            assert (path == str(root / "index.json") and verb == "changed") or (
                verb == "deleted" and os.path.dirname(path) == str(root / "blobs" / "sha256")
            ) or (verb == "touched" and path in (str(root), str(root / "blobs" / "sha256"))), line
        broken = ((model_reachable(root) or frozenset()) - now) - missing_before
        assert not broken, f"index.json now reaches deleted blobs: {sorted(broken)}"
