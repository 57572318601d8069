"""The cache folder's pure half (its shell is :mod:`io_adapters.cachedir`): which of its names
are ocigraph's, its entries as values, and its size cap.  See docs/design.md.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Container, Iterable, Mapping
from pathlib import PurePath
from typing import Literal, NamedTuple

from ._errors import OcigraphError
from ._rules import parse_size

__all__ = ["DEFAULT_CAP", "MAX_AGE", "CacheEntry", "CacheInfo", "entry_kind", "cache_cap"]

DEFAULT_CAP = 1 << 30  #: bytes, unless ``OCIGRAPH_CACHE_MAX`` says otherwise (``500M``, ``2G``)
MAX_AGE = 30 * 86400  #: seconds an entry may go unused
_NAME = re.compile(r"([0-9a-f]{32})\.(store|cache|graph|plans)(-journal|\.lock)?\Z")


class CacheEntry(NamedTuple):
    file: PurePath
    bytes: int  #: the file's and its journal's (a folder: its files')
    last_used: float  #: the mtime (opening a store touches it)
    layout: str | None  #: the layout's real path; ``None``: unknown (a damaged or older store)
    layout_exists: bool | None  #: whether it still has an index.json (``None``: unknown)


class CacheInfo(NamedTuple):
    folder: PurePath | None
    entries: tuple[CacheEntry, ...]  #: the stores, most recently used first
    leftovers: tuple[CacheEntry, ...]  #: dead and temporary files (no layout)
    total_bytes: int
    cap_bytes: int

    @classmethod
    def of(cls, folder: PurePath | None, entries: Iterable[CacheEntry | None],
           leftovers: Iterable[CacheEntry | None], cap_bytes: int) -> CacheInfo:
        """``folder`` holding the stores ``entries`` and the ``leftovers`` (``None``: one gone
        meanwhile, left out): the stores most recently used first, and what all weigh.

        >>> a, b = (CacheEntry(PurePath(n), 5, t, None, None) for n, t in [("a", 1.0), ("b", 2.0)])
        >>> info = CacheInfo.of(None, [a, None, b], [None, a], cap_bytes=99)
        >>> [e.file.name for e in info.entries], len(info.leftovers), info.total_bytes
        (['b', 'a'], 1, 15)
        """
        stores = tuple(sorted(filter(None, entries), key=lambda e: e.last_used, reverse=True))
        dead = tuple(filter(None, leftovers))
        return cls(folder, stores, dead, sum(e.bytes for e in stores + dead), cap_bytes)


def entry_kind(name: str, kind: str, names: Container[str]) -> Literal["store", "leftover"] | None:
    """What the cache folder's entry ``name`` is: a ``"store"`` (``<32 hex>.store``, a file), a
    ``"leftover"`` to remove -- a temporary file (``.tmp-*``), an earlier version's ``.cache``,
    ``.graph`` or ``.plans/`` folder, a lock or journal whose own file (in ``names``) is gone --
    or ``None``: not ocigraph's, never touched.  ``kind``: ``"f"`` a file, ``"d"`` a folder,
    ``""`` anything else (a symlink, ...).

    >>> [entry_kind(n, k, {"a" * 32 + ".store"}) for n, k in [("a" * 32 + ".store", "f"),
    ...     ("a" * 32 + ".store-journal", "f"), ("b" * 32 + ".store-journal", "f"),
    ...     ("b" * 32 + ".plans", "d"), ("a" * 32 + ".store", "d"), ("notes.txt", "f")]]
    ['store', None, 'leftover', 'leftover', None, None]
    """
    m = _NAME.match(name)
    if not m or kind != ("d" if m[2] == "plans" and not m[3] else "f"):
        return "leftover" if name.startswith(".tmp-") and kind == "f" else None
    if m[2] == "store" and not m[3]:
        return "store"
    return "leftover" if not m[3] or name[:-len(m[3])] not in names else None


def cache_cap(environ: Mapping[str, str]) -> int:
    """The bytes the cache may hold: ``$OCIGRAPH_CACHE_MAX`` when it is a size, else
    :data:`DEFAULT_CAP`.

    >>> cache_cap({"OCIGRAPH_CACHE_MAX": "2M"}), cache_cap({"OCIGRAPH_CACHE_MAX": "x"})
    (2097152, 1073741824)
    """
    with contextlib.suppress(OcigraphError, ValueError):
        return parse_size(environ.get("OCIGRAPH_CACHE_MAX") or DEFAULT_CAP)
    return DEFAULT_CAP
