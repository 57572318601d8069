"""Pausing Python's cyclic garbage collector around big builds: a shell decision, the core
never touches it (docs/design.md)."""

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
