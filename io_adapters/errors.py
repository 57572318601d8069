"""Errors the disk adapter adds to the core's family, each naming the path or pid at fault.
They are pure values, defined in the core (``ocigraph._shell_errors``); raised here."""

from __future__ import annotations

from ocigraph import (
    ApplyError,
    ApplyInterrupted,
    LayoutAccessError,
    LayoutLockedError,
    LayoutMovedError,
    PlanMismatchError,
    PlanOriginError,
)

__all__ = ["LayoutAccessError", "LayoutLockedError", "ApplyError", "PlanMismatchError",
           "LayoutMovedError", "PlanOriginError", "ApplyInterrupted"]
