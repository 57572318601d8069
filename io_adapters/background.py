"""Work a command leaves for after its answer, as ``git`` detaches its automatic ``gc``.

Storing a layout's graph for later deletes (:mod:`io_adapters.store`) takes a second or two
per hundred thousand blobs, and the command that built the graph has no use for it.  So the
``ocigraph`` script answers first and then, if a job is waiting, forks: the parent leaves at
once with the command's exit status, and the child -- in a session of its own, its standard
streams on ``/dev/null``, the cyclic garbage collector still off -- does the job and exits.
Nothing a job does is needed for correctness: each checks that the layout is still as it was
read, writes to a temporary file and renames, and gives up silently on any error; killed
halfway, it leaves only a temporary file that the next writer ignores.

Callers in Python (:func:`io_adapters.cli.main`, the tests) run the jobs before returning, so
what they see is finished.  ``OCIGRAPH_NO_DETACH=1`` makes the script do the same.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

__all__ = ["defer", "pending", "run_now", "run_detached"]

_jobs: list[Callable[[], None]] = []
_fds: list[int] = []


def defer(job: Callable[[], None], *, owns: tuple[int, ...] = ()) -> None:
    """Do ``job`` after the command has answered.  ``owns``: descriptors the job closes when
    done (a writer's lock); once a child has taken the job, the parent closes its copies."""
    _jobs.append(job)
    _fds.extend(owns)


def pending() -> int:
    return len(_jobs)


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
    try:  # the child: nothing it does may reach the terminal, or outlive a failure
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        run_now()
    finally:
        os._exit(0)
