"""Draw the graph (and a plan) with matplotlib -- the optional ``viz`` extra.

matplotlib is imported only when :func:`draw` is called, so ``import ocigraph`` never needs it.
The layout (:func:`generation_layout`) is pure and needs only networkx.

Nodes are placed by generation: roots and index entries on top, each node one row below the
lowest of its predecessors.  A referrer hangs below its subject (the subject is what makes it
live), so for the layout a ``subject`` edge is turned around; any cycle -- which no verified
content can form, but a hand-made graph can -- is collapsed into one row, never followed.
Colours come from :data:`ocigraph.render.KIND_STYLES` without a plan and from
:data:`ocigraph.render.CATEGORY_STYLES` with one, as in the Mermaid and DOT exports.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from ._plan import Plan
from .render import (
    CATEGORIES,
    CATEGORY_STYLES,
    KIND_STYLES,
    KINDS,
    graph_summary,
    node_kind,
    plan_categories,
    short_digest,
)

__all__ = ["draw", "generation_layout", "KIND_MARKERS"]

#: kind -> matplotlib marker.
KIND_MARKERS: dict[str, str] = {
    "index": "D",
    "manifest": "s",
    "referrer": "v",
    "artifact": "p",
    "config": "h",
    "layer": "o",
    "blob": "8",
}

_LABEL_LIMIT = 60  # nodes; above this, labels are left out unless asked for
_ARROW_LIMIT = 2000  # edges; above this, plain lines (patches are slow by the thousand)


def _layout_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """The graph the layout ranks: edges as in ``graph``, ``subject``-only ones reversed."""
    lay = nx.DiGraph()
    lay.add_nodes_from(graph)
    for u, v, roles in graph.edges(data="roles"):
        if roles == {"subject"}:
            lay.add_edge(v, u)
        else:
            lay.add_edge(u, v)
    return lay


def generation_layout(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """``{node: (x, y)}``: row ``-k`` for generation ``k``, rows centred on ``x = 0``.

    Generations are :func:`networkx.topological_generations` of the condensation of the layout
    graph (so cycles cannot break it).  Within a row, nodes are ordered by the mean ``x`` of
    their predecessors (fewer crossings), then by digest.  Nodes with no edge at all that are
    not in index.json (stray blobs) get a row of their own at the bottom.

    >>> import ocigraph as og
    >>> generation_layout(og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {})))
    {}
    """
    lay = _layout_graph(graph)
    stray = sorted(n for n in graph if lay.degree(n) == 0 and not graph.nodes[n]["indexed"])
    lay.remove_nodes_from(stray)
    cond = nx.condensation(lay)
    members = cond.graph["mapping"]  # node -> component
    rows: list[list[str]] = []
    comp_row: dict[int, int] = {}
    for k, comps in enumerate(nx.topological_generations(cond)):
        for c in comps:
            comp_row[c] = k
        rows.append([])
    for n in sorted(lay):
        rows[comp_row[members[n]]].append(n)
    if stray:
        rows.append(stray)
    pos: dict[str, tuple[float, float]] = {}
    for k, row in enumerate(rows):
        def key(n: str) -> tuple[float, str]:
            xs = [pos[p][0] for p in lay.pred[n] if p in pos] if n in lay else []
            return (sum(xs) / len(xs) if xs else 0.0, n)
        if k > 0:
            row.sort(key=key)
        half = (len(row) - 1) / 2
        for i, n in enumerate(row):
            pos[n] = (float(i - half), float(-k))
    return pos


def _label(graph: nx.DiGraph, n: str) -> str:
    tags = sorted(graph.nodes[n]["tags"])
    text = short_digest(n, 8)
    if tags:
        text += "\n" + tags[0] + (f" +{len(tags) - 1}" if len(tags) > 1 else "")
    return text


def draw(graph: nx.DiGraph, plan: Plan | None = None, ax: Any = None, *,
         labels: bool | None = None, legend: bool = True, title: str | None = None) -> Any:
    """Draw ``graph`` on ``ax`` (a new figure if ``None``) and return the Axes.

    Marker shape says the kind; colour says the kind without a plan, or what ``plan`` does to
    the node with one (:data:`ocigraph.render.CATEGORIES`).  Absent blobs have a dashed outline.
    Edges are arrows from referencing to referenced node; ``subject`` edges are dashed.  Nodes
    are one scatter point each, in one ``PathCollection`` per (colour, kind, presence) whose
    ``gid`` is ``"nodes:<category or kind>:<kind>"``, with ``:absent`` appended for absent
    blobs.  ``labels`` (short digest and first tag) default to on for graphs of at most 60
    nodes.  The figure is ``ax.figure``.

    Needs matplotlib (``pip install 'ocigraph[viz]'``); works with any backend, Agg included.
    """
    try:
        import matplotlib.pyplot as plt
        from matplotlib.collections import LineCollection
        from matplotlib.lines import Line2D
        from matplotlib.patches import FancyArrowPatch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ocigraph.draw needs matplotlib: pip install 'ocigraph[viz]'") from exc

    pos = generation_layout(graph)
    width = max((sum(1 for p in pos.values() if p[1] == y) for y in {p[1] for p in pos.values()}),
                default=1)
    depth = len({p[1] for p in pos.values()}) or 1
    if ax is None:
        _, ax = plt.subplots(figsize=(min(40.0, max(6.0, 1.4 * width + 3)),
                                      min(40.0, max(3.0, 1.3 * depth + 1))))

    categories = plan_categories(graph, plan) if plan is not None else None
    styles = CATEGORY_STYLES if plan is not None else KIND_STYLES

    # Edges first, below the nodes.
    edges = sorted(graph.edges(data="roles"))
    if len(edges) <= _ARROW_LIMIT:
        for u, v, roles in edges:
            ax.add_patch(FancyArrowPatch(
                pos[u], pos[v], arrowstyle="-|>", mutation_scale=10, shrinkA=9, shrinkB=9,
                color="#777777", linewidth=0.8, linestyle="--" if roles == {"subject"} else "-",
                zorder=1))
    else:
        for dashed in (False, True):
            segs = [(pos[u], pos[v]) for u, v, r in edges if (r == {"subject"}) == dashed]
            if segs:
                ax.add_collection(LineCollection(segs, colors="#999999", linewidths=0.5,
                                                 linestyles="--" if dashed else "-", zorder=1))

    # Nodes: one scatter per (colour, kind, present), in palette order for a stable drawing.
    groups: dict[tuple[str, str, bool], list[str]] = {}
    for n in sorted(graph):
        kind = node_kind(graph, n)
        colour = categories[n] if categories is not None else kind
        groups.setdefault((colour, kind, bool(graph.nodes[n]["present"])), []).append(n)
    order = {name: i for i, name in enumerate(tuple(CATEGORIES) + tuple(KINDS))}
    for (colour, kind, present), ns in sorted(groups.items(),
                                              key=lambda kv: (order[kv[0][0]], order[kv[0][1]],
                                                              not kv[0][2])):
        style = styles[colour]
        ax.scatter([pos[n][0] for n in ns], [pos[n][1] for n in ns], s=220,
                   marker=KIND_MARKERS[kind], c=style.fill, edgecolors=style.stroke,
                   linewidths=1.5, linestyles="-" if present else "--", zorder=3,
                   gid=f"nodes:{colour}:{kind}" + ("" if present else ":absent"))

    if labels is None:
        labels = graph.number_of_nodes() <= _LABEL_LIMIT
    if labels:
        for n, (x, y) in pos.items():
            ax.annotate(_label(graph, n), (x, y), xytext=(0, -12), textcoords="offset points",
                        ha="center", va="top", fontsize=7, family="monospace", zorder=4)

    if legend and groups:
        used_colours = {c for c, _, _ in groups}
        used_kinds = {k for _, k, _ in groups}
        handles = []
        for name, style in styles.items():
            if name in used_colours:
                marker = KIND_MARKERS[name] if plan is None else "o"
                handles.append(Line2D([], [], linestyle="", marker=marker, markersize=9,
                                      markerfacecolor=style.fill, markeredgecolor=style.stroke,
                                      label=name if plan is None else style.legend))
        if plan is not None:
            for kind in KINDS:
                if kind in used_kinds:
                    handles.append(Line2D([], [], linestyle="", marker=KIND_MARKERS[kind],
                                          markersize=8, markerfacecolor="white",
                                          markeredgecolor="#333333", label=kind))
        handles.append(Line2D([], [], color="#777777", label="references"))
        if any(r == {"subject"} for _, _, r in edges):
            handles.append(Line2D([], [], color="#777777", linestyle="--",
                                  label="subject (referrer -> subject)"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
                  frameon=False)

    ax.set_title(title if title is not None else
                 (plan.summary() if plan is not None else graph_summary(graph)), fontsize=9)
    if pos:
        xs = [p[0] for p in pos.values()]
        ys = [p[1] for p in pos.values()]
        ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
        ax.set_ylim(min(ys) - 0.9, max(ys) + 0.6)
    ax.set_axis_off()
    return ax
