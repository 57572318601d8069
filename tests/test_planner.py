"""Remembered plans (io_adapters/planner.py): a plan is recalled only when planning again would
make exactly the same plan; any change to the layout, the operation or the policy, and a memo
file that is damaged, means planning again."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import orjson
import pytest
from builder import Builder, two_images_and_a_signature
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ocigraph as og
from io_adapters import cache as cache_mod
from io_adapters import planner
from io_adapters.cli import cli
from io_adapters.planner import plan_layout
from ocigraph.testing import GeneratedLayout, generated_layouts, policies


@pytest.fixture(autouse=True)
def _remember_small_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """These layouts are tiny; by default a layout this small is planned every time."""
    monkeypatch.setattr(planner, "_MIN_BLOBS", 0)
    monkeypatch.setattr(cache_mod, "_MIN_ENTRIES", 0)


def _write(root: Path, index_json: bytes, blobs: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_bytes(index_json)
    for digest, data in blobs.items():
        alg, hexd = digest.split(":", 1)
        (root / "blobs" / alg).mkdir(parents=True, exist_ok=True)
        (root / "blobs" / alg / hexd).write_bytes(data)
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    return root


def _comparable(plan: og.Plan) -> bytes:
    return orjson.dumps({k: v for k, v in plan.to_dict().items() if k != "snapshotTime"})


def _fresh(root: Path, operation: str, refs: list[str], policy: og.Policy) -> og.Plan:
    return plan_layout(root, operation, refs, policy, cache=False).plan


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path, Builder]:
    b, _ = two_images_and_a_signature()
    return _write(tmp_path / "layout", b.index_json(), b.blobs), tmp_path / "cache", b


def test_the_second_run_recalls_the_plan_the_first_made(store) -> None:
    root, cache_dir, _ = store
    first = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    second = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert (first.remembered, second.remembered) == (False, True)
    assert second.graph is None
    assert _comparable(second.plan) == _comparable(first.plan) == _comparable(_fresh(root, "gc", [], og.Policy()))
    assert second.tags == first.tags
    # the recalled plan carries this run's clock reading, not the first run's
    assert second.plan.snapshot_time == second.disk.layout.now


@pytest.mark.parametrize("change", ["new blob", "blob gone", "index.json", "manifest rewritten"])
def test_a_changed_layout_is_planned_again(store, change: str) -> None:
    root, cache_dir, b = store
    plan_layout(root, "delete", ["app:0"], og.Policy(), cache_dir=cache_dir)
    blob_dir = root / "blobs" / "sha256"
    if change == "new blob":
        extra = b.blob("pushed meanwhile")
        (blob_dir / str(extra["digest"]).split(":")[1]).write_bytes(b"pushed meanwhile")
    elif change == "blob gone":
        os.unlink(blob_dir / og.digest_bytes(b"dangling").split(":")[1])
    elif change == "index.json":
        (root / "index.json").write_bytes(orjson.dumps(orjson.loads(b.index_json()), option=orjson.OPT_INDENT_2))
    else:  # the same bytes written again: the mtime the plan was checked against is gone
        manifest = next(d for d, data in b.blobs.items() if b'"layers"' in data)
        path = blob_dir / manifest.split(":")[1]
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = plan_layout(root, "delete", ["app:0"], og.Policy(), cache_dir=cache_dir)
    assert not again.remembered
    assert _comparable(again.plan) == _comparable(_fresh(root, "delete", ["app:0"], og.Policy()))


def test_another_operation_target_or_policy_is_planned_again(store) -> None:
    root, cache_dir, _ = store
    plan_layout(root, "delete", ["app:0"], og.Policy(), cache_dir=cache_dir)
    for operation, refs, policy in [("delete", ["app:1"], og.Policy()),
                                    ("remove", ["app:0"], og.Policy()),
                                    ("delete", ["app:0"], og.Policy.preset("oras")),
                                    ("gc", [], og.Policy(keep_untagged=True))]:
        got = plan_layout(root, operation, refs, policy, cache_dir=cache_dir)
        assert not got.remembered, (operation, refs, policy)
        assert _comparable(got.plan) == _comparable(_fresh(root, operation, refs, policy))


def test_plans_with_grace_depend_on_the_clock_and_are_never_remembered(store) -> None:
    root, cache_dir, _ = store
    policy = og.Policy(grace=3600)
    plan_layout(root, "gc", [], policy, cache_dir=cache_dir)
    assert not plan_layout(root, "gc", [], policy, cache_dir=cache_dir).remembered


def test_no_cache_means_no_memo(store) -> None:
    root, cache_dir, _ = store
    plan_layout(root, "gc", [], og.Policy(), cache=False, cache_dir=cache_dir)
    assert not cache_dir.exists()


def test_a_failed_plan_is_not_remembered(store) -> None:
    root, cache_dir, _ = store
    for _ in range(2):
        with pytest.raises(og.UnknownRefError):
            plan_layout(root, "delete", ["no-such-tag"], og.Policy(), cache_dir=cache_dir)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "garbage", "empty", "edited plan"])
def test_a_damaged_memo_is_ignored(store, damage: str) -> None:
    root, cache_dir, _ = store
    expected = _comparable(plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir).plan)
    (path,) = [p for p in cache_dir.rglob("*") if p.parent.suffix == ".plans"]
    data = path.read_bytes()
    if damage == "edited plan":  # a well-formed file whose checksum no longer matches its body
        damaged = data.replace(b"unreachable", b"target", 1)
        assert damaged != data
    else:
        damaged = {"truncated": data[:-30], "flipped byte": data[:-20] + bytes([data[-20] ^ 1]) + data[-19:],
                   "garbage": os.urandom(len(data)), "empty": b""}[damage]
    path.write_bytes(damaged)
    again = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert not again.remembered
    assert _comparable(again.plan) == expected


def test_only_the_newest_plans_are_kept(store, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache_dir, _ = store
    monkeypatch.setattr(planner, "_KEEP", 2)
    policies_in_order = [og.Policy(), og.Policy(keep_untagged=True), og.Policy.preset("oras"),
                         og.Policy.preset("spec")]
    for policy in policies_in_order:
        plan_layout(root, "gc", [], policy, cache_dir=cache_dir)
    files = [p for p in cache_dir.rglob("*") if p.parent.suffix == ".plans"]
    assert len(files) == 2
    # the newest two are recalled, the oldest two were let go
    recalled = [plan_layout(root, "gc", [], p, cache_dir=cache_dir).remembered
                for p in reversed(policies_in_order)]
    assert recalled[:2] == [True, True]


def test_the_command_line_prints_the_same_plan_twice_and_applies_a_recalled_one(store, monkeypatch) -> None:
    root, cache_dir, _ = store
    monkeypatch.setenv("OCIGRAPH_CACHE_DIR", str(cache_dir))
    runner = CliRunner()
    first = runner.invoke(cli, ["gc", "--dry-run", str(root)])
    second = runner.invoke(cli, ["gc", "--dry-run", str(root)])
    assert first.exit_code == second.exit_code == 0
    assert first.output == second.output and "delete:" in first.output
    done = runner.invoke(cli, ["gc", "--yes", "--format", "json", str(root)])
    assert done.exit_code == 0, done.output
    after = og.plan_gc(og.build_graph(plan_layout(root, "gc", [], og.Policy(), cache=False).disk.layout))
    assert after.is_empty


# -- the property: recalled or not, the plan is what planning now makes ------------------------

_MUTATIONS = st.sampled_from(["nothing", "drop a blob", "add a blob", "rewrite index.json",
                              "touch a blob"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated_layouts(), policies(), _MUTATIONS, st.data())
def test_a_plan_from_the_memo_is_always_the_plan_planning_would_make(
        g: GeneratedLayout, policy: og.Policy, mutation: str, data: st.DataObject) -> None:
    operation = data.draw(st.sampled_from(["gc", "delete"] if g.unambiguous_tags else ["gc"]))
    refs = [data.draw(st.sampled_from(g.unambiguous_tags))] if operation == "delete" else []
    with tempfile.TemporaryDirectory() as tmp:
        root = _write(Path(tmp) / "layout", g.index_json, dict(g.blobs))
        cache_dir = Path(tmp) / "cache"
        try:
            plan_layout(root, operation, refs, policy, cache_dir=cache_dir)
        except og.OcigraphError:
            return  # a refused plan is never remembered (tested above)
        present = sorted(g.blobs)
        if mutation == "drop a blob" and present:
            gone = data.draw(st.sampled_from(present))
            alg, hexd = gone.split(":", 1)
            os.unlink(root / "blobs" / alg / hexd)
        elif mutation == "add a blob":
            content = data.draw(st.binary(min_size=1, max_size=64))
            d = og.digest_bytes(content)
            (root / "blobs" / "sha256" / d.split(":")[1]).write_bytes(content)
        elif mutation == "rewrite index.json":
            doc = orjson.loads(g.index_json)
            doc["manifests"] = doc["manifests"][:-1]
            (root / "index.json").write_bytes(orjson.dumps(doc))
        elif mutation == "touch a blob" and present:
            alg, hexd = data.draw(st.sampled_from(present)).split(":", 1)
            path = root / "blobs" / alg / hexd
            st_ = path.stat()
            os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))
        try:
            expected = _comparable(_fresh(root, operation, refs, policy))
        except og.OcigraphError as exc:
            with pytest.raises(type(exc)):
                plan_layout(root, operation, refs, policy, cache_dir=cache_dir)
            return
        got = plan_layout(root, operation, refs, policy, cache_dir=cache_dir)
        event(f"{mutation}: {'recalled' if got.remembered else 'planned again'}")
        assert _comparable(got.plan) == expected
        if mutation == "nothing" and policy.grace <= 0:
            assert got.remembered


# -- what the review found: plans that must not be recalled -----------------------------------


def _signed_store(tmp_path: Path) -> tuple[Path, Path, Path, bytes]:
    """A tagged image and its signature, which nobody lists (found by sniffing)."""
    b = Builder()
    img = b.manifest(layers=[b.blob("layer")])
    b.entry(img, "app:1")
    sig = b.manifest(layers=[b.blob("sig payload")], subject=img, artifact_type="application/x-sig")
    root = _write(tmp_path / "layout", b.index_json(), b.blobs)
    path = root / "blobs" / "sha256" / str(sig["digest"]).split(":")[1]
    return root, tmp_path / "cache", path, path.read_bytes()


def test_a_plan_made_while_a_blob_was_damaged_is_not_recalled_once_it_is_repaired(tmp_path: Path) -> None:
    root, cache_dir, sig_path, good = _signed_store(tmp_path)
    st = sig_path.stat()
    sig_path.write_bytes(good[:-2] + bytes([good[-2] ^ 1]) + good[-1:])  # same size, one bit
    os.utime(sig_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    damaged = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir).plan
    sig = "sha256:" + sig_path.name
    assert sig in {d.digest for d in damaged.deletions}  # not a manifest any more: garbage
    sig_path.write_bytes(good)  # repaired as cp -p would: the old mtime back
    os.utime(sig_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert not again.remembered
    assert sig not in {d.digest for d in again.plan.deletions}


def test_a_chmod_is_a_change(store) -> None:
    root, cache_dir, b = store
    plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    manifest = next(d for d, data in b.blobs.items() if b'"layers"' in data)
    path = root / "blobs" / "sha256" / manifest.split(":")[1]
    os.chmod(path, 0o600)  # size and mtime stay; the ctime moves
    assert not plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir).remembered


def test_plans_made_by_other_code_are_not_recalled(store, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache_dir, _ = store
    plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    monkeypatch.setattr(cache_mod, "_CODE", ["another version of ocigraph"])
    assert not plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir).remembered


def test_a_plan_made_by_tag_is_recalled_by_the_digest_it_named(store) -> None:
    root, cache_dir, _ = store
    made = plan_layout(root, "delete", ["app:0"], og.Policy(), cache_dir=cache_dir).plan
    by_digest = plan_layout(root, "delete", list(made.targets), og.Policy(), cache_dir=cache_dir)
    assert by_digest.remembered and _comparable(by_digest.plan) == _comparable(made)


def test_a_remembered_file_holding_another_plan_is_not_used(store) -> None:
    root, cache_dir, _ = store
    gc_plan = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    delete_plan = plan_layout(root, "delete", ["app:1"], og.Policy(), cache_dir=cache_dir).plan
    memo = planner.PlanMemo(gc_plan.disk, cache_dir)
    key = memo._key("gc", [], og.Policy())
    assert key is not None and memo.folder is not None
    # a well-formed, checksummed file under gc's key that holds the delete plan
    planner._save(memo.folder, key, [delete_plan.to_json(indent=False), b"{}", b"{}"])
    again = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert not again.remembered and again.plan.operation == "gc"


def test_a_blob_that_cannot_be_stat_ed_is_an_error_naming_it(store, monkeypatch: pytest.MonkeyPatch) -> None:
    from io_adapters import layout as layout_mod

    root, _, _ = store
    disk = layout_mod.read_layout(root, cache=False)
    digest = next(iter(disk.layout.blobs))

    def denied(path: str) -> os.stat_result:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(layout_mod.os, "lstat", denied)
    with pytest.raises(og.OcigraphError, match=r"blobs/sha256/[0-9a-f]{64}: cannot stat \(Permission denied\)"):
        disk.layout.blobs[digest]
