"""One error family.  Every error carries the data at fault and formats it in ``__str__``.

Two branches, as in h11's Local/Remote split:

* :class:`LayoutError` -- the layout itself is wrong (bad JSON, a bad digest, a manifest whose
  bytes do not hash to its digest).  The fix is in the layout.
* :class:`RequestError` -- the caller asked for something that cannot be done as asked (an
  unknown tag, an ambiguous tag, a delete the guard refuses).  The fix is in the request.

The CLI prints ``str(error)`` as one line and exits 1; nothing here ever needs a traceback.
"""

from __future__ import annotations

import re
from itertools import pairwise

__all__ = [
    "OcigraphError",
    "LayoutError",
    "InvalidDigestError",
    "InvalidIndexError",
    "BrokenManifestError",
    "RequestError",
    "UnknownRefError",
    "AmbiguousRefError",
    "GuardError",
    "StalePlanError",
    "PlanFormatError",
]


# the digest grammar (see ``_digest``), to word an error: a ``name:tag`` is not a digest
_DIGEST_SHAPE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


class OcigraphError(Exception):
    """Base of every error ocigraph raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class LayoutError(OcigraphError):
    """The layout (or a value read from it) breaks the OCI rules."""


class InvalidDigestError(LayoutError):
    """A string that should be a digest is not one."""

    def __init__(self, value: object, why: str, where: str | None = None) -> None:
        self.value = value
        self.why = why
        self.where = where
        at = f" in {where}" if where else ""
        shown = repr(value)
        if len(shown) > 100:  # a hostile layout's megabyte "digest" still gives a short line
            shown = f"{shown[:80]}... ({len(shown)} characters)"
        self.shown = shown
        super().__init__(f"invalid digest {shown}{at}: {why}")


class InvalidIndexError(LayoutError):
    """index.json is not a valid image index."""

    def __init__(self, why: str, position: int | None = None) -> None:
        self.why = why
        self.position = position
        at = f" (manifests[{position}])" if position is not None else ""
        super().__init__(f"index.json{at}: {why}")


class BrokenManifestError(LayoutError):
    """A manifest that the plan depends on cannot be read, verified or parsed."""

    def __init__(self, digest: str, why: str, referenced_by: str | None = None) -> None:
        self.digest = digest
        self.why = why
        self.referenced_by = referenced_by
        via = f" (live via {referenced_by})" if referenced_by else ""
        super().__init__(
            f"live manifest {digest}{via} is unusable: {why}; nothing can be judged below it, "
            "so nothing was planned"
        )


class RequestError(OcigraphError):
    """The request cannot be carried out as asked."""


class UnknownRefError(RequestError):
    """A tag, digest or digest prefix names nothing in the layout (``message`` says more when
    the core knows more, e.g. a prefix too short to name a blob)."""

    def __init__(self, ref: str, message: str | None = None) -> None:
        self.ref = ref
        if message is None:
            kind = "digest" if _DIGEST_SHAPE.fullmatch(ref) else "tag"
            message = f"unknown {kind} {ref!r}: not in index.json nor referenced by any manifest"
        super().__init__(message)


#: How many candidates an ambiguous prefix lists before "and N more".
AMBIGUOUS_SHOWN = 5


class AmbiguousRefError(RequestError):
    """A tag names two or more digests, or a digest prefix starts two or more digests (then
    ``prefix`` is true); the caller must name a digest, or more of it, instead."""

    def __init__(self, ref: str, digests: tuple[str, ...], *, prefix: bool = False) -> None:
        self.ref = ref
        self.digests = digests
        self.prefix = prefix
        if not prefix:
            super().__init__(
                f"tag {ref!r} is ambiguous: it names {', '.join(digests)}; name a digest instead"
            )
            return
        from ._digest import short_digest  # _digest raises this module's errors

        shown = digests[:AMBIGUOUS_SHOWN]
        # as many characters as tell the shown candidates apart, at least the usual twelve
        length = max([12] + [_common_length(a, b) - a.index(":")
                             for a, b in pairwise(shown)])
        listed = ", ".join(short_digest(d, length) for d in shown)
        if len(digests) > len(shown):
            listed += f" and {len(digests) - len(shown)} more"
        super().__init__(f"digest prefix {ref!r} is ambiguous: {listed} (name more characters)")


def _common_length(a: str, b: str) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


#: How many live holders a guard refusal names before "and N more".
HOLDERS_SHOWN = 3


class GuardError(RequestError):
    """A delete would leave a live manifest or index pointing at a missing blob.

    ``holder`` is the first of ``holders`` (every live node that still references ``digest``
    other than as a referrer: tagged ones first, then by digest), ``roles`` how it references
    it, ``tags`` its tags.  The message names the count and the first three.
    """

    def __init__(self, digest: str, holder: str, roles: tuple[str, ...],
                 holders: tuple[str, ...] = (), tags: tuple[str, ...] = ()) -> None:
        self.digest = digest
        self.holder = holder
        self.roles = roles
        self.holders = holders or (holder,)
        self.tags = tags
        tagged = f" (tagged {', '.join(tags)})" if tags else ""
        n = len(self.holders)
        if n == 1:
            super().__init__(f"refusing to delete {digest}: live {holder}{tagged} still references "
                             f"it (as {'/'.join(roles)}); delete {holder} too, or pass --force")
            return
        named = [f"{holder}{tagged} (as {'/'.join(roles)})", *self.holders[1:HOLDERS_SHOWN]]
        more = f" and {n - HOLDERS_SHOWN} more" if n > HOLDERS_SHOWN else ""
        super().__init__(f"refusing to delete {digest}: {n} live manifests or indexes still "
                         f"reference it: {', '.join(named)}{more}; delete them too, or pass --force")


class StalePlanError(RequestError):
    """The plan was computed from an index.json that has changed since.

    ``changes`` says what changed, as far as the plan can tell (see
    :func:`ocigraph.describe_index_drift`).
    """

    def __init__(self, expected: str, found: str, changes: tuple[str, ...] = ()) -> None:
        self.expected = expected
        self.found = found
        self.changes = changes
        what = "; ".join(changes[:3]) + ("; ..." if len(changes) > 3 else "")
        detail = f" ({what})" if what else f" (was {expected}, now {found})"
        super().__init__(f"stale plan: index.json changed since the plan was made{detail}; plan again")


class PlanFormatError(RequestError):
    """A serialised plan cannot be read back."""

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(f"not a valid ocigraph plan: {why}")
