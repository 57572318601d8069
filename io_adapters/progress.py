"""Progress bars on stderr, only when stderr is a terminal: each phase of a plan, and apply's
deletions -- so a long silence is never unexplained, and piped output stays clean."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import ocigraph as og
from ocigraph.present import PHASE_NAMES

__all__ = ["ProgressReporter", "is_terminal"]


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # replaced by a test, or closed
        return False


class ProgressReporter(og.Reporter):
    """A bar, with the elapsed time, for each phase of a plan and for apply's deletions."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = is_terminal(sys.stderr) if enabled is None else enabled
        self._bar: Any = None

    def _show(self, **options: Any) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.close()
            self._bar = tqdm(file=sys.stderr, leave=False, **options)

    def phase_started(self, phase: str) -> None:
        read = phase == "read"
        self._show(desc=PHASE_NAMES.get(phase, phase), unit=" manifests" if read else "",
                   bar_format="{desc}: {n_fmt}{unit} [{elapsed}]" if read else "{desc} [{elapsed}]")

    def manifests_read(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def phase_finished(self, phase: str) -> None:
        self.close()

    def deleting(self, total: int, count: Callable[[int], None]) -> Callable[[int], None]:
        """apply's ``progress`` callback: passes each count to ``count``; a bar of ``total``."""
        if total:
            self._show(total=total, desc="deleting", unit=" blobs")

        def advance(done: int) -> None:
            count(done)
            if self._bar is not None and done > self._bar.n:
                self._bar.update(done - self._bar.n)
        return advance

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
