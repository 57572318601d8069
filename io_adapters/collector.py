"""Pausing Python's cyclic garbage collector around big builds -- a shell decision.

Building a graph of a million nodes makes millions of small containers, and every few hundred
allocations the collector would walk all the live ones (at 100k blobs, half a build's time).
The core never touches it: the shell pauses it around what builds or walks large graphs.
Reference counting frees as usual meanwhile; only cycles wait for the collector's next run.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused", "pauses_collector"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """``with collector_paused():`` (or as a decorator, ``@collector_paused()``) -- the
    collector is off inside, and as it was after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


#: ``@pauses_collector``: :func:`collector_paused` around every call of the function
pauses_collector = collector_paused()
