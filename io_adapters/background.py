"""The shell's process around the work: Python's cyclic collector paused around big builds
(:func:`collector_paused`; the core never touches it), and work a command leaves for after its
answer (storing a graph), done by :func:`finish` in a detached child when :data:`detach` is
set, as ``git`` detaches its automatic ``gc`` (docs/design.md)."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Callable, Iterator

__all__ = ["collector_paused", "defer", "finish", "run_now", "run_detached", "detach"]

@contextlib.contextmanager
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


#: whether :func:`finish` leaves the jobs to a child (set by the ``ocigraph`` script)
detach = False

_jobs: list[Callable[[], None]] = []
_fds: list[int] = []


def defer(job: Callable[[], None], *, owns: tuple[int, ...] = ()) -> None:
    """Do ``job`` after the command has answered.  ``owns``: descriptors the job closes when
    done (a writer's lock); once a child has taken the job, the parent closes its copies."""
    _jobs.append(job)
    _fds.extend(owns)


def finish() -> None:
    """The command is done: do the waiting jobs, detached if :data:`detach` is set."""
    if detach:
        run_detached()
    else:
        run_now()


def run_now() -> None:
    """Do every waiting job here and now (errors are the jobs' own business)."""
    _fds.clear()
    while _jobs:
        job = _jobs.pop(0)
        with contextlib.suppress(Exception):
            job()


def run_detached() -> None:
    """Do the waiting jobs in a child process of their own and return at once; in this
    process when there is no ``fork`` or ``OCIGRAPH_NO_DETACH`` is set."""
    if not _jobs:
        return
    if not hasattr(os, "fork") or os.environ.get("OCIGRAPH_NO_DETACH", "") not in ("", "0"):
        run_now()
        return
    for stream in (sys.stdout, sys.stderr):  # a child must not write the answer twice
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    try:
        pid = os.fork()
    except OSError:
        run_now()
        return
    if pid != 0:  # what the jobs hold (a writer's lock) is the child's now
        _jobs.clear()
        while _fds:
            with contextlib.suppress(OSError):
                os.close(_fds.pop())
        return
    held = list(_jobs)  # noqa: F841 -- what the jobs hold is freed by the exit, not by us
    try:  # the child: nothing it does may reach the terminal, or outlive a failure
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        run_now()
    finally:
        os._exit(0)
