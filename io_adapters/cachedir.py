"""The cache folder: list, clear, bound; which of its files are ocigraph's is
:func:`ocigraph.cachedir.entry_kind`'s to say, and none a writer holds is removed."""

import contextlib
import os
import shutil
import sqlite3
import time
from pathlib import Path

import orjson

from ocigraph.cachedir import DEFAULT_CAP, MAX_AGE, CacheEntry, CacheInfo, cache_cap, entry_kind

from .store import lock_file, store_file_for

__all__ = ["DEFAULT_CAP", "MAX_AGE", "cache_info", "clear_cache", "bound_cache"]


def _entry(p: Path, layout: str | None = None) -> CacheEntry | None:
    """``p`` with its bytes: of its regular files and journal (``None``: gone meanwhile)."""
    with contextlib.suppress(OSError):
        files = [*p.rglob("*")] if p.is_dir() and not p.is_symlink() else [p, Path(f"{p}-journal")]
        size = sum(f.lstat().st_size for f in files if f.is_file() and not f.is_symlink())
        exists = None if layout is None else os.path.isfile(os.path.join(layout, "index.json"))
        return CacheEntry(p, size, p.lstat().st_mtime, layout, exists)
    return None


def cache_info(cache_dir: Path | str | None) -> CacheInfo:
    """What the cache folder holds (``None``: no folder, nothing; :func:`entry_kind`)."""
    folder, kinds = None if cache_dir is None else Path(cache_dir), {}
    if folder is not None:
        with contextlib.suppress(OSError), os.scandir(folder) as it:
            kinds = {e.name: "d" if e.is_dir(follow_symlinks=False) else
                     "f" if e.is_file(follow_symlinks=False) else "" for e in it}
    entries, leftovers = [], []
    for name, kind in sorted(kinds.items()):
        what, p, layout = entry_kind(name, kind, kinds), Path(folder or "", name), None
        if what == "store":
            with contextlib.suppress(Exception), contextlib.closing(sqlite3.connect(
                    p.absolute().as_uri() + "?mode=ro", uri=True)) as con:  # read only
                said = orjson.loads(con.execute("SELECT body FROM meta").fetchone()[0])["path"]
                layout = said if store_file_for(said, folder) == p else None  # else unknown
            entries.append(_entry(p, layout))
        elif what == "leftover":
            leftovers.append(_entry(p))
    return CacheInfo.of(folder, entries, leftovers, cache_cap(os.environ))


def _remove(entry: CacheEntry) -> int:
    """Remove an entry's file and journal (and an old version's lock file), holding the
    store's own lock: its bytes (0: in use, or replaced by a writer meanwhile)."""
    file = Path(entry.file)
    with contextlib.suppress(OSError), contextlib.ExitStack() as held:
        if file.name.endswith((".lock", ".store")) and file.is_file():
            fd = lock_file(file, create=False, wait=False, again=False)
            if fd is None:
                return 0  # a writer holds it, or renamed a new store into place: in use
            held.callback(os.close, fd)
        for p in (file, Path(f"{file}-journal"), Path(f"{file}.lock")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)  # an old .plans/ folder: all of it ocigraph's
            elif p.is_file() and not p.is_symlink():
                p.unlink()
        return entry.bytes
    return 0


def clear_cache(cache_dir: Path | str | None, layout: Path | str | None = None) -> int:
    """Remove all entries and leftovers, or ``layout``'s entry, if not in use: bytes freed."""
    info = cache_info(cache_dir)
    mine = None if layout is None or info.folder is None else store_file_for(layout, info.folder)
    return sum(_remove(e) for e in info.entries + info.leftovers
               if layout is None or (mine is not None and e.file.name[:32] == mine.name[:32]))


def bound_cache(cache_dir: Path | str | None, *, cap_bytes: int | None = None,
                max_age: float = MAX_AGE, now: float | None = None) -> int:
    """Remove leftovers (temp files an hour old), entries of layouts gone or unused ``max_age``
    s, then the least recently used down to ``cap_bytes`` (``None``: ``$OCIGRAPH_CACHE_MAX``)."""
    info, now = cache_info(cache_dir), time.time() if now is None else now
    cap = info.cap_bytes if cap_bytes is None else cap_bytes
    freed = sum(_remove(e) for e in info.leftovers  # a young temp file: a write in flight
                if not e.file.name.startswith(".tmp-") or now - e.last_used > 3600)
    total = sum(e.bytes for e in info.entries)
    for e in sorted(info.entries, key=lambda e: (e.layout_exists is not False, e.last_used)):
        if e.layout_exists is not False and now - e.last_used <= max_age and total <= cap:
            break  # this one and those after it: layout there, used lately, within the cap
        got = _remove(e)
        freed, total = freed + got, total - got
    return freed
