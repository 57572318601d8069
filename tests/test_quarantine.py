"""The quarantine, re-checks while deleting, undo, and what fsck says about what went missing.

The rules (``io_adapters/quarantine.py``, docs/guarantees.md §5):

* apply moves the deleted blobs into ``.ocigraph/quarantine/<id>/``; once all are, a re-check
  moves back whatever the index.json then on disk makes live (every entry a root), and the rest
  is unlinked -- or, with ``keep_deleted``, kept: ``restore`` undoes the apply (refusing what a
  later change makes unsafe); ``recover`` and ``purge_expired`` finish and end quarantines;
* Ctrl-C raises ``ApplyInterrupted`` with the exact state;
* apply compares blob times on the file system's clock, whatever this machine's says;
* fsck checks unlisted referrers of live images like any manifest, and names the quarantine
  holding a blob index.json lists.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hostile.layoutgen import (
    LayoutBuilder,
    diff_snapshots,
    gc_workload,
    model_reachable,
    present_blobs,
    snapshot_tree,
)

import ocigraph as og
from io_adapters.apply import ApplyInterrupted, apply_plan
from io_adapters.cli import cli
from io_adapters.fsck import MISSING_HINT, fsck
from io_adapters.layout import LayoutDir, blob_path, read_layout
from io_adapters.quarantine import (
    Quarantine,
    RestoreRefusedError,
    purge_expired,
    quarantined,
    recover,
    restore,
)

HOUR = 3600.0


def plan_of(root: Path, operation: str = "gc", *refs: str) -> og.Plan:
    disk = read_layout(root)
    graph = og.build_graph(disk.layout)
    plan = og.plan_gc(graph) if operation == "gc" else og.plan_delete(graph, list(refs))
    return plan


def two_tags(root: Path) -> dict[str, Any]:
    """Images ``a`` and ``b`` sharing a layer; a signature of ``a`` listed untagged; a
    loose blob."""
    b = LayoutBuilder()
    shared = b.blob("shared layer")
    a, img_b = b.image("a", [shared]), b.image("b", [shared])
    b.entry(a, "a")
    b.entry(img_b, "b")
    sig = b.signature("a", a)
    b.entry(sig)
    loose = b.blob("loose")
    b.write(root)
    return {"a": a["digest"], "b": img_b["digest"], "sig": sig["digest"], "shared": shared["digest"],
            "loose": loose["digest"]}


def held(root: Path) -> set[str]:
    return {d for q in quarantined(root) for d in q.blobs}


# --- keep_deleted, restore ----------------------------------------------------------------


def test_a_kept_apply_holds_what_it_deletes_and_restore_puts_everything_back(tmp_path: Path) -> None:
    root = tmp_path / "L"
    names = two_tags(root)
    before_index = (root / "index.json").read_bytes()
    before_blobs = present_blobs(root)
    plan = plan_of(root, "delete", "a")
    report = apply_plan(root, plan, keep_deleted=HOUR)
    assert report.quarantine is not None and set(report.deleted) == plan.deleted_digests()
    assert names["shared"] in present_blobs(root) and names["a"] not in present_blobs(root)
    [info] = quarantined(root)
    assert info.id == report.quarantine and set(info.blobs) == plan.deleted_digests()
    assert info.bytes == plan.bytes_freed and info.operation == "delete"
    assert info.keep_until is not None and info.keep_until > time.time() + HOUR - 60
    assert fsck(root).ok  # what index.json lists is all there

    done = restore(root)
    assert done.id == report.quarantine and set(done.blobs) == plan.deleted_digests()
    assert (root / "index.json").read_bytes() == before_index  # byte for byte
    assert present_blobs(root) == before_blobs
    assert not (root / ".ocigraph").exists()


def test_restore_merges_the_entries_into_an_index_json_changed_since(tmp_path: Path) -> None:
    root = tmp_path / "L"
    names = two_tags(root)
    apply_plan(root, plan_of(root, "delete", "a"), keep_deleted=HOUR)
    # another tool pushes an image and rewrites index.json (its own formatting)
    doc = json.loads((root / "index.json").read_bytes())
    blob = b"pushed later"
    digest = og.digest_bytes(blob)
    blob_path(root, digest).write_bytes(blob)
    doc["manifests"].append({"mediaType": "application/octet-stream", "digest": digest,
                             "size": len(blob), "annotations": {og.REF_NAME: "later"}})
    (root / "index.json").write_text(json.dumps(doc))
    restore(root)
    tags = {e.tag: e.digest for e in read_layout(root).layout.index.entries if e.tag}
    assert tags == {"a": names["a"], "b": names["b"], "later": digest}
    assert names["sig"] in {e.digest for e in read_layout(root).layout.index.entries}
    assert fsck(root).ok


def test_restore_refuses_a_tag_that_now_names_another_image(tmp_path: Path) -> None:
    root = tmp_path / "L"
    names = two_tags(root)
    apply_plan(root, plan_of(root, "delete", "a"), keep_deleted=HOUR)
    doc = json.loads((root / "index.json").read_bytes())
    doc["manifests"].append({**doc["manifests"][0], "annotations": {og.REF_NAME: "a"}})
    (root / "index.json").write_text(json.dumps(doc))
    before = snapshot_tree(root)
    with pytest.raises(RestoreRefusedError, match=f"tag 'a' now names {names['b']}"):
        restore(root)
    assert diff_snapshots(before, snapshot_tree(root)) == []


def test_restore_refuses_a_blob_of_that_name_with_other_content(tmp_path: Path) -> None:
    root = tmp_path / "L"
    names = two_tags(root)
    apply_plan(root, plan_of(root, "delete", "a"), keep_deleted=HOUR)
    blob_path(root, names["a"]).write_bytes(b"not the manifest")
    before = snapshot_tree(root)
    with pytest.raises(RestoreRefusedError, match="exists with other content"):
        restore(root)
    assert diff_snapshots(before, snapshot_tree(root)) == []


def test_restore_refuses_when_a_blob_a_restored_entry_needs_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "L"
    two_tags(root)
    apply_plan(root, plan_of(root, "delete", "a"), keep_deleted=HOUR)
    [info] = quarantined(root)
    layer = next(d for d, n in info.blobs.items() if n == len("layer 0 of a"))
    (root / ".ocigraph" / "quarantine" / info.id / "sha256" / layer.split(":")[1]).unlink()
    before = snapshot_tree(root)
    with pytest.raises(RestoreRefusedError, match=f"{layer}, which a restored entry needs, is gone"):
        restore(root)
    assert diff_snapshots(before, snapshot_tree(root)) == []


def test_restore_with_nothing_kept_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "L"
    two_tags(root)
    apply_plan(root, plan_of(root, "delete", "a"))
    with pytest.raises(RestoreRefusedError, match=r"no apply kept its blobs .*--keep-deleted"):
        restore(root)


def test_purge_expired_ends_only_the_quarantines_whose_time_is_up(tmp_path: Path) -> None:
    root = tmp_path / "L"
    names = two_tags(root)
    plan = plan_of(root, "delete", "a")
    first = apply_plan(root, plan, keep_deleted=60).quarantine
    second = apply_plan(root, plan_of(root, "gc"), keep_deleted=HOUR).quarantine
    assert [q.id for q in quarantined(root)] == [first, second]
    assert names["loose"] in held(root)
    done = purge_expired(root, time.time() + 120)
    assert done.finished == (first,) and done.kept == (second,)
    assert done.purged == len(plan.deletions) and done.purged_bytes == plan.bytes_freed
    assert [q.id for q in quarantined(root)] == [second]
    purge_expired(root, time.time() + 2 * HOUR)
    assert not (root / ".ocigraph").exists() and fsck(root).ok


def test_a_kept_quarantine_whose_keep_until_is_not_a_number_stays(tmp_path: Path) -> None:
    root = tmp_path / "L"
    two_tags(root)
    kept = apply_plan(root, plan_of(root, "delete", "a"), keep_deleted=HOUR).quarantine
    journal = root / ".ocigraph" / "quarantine" / str(kept) / "journal.json"
    journal.write_text(json.dumps({**json.loads(journal.read_bytes()), "keepUntil": "soon"}))
    assert recover(root).kept == (kept,)
    assert purge_expired(root, float("inf")).kept == (kept,)


def test_a_quarantine_purged_while_they_are_listed_is_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "L"
    two_tags(root)
    kept = apply_plan(root, plan_of(root, "delete", "a"), keep_deleted=HOUR).quarantine
    real = LayoutDir.open_folder

    def purged_meanwhile(self: LayoutDir, rel: str, **kw: Any) -> int | None:
        if rel == kept:  # a purge by another process, between the listing and the open
            shutil.rmtree(root / ".ocigraph" / "quarantine" / rel)
        return real(self, rel, **kw)

    monkeypatch.setattr(LayoutDir, "open_folder", purged_meanwhile)
    assert quarantined(root) == ()


def test_recover_brings_back_what_a_tool_lists_again_later(tmp_path: Path) -> None:
    root = tmp_path / "L"
    two_tags(root)
    old = (root / "index.json").read_bytes()
    plan = plan_of(root, "delete", "a")
    apply_plan(root, plan, keep_deleted=HOUR)
    (root / "index.json").write_bytes(old)  # a tool that read it before writes it back now
    report = fsck(root)
    assert not report.ok and {p.kind for p in report.problems} == {"missing"}
    assert all(quarantined(root)[0].id in p.detail for p in report.problems)
    assert report.hints == (MISSING_HINT,)
    result = recover(root)
    assert result.kept and set(result.restored) == plan.deleted_digests()
    assert fsck(root).ok


# --- the default apply: the same quarantine, purged before apply returns ------------------


def test_a_default_apply_leaves_nothing_behind_in_the_layout(tmp_path: Path) -> None:
    root = tmp_path / "L"
    two_tags(root)
    before = snapshot_tree(root)
    report = apply_plan(root, plan_of(root, "delete", "a"))
    assert report.quarantine is None and report.deleted
    created = [line for line in diff_snapshots(before, snapshot_tree(root))
               if line.startswith("created")]
    assert created == []


def test_blobs_a_tool_lists_again_mid_apply_all_come_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = gc_workload(60, n_dangling=0).write(tmp_path / "L")
    old = (root / "index.json").read_bytes()
    plan = plan_of(root)
    todo = [d.digest for d in plan.deletions if d.present]
    assert len(todo) > 300

    def writer_after_the_first_batch(done: int) -> None:
        if done == min(1024, len(todo)):  # a tool that read index.json before writes it back now
            (root / "index.json").write_bytes(old)

    report = apply_plan(root, plan, progress=writer_after_the_first_batch)
    reachable = model_reachable(root)
    assert reachable is not None and reachable <= present_blobs(root)  # nothing it lists is lost
    assert reachable & set(todo) and set(report.relisted) == reachable & set(todo)
    assert set(report.deleted) == set(todo) - reachable
    assert not (root / ".ocigraph").exists() and fsck(root).ok


def test_a_rename_failing_half_way_settles_what_was_moved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = gc_workload(10, n_dangling=0).write(tmp_path / "L")
    plan = plan_of(root)
    total = sum(d.present for d in plan.deletions)
    real, calls = os.rename, [0]

    def failing(src: str, dst: str, **kw: Any) -> None:
        calls[0] += 1
        if calls[0] > total // 2:
            raise PermissionError(13, "Permission denied")
        real(src, dst, **kw)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(og.OcigraphError, match="Permission denied") as info:
        apply_plan(root, plan)
    monkeypatch.undo()
    err: Any = info.value
    assert err.done == total // 2 and err.total == total and err.index_written
    assert "\n" not in str(err) and not (root / ".ocigraph").exists()
    assert model_reachable(root) <= present_blobs(root)  # type: ignore[operator]


@pytest.mark.parametrize("at", [1, 7, 20])
@pytest.mark.parametrize("keep", [None, HOUR])
def test_ctrl_c_says_exactly_how_many_blobs_left_the_layout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int, keep: float | None) -> None:
    root = gc_workload(6, n_dangling=0).write(tmp_path / "L")
    before = present_blobs(root)
    plan = plan_of(root)
    real, calls = os.rename, [0]

    def interrupted(src: str, dst: str, **kw: Any) -> None:
        calls[0] += 1
        real(src, dst, **kw)
        if calls[0] == at:  # just after the rename, before apply counts it
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(ApplyInterrupted) as info:
        apply_plan(root, plan, keep_deleted=keep)
    monkeypatch.undo()
    state = info.value
    assert isinstance(state, KeyboardInterrupt) and state.index_written
    assert state.total == sum(d.present for d in plan.deletions)
    assert state.deleted == len(before - present_blobs(root)) == at
    recover(root)  # what the next command does first
    assert present_blobs(root) | held(root) | (before - present_blobs(root)) == before


def test_ctrl_c_before_the_first_move_never_counts_a_file_of_the_working_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interrupted count looks for the blob it may be one behind on in the quarantine's
    folder of its algorithm; before that folder exists it must not look anywhere else (a
    ``dir_fd`` of ``None`` would be the working folder, here holding files of those names)."""
    root = gc_workload(6, n_dangling=0).write(tmp_path / "L")
    before = present_blobs(root)
    plan = plan_of(root)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for d in plan.deletions:
        (cwd / og.blob_parts(d.digest)[1]).write_bytes(b"not a blob")
    real = Quarantine.folder

    def folder(self: Quarantine, alg: str, create: bool = False) -> int | None:
        if create:  # the first move makes the folder: interrupted just before
            raise KeyboardInterrupt
        return real(self, alg, create)

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(Quarantine, "folder", folder)
    with pytest.raises(ApplyInterrupted) as info:
        apply_plan(root, plan)
    monkeypatch.undo()
    assert info.value.deleted == 0 and present_blobs(root) == before


def test_restore_by_id_and_quarantined_counts_bytes(tmp_path: Path) -> None:
    root = tmp_path / "L"
    two_tags(root)
    first = apply_plan(root, plan_of(root, "delete", "a"), keep_deleted=HOUR)
    second = apply_plan(root, plan_of(root, "gc"), keep_deleted=HOUR)
    sizes = {q.id: q.bytes for q in quarantined(root)}
    assert sizes == {first.quarantine: first.bytes_freed, second.quarantine: second.bytes_freed}
    assert restore(root, first.quarantine).id == first.quarantine
    assert [q.id for q in quarantined(root)] == [second.quarantine]
    with pytest.raises(RestoreRefusedError):
        restore(root, "20000101T000000.000000Z-1")


# --- clocks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [-HOUR, HOUR])
def test_a_skewed_machine_clock_neither_skips_nor_deletes_wrongly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skew: float) -> None:
    w = gc_workload(5).write(tmp_path / "template")
    reference = tmp_path / "reference"
    shutil.copytree(w, reference)
    apply_plan(reference, plan_of(reference))
    root = tmp_path / "L"
    shutil.copytree(w, root)
    real_time, real_ns = time.time, time.time_ns
    monkeypatch.setattr(time, "time", lambda: real_time() + skew)  # as faketime would
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + int(skew * 1e9))
    plan = plan_of(root)
    rewritten = next(d.digest for d in plan.deletions if d.present)
    data = blob_path(root, rewritten).read_bytes()
    time.sleep(0.05)
    blob_path(root, rewritten).unlink()
    blob_path(root, rewritten).write_bytes(data)  # written again after the plan was made
    report = apply_plan(root, plan)
    assert report.skipped == ((rewritten, "written after the plan was made"),)
    assert report.clock_warning is not None
    assert ("behind" if skew > 0 else "ahead of") in report.clock_warning
    blob_path(root, rewritten).unlink()
    assert present_blobs(root) == present_blobs(reference)
    assert (root / "index.json").read_bytes() == (reference / "index.json").read_bytes()


def test_no_clock_warning_when_the_clocks_agree(tmp_path: Path) -> None:
    root = tmp_path / "L"
    two_tags(root)
    assert apply_plan(root, plan_of(root)).clock_warning is None


# --- fsck -----------------------------------------------------------------------------------


def unlisted_signature(root: Path) -> dict[str, str]:
    b = LayoutBuilder()
    image = b.image("app")
    b.entry(image, "app")
    sig = b.signature("app", image)  # a referrer nothing lists: live through its subject
    b.write(root)
    layer = json.loads(b.blobs[sig["digest"]])["layers"][0]["digest"]
    return {"sig": sig["digest"], "layer": layer}


def test_fsck_checks_a_referrer_index_json_does_not_list(tmp_path: Path) -> None:
    root = tmp_path / "L"
    names = unlisted_signature(root)
    assert fsck(root).ok
    blob_path(root, names["layer"]).unlink()
    report = fsck(root)
    assert [(p.kind, p.where) for p in report.problems] == [("missing", names["layer"])]
    assert names["sig"] in report.problems[0].detail


def test_fsck_reports_a_wrong_size_under_an_unlisted_referrer(tmp_path: Path) -> None:
    root = tmp_path / "L"
    names = unlisted_signature(root)
    blob_path(root, names["layer"]).write_bytes(b"longer than the descriptor says, and so wrong")
    kinds = {p.kind for p in fsck(root).problems}
    assert kinds == {"digest-mismatch", "size-mismatch"} or kinds == {"digest-mismatch"}


def test_fsck_names_the_quarantine_and_exits_1(tmp_path: Path) -> None:
    root = tmp_path / "L"
    two_tags(root)
    old = (root / "index.json").read_bytes()
    report = apply_plan(root, plan_of(root, "delete", "a"), keep_deleted=HOUR)
    (root / "index.json").write_bytes(old)
    result = CliRunner().invoke(cli, ["fsck", str(root)])
    assert result.exit_code == 1
    assert f"quarantine {report.quarantine}" in result.stdout and "--grace" in result.stdout
    assert "ocigraph restore" in result.stdout


def test_recover_leaves_a_symlinked_ocigraph_folder_alone(tmp_path: Path) -> None:
    root = tmp_path / "L"
    two_tags(root)
    outside = tmp_path / "outside"
    (outside / "quarantine").mkdir(parents=True)
    (root / ".ocigraph").symlink_to(outside)
    before = snapshot_tree(root, outside)
    assert recover(root).finished == ()
    with pytest.raises(og.OcigraphError, match=r"\.ocigraph/quarantine"):
        apply_plan(root, plan_of(root, "delete", "a"), keep_deleted=HOUR)
    assert diff_snapshots(before, snapshot_tree(root, outside)) == []


@pytest.mark.parametrize("after_the_rename", [False, True])
def test_ctrl_c_around_the_index_json_write_says_whether_it_was_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after_the_rename: bool) -> None:
    root = tmp_path / "L"
    two_tags(root)
    before = present_blobs(root)
    plan = plan_of(root, "delete", "a")
    real = LayoutDir.replace_index

    def interrupted(self: LayoutDir, data: bytes) -> None:
        if after_the_rename:
            real(self, data)
        raise KeyboardInterrupt

    monkeypatch.setattr(LayoutDir, "replace_index", interrupted)
    with pytest.raises(ApplyInterrupted) as info:
        apply_plan(root, plan)
    state = info.value
    assert (state.index_written, state.deleted) == (after_the_rename, 0)
    assert state.total == sum(d.present for d in plan.deletions)
    assert present_blobs(root) == before and not (root / ".ocigraph").exists()


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_a_dot_ocigraph_that_is_not_ours_refuses_the_apply_and_says_what_to_move(
        tmp_path: Path, kind: str) -> None:
    root = tmp_path / "L"
    two_tags(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if kind == "symlink":
        (root / ".ocigraph").symlink_to(elsewhere)
    else:
        (root / ".ocigraph").write_text("someone else's\n")
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
              if p.is_file() and not p.is_symlink()}
    result = CliRunner().invoke(cli, ["gc", str(root), "--yes"])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"{root}/.ocigraph/quarantine: cannot create the quarantine" in line
    assert f"move {root}/.ocigraph away" in line and "no blob was deleted" in line
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
             if p.is_file() and not p.is_symlink()}
    assert after == before and list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_du_show_and_restore_read_past_a_dot_ocigraph_that_is_not_ours(
        tmp_path: Path, kind: str) -> None:
    root = tmp_path / "L"
    two_tags(root)
    if kind == "symlink":
        (tmp_path / "elsewhere").mkdir()
        (root / ".ocigraph").symlink_to(tmp_path / "elsewhere")
    else:
        (root / ".ocigraph").write_text("someone else's\n")
    assert quarantined(root) == ()
    for command in (["du", str(root)], ["show", str(root)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, (command, result.stderr)
        assert "quarantined" not in result.output
    result = CliRunner().invoke(cli, ["restore", str(root)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "no apply kept its blobs" in result.stderr and "--keep-deleted" in result.stderr


# --- the purge in threads ---------------------------------------------------------------------

def test_a_purge_in_threads_unlinks_exactly_what_one_thread_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two copies of one layout, one purged in one thread, one in several: the same blobs
    are gone, the same bytes counted, no quarantine left."""
    import io_adapters.quarantine as qmod

    gc_workload(40, n_dangling=0).write(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "many")
    reports = {}
    for name, start in (("one", 10**9), ("many", 2)):
        monkeypatch.setattr(qmod, "PURGE_PARALLEL_FROM", start)
        root = tmp_path / name
        plan = plan_of(root)
        assert sum(d.present for d in plan.deletions) > 100
        reports[name] = apply_plan(root, plan)
        assert not (root / ".ocigraph").exists() and fsck(root).ok
    assert present_blobs(tmp_path / "one") == present_blobs(tmp_path / "many")
    assert reports["one"].bytes_freed == reports["many"].bytes_freed > 0
    assert sorted(reports["one"].deleted) == sorted(reports["many"].deleted)


def _unlink_failing_at(n: int, exc: BaseException) -> Callable[..., None]:
    """An ``os.unlink`` whose ``n``-th call (counted across threads) raises ``exc``."""
    real, calls = os.unlink, itertools.count(1)

    def unlink(name: str, **kw: Any) -> None:
        if next(calls) == n:
            raise exc
        real(name, **kw)

    return unlink


def test_a_thread_failing_mid_purge_stops_the_others_and_the_next_run_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unlink that fails in one purge thread: the apply reports it (the layout is valid:
    every planned blob already left ``blobs/``), the other thread stops, and ``recover``
    purges what is left."""
    import io_adapters.quarantine as qmod

    root = gc_workload(40, n_dangling=0).write(tmp_path / "L")
    plan = plan_of(root)
    planned = {d.digest for d in plan.deletions if d.present}
    monkeypatch.setattr(qmod, "PURGE_PARALLEL_FROM", 2)
    monkeypatch.setattr(os, "unlink", _unlink_failing_at(40, PermissionError(13, "Permission denied")))
    with pytest.raises(og.OcigraphError, match="Permission denied"):
        apply_plan(root, plan)
    monkeypatch.undo()
    assert not planned & present_blobs(root)  # out of blobs/ ...
    assert held(root) and held(root) < planned  # ... some still held, some unlinked
    assert model_reachable(root) <= present_blobs(root)  # type: ignore[operator]
    recover(root)
    assert not (root / ".ocigraph").exists() and fsck(root).ok


def test_ctrl_c_during_a_threaded_purge_stops_it_and_counts_every_blob_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while two threads purge (raised here inside one of them, as ``result()`` hands
    it to the main thread): the interruption counts every planned blob as out of the layout,
    the purge stops, and the next run purges what is still held."""
    import io_adapters.quarantine as qmod

    root = gc_workload(40, n_dangling=0).write(tmp_path / "L")
    plan = plan_of(root)
    planned = {d.digest for d in plan.deletions if d.present}
    monkeypatch.setattr(qmod, "PURGE_PARALLEL_FROM", 2)
    monkeypatch.setattr(os, "unlink", _unlink_failing_at(10, KeyboardInterrupt()))
    with pytest.raises(ApplyInterrupted) as info:
        apply_plan(root, plan)
    monkeypatch.undo()
    assert info.value.deleted == info.value.total == len(planned)
    assert not planned & present_blobs(root) and held(root)  # the rest of the purge: held
    recover(root)
    assert not (root / ".ocigraph").exists() and fsck(root).ok
