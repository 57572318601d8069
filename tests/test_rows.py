"""A store's tables read as a graph source, and what they become after an apply
(ocigraph/rows.py: :class:`StoreRows`, :func:`follow_store`), on tables in an in-memory SQLite
database made here; the store file itself is tests/test_store.py's."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from builder import many_images, two_images_and_a_signature

import ocigraph as og
from ocigraph import rows as R
from ocigraph import snapshot as snap

BEFORE: snap.Snapshot = ("1:2", "sha256:" + "f" * 64, (("", 3, 10, 20),))
AFTER: snap.Snapshot = ("1:2", "sha256:" + "e" * 64, (("", 3, 40, 40),))


@contextmanager
def _tables(graph: og.LayoutGraph, plans: dict[str, og.Plan] | None = None,
            blobs: Sequence[str] = ()) -> Iterator[tuple[sqlite3.Connection, dict[str, Any]]]:
    """The tables of a store of ``graph``, as io_adapters.store lays them out, and its meta."""
    whole = og.WholeGraph(graph)
    facts = {k: whole.facts(k) for k in (False, True)}
    snapshot = (BEFORE[0], graph.graph["fingerprint"], BEFORE[2])
    meta = snap.store_meta(graph, facts, snapshot, code="c", path="/l", blobs=blobs, junk=[])
    con = sqlite3.connect(":memory:", isolation_level=None)
    for table, columns in (("meta", "id INTEGER PRIMARY KEY"), ("plans", "key TEXT PRIMARY KEY"),
                           ("nodes", "id INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE"),
                           ("entries", "pos INTEGER PRIMARY KEY, tag TEXT")):
        con.execute(f"CREATE TABLE {table}({columns}, body BLOB NOT NULL, crc INTEGER NOT NULL)")
    con.execute("INSERT INTO meta VALUES (1, ?, ?)", R.meta_row(meta))
    con.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?)",
                    R.node_rows(graph, facts, orjson.dumps))
    con.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)",
                    map(R.entry_row, graph.graph["index"].entries))
    con.executemany("INSERT INTO plans VALUES (?, ?, ?)",
                    [R.plan_row(k, p) for k, p in (plans or {}).items()])
    try:
        yield con, R.meta_from_row(*con.execute("SELECT body, crc FROM meta").fetchone())
    finally:
        con.close()


def _rows(con: sqlite3.Connection, meta: dict[str, Any]) -> R.StoreRows:
    rows = R.StoreRows(lambda sql, args: con.execute(sql, args).fetchall())
    assert rows.meta == meta
    return rows


def test_stored_rows_answer_as_the_graph() -> None:
    b, d = two_images_and_a_signature()
    graph = b.graph()
    whole = og.WholeGraph(graph)
    gc = og.plan_gc(graph)
    key = og.plan_key("gc", [], og.Policy())
    with _tables(graph, {key: gc}) as (con, meta):
        s = _rows(con, meta)
        nodes = sorted(graph)
        assert s.records(nodes) == whole.records(nodes)
        assert s.entries(range(whole.entry_count)) == whole.entries(range(whole.entry_count))
        assert s.tagged("app:1") == whole.tagged("app:1") == [d["img"]["digest"]]
        assert s.tagged("no-such-tag") == []
        assert s.indexed() == [e.digest for e in graph.graph["index"].entries]
        short = d["sig"]["digest"][:12]
        assert s.with_prefix(short) == whole.with_prefix(short) == [d["sig"]["digest"]]
        assert s.plan(key) == gc and s.plan(og.plan_key("untag", [], og.Policy())) is None
        assert (s.fingerprint, s.entry_count, s.junk) == (whole.fingerprint, 2, ())
        assert s.unusable(False) == whole.unusable(False)


def test_these_tables_are_the_stores() -> None:
    b, _ = two_images_and_a_signature()
    with _tables(b.graph()) as (con, _):
        made = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table'").fetchall()
        assert sorted(sql for (sql,) in made) == sorted(R.TABLES)


def test_a_question_over_many_keys_is_asked_in_batches() -> None:
    b, _ = many_images(150)  # 601 nodes: more than one batch of keys
    graph = b.graph()
    asked: list[int] = []
    with _tables(graph) as (con, _):
        def query(sql: str, args: Sequence[Any]) -> list[Any]:
            asked.append(len(args))
            return con.execute(sql, args).fetchall()

        s = R.StoreRows(query)
        assert s.attributes(list(graph)) == og.WholeGraph(graph).attributes(list(graph))
        assert max(asked) <= 500 and len(asked) == 3  # the meta row, then two batches


def test_rows_missing_from_the_tables_are_damage_not_absence() -> None:
    b, d = two_images_and_a_signature()
    graph = b.graph()
    with _tables(graph) as (con, meta):
        _rows(con, meta).check_entries()
        con.execute("DELETE FROM entries WHERE pos = 1")
        with pytest.raises(R.RowsDamaged, match="entries"):
            _rows(con, meta).check_entries()  # a row lost: no other row's checksum shows it
        with pytest.raises(R.RowsDamaged, match="entry is missing"):
            _rows(con, meta).entries([0, 1])
        # a node lost would make a short digest look unique: the nodes are counted first
        con.execute("DELETE FROM nodes WHERE digest = ?", (d["img"]["digest"],))
        with pytest.raises(R.RowsDamaged):
            _rows(con, meta).with_prefix(d["sig"]["digest"][:12])
        with pytest.raises(R.RowsDamaged, match="has no node"):
            _rows(con, meta).tagged("app:1")
        con.execute("DELETE FROM meta")
        with pytest.raises(R.RowsDamaged, match="meta"):
            _rows(con, meta)


def _after_gc(b: Any) -> tuple[og.LayoutGraph, og.Plan, og.Index, list[int], Any]:
    """A gc of ``b``'s graph: the graph, the plan, index.json after it (unchanged), the
    checksum of the blobs it leaves, and the snapshot the store was made from."""
    graph = b.graph()
    plan = og.plan_gc(graph)
    gone = {x.digest for x in plan.deletions}
    names = og.names_checksum(d for d in b.blobs if d not in gone)
    return graph, plan, graph.graph["index"], names, (BEFORE[0], graph.graph["fingerprint"],
                                                      BEFORE[2])


def test_a_store_follows_a_gc_to_the_rows_a_rebuild_makes() -> None:
    b, _ = two_images_and_a_signature()
    graph, plan, index, names, before = _after_gc(b)
    with _tables(graph, blobs=sorted(b.blobs)) as (con, meta):
        s = _rows(con, meta)
        followed = R.follow_store(s, "c", before, plan, AFTER, index, names, [])
        assert followed is not None
        gone, bodies, plans, new_meta = followed
        assert gone == sorted(s.id_of[x.digest] for x in plan.deletions) and gone
        assert all(crc == R.node_crc(body, i) for body, crc, i in bodies)
        assert list(plans) == [og.plan_key("gc", [], plan.policy)]
        assert new_meta["names"] == names and new_meta["fingerprint"] == AFTER[1]
        assert new_meta["nodes"] == meta["nodes"] - len(gone)


def test_a_store_declines_to_follow_what_it_was_not_made_from() -> None:
    b, _ = two_images_and_a_signature()
    graph, plan, index, names, before = _after_gc(b)
    with _tables(graph, blobs=sorted(b.blobs)) as (con, meta):
        def follows(**kw: Any) -> bool:
            args = {"code": "c", "before": before, "names": names, "junk": [], **kw}
            return R.follow_store(_rows(con, meta), args["code"], args["before"], plan, AFTER,
                                  index, args["names"], args["junk"]) is not None

        assert follows()
        assert not follows(code="other code")
        assert not follows(before=BEFORE)  # another index.json
        assert not follows(names=og.names_checksum(b.blobs))  # nothing went: another writer
        assert not follows(junk=[og.Junk("blobs/y", "not a blob")])
