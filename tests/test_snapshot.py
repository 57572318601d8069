"""The store's trust rule as pure values (ocigraph/snapshot.py): when folder stamps have
settled, what the ``meta`` row records, when a store matches a snapshot, and when an apply
can be followed row by row.  The store itself, on disk, is tests/test_store.py's."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from builder import two_images_and_a_signature

import ocigraph as og
from ocigraph import rows
from ocigraph import snapshot as snap

SNAPSHOT: snap.Snapshot = ("1:2", "sha256:" + "f" * 64, (("", 3, 10, 20), ("sha256", 4, 30, 15)))


def _stored_meta(junk: tuple[og.Junk, ...] = ()) -> tuple[dict[str, object], og.Plan, list[str]]:
    """The meta row of a store of the two-images layout, as read back; its gc's plan; its blobs."""
    b, _ = two_images_and_a_signature()
    graph = b.graph()
    whole = og.WholeGraph(graph)
    facts = {k: whole.facts(k) for k in (False, True)}
    blobs = sorted(b.blobs)
    meta = snap.store_meta(graph, facts, SNAPSHOT, code="c", path="/l", blobs=blobs, junk=junk)
    return orjson.loads(orjson.dumps(meta)), og.plan_gc(graph), blobs


def test_a_ctime_later_than_the_mtime_is_when_a_folder_last_changed() -> None:
    # cp -a and rsync -t set an mtime back; the ctime they cannot
    assert snap.last_change([("", 1, 10, 99)]) == 99
    assert snap.last_change([("", 1, 10, 20), ("sha256", 2, 50, 5)]) == 50


def test_folders_settle_a_full_window_after_their_last_change() -> None:
    folders = [("", 1, 0, 1_000)]
    assert snap.settles_in(folders, 1_000) == snap.SETTLE_NS / 1e9
    assert snap.settles_in(folders, 1_000 + snap.SETTLE_NS) == 0.0
    assert snap.settles_in(folders, 10**15) == 0.0  # long settled: never a negative wait
    assert snap.settled(folders, 1_000 + snap.SETTLE_NS)
    assert not snap.settled(folders, 1_000 + snap.SETTLE_NS - 1)


def test_no_stamps_prove_nothing() -> None:
    assert not snap.settled([], 10**15)


def test_a_window_patched_on_the_module_is_the_one_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    # the tests of the store shorten the window this way
    monkeypatch.setattr(snap, "SETTLE_NS", 5)
    assert snap.settled([("", 1, 0, 10)], 15)
    assert snap.settles_in([("", 1, 0, 10)], 10) == 5 / 1e9


def test_a_meta_row_read_back_is_made_from_its_snapshot_and_nothing_else() -> None:
    meta, _, _ = _stored_meta()
    assert snap.made_from(meta, "c", SNAPSHOT)
    origin, fingerprint, folders = SNAPSHOT
    changed_ctime = (folders[0], ("sha256", 4, 30, 16))
    for other in [("1:3", fingerprint, folders), (origin, "sha256:" + "e" * 64, folders),
                  (origin, fingerprint, changed_ctime), (origin, fingerprint, folders[:1])]:
        assert not snap.made_from(meta, "c", other)
    assert not snap.made_from(meta, "other code", SNAPSHOT)
    assert not snap.made_from({**meta, "format": snap.STORE_FORMAT + 1}, "c", SNAPSHOT)


def test_the_meta_row_counts_what_the_store_checks_itself_with() -> None:
    b, _ = two_images_and_a_signature()
    meta, _, blobs = _stored_meta((og.Junk("blobs/x", "not a blob"),))
    assert meta["names"] == og.names_checksum(blobs)
    assert meta["entry_count"] == 2
    assert meta["nodes"] == b.graph().number_of_nodes()
    assert meta["junk"] == [["blobs/x", "not a blob"]]
    assert meta["ordered"] is True  # the signature has an artifact type


def test_a_path_that_is_not_utf8_is_kept_printable() -> None:
    b, _ = two_images_and_a_signature()
    graph = b.graph()
    whole = og.WholeGraph(graph)
    facts = {k: whole.facts(k) for k in (False, True)}
    meta = snap.store_meta(graph, facts, SNAPSHOT, code="c", path="/l/\udcff", blobs=[], junk=[])
    assert meta["path"] == "/l/\\xff"
    orjson.dumps(meta)  # (a lone surrogate would not encode)


def test_the_listing_after_an_apply_is_as_planned_only_without_another_writer() -> None:
    meta, plan, blobs = _stored_meta()
    deleted = {d.digest for d in plan.deletions}
    assert deleted
    left = [d for d in blobs if d not in deleted]
    assert snap.lists_as_planned(meta, plan, og.names_checksum(left), [])
    assert not snap.lists_as_planned(meta, plan, og.names_checksum(blobs), [])  # nothing went
    extra = "sha256:" + "a" * 64
    assert not snap.lists_as_planned(meta, plan, og.names_checksum([*left, extra]), [])
    assert not snap.lists_as_planned(meta, plan, og.names_checksum(left),
                                     [og.Junk("blobs/y", "not a blob")])


def test_a_followed_meta_row_is_a_new_value_at_the_new_snapshot() -> None:
    meta, _, _ = _stored_meta()
    before = dict(meta)
    after: snap.Snapshot = ("1:2", "sha256:" + "e" * 64, (("", 3, 40, 40),))
    new = snap.followed_meta(meta, after, [5, 7], entry_count=1, gone=2)
    assert meta == before
    assert snap.made_from(orjson.loads(orjson.dumps(new)), "c", after)
    assert (new["names"], new["entry_count"], new["nodes"]) == ([5, 7], 1, before["nodes"] - 2)


def test_after_a_gc_the_same_gc_is_known_to_do_nothing() -> None:
    _, plan, _ = _stored_meta()
    known = snap.plans_after(plan, "sha256:" + "e" * 64)
    assert list(known) == [og.plan_key("gc", [], plan.policy)]
    kept = known[og.plan_key("gc", [], plan.policy)]
    assert kept.is_empty and kept.index_fingerprint == "sha256:" + "e" * 64
    assert snap.plans_after(dataclasses.replace(plan, operation="delete"), "x") == {}


@dataclasses.dataclass(frozen=True)
class _Report:
    before: tuple[object, ...] | None = SNAPSHOT
    skipped: tuple[tuple[str, str], ...] = ()
    already_gone: tuple[str, ...] = ()
    index_after: str | None = "sha256:" + "e" * 64


def test_only_a_whole_apply_whose_index_json_stands_is_followed() -> None:
    after: snap.Snapshot = ("1:2", "sha256:" + "e" * 64, ())
    assert snap.followable(_Report(), after)
    assert not snap.followable(_Report(before=None), after)
    assert not snap.followable(_Report(skipped=(("sha256:x", "written since"),)), after)
    assert not snap.followable(_Report(already_gone=("sha256:x",)), after)
    assert not snap.followable(_Report(), ("1:2", "sha256:" + "d" * 64, ()))  # rewritten since


def test_a_meta_row_whose_bytes_changed_is_damaged() -> None:
    meta, _, _ = _stored_meta()
    body, crc = rows.meta_row(meta)
    assert rows.meta_from_row(body, crc) == meta
    flipped = body.replace(b'"nodes":', b'"nodez":')
    with pytest.raises(rows.RowsDamaged):
        rows.meta_from_row(flipped, crc)


def test_the_cache_is_on_unless_asked_off_and_an_explicit_answer_wins() -> None:
    assert snap.caching(None, {})
    assert snap.caching(None, {"OCIGRAPH_NO_CACHE": ""})
    assert snap.caching(None, {"OCIGRAPH_NO_CACHE": "0"})
    for off in ("1", "yes", "true"):
        assert not snap.caching(None, {"OCIGRAPH_NO_CACHE": off})
    assert snap.caching(True, {"OCIGRAPH_NO_CACHE": "1"})
    assert not snap.caching(False, {})


def test_the_cache_folder_is_the_first_the_environment_names() -> None:
    env = {"OCIGRAPH_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x", "HOME": "/h"}
    assert snap.cache_folder(env) == ("/c",)
    assert snap.cache_folder({**env, "OCIGRAPH_CACHE_DIR": ""}) == ("/x", "ocigraph")
    assert snap.cache_folder({"XDG_CACHE_HOME": "x", "HOME": "/h"}) == ("/h", ".cache", "ocigraph")
    assert snap.cache_folder({"HOME": "/h"}) == ("/h", ".cache", "ocigraph")
    assert snap.cache_folder({"XDG_CACHE_HOME": "relative"}) is None
    assert snap.cache_folder({}) is None


def test_one_store_name_per_real_path() -> None:
    name = snap.store_name(b"/srv/layout")
    assert name == snap.store_name(b"/srv/layout")
    assert name != snap.store_name(b"/srv/layout2")
    stem, suffix = name.split(".")
    assert suffix == "store" and len(stem) == 32 and int(stem, 16) >= 0
    assert snap.store_name(b"/l/\xff").endswith(".store")  # a path that is not UTF-8


def test_only_a_big_settled_layout_read_without_disk_errors_is_storable() -> None:
    folders = [("", 1, 0, 1_000)]
    settled_at = 1_000 + snap.SETTLE_NS
    assert snap.storable(2048, folders, settled_at, 0, min_blobs=2048)
    assert not snap.storable(2047, folders, settled_at, 0, min_blobs=2048)  # too small
    assert not snap.storable(2048, folders, settled_at - 1, 0, min_blobs=2048)  # not settled
    assert not snap.storable(2048, [], settled_at, 0, min_blobs=2048)  # no stamps
    assert not snap.storable(2048, folders, settled_at, 1, min_blobs=2048)  # a disk error
    assert snap.storable(0, folders, settled_at, 0, min_blobs=0)


def test_a_kept_plan_answers_only_its_operation_policy_and_index_json() -> None:
    _, plan, _ = _stored_meta()
    fp = plan.index_fingerprint
    assert snap.recalls(plan, "gc", plan.policy, fp)
    assert not snap.recalls(plan, "untag", plan.policy, fp)  # filed under another's key
    assert not snap.recalls(plan, "gc", og.Policy(keep_untagged=True), fp)
    assert not snap.recalls(plan, "gc", plan.policy, "sha256:" + "e" * 64)  # index.json changed
