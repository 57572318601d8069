"""``python -m io_adapters`` and the installed ``ocigraph`` script (``io_adapters.cli:run``):
the command line (:mod:`io_adapters.cli`), as a process of its own."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "run"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``ocigraph`` command line; returns or raises ``SystemExit`` like any click
    program (for callers in Python).  Work a command leaves for after its answer
    (:mod:`io_adapters.background`) is done before it returns -- in a child process that
    outlives this one when :func:`run` asked for that."""
    from .cli import cli

    cli.main(args=list(argv) if argv is not None else None, prog_name="ocigraph")


def run() -> None:
    """:func:`main`, made for a process of its own.

    The cyclic garbage collector is off for the run: it would only walk the graph's millions
    of objects again and again.  And when the command is done the process leaves at once
    (``os._exit``, after flushing output): freeing a graph of a million nodes object by object
    takes longer than building it.  Nothing is left undone by then -- files are closed, the
    lock is released, apply has synced what it wrote -- except what was left for a detached
    child (:mod:`io_adapters.background`).
    """
    from . import background

    gc.disable()
    background.detach = True
    try:
        main()
        code = 0
    except OSError as exc:  # writing --help or --version output, before any command runs
        code = 1
        _say_last(f"ocigraph: error: cannot write the output ({exc.strerror or exc})")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # sys.exit("message"), as Python itself would print it
            code = 1
            _say_last(str(exc.code))
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:  # started with that descriptor closed: nothing was written to it
            continue
        try:
            stream.flush()
        except Exception as exc:  # output was lost: that is a failure, and says so if it can
            if name == "stdout" and code == 0:
                code = 1
                _say_last(f"ocigraph: error: cannot write the output ({exc})")
    os._exit(code)


def _say_last(line: str) -> None:
    """A last line on stderr, if there is a stderr that still takes one."""
    with contextlib.suppress(Exception):
        if sys.stderr is not None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()


if __name__ == "__main__":
    run()
