"""Policy: the knobs of SEMANTICS §2-§4, and the three presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ._errors import PlanFormatError

__all__ = ["Policy", "PRESETS"]


@dataclass(frozen=True, slots=True)
class Policy:
    """How GC and Delete decide.

    name
        the preset this policy started from (``default``, ``oras``, ``spec``); informational.
    keep_untagged
        every index.json entry is a root, not just tagged ones (the image-spec / umoci reading).
    cascade_referrers
        deleting a node deletes its referrers, recursively.
    guard
        refuse a delete that would leave a live index or manifest pointing at a missing blob.
    force
        override the guard for this request.
    grace
        seconds; blobs younger than this are treated as roots and never deleted, except as
        explicit targets (protects a push whose manifest is not written yet).
    """

    name: str = "default"
    keep_untagged: bool = False
    cascade_referrers: bool = True
    guard: bool = True
    force: bool = False
    grace: float = 0.0

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Policy:
        """A preset by name, with any field overridden.

        >>> Policy.preset("spec").keep_untagged
        True
        >>> Policy.preset("oras", grace=3600).guard
        False
        """
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown policy preset {name!r}; choose from {', '.join(PRESETS)}") from None
        return replace(base, **overrides) if overrides else base

    @property
    def guarded(self) -> bool:
        return self.guard and not self.force

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Policy:
        if not isinstance(data, dict):
            raise PlanFormatError("policy is not an object")
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        for f in ("keep_untagged", "cascade_referrers", "guard", "force"):
            if f in known and not isinstance(known[f], bool):
                raise PlanFormatError(f"policy.{f} is not a boolean")
        if "grace" in known and (
            isinstance(known["grace"], bool) or not isinstance(known["grace"], (int, float))
        ):
            raise PlanFormatError("policy.grace is not a number")
        if "name" in known and not isinstance(known["name"], str):
            raise PlanFormatError("policy.name is not a string")
        return cls(**known)


PRESETS: dict[str, Policy] = {
    "default": Policy(name="default"),
    "oras": Policy(name="oras", guard=False),
    "spec": Policy(name="spec", keep_untagged=True),
}
