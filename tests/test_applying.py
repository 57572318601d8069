"""An apply's pure half (ocigraph/applying.py): its report, the quarantine's ids and journal,
the checks of a saved plan, blob times on the file system's clock, restore's decisions and the
errors they raise.  The apply itself, on disk, is tests/test_quarantine.py's and
tests/test_adapter.py's."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from builder import two_images_and_a_signature

import ocigraph as og
from ocigraph import applying as A
from ocigraph import present, snapshot

D = {k: f"sha256:{k * 64}" for k in "abcdef"}
SNAPSHOT: snapshot.Snapshot = ("1:2", D["f"], (("", 3, 10, 20),))


def _gc_and_delete() -> tuple[og.LayoutGraph, og.Plan, og.Plan, dict[str, str]]:
    """The two-images layout's graph, its gc, the delete of ``app:0``; digests by name."""
    b, n = two_images_and_a_signature()
    graph = b.graph()
    names = {k: v["digest"] for k, v in n.items()}
    return graph, og.plan_gc(graph), og.plan_delete(graph, ["app:0"]), names


# -- the report -------------------------------------------------------------------------------

def test_the_report_document_has_the_json_keys_and_not_what_the_store_follows_by() -> None:
    r = A.ApplyReport((D["a"],), (D["b"],), ((D["c"], "why"),), 7, True, 1.23456789, SNAPSHOT,
                      D["d"], (D["e"],), "q", "skewed")
    assert r.to_dict() == {
        "deleted": [D["a"]], "alreadyGone": [D["b"]],
        "skipped": [{"digest": D["c"], "why": "why"}], "bytesFreed": 7, "indexWritten": True,
        "relisted": [D["e"]], "quarantine": "q", "clockWarning": "skewed", "seconds": 1.234568}
    assert orjson.loads(orjson.dumps(r.to_dict())) == r.to_dict()  # a JSON document as it is


def test_a_report_from_a_snapshot_can_be_followed_by_the_store() -> None:
    r = A.Moves({D["a"]: 1}).report((), True, 0.0, SNAPSHOT, D["d"], None, offset=0.0)
    assert snapshot.followable(r, ("1:2", D["d"], ()))
    assert not snapshot.followable(r, ("1:2", D["e"], ()))
    assert not snapshot.followable(dataclasses.replace(r, before=None), ("1:2", D["d"], ()))


def test_blobs_moved_back_are_neither_deleted_nor_counted() -> None:
    moves = A.Moves({D["a"]: 10, D["b"]: 20, D["c"]: 40}, [D["d"]],
                    [(D["e"], "not a regular file")])
    assert moves.handled() == 5
    assert moves.deleted(None) == [D["a"], D["b"], D["c"]]  # in the order they were moved
    r = moves.report([D["c"], D["a"]], False, 2.0, None, D["f"], None, offset=0.0)
    assert r.deleted == (D["b"],) and r.bytes_freed == 20
    assert r.relisted == (D["a"], D["c"])  # sorted
    assert r.already_gone == (D["d"],) and r.skipped == ((D["e"], "not a regular file"),)
    assert not r.index_written and r.index_after == D["f"] and r.quarantine is None


def test_a_report_names_the_quarantine_that_keeps_its_blobs_and_a_skewed_clock() -> None:
    r = A.Moves({D["a"]: 1}).report(None, True, 0.0, None, None, "q1", offset=-120.0)
    assert r.quarantine == "q1" and r.deleted == (D["a"],) and r.relisted == ()
    assert r.clock_warning is not None and "120 s behind" in r.clock_warning


def test_fresh_tallies_share_nothing() -> None:
    one, two = A.Moves(), A.Moves()
    one.moved[D["a"]] = 1
    one.gone.append(D["b"])
    assert two.moved == {} and two.gone == [] and two.handled() == 0


# -- the quarantine's id and journal ------------------------------------------------------------

def test_a_quarantine_id_is_utc_to_the_microsecond_then_the_pid() -> None:
    assert A.quarantine_id(0.0, 1) == "19700101T000000.000000Z-1"
    assert A.quarantine_id(1796464800.000123, 4242) == "20261205T100000.000123Z-4242"
    # the second is the one the microseconds belong to, never rounded up into the next
    assert A.quarantine_id(59.9999996, 1).startswith("19700101T000059.")


def test_only_names_ocigraph_gives_are_quarantines() -> None:
    assert A.is_quarantine_id(A.quarantine_id(1796464800.5, 7))
    good = A.quarantine_id(1796464800.5, 7)
    for name in ["", "..", "20261205T100000Z-7", good.rpartition("-")[0] + "-", "x" + good,
                 good + "/..", good + "\n", good.replace("T", "t")]:
        assert not A.is_quarantine_id(name), name


def test_the_journal_records_the_apply_and_reads_back() -> None:
    _, _, plan, names = _gc_and_delete()
    assert plan.index_changes  # app:0's entry is dropped
    journal = A.new_journal("Q", 100.0, plan, D["a"], D["b"], 60.0)
    assert list(journal) == ["ocigraphQuarantine", "id", "created", "operation", "indexBefore",
                             "indexAfter", "keepUntil", "changes"]
    assert journal["ocigraphQuarantine"] == A.JOURNAL_FORMAT
    assert (journal["operation"], journal["indexBefore"], journal["indexAfter"]) == (
        "delete", D["a"], D["b"])
    assert journal["keepUntil"] == 160.0
    read = A.read_journal(orjson.dumps(journal))
    assert read == journal
    assert A.journal_changes(read) == [(c.position, c.digest, c.action) for c in plan.index_changes]
    assert names["old"] in {d for _, d, _ in A.journal_changes(read)}


def test_a_journal_without_a_keep_time_has_no_expiry() -> None:
    _, plan, _, _ = _gc_and_delete()
    for keep in (None, 0, 0.0):
        assert A.new_journal("Q", 100.0, plan, D["a"], D["b"], keep)["keepUntil"] is None


def test_a_journal_that_is_not_ours_says_nothing() -> None:
    for data in [None, b"", b"null", b"[]", b'"x"', b"{", b"\xff"]:
        assert A.read_journal(data) == {}, data
    info = A.QuarantineInfo.of("Q", A.read_journal(b"{"), {D["a"]: 5})
    assert (info.operation, info.created, info.keep_until, info.bytes) == ("?", 0.0, None, 5)
    assert A.journal_changes({"changes": None}) == []


def test_what_a_quarantine_holds_is_counted_from_its_blobs() -> None:
    info = A.QuarantineInfo.of("Q", {"operation": "gc", "created": 5, "keepUntil": 9.5},
                               {D["a"]: 3, D["b"]: 4})
    assert info.to_dict() == {"id": "Q", "operation": "gc", "created": 5.0, "keepUntil": 9.5,
                              "blobs": 2, "bytes": 7}
    assert present.format_quarantined([info.to_dict()], "L") is not None


# -- applying -------------------------------------------------------------------------------------

def test_a_saved_plan_no_bigger_than_a_fresh_one_passes() -> None:
    _, gc, delete, _ = _gc_and_delete()
    for plan in (gc, delete):
        A.check_saved_plan(plan, plan, lambda d: True)
        fewer = dataclasses.replace(plan, deletions=plan.deletions[1:], index_changes=())
        A.check_saved_plan(fewer, plan, lambda d: True)  # doing less is allowed


def test_a_saved_plan_deleting_what_planning_now_keeps_is_refused() -> None:
    _, _, delete, names = _gc_and_delete()
    assert names["img"] not in {d.digest for d in delete.deletions}
    edited = dataclasses.replace(delete, deletions=(
        *delete.deletions, og.Deletion(names["img"], og.Reason("target"), 1, True)))
    with pytest.raises(og.PlanMismatchError, match="it would delete " + names["img"]):
        A.check_saved_plan(edited, delete, lambda d: True)
    # a planned blob gone since is no harm
    A.check_saved_plan(edited, delete, lambda d: d != names["img"])


def test_a_saved_plan_editing_another_entry_is_refused() -> None:
    _, _, delete, names = _gc_and_delete()
    edited = dataclasses.replace(delete, index_changes=(
        og.IndexChange(0, names["img"], "app:1", "drop"),))
    with pytest.raises(og.PlanMismatchError, match="drop index.json entry 0, " + names["img"]):
        A.check_saved_plan(edited, delete, lambda d: True)


def test_a_saved_plan_of_another_index_json_is_stale() -> None:
    _, gc, _, _ = _gc_and_delete()
    fresh = dataclasses.replace(gc, index_fingerprint=D["e"])
    with pytest.raises(og.StalePlanError, match="stale plan"):
        A.check_saved_plan(gc, fresh, lambda d: True)


def test_a_plan_meets_the_index_json_it_was_made_from_or_is_stale() -> None:
    b, _ = two_images_and_a_signature()
    graph = b.graph()
    plan, index = og.plan_delete(graph, ["app:0"]), b.layout().index
    A.refuse_stale(plan, index)
    other = og.parse_index(b'{"schemaVersion": 2, "manifests": []}')
    with pytest.raises(og.StalePlanError, match=r"entry 1 \(app:0\) is gone"):
        A.refuse_stale(plan, other)


def test_blob_times_move_onto_the_file_systems_clock_beyond_its_granularity() -> None:
    assert A.newest_blob_time(1000.0, A.CLOCK_TOLERANCE) == 1000.0  # within: not moved
    assert A.newest_blob_time(1000.0, -A.CLOCK_TOLERANCE) == 1000.0
    assert A.newest_blob_time(1000.0, 1.5) == 1001.5
    assert A.newest_blob_time(1000.0, -3600.0) == -2600.0
    assert A.newest_blob_time(None, 5.0) == float("inf")  # a plan without a snapshot time


def test_a_clock_a_minute_off_is_reported_and_says_which_way() -> None:
    assert A.clock_warning(A.CLOCK_SKEW_WARN) is None
    assert A.clock_warning(-A.CLOCK_SKEW_WARN) is None
    ahead, behind = A.clock_warning(3600.2), A.clock_warning(-61.0)
    assert ahead == ("the file system's clock is 3600 s ahead of this machine's; blob times "
                     "were compared on the file system's clock")
    assert behind is not None and behind.startswith("the file system's clock is 61 s behind")


def test_a_system_error_is_said_in_its_words_or_by_its_name() -> None:
    assert A.os_error_why(PermissionError(13, "Permission denied")) == "Permission denied"
    assert A.os_error_why(OSError(28, None)) == "ENOSPC"
    assert A.os_error_why(OSError("plain")) == "plain"


def test_the_errors_of_an_apply_that_changed_nothing_say_so_and_where() -> None:
    for root, folder in [(".", ".ocigraph"), ("/", "/.ocigraph"), ("/l/a", "/l/a/.ocigraph"),
                         ("/l/\\xff", "/l/\\xff/.ocigraph")]:
        exc = A.quarantine_refused(root, "Not a directory")
        assert isinstance(exc, og.LayoutAccessError) and exc.path == f"{root}/.ocigraph/quarantine"
        assert exc.why == ("cannot create the quarantine (Not a directory); index.json is "
                           f"unchanged and no blob was deleted; move {folder} away if it is not "
                           "ocigraph's")
    exc = A.index_unwritten("/l", "EIO")
    assert str(exc) == ("/l: cannot write index.json (EIO); index.json is unchanged and no blob "
                        "was deleted")
    exc = A.unfinished(".ocigraph/quarantine/Q", "Permission denied")
    assert str(exc) == (".ocigraph/quarantine/Q: cannot finish what an earlier run left "
                        "(Permission denied); the layout is valid: run the command again")


# -- restoring ------------------------------------------------------------------------------------

def test_restore_undoes_the_last_kept_apply_or_the_one_named() -> None:
    qs = [("a", 5.0), ("b", None), ("c", 6.0), ("d", None)]
    assert A.restorable(qs, None) == 2
    assert A.restorable(qs, "a") == 0
    for apply_id in ("b", "z"):
        with pytest.raises(og.RestoreRefusedError, match=f"no apply {apply_id} kept its blobs"):
            A.restorable(qs, apply_id)
    with pytest.raises(og.RestoreRefusedError) as info:
        A.restorable([("b", None)], None)
    assert str(info.value) == ("refusing to restore: no apply kept its blobs (only one made "
                               "with --keep-deleted can be undone, until it expires); nothing "
                               "was changed")
    assert isinstance(info.value, og.RequestError)


def _index(*entries: tuple[str, str | None]) -> bytes:
    manifests = [{"mediaType": og.OCI_MANIFEST, "digest": d, "size": 1,
                  **({"annotations": {og.REF_NAME: t}} if t else {})} for d, t in entries]
    return orjson.dumps({"schemaVersion": 2, "manifests": manifests})


def test_restore_writes_index_json_as_it_was_or_merges_into_a_changed_one() -> None:
    before, after = _index((D["a"], "v1"), (D["b"], "v2")), _index((D["b"], "v2"))
    journal = {"indexBefore": og.digest_bytes(before), "indexAfter": og.digest_bytes(after),
               "changes": [[0, D["a"], "drop"]]}
    assert A.restored_index(journal, before, after) == before  # no one changed it since
    assert A.restored_index(journal, before, before) == before  # already back as it was
    changed = _index((D["b"], "v2"), (D["c"], "v3"))
    merged = og.parse_index(A.restored_index(journal, before, changed))
    assert [(e.digest, e.tag) for e in merged.entries] == [
        (D["b"], "v2"), (D["c"], "v3"), (D["a"], "v1")]


def test_restore_refuses_a_tag_that_now_names_another_digest() -> None:
    before, after = _index((D["a"], "v1")), _index()
    journal = {"indexBefore": og.digest_bytes(before), "indexAfter": og.digest_bytes(after),
               "changes": [[0, D["a"], "drop"]]}
    with pytest.raises(og.RestoreRefusedError, match=r"^refusing to restore: .*v1"):
        A.restored_index(journal, before, _index((D["c"], "v1")))


def test_restore_refuses_when_a_blob_a_restored_entry_needs_is_gone() -> None:
    b, n = two_images_and_a_signature()
    old, layer = n["old"]["digest"], og.digest_bytes(b"shared")  # app:0's layer, and app:1's
    changes = [(1, old, "drop")]
    A.refuse_lost(b.graph(), changes)  # all there
    gone = og.build_graph(og.layout_from_bytes(
        b.index_json(), {d: v for d, v in b.blobs.items() if d != layer}))
    assert layer in gone and not gone.nodes[layer]["present"]
    with pytest.raises(og.RestoreRefusedError, match=f"{layer}, which a restored entry needs"):
        A.refuse_lost(gone, changes)
    A.refuse_lost(gone, [(0, D["e"], "drop")])  # an entry of a digest the graph does not know
