"""What a reference names: one set of rules for tags, digests and digest prefixes, whether the
answer comes from a built graph or from a :class:`~ocigraph.GraphSource` (a store on disk).

The rules, in order:

* ``alg:encoded`` that is a node names it;
* ``alg:hex`` shorter than a whole digest of a known algorithm is a *digest prefix*: it names
  the one node whose digest starts with it (4 or more hex characters; two or more candidates
  are ambiguous, none unknown).  This is how the short digests the text output prints
  (``sha256:0123456789ab``) are typed back;
* anything else is a tag, which must name exactly one digest;
* a bare lowercase hex string that no tag has (``c560349dc6cb``, as ``docker images`` prints)
  is read as a sha256 digest, or a prefix of one.

A mistyped digest (``sha256:ABC``, ``sha256:../x``) is an error, never a tag.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import networkx as nx

from ._digest import SWEEPABLE_ALGORITHMS, parse_digest
from ._errors import AmbiguousRefError, InvalidDigestError, UnknownRefError
from ._graph import NeighbourhoodView

if TYPE_CHECKING:
    from ._view import GraphSource

__all__ = ["MIN_PREFIX", "resolve_refs", "resolve_ref", "resolve_in", "tagged_digests"]

#: The fewest hex characters a digest prefix may have.
MIN_PREFIX = 4

_HEX = re.compile(r"[0-9a-f]+")


class _Lookup:
    """The three questions resolving asks, of a graph or of a source."""

    __slots__ = ("has", "tagged", "with_prefix")

    def __init__(self, has: Callable[[str], bool], tagged: Callable[[str], Sequence[str]],
                 with_prefix: Callable[[str], Sequence[str]]) -> None:
        self.has = has
        self.tagged = tagged
        self.with_prefix = with_prefix


def tagged_digests(graph: nx.DiGraph, tag: str) -> list[str]:
    """The digests index.json gives ``tag``, in index.json order (more than one: ambiguous)."""
    found: list[str] = []
    for e in graph.graph["index"].entries:
        if e is not None and e.tag == tag and e.digest not in found:
            found.append(e.digest)
    return found


def _of_graph(graph: nx.DiGraph) -> _Lookup:
    nodes = graph._node
    return _Lookup(nodes.__contains__, lambda tag: tagged_digests(graph, tag),
                   lambda prefix: sorted(n for n in nodes if n.startswith(prefix)))


def _of_source(source: GraphSource) -> _Lookup:
    return _Lookup(source.has, source.tagged, source.with_prefix)


def _by_prefix(ref: str, prefix: str, look: _Lookup) -> str:
    """The one node whose digest starts with ``prefix`` (``ref`` as the caller typed it)."""
    hex_part = prefix.partition(":")[2]
    if len(hex_part) < MIN_PREFIX:
        raise UnknownRefError(ref, f"digest prefix {ref!r} is too short: prefixes of "
                                   f"{MIN_PREFIX} or more hex characters are accepted")
    found = list(look.with_prefix(prefix))
    if not found:
        raise UnknownRefError(ref, f"unknown digest prefix {ref!r}: no digest in the layout "
                                   "starts with it")
    if len(found) > 1:
        raise AmbiguousRefError(ref, tuple(found), prefix=True)
    return found[0]


def _by_tag(ref: str, look: _Lookup) -> str | None:
    """The digest tag ``ref`` names; ``None`` when no entry has that tag."""
    found = list(look.tagged(ref))
    if len(found) > 1:
        raise AmbiguousRefError(ref, tuple(found))
    return str(found[0]) if found else None


def _resolve(ref: str, look: _Lookup) -> tuple[str, bool]:
    """``(digest, named by digest)`` for ``ref``; see the module's docstring for the rules."""
    alg, colon, encoded = ref.partition(":")
    width = SWEEPABLE_ALGORITHMS.get(alg) if colon else None
    if width is not None and len(encoded) < width and _HEX.fullmatch(encoded):
        return _by_prefix(ref, ref, look), True
    try:
        parse_digest(ref)
        is_digest = True
    except InvalidDigestError:
        if width is not None:
            raise  # "sha256:ABC" is a mistyped digest, not a tag
        is_digest = False
    if is_digest and look.has(ref):
        return ref, True
    tagged = _by_tag(ref, look)
    if tagged is not None:
        return tagged, False
    if not colon and _HEX.fullmatch(ref) and len(ref) <= SWEEPABLE_ALGORITHMS["sha256"]:
        digest = "sha256:" + ref
        if len(ref) == SWEEPABLE_ALGORITHMS["sha256"] and look.has(digest):
            return digest, True
        if len(ref) < MIN_PREFIX:
            raise UnknownRefError(ref, f"unknown tag {ref!r} (as a digest prefix it is too short: "
                                       f"prefixes of {MIN_PREFIX} or more hex characters are "
                                       "accepted)")
        try:
            return _by_prefix(ref, digest, look), True
        except UnknownRefError:
            raise UnknownRefError(ref, f"unknown tag or digest {ref!r}: no tag has that name and "
                                       "no sha256 digest starts with it") from None
    raise UnknownRefError(ref)


def _lookup(where: nx.DiGraph | GraphSource, refs: Sequence[str]) -> _Lookup:
    if not isinstance(where, nx.DiGraph):
        return _of_source(where)
    if isinstance(where, NeighbourhoodView):
        for ref in refs:
            if ref not in where:
                raise ValueError(f"a neighbourhood view names its nodes by digest; {ref!r} is "
                                 "not one of them (resolve tags in its source: ocigraph.resolve_in)")
    return _of_graph(where)


def named(where: nx.DiGraph | GraphSource, refs: Iterable[str]) -> list[tuple[str, str, bool]]:
    """``(ref, digest, named by digest)`` for each of ``refs``, in order (no deduplication):
    what the planners need to tell "this tag" from "all the tags of this digest"."""
    refs = list(refs)
    look = _lookup(where, refs)
    return [(ref, *_resolve(ref, look)) for ref in refs]


def resolve_refs(where: nx.DiGraph | GraphSource, refs: Iterable[str]) -> tuple[str, ...]:
    """The digests ``refs`` name in ``where`` (a graph, or a :class:`~ocigraph.GraphSource`),
    first occurrence first, each once.

    Each ref is a tag, a digest, a digest prefix (``sha256:0123456789ab``) or a bare hex
    digest or prefix; see :mod:`ocigraph._refs` for the rules.  Raises
    :class:`~ocigraph.UnknownRefError` (nothing by that name, or a prefix under four hex
    characters), :class:`~ocigraph.AmbiguousRefError` (a tag on two digests, or a prefix of
    two; ``prefix`` tells which) and :class:`~ocigraph.InvalidDigestError` (a mistyped digest).
    A neighbourhood view resolves only the digests of its own nodes.

    >>> import ocigraph as og
    >>> g = og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}',
    ...                                         {"sha256:" + "ab" * 32: b"x"}))
    >>> resolve_refs(g, ["sha256:abab", "abababab"]) == ("sha256:" + "ab" * 32,)
    True
    """
    out: list[str] = []
    for _, digest, _ in named(where, refs):
        if digest not in out:
            out.append(digest)
    return tuple(out)


def resolve_ref(graph: nx.DiGraph, ref: str) -> str:
    """The digest a tag, digest or digest prefix names in ``graph`` (see :func:`resolve_refs`)."""
    return resolve_refs(graph, [ref])[0]


def resolve_in(source: GraphSource, ref: str) -> str:
    """The digest a tag, digest or digest prefix names in ``source``, exactly as
    :func:`resolve_ref` finds it in a graph."""
    return resolve_refs(source, [ref])[0]
