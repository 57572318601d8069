"""Pausing Python's cyclic garbage collector around big builds -- a shell decision.

Building a graph of a million nodes makes millions of small containers; every few hundred
allocations the collector would walk all the live ones (at 100k blobs, half the time of a
build).  The core never touches the collector: the shell pauses it around the calls that build
or walk large graphs, and restores it after.  What is made meanwhile is freed by reference
counting as usual; only cycles wait for the collector's next run.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

__all__ = ["collector_paused", "pauses_collector"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextmanager
def collector_paused() -> Iterator[None]:
    """``with collector_paused():`` -- the collector is off inside, and as it was after."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def pauses_collector(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorator form of :func:`collector_paused`."""
    @functools.wraps(fn)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with collector_paused():
            return fn(*args, **kwargs)
    return paused
