"""The cache folder as a whole (io_adapters/cachedir.py): listing it, clearing it, bounding it.

Real stores are written with ``store.save_store`` for small layouts in ``tmp_path``; stores
whose content does not matter (sizes and ages) are plain files with a store's name.  Every
test checks that what is not ocigraph's is left as it was.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest
from builder import two_images_and_a_signature, write_layout

import ocigraph as og
from io_adapters import cachedir, store
from io_adapters.cachedir import bound_cache, cache_info, clear_cache
from io_adapters.layout import read_layout
from ocigraph import present
from ocigraph.present import cache_document

DAY = 86400.0
NOW = 2_000_000_000.0  # a fixed "now" for the age rules
HEX = "0123456789abcdef" * 2


def real_store(root: Path, cache: Path) -> Path:
    """Write a small layout at ``root`` and its store in ``cache``, as a command would."""
    b, _ = two_images_and_a_signature()
    write_layout(root, b.index_json(), b.blobs)
    disk = read_layout(root)
    graph = og.build_graph(disk.layout)
    whole = og.WholeGraph(graph)
    path = store.store_file_for(root, cache)
    assert path is not None
    store.save_store(path, disk, graph, {False: whole.facts(False), True: whole.facts(True)}, {})
    assert path.is_file()
    return path


def fake_store(cache: Path, n: int, size: int = 1000, age_days: float = 0.0) -> Path:
    """A file named like a store (its content is no store: its layout is unknown)."""
    cache.mkdir(exist_ok=True)
    path = cache / f"{n:032x}.store"
    path.write_bytes(b"x" * size)
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    return path


def foreign_files(cache: Path, outside: Path) -> dict[Path, bytes | None]:
    """Things in the cache folder that are not ocigraph's, with their content (None: folder)."""
    cache.mkdir(exist_ok=True)
    outside.write_bytes(b"precious")
    files = {cache / "notes.txt": b"mine", cache / "abc.store": b"short name",
             cache / f"{HEX.upper()}.store": b"upper-case hex", cache / f"{HEX}.store.bak": b"b",
             cache / f"{HEX}1.graph": b"33 hex digits"}
    for p, data in files.items():
        p.write_bytes(data)
    (cache / f"{'f' * 32}.store").symlink_to(outside)  # a link with a store's name
    (cache / f"{'e' * 32}.store").mkdir()  # a folder with a store's name
    (cache / f"{'e' * 32}.store" / "inside").write_bytes(b"kept")
    (cache / ".tmp-folder").mkdir()
    return {**files, outside: b"precious", cache / f"{'e' * 32}.store" / "inside": b"kept",
            cache / ".tmp-folder": None}


def assert_untouched(expected: dict[Path, bytes | None]) -> None:
    for p, data in expected.items():
        assert p.is_dir() if data is None else p.read_bytes() == data, p
    link = next(iter(expected)).parent / f"{'f' * 32}.store"
    assert link.is_symlink()


def old_files(cache: Path) -> list[Path]:
    """What earlier versions left: a manifest cache, a stored graph and its lock, a plans
    folder, a killed writer's temporary file, a lock and a journal whose store is gone."""
    cache.mkdir(exist_ok=True)
    made = []
    for name, size in ((f"{'a' * 32}.cache", 300), (f"{'b' * 32}.graph", 200),
                       (f"{'b' * 32}.graph.lock", 0), (".tmp-k1lled.graph", 50),
                       (f"{'c' * 32}.store.lock", 0), (f"{'d' * 32}.store-journal", 70)):
        (cache / name).write_bytes(b"o" * size)
        made.append(cache / name)
    plans = cache / f"{'a' * 32}.plans"
    plans.mkdir()
    (plans / ("9" * 64)).write_bytes(b"p" * 40)
    (plans / ".tmp-xyz").write_bytes(b"p" * 5)
    return [*made, plans]


# -- listing ------------------------------------------------------------------------------------

def test_an_entry_names_its_layout_and_whether_it_still_exists(tmp_path):
    cache, root = tmp_path / "cache", tmp_path / "layout"
    path = real_store(root, cache)
    info = cache_info(cache)
    [entry] = info.entries
    assert entry.file == path and entry.bytes == path.stat().st_size > 0
    assert entry.layout == os.path.realpath(root) and entry.layout_exists is True
    assert entry.last_used == path.stat().st_mtime
    assert info.total_bytes == entry.bytes and info.leftovers == ()
    assert str(root) in present.format_cache_text(cache_document(info), str)
    doc = orjson.loads(orjson.dumps(cache_document(info)))
    assert doc["ocigraphCache"] == 1 and doc["totalBytes"] == entry.bytes
    assert doc["entries"] == [{"file": path.name, "bytes": entry.bytes, "lastUsed": entry.last_used,
                               "layout": os.path.realpath(root), "layoutExists": True}]

    shutil.rmtree(root)
    [entry] = cache_info(cache).entries
    assert entry.layout_exists is False
    assert "(gone)" in present.format_cache_text(cache_document(cache_info(cache)), str)


def test_damaged_stores_are_listed_with_their_layout_unknown_and_can_be_cleared(tmp_path):
    cache = tmp_path / "cache"
    garbage = fake_store(cache, 1, size=123)
    edited = real_store(tmp_path / "edited", cache)  # its meta row names another layout
    emptied = real_store(tmp_path / "emptied", cache)  # it has no meta row
    for path, sql in ((edited, "UPDATE meta SET body = CAST(replace(CAST(body AS TEXT), "
                               "'/edited', '/elsewhere') AS BLOB)"),
                      (emptied, "DELETE FROM meta")):
        con = sqlite3.connect(path)
        con.execute(sql)
        con.commit()
        con.close()
    truncated = real_store(tmp_path / "truncated", cache)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    sound = real_store(tmp_path / "sound", cache)
    info = cache_info(cache)
    assert {e.file: (e.layout, e.layout_exists) for e in info.entries} == {
        garbage: (None, None), edited: (None, None), emptied: (None, None),
        truncated: (None, None), sound: (os.path.realpath(tmp_path / "sound"), True)}
    assert "layout unknown" in present.format_cache_text(cache_document(info), str)
    sizes = sum(p.stat().st_size for p in (garbage, edited, emptied, truncated, sound))
    assert clear_cache(cache) == sizes
    assert list(cache.iterdir()) == []


def test_a_store_that_names_another_layout_than_its_name_is_not_believed(tmp_path):
    cache = tmp_path / "cache"
    path = real_store(tmp_path / "layout", cache)
    moved = path.with_name(f"{7:032x}.store")
    path.rename(moved)
    [entry] = cache_info(cache).entries
    assert entry.file == moved and entry.layout is None


def test_leftovers_are_listed_apart_from_the_entries(tmp_path):
    cache = tmp_path / "cache"
    made = old_files(cache)
    info = cache_info(cache)
    assert info.entries == ()
    lock_of_graph = cache / f"{'b' * 32}.graph.lock"  # goes with its .graph, not listed apart
    assert {e.file for e in info.leftovers} == set(made) - {lock_of_graph}
    assert {e.file.name: e.bytes for e in info.leftovers}[f"{'a' * 32}.plans"] == 45
    assert all(e.layout is None and e.layout_exists is None for e in info.leftovers)
    assert info.total_bytes == 300 + 200 + 50 + 70 + 45
    assert "0 layout(s), 6 leftover file(s)" in present.format_cache_text(cache_document(info), str)
    assert len(cache_document(info)["leftovers"]) == 6


def test_no_folder_means_nothing_and_never_the_current_folder(tmp_path, monkeypatch):
    fake_store(tmp_path, 1)
    monkeypatch.chdir(tmp_path)
    assert cache_info(None).entries == () and cache_info(None).folder is None
    assert cache_info(tmp_path / "missing").entries == ()
    assert clear_cache(None) == bound_cache(None, cap_bytes=0) == 0
    assert (tmp_path / f"{1:032x}.store").is_file()
    assert cache_document(cache_info(None))["folder"] is None


# -- clearing -----------------------------------------------------------------------------------

def test_clear_removes_every_entry_and_leftover_and_nothing_else(tmp_path):
    cache = tmp_path / "cache"
    foreign = foreign_files(cache, tmp_path / "outside")
    path = real_store(tmp_path / "layout", cache)
    os.close(store.claim(path))  # a writer's claim is on the store itself: no other file
    made = old_files(cache)
    expected = path.stat().st_size + 300 + 200 + 50 + 70 + 45
    assert clear_cache(cache) == expected
    assert not path.exists() and not any(p.exists() for p in made)
    assert not Path(f"{path}.lock").exists()
    assert_untouched(foreign)
    assert clear_cache(cache) == 0


def test_clear_one_layout_removes_only_its_entry(tmp_path):
    cache = tmp_path / "cache"
    mine, other = real_store(tmp_path / "a", cache), real_store(tmp_path / "b", cache)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    leftovers = old_files(cache)
    size = mine.stat().st_size
    assert clear_cache(cache, layout=tmp_path / "link") == size
    assert not mine.exists() and other.exists() and all(p.exists() for p in leftovers)
    shutil.rmtree(tmp_path / "b")  # a layout already gone is still named by its path
    assert clear_cache(cache, layout=str(tmp_path / "b")) > 0
    assert not other.exists()


# -- the writer lock ----------------------------------------------------------------------------

def test_a_held_writer_lock_protects_its_entry(tmp_path):
    cache = tmp_path / "cache"
    path = real_store(tmp_path / "layout", cache)
    shutil.rmtree(tmp_path / "layout")
    os.utime(path, (NOW - 90 * DAY, NOW - 90 * DAY))
    orphan = cache / f"{'c' * 32}.store.lock"
    orphan.touch()
    held, held_orphan = store.claim(path), os.open(orphan, os.O_RDWR)
    assert held is not None
    fcntl.flock(held_orphan, fcntl.LOCK_EX)
    try:
        assert bound_cache(cache, cap_bytes=0, max_age=0, now=NOW) == 0
        assert clear_cache(cache) == 0
        assert path.is_file() and orphan.is_file()
    finally:
        os.close(held)
        os.close(held_orphan)
    size = path.stat().st_size
    assert bound_cache(cache, now=NOW) == size
    assert list(cache.iterdir()) == []


# -- bounding -----------------------------------------------------------------------------------

def test_bound_removes_entries_whose_layout_is_gone(tmp_path):
    cache = tmp_path / "cache"
    kept, gone = real_store(tmp_path / "kept", cache), real_store(tmp_path / "gone", cache)
    shutil.rmtree(tmp_path / "gone")
    size = gone.stat().st_size
    assert bound_cache(cache) == size
    assert kept.exists() and not gone.exists()


def test_bound_removes_entries_unused_for_30_days(tmp_path):
    cache = tmp_path / "cache"
    fresh, old = fake_store(cache, 1, age_days=29), fake_store(cache, 2, age_days=31)
    unknown_fresh = fake_store(cache, 3, age_days=0)  # layout unknown: only age and size judge
    assert bound_cache(cache, now=NOW) == 1000
    assert fresh.exists() and unknown_fresh.exists() and not old.exists()
    assert bound_cache(cache, now=NOW, max_age=DAY) == 1000
    assert not fresh.exists() and unknown_fresh.exists()


def test_bound_removes_the_least_recently_used_until_under_the_cap(tmp_path):
    cache = tmp_path / "cache"
    stores = [fake_store(cache, n, size=1000, age_days=5 - n) for n in range(5)]  # 0 is oldest
    assert bound_cache(cache, cap_bytes=2500, now=NOW) == 3000
    assert [p.exists() for p in stores] == [False, False, False, True, True]
    assert bound_cache(cache, cap_bytes=2000, now=NOW) == 0  # at the cap is within it
    assert cache_info(cache).total_bytes == 2000


def test_the_cap_comes_from_the_environment(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    stores = [fake_store(cache, n, size=1024, age_days=5 - n) for n in range(3)]
    monkeypatch.setenv("OCIGRAPH_CACHE_MAX", "2K")
    assert cache_info(cache).cap_bytes == 2048
    assert bound_cache(cache, now=NOW) == 1024 and not stores[0].exists()
    monkeypatch.setenv("OCIGRAPH_CACHE_MAX", "a lot")
    assert cache_info(cache).cap_bytes == cachedir.DEFAULT_CAP == 1 << 30
    monkeypatch.delenv("OCIGRAPH_CACHE_MAX")
    assert cache_info(cache).cap_bytes == cachedir.DEFAULT_CAP
    assert bound_cache(cache, now=NOW) == 0


def test_bound_removes_dead_files_and_killed_writers_temp_files_only(tmp_path):
    cache = tmp_path / "cache"
    foreign = foreign_files(cache, tmp_path / "outside")
    made = old_files(cache)
    in_flight = cache / ".tmp-writing.graph"
    in_flight.write_bytes(b"w" * 10)
    os.utime(in_flight, (NOW - 60, NOW - 60))
    os.utime(cache / ".tmp-k1lled.graph", (NOW - 2 * 3600, NOW - 2 * 3600))
    assert bound_cache(cache, now=NOW) == 300 + 200 + 50 + 70 + 45
    assert not any(p.exists() for p in made)
    assert in_flight.exists()
    assert_untouched(foreign)


@pytest.mark.parametrize("name", [f"{HEX}.store", f"{HEX}.cache", f"{HEX}.plans"])
def test_a_symlink_with_an_ocigraph_name_is_never_followed_nor_removed(tmp_path, name):
    cache, target = tmp_path / "cache", tmp_path / "target"
    cache.mkdir()
    target.mkdir()
    (target / ("9" * 64)).write_bytes(b"not the cache's")
    (cache / name).symlink_to(target)
    assert clear_cache(cache) == 0 and bound_cache(cache, cap_bytes=0, max_age=0) == 0
    assert (cache / name).is_symlink() and (target / ("9" * 64)).read_bytes() == b"not the cache's"


def test_a_store_whose_journal_is_a_symlink_goes_without_what_it_points_to(tmp_path):
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    path = real_store(tmp_path / "layout", cache)
    outside.write_bytes(b"precious")
    Path(f"{path}-journal").symlink_to(outside)
    size = path.stat().st_size  # the link counts nothing
    assert clear_cache(cache) == size
    assert not path.exists() and outside.read_bytes() == b"precious"
    assert Path(f"{path}-journal").is_symlink()


def test_a_store_replaced_while_it_is_being_locked_is_not_removed(tmp_path, monkeypatch):
    """A writer renames a new store over the path between our open and our flock: the file
    the path now names is not the one we locked, and stays."""
    cache = tmp_path / "cache"
    path = real_store(tmp_path / "layout", cache)
    replaced = []
    real_flock = store.fcntl.flock

    def flock(fd, op):
        if not replaced:
            new = cache / ".tmp-new-store"
            new.write_bytes(path.read_bytes())
            os.rename(new, path)
            replaced.append(path.stat().st_ino)
        return real_flock(fd, op)

    monkeypatch.setattr(store.fcntl, "flock", flock)
    assert clear_cache(cache) == 0
    assert replaced and path.is_file() and path.stat().st_ino == replaced[0]
