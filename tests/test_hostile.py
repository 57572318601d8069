"""Hostile and broken layouts through the CLI: a clear one-line error or a documented safe
behaviour, never a traceback, and no file changed unless the operation is safe.

The corpus is ``tests/hostile/corpus.py`` (one builder per case, with its expected outcome);
each case runs through ``gc --yes``, ``plan gc``, ``show``, ``delete --yes v1`` and ``fsck``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from hostile.corpus import CASES, Base, Hostile, blob_file, build_base, write_base
from hostile.killpoints import child_env
from hostile.layoutgen import (
    LAYER,
    OCI_MANIFEST,
    REF_NAME,
    canonical,
    diff_snapshots,
    model_live,
    model_reachable,
    present_blobs,
    snapshot_tree,
)

import ocigraph as og
from io_adapters.cli import cli

COMMANDS: dict[str, Sequence[str]] = {
    "gc": ("gc", "--yes", "{L}"),
    "plan": ("plan", "gc", "{L}"),
    "show": ("show", "{L}"),
    "delete": ("delete", "--yes", "{L}", "v1"),
    "fsck": ("fsck", "{L}"),
}
CHANGING = {"gc", "delete"}


def run_cli(args: Sequence[str]) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def assert_no_crash(result: Result) -> None:
    text = result.stdout + result.stderr
    assert "Traceback" not in text
    assert "internal error" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def assert_one_line_error(result: Result, says: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("ocigraph: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert says in errors[0], f"{says!r} not in {errors[0]!r}"
    assert len(errors[0]) < 2000, f"an error line of {len(errors[0])} characters is not clear"


def only_safe_changes(before: Mapping[str, Any], after: Mapping[str, Any], root: Path) -> list[str]:
    """Changes other than deleting regular blob files and rewriting index.json."""
    bad = []
    blob_dirs = {os.path.join(str(root), "blobs", a) for a in og.SWEEPABLE_ALGORITHMS}
    for line in diff_snapshots(before, after):
        verb, path = line.split(" ", 1)
        if path == str(root / "index.json") and verb == "changed":
            continue
        if verb == "deleted" and os.path.dirname(path) in blob_dirs and before[path][0] == "file":
            continue
        if verb == "touched" and (path in blob_dirs or path == str(root)):
            continue  # a folder's mtime moves when an entry in it goes
        bad.append(line)
    return bad


@pytest.fixture
def hostile_layout(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "layout", tmp_path / "outside"
    outside.mkdir()
    return root, outside


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_layout(case: Hostile, command: str, hostile_layout: tuple[Path, Path]) -> None:
    root, outside = hostile_layout
    base = write_base(root)
    case.build(root, outside, base)
    live_before = model_live(root) or frozenset()
    present_before = present_blobs(root)
    before = snapshot_tree(root, outside)

    result = run_cli([a.replace("{L}", str(root)) for a in COMMANDS[command]])
    assert_no_crash(result)
    after = snapshot_tree(root, outside)

    if command == "fsck":
        if case.fsck is None:
            assert result.exit_code == 0, result.stdout + result.stderr
        else:
            assert result.exit_code == 1, result.stdout + result.stderr
            assert case.fsck in result.stdout + result.stderr
        assert diff_snapshots(before, after) == []
        return

    if command == "show" and case.show is not None:
        assert result.exit_code == 0, result.stdout + result.stderr
        assert case.show in result.stdout
        assert diff_snapshots(before, after) == []
        return

    expected = case.delete_error if command == "delete" else case.error
    if expected is not None:
        assert_one_line_error(result, expected)
        assert diff_snapshots(before, after) == [], "a refused command changed files"
        return

    assert result.exit_code == 0, result.stdout + result.stderr
    if command not in CHANGING:
        assert diff_snapshots(before, after) == []
        return
    assert only_safe_changes(before, after, root) == []
    # nothing reachable from the new index.json was deleted
    lost = (model_reachable(root) or frozenset()) & (present_before - present_blobs(root))
    assert not lost, f"deleted blobs index.json still reaches: {sorted(lost)[:3]}"
    if command == "gc":
        assert not (live_before & (present_before - present_blobs(root))), "a live blob was deleted"
        if case.check is not None:
            case.check(root, outside, base)


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert sum(1 for c in CASES if c.error is not None) >= 30


@pytest.mark.parametrize("name", ["index_json_truncated", "blobs_sha256_is_a_symlink_outside",
                                  "non_utf8_file_names", "digest_path_traversal"])
def test_hostile_layout_through_the_installed_command(name: str, hostile_layout: tuple[Path, Path]) -> None:
    # The same through a real process: exit status, stderr, and no traceback.
    case = next(c for c in CASES if c.name == name)
    root, outside = hostile_layout
    case.build(root, outside, write_base(root))
    before = snapshot_tree(root, outside)
    proc = subprocess.run([sys.executable, "-m", "io_adapters", "gc", "--yes", str(root)],
                          capture_output=True, env=child_env(), timeout=120)
    assert b"Traceback" not in proc.stderr + proc.stdout
    if case.error is None:
        assert proc.returncode == 0, proc.stderr
        assert only_safe_changes(before, snapshot_tree(root, outside), root) == []
    else:
        assert proc.returncode == 1
        assert len(proc.stderr.strip().splitlines()) == 1
        assert case.error.encode() in proc.stderr
        assert diff_snapshots(before, snapshot_tree(root, outside)) == []


# --- unreadable files: tests run as root, whom chmod 000 does not stop ------------------------


def run_without_file_override(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """The CLI as root minus CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so file modes apply to it."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop the file-permission capabilities")
    cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable,
           "-m", "io_adapters", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=120)
    if "Operation not permitted" in proc.stderr and "setpriv" in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    return proc


@pytest.fixture
def unreadable_layout(tmp_path: Path) -> tuple[Path, Base]:
    root = tmp_path / "layout"
    return root, write_base(root)


UNREADABLE = [
    ("index.json", "index.json: cannot open (Permission denied)"),
    ("live-manifest", "cannot read (Permission denied)"),
    ("blobs/sha256", "blobs/sha256: cannot open (Permission denied)"),
]


@pytest.mark.parametrize(("what", "says"), UNREADABLE)
def test_unreadable_files_are_a_clear_error(
    unreadable_layout: tuple[Path, Base], what: str, says: str
) -> None:
    root, base = unreadable_layout
    target = blob_file(root, base.v2["digest"]) if what == "live-manifest" else root / what
    os.chmod(target, 0)
    before = snapshot_tree(root)
    for args in (("gc", "--yes", str(root)), ("plan", "gc", str(root)),
                 ("delete", "--yes", str(root), "v1")):
        proc = run_without_file_override(args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    fsck = run_without_file_override(("fsck", str(root)))
    assert fsck.returncode == 1 and "Traceback" not in fsck.stderr
    os.chmod(target, 0o755 if target.is_dir() else 0o644)
    assert diff_snapshots(before, snapshot_tree(root)) == [] or all(
        line.startswith("touched") for line in diff_snapshots(before, snapshot_tree(root)))


def test_unreadable_garbage_blob_is_still_collected(unreadable_layout: tuple[Path, Base]) -> None:
    # Deleting needs write access to the folder, not read access to the file: an unreadable
    # garbage layer goes like any other (nothing needs to read it).
    root, base = unreadable_layout
    victim = blob_file(root, base.dangling["digest"])
    os.chmod(victim, 0)
    proc = run_without_file_override(("gc", "--yes", str(root)))
    assert proc.returncode == 0, proc.stderr
    assert not victim.exists()


# --- the core on cycles it could only meet without verification ---------------------------------


class UnverifiedSource:
    """A manifest source that trusts its bytes: lets the core see crafted cycles."""

    def __init__(self, docs: Mapping[str, Any]) -> None:
        self.docs = docs

    def read_manifests(self, digests: Sequence[str]) -> dict[str, og.Manifest]:
        return {d: og.manifest_from_document(d, self.docs[d], 100) if d in self.docs
                else og.parse_manifest(d, None) for d in digests}


def _d(name: str) -> str:
    return og.digest_bytes(name.encode())


def _desc(digest: str, media_type: str = OCI_MANIFEST) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": 100}


def cyclic_layout(tagged: bool) -> og.Layout:
    a, b, c, layer = _d("a"), _d("b"), _d("c"), _d("layer")
    docs = {
        a: {"mediaType": OCI_MANIFEST, "config": _desc(layer, LAYER), "layers": [],
            "subject": _desc(b)},
        b: {"mediaType": OCI_MANIFEST, "config": _desc(layer, LAYER), "layers": [],
            "subject": _desc(a)},
        c: {"mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [_desc(c, "application/vnd.oci.image.index.v1+json"), _desc(a)]},
    }
    entry = _desc(c, "application/vnd.oci.image.index.v1+json")
    if tagged:
        entry["annotations"] = {REF_NAME: "loop"}
    index = orjson.dumps({"schemaVersion": 2, "manifests": [entry]})
    blobs = {d: og.BlobInfo(100) for d in (a, b, c, layer)}
    return og.Layout(index=og.parse_index(index), blobs=blobs, manifests=UnverifiedSource(docs))


@pytest.mark.parametrize("tagged", [True, False])
def test_core_walks_terminate_on_subject_cycles_and_self_references(tagged: bool) -> None:
    g = og.build_graph(cyclic_layout(tagged))
    live = og.live_set(g)
    everything = {_d("a"), _d("b"), _d("c"), _d("layer")}
    assert live == (everything if tagged else frozenset())
    gc = og.plan_gc(g)
    assert gc.deleted_digests() == (frozenset() if tagged else everything)
    assert len(gc.deletions) == len(gc.deleted_digests())  # each node planned once
    if tagged:
        assert og.why_live(g, _d("b")) is not None
        plan = og.plan_delete(g, ["loop"])
        assert _d("c") in plan.deleted_digests()
        assert len(plan.deletions) == len(plan.deleted_digests())
        # a and b keep each other (each is the other's predecessor), so Delete leaves them as
        # garbage -- conservative -- and the next GC, seeing them unreachable, takes them.
        after = og.simulate(cyclic_layout(tagged), plan)
        rest = og.plan_gc(og.build_graph(after)).deleted_digests()
        assert plan.deleted_digests() | rest == everything


# --- size ----------------------------------------------------------------------------------------


def test_index_with_100000_entries_completes_in_reasonable_time(tmp_path: Path) -> None:
    b, base = build_base()
    entries = list(b.entries)
    extra = 100_000 - len(entries)
    # Tagged and untagged entries over the base images, plus absent leaves: a busy store.
    for i in range(extra):
        if i % 3 == 0:
            entries.append(dict(base.v1, annotations={REF_NAME: f"build-{i}"}))
        elif i % 3 == 1:
            entries.append(dict(base.garbage))
        else:
            entries.append({"mediaType": LAYER, "digest": og.digest_bytes(b"%d" % i), "size": 1})
    b.entries = entries
    root = b.write(tmp_path / "big")
    assert len(orjson.loads((root / "index.json").read_bytes())["manifests"]) == 100_000

    started = time.monotonic()
    plan = run_cli(["plan", "gc", "--format", "json", str(root)])
    assert plan.exit_code == 0, plan.stderr
    gc = run_cli(["gc", "--yes", str(root)])
    elapsed = time.monotonic() - started
    assert gc.exit_code == 0, gc.stderr
    assert elapsed < 60, f"plan + gc of a 100,000-entry index took {elapsed:.1f}s"
    after = orjson.loads((root / "index.json").read_bytes())["manifests"]
    # untagged entries of garbage and untagged absent leaves are dropped; tags stay
    assert len(after) == 5 - 1 + extra // 3 + (1 if extra % 3 else 0)
    assert base.v1["digest"] in present_blobs(root)
    assert base.garbage["digest"] not in present_blobs(root)


# --- hostile plan files -------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b'{"ocigraphPlan": 99}',
                                     b'{"ocigraphPlan": 1, "operation": "gc"}',
                                     b'{"ocigraphPlan": 1, "operation": "rm -rf", "targets": []}'])
def test_apply_of_a_malformed_plan_file_is_one_line_and_touches_nothing(
    tmp_path: Path, content: bytes
) -> None:
    root = tmp_path / "layout"
    write_base(root)
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(content)
    before = snapshot_tree(root)
    result = run_cli(["apply", str(root), str(plan_file)])
    assert_no_crash(result)
    assert_one_line_error(result, "not a valid ocigraph plan")
    assert diff_snapshots(before, snapshot_tree(root)) == []


def test_apply_of_a_plan_with_a_path_in_a_digest_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    write_base(root)
    (tmp_path / "victim").write_bytes(b"x")
    doc = orjson.loads(run_cli(["plan", "gc", "--format", "json", str(root)]).stdout)
    doc["deletions"].append({"digest": "sha256:../../victim", "reason": "unreachable",
                             "via": None, "size": 1, "present": True, "mediaTypes": []})
    doc["bytesFreed"] += 1
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(orjson.dumps(doc))
    before = snapshot_tree(root)
    result = run_cli(["apply", str(root), str(plan_file)])
    assert_no_crash(result)
    assert_one_line_error(result, "invalid digest")
    assert (tmp_path / "victim").exists()
    assert diff_snapshots(before, snapshot_tree(root)) == []


def test_apply_through_a_symlinked_blobs_folder_is_refused(tmp_path: Path) -> None:
    # A plan made on a good layout, applied after blobs/sha256 became a symlink out of it.
    root, outside = tmp_path / "layout", tmp_path / "outside"
    write_base(root)
    plan_file = tmp_path / "plan.json"
    assert run_cli(["plan", "gc", str(root), "-o", str(plan_file)]).exit_code == 0
    (root / "blobs" / "sha256").rename(outside)
    (root / "blobs" / "sha256").symlink_to(outside)
    before = snapshot_tree(root, outside)
    result = run_cli(["apply", str(root), str(plan_file)])
    assert_no_crash(result)
    assert_one_line_error(result, "blobs/sha256: is a symlink")
    assert diff_snapshots(before, snapshot_tree(root, outside)) == []


def _saved_plan(root: Path, tmp_path: Path, *args: str) -> tuple[Path, dict[str, Any]]:
    result = run_cli(["plan", *args, "--format", "json", str(root)] if args[0] == "gc" else
                     ["plan", args[0], "--format", "json", str(root), *args[1:]])
    assert result.exit_code == 0, result.stderr
    return tmp_path / "plan.json", orjson.loads(result.stdout)


@pytest.mark.parametrize("tamper", ["add-live-blob", "add-live-layer", "drop-tagged-entry",
                                    "untag-entry"])
def test_apply_of_an_edited_plan_that_would_lose_live_data_is_refused(
    tmp_path: Path, tamper: str
) -> None:
    # The fingerprint still matches (index.json did not change) but the plan was edited to do
    # more than GC would: apply re-plans under the lock and refuses, touching nothing.
    root = tmp_path / "layout"
    base = write_base(root)
    plan_file, doc = _saved_plan(root, tmp_path, "gc")
    if tamper in ("add-live-blob", "add-live-layer"):
        victim = base.v2 if tamper == "add-live-blob" else base.v1_layers[0]
        doc["deletions"].insert(0, {"digest": victim["digest"], "reason": "unreachable",
                                    "via": None, "size": victim["size"], "present": True,
                                    "mediaTypes": []})
        doc["bytesFreed"] += victim["size"]
    else:
        action = "drop" if tamper == "drop-tagged-entry" else "untag"
        doc["indexChanges"].append({"position": 0, "digest": base.v1["digest"], "tag": "v1",
                                    "action": action})
    plan_file.write_bytes(orjson.dumps(doc))
    before = snapshot_tree(root)
    result = run_cli(["apply", str(root), str(plan_file)])
    assert_no_crash(result)
    assert_one_line_error(result, "refusing the plan")
    assert diff_snapshots(before, snapshot_tree(root)) == []


def test_apply_of_an_edited_plan_that_does_less_is_fine(tmp_path: Path) -> None:
    # Removing lines from a plan (keeping more) is the edit reviewers make; it applies.
    root = tmp_path / "layout"
    base = write_base(root)
    plan_file, doc = _saved_plan(root, tmp_path, "gc")
    kept = base.dangling["digest"]
    doc["deletions"] = [d for d in doc["deletions"] if d["digest"] != kept]
    doc.pop("bytesFreed")
    plan_file.write_bytes(orjson.dumps(doc))
    result = run_cli(["apply", str(root), str(plan_file)])
    assert result.exit_code == 0, result.stderr
    assert kept in present_blobs(root)
    assert base.garbage["digest"] not in present_blobs(root)


def test_apply_refuses_a_plan_whose_layer_a_new_manifest_now_uses(tmp_path: Path) -> None:
    # After planning, a push reused a garbage layer: it wrote a manifest naming the layer and
    # tagged it (index.json changed: stale).  Even if the push has only written the manifest
    # so far, applying with --grace-made plan is refused, since the young manifest keeps it.
    root = tmp_path / "layout"
    base = write_base(root)
    for d in present_blobs(root):
        os.utime(blob_file(root, d), (time.time() - 7200,) * 2)
    plan_file = tmp_path / "plan.json"
    assert run_cli(["plan", "gc", "--grace", "1h", str(root), "-o", str(plan_file)]).exit_code == 0
    garbage_doc = orjson.loads(blob_file(root, base.garbage["digest"]).read_bytes())
    layer = garbage_doc["layers"][0]
    raw = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                     "config": garbage_doc["config"], "layers": [layer]})
    blob_file(root, og.digest_bytes(raw)).write_bytes(raw)  # young, not yet in index.json
    before = snapshot_tree(root)
    result = run_cli(["apply", str(root), str(plan_file)])
    assert_no_crash(result)
    assert_one_line_error(result, "refusing the plan")
    assert diff_snapshots(before, snapshot_tree(root)) == []


def test_delete_of_a_deeply_nested_index_cascades_through_every_level(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == "deep_index_nesting")
    root, outside = tmp_path / "layout", tmp_path / "outside"
    outside.mkdir()
    base = write_base(root)
    case.build(root, outside, base)
    before = present_blobs(root)
    result = run_cli(["delete", "--yes", "--format", "json", str(root), "deep"])
    assert_no_crash(result)
    assert result.exit_code == 0, result.stderr
    deleted = set(orjson.loads(result.stdout)["result"]["deleted"])
    assert len(deleted) == case.extra["depth"]
    assert before - present_blobs(root) == deleted
    assert base.v2["digest"] in present_blobs(root)  # tagged, at the bottom: kept
