"""Progress on stderr, only when stderr is a terminal: each phase of a plan, and apply's
deletions -- so a long silence is never unexplained, and piped output stays clean."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TextIO

import ocigraph as og

__all__ = ["ProgressReporter", "deletion_progress", "is_terminal", "reporting"]


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # replaced by a test, or closed
        return False


def stderr_is_terminal() -> bool:
    return is_terminal(sys.stderr)


class ProgressReporter(og.Reporter):
    """Shows each phase of a plan: listing the blobs, reading manifests (a count), building
    the graph, planning -- a bar with the elapsed time."""

    _NAMES: ClassVar[dict[str, str]] = {
        "list": "listing blobs", "read": "reading manifests", "build": "building the graph",
        "close": "walking what is live", "plan": "planning"}

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = stderr_is_terminal() if enabled is None else enabled
        self._bar: Any = None

    def phase_started(self, phase: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self.close()
        unit = " manifests" if phase == "read" else ""
        self._bar = tqdm(desc=self._NAMES.get(phase, phase), unit=unit, file=sys.stderr,
                         leave=False, bar_format="{desc}: {n_fmt}{unit} [{elapsed}]"
                         if phase == "read" else "{desc} [{elapsed}]")

    def manifests_read(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def phase_finished(self, phase: str) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def reporting() -> Iterator[ProgressReporter]:
    """A :class:`ProgressReporter` for the phases of one command, closed after."""
    reporter = ProgressReporter()
    try:
        yield reporter
    finally:
        reporter.close()


@contextlib.contextmanager
def deletion_progress(total: int, count: Callable[[int], None] | None = None
                      ) -> Iterator[Callable[[int], None]]:
    """A ``progress`` callback for ``apply_plan``: passes the count of blobs handled to
    ``count``, and shows a bar of ``total``."""
    bar: Any = None
    if total and stderr_is_terminal():
        from tqdm import tqdm

        bar = tqdm(total=total, desc="deleting", unit=" blobs", file=sys.stderr, leave=False)

    def advance(done: int) -> None:
        if count is not None:
            count(done)
        if bar is not None and done > bar.n:
            bar.update(done - bar.n)

    try:
        yield advance
    finally:
        if bar is not None:
            bar.close()
