"""What a command's target -- a layout folder or a registry repository (``io_adapters.targets``)
-- answers the command line: the same plain values from either adapter, which
:mod:`ocigraph.present` renders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ._listing import Junk
from ._model import IndexEntry
from ._plan import Plan

__all__ = ["Read", "Planned"]


@dataclass(frozen=True, slots=True)
class Read:
    """A target as read for ``show`` and ``du``: its graph (every blob's size is its file's),
    and beside it the junk under ``blobs/`` (``path``, ``why``) and the quarantines holding
    deleted blobs, as the documents :func:`ocigraph.present.show_document` takes.

    >>> import ocigraph as og
    >>> graph = og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {}))
    >>> read = Read.of(graph, [og.Junk("blobs/x", "not a blob")], [{"id": "q"}])
    >>> read.junk, read.quarantined, read.entries
    ([{'path': 'blobs/x', 'why': 'not a blob'}], [{'id': 'q'}], [])
    """

    graph: nx.DiGraph
    junk: list[dict[str, str]]
    quarantined: list[dict[str, Any]]

    @classmethod
    def of(cls, graph: nx.DiGraph, junk: Iterable[Junk] = (),
           quarantined: Iterable[Mapping[str, Any]] = ()) -> Read:
        return cls(graph, [{"path": j.path, "why": j.why} for j in junk],
                   [dict(q) for q in quarantined])

    @property
    def entries(self) -> list[IndexEntry]:
        """The entries of the index.json the graph was built from."""
        return list(self.graph.graph["index"].entries)


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan, the tags of the nodes it names, and how many items under ``blobs/`` are junk."""

    plan: Plan
    tags: dict[str, list[str]]
    junk: int = 0
