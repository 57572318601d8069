"""Draw the graph (and a plan) with matplotlib -- the optional ``viz`` extra.

matplotlib is imported only when :func:`draw` is called, so ``import ocigraph`` never needs it.
The layout (:func:`generation_layout`) and the choice of what to draw (:func:`focus_nodes`) are
pure and need only networkx.

Nodes are placed by generation: roots and index entries on top, each node one row below the
lowest of its predecessors.  A referrer hangs below its subject (the subject is what makes it
live), so for the layout a ``subject`` edge is turned around; any cycle -- which no verified
content can form, but a hand-made graph can -- is collapsed into one row, never followed.
A generation wider than the figure allows is wrapped onto several rows, each continuation row
shifted by half a column so that edges coming from above pass between its nodes.

The figure is sized from the layout, not the other way round: a column is as wide as the
widest label and a row as tall as a node with its label under it, so labels never overlap;
the figure is at most ``max_width`` inches wide (12: about 1200 pixels in a notebook) and a
wide graph gets more rows instead.  For one image of a big store, draw its surroundings:
``draw(graph, focus="app-1.1")``.

Colours come from :data:`ocigraph.render.KIND_STYLES` without a plan and from
:data:`ocigraph.render.CATEGORY_STYLES` with one, as in the Mermaid and DOT exports.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable
from typing import Any, NamedTuple

import networkx as nx

from ._digest import short_digest
from ._plan import Plan
from .render import (
    CATEGORIES,
    CATEGORY_STYLES,
    KIND_STYLES,
    KINDS,
    graph_summary,
    node_kind,
    plan_categories,
)

__all__ = ["draw", "generation_layout", "focus_nodes", "KIND_MARKERS"]

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

# Sizes, in points (1/72 inch) unless said otherwise.  Labels are monospace, whose glyphs are
# 0.6 em wide (DejaVu Sans Mono, matplotlib's default), so a label's width is known before
# anything is drawn.
_LABEL_FONT = 8.0
_MONO_ADVANCE = 0.6  # em
_SANS_ADVANCE = 0.62  # em, a generous average for the legend's proportional text
_MARKER_AREA = 200.0  # pt**2, matplotlib's scatter ``s``
_LABEL_GAP = 11.0  # from a node's centre down to the top of its label
_TAG_CHARACTERS = 18  # a longer tag is cut, so that one long tag does not widen every column
_COLUMN_PADDING = 0.2  # inches between two labels side by side
_ROW_PITCH = 0.75  # inches from a row to the next: a node, two label lines and room for edges
_GENERATION_GAP = 0.4  # rows, between two generations
_LEGEND_ENTRY = 0.75  # inches of a legend entry besides its text: marker, padding, spacing
_LEGEND_ROW = 8 * 1.5 / 72  # inches per row of legend entries
_BARE_COLUMN = 0.35  # inches per column and per row without labels
_BARE_ROW = 0.45
_MARGIN = 0.15  # inches around the axes
_MAX_HEIGHT = 40.0  # inches; a taller layout is squeezed (labels are off that far anyway)


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


def _wrapped(row: list[str], per_row: int | None) -> list[list[str]]:
    """``row`` cut into rows of at most ``per_row`` nodes, as even as possible."""
    if per_row is None or len(row) <= per_row:
        return [row]
    count = math.ceil(len(row) / max(1, per_row))
    size = math.ceil(len(row) / count)
    return [row[i:i + size] for i in range(0, len(row), size)]


def generation_layout(graph: nx.DiGraph, per_row: int | None = None, gap: float = 0.0,
                      ) -> dict[str, tuple[float, float]]:
    """``{node: (x, y)}``: one unit between columns and between rows, rows centred on ``x = 0``.

    Generations are :func:`networkx.topological_generations` of the condensation of the layout
    graph (so cycles cannot break it).  Within a generation, nodes are ordered by the mean ``x``
    of their predecessors (fewer crossings), then by digest.  Nodes with no edge at all that
    are not in index.json (stray blobs) form a generation of their own at the bottom.  Without
    ``per_row``, generation ``k`` is the row ``y = -k``; with it, a generation of more nodes is
    wrapped onto several rows of at most ``per_row`` nodes (plus half a column: a continuation
    row is shifted so that its nodes sit between those of the row above).  ``gap`` adds that
    much space between two generations, so that wrapped ones stay told apart.

    >>> import ocigraph as og
    >>> generation_layout(og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {})))
    {}
    """
    lay = _layout_graph(graph)
    stray = sorted(n for n in graph if lay.degree(n) == 0 and not graph.nodes[n]["indexed"])
    lay.remove_nodes_from(stray)
    cond = nx.condensation(lay)
    members = cond.graph["mapping"]  # node -> component
    generations: list[list[str]] = []
    comp_generation: dict[int, int] = {}
    for k, comps in enumerate(nx.topological_generations(cond)):
        for c in comps:
            comp_generation[c] = k
        generations.append([])
    for n in sorted(lay):
        generations[comp_generation[members[n]]].append(n)
    if stray:
        generations.append(stray)
    pos: dict[str, tuple[float, float]] = {}
    y = 0.0
    for k, generation in enumerate(generations):
        def key(n: str) -> tuple[float, str]:
            xs = [pos[p][0] for p in lay.pred[n] if p in pos] if n in lay else []
            return (sum(xs) / len(xs) if xs else 0.0, n)
        if k > 0:
            generation.sort(key=key)
        phase = None  # x modulo 1 of the row above, within this generation
        for j, row in enumerate(_wrapped(generation, per_row)):
            start = -(len(row) - 1) / 2
            if start % 1 == phase:  # it would sit right under the row above: shift it
                start += 0.5 if j % 2 else -0.5
            for i, n in enumerate(row):
                pos[n] = (start + i, -y)
            phase = start % 1
            y += 1.0
        y += gap
    return pos


def focus_nodes(graph: nx.DiGraph, focus: str | Iterable[str],
                hops: int | None = None) -> frozenset[str]:
    """The surroundings of ``focus`` (a tag, a digest or a digest prefix, or several): those
    nodes, what they reference and their referrers, and so on up to ``hops`` steps away (no
    limit without it).

    A step goes from a node to what it references as config, layer, manifest or blob, and to
    the referrers of it; a focus node that is itself a referrer brings its subject along, one
    step away, but what the subject references is left out: it is another image.

    >>> import ocigraph as og
    >>> g = og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}',
    ...                                         {"sha256:" + "ab" * 32: b"x"}))
    >>> focus_nodes(g, "abababab") == {"sha256:" + "ab" * 32}
    True
    """
    from . import resolve_ref  # at call time: the package is complete by then

    refs = [focus] if isinstance(focus, str) else list(focus)
    start = {resolve_ref(graph, ref) for ref in refs}
    seen = set(start)
    for n in start:  # the subject a focus referrer describes
        seen.update(s for s in graph.succ[n] if "subject" in graph.edges[n, s]["roles"])
    frontier = start
    step = 0
    while frontier and (hops is None or step < hops):
        reached: set[str] = set()
        for n in frontier:
            reached.update(s for s, edge in graph.succ[n].items()
                           if edge["roles"] - {"subject"})
            reached.update(p for p, edge in graph.pred[n].items()
                           if "subject" in edge["roles"])
        frontier = reached - seen
        seen |= frontier
        step += 1
    return frozenset(seen)


def _label(graph: nx.DiGraph, n: str) -> str:
    tags = sorted(graph.nodes[n]["tags"])
    text = short_digest(n)
    if tags:
        tag = tags[0]
        if len(tag) > _TAG_CHARACTERS:
            tag = tag[:_TAG_CHARACTERS - 1] + "\N{HORIZONTAL ELLIPSIS}"
        text += "\n" + tag + (f" +{len(tags) - 1}" if len(tags) > 1 else "")
    return text


def _text_width(lines: Iterable[str], font: float, advance: float) -> float:
    """Inches: the width of the longest of ``lines`` at ``font`` points."""
    return max((len(line) for line in lines), default=0) * advance * font / 72


def _legend_handles(styles: dict[str, Any], plan: Plan | None, used_colours: set[str],
                    used_kinds: set[str], dashed_edges: bool) -> list[Any]:
    from matplotlib.lines import Line2D

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
    if dashed_edges:
        handles.append(Line2D([], [], color="#777777", linestyle="--",
                              label="subject (referrer -> subject)"))
    return handles


def _node_groups(graph: nx.DiGraph, categories: dict[str, str] | None,
                 ) -> dict[tuple[str, str, bool], list[str]]:
    """Nodes by (colour, kind, present): colour is the plan's category, or the kind."""
    groups: dict[tuple[str, str, bool], list[str]] = {}
    for n in sorted(graph):
        kind = node_kind(graph, n)
        colour = categories[n] if categories is not None else kind
        groups.setdefault((colour, kind, bool(graph.nodes[n]["present"])), []).append(n)
    return groups


def _default_title(graph: nx.DiGraph, plan: Plan | None, focus: Iterable[str] | None,
                   hops: int | None) -> str:
    """The plan's summary or the graph's, said to be around ``focus`` when there is one."""
    title = plan.summary() if plan is not None else graph_summary(graph)
    if focus is not None:
        named = ", ".join(focus)
        title = (f"around {named}" + (f" ({hops} step(s))" if hops is not None else "")
                 + f": {title}")
    return title


class _Frame(NamedTuple):
    """A new figure's geometry, in inches, and its title wrapped to fit."""

    width: float
    height: float
    axes_width: float
    axes_height: float
    title: str
    title_pad: float
    legend_columns: int


def _frame(title: str, handles: list[Any], x_range: tuple[float, float],
           y_range: tuple[float, float], column: float, row: float, max_width: float) -> _Frame:
    """The geometry of a new figure: axes as large as the layout (at most ``max_width`` wide
    with the margins, at most ``_MAX_HEIGHT`` tall), the title and the legend above them."""
    axes_width = (x_range[1] - x_range[0]) * column
    axes_height = min(_MAX_HEIGHT, (y_range[1] - y_range[0]) * row)
    width = min(max_width, max(5.0, axes_width + 2 * _MARGIN))
    inside = width - 2 * _MARGIN
    # the title starts where the axes start and wraps at the figure's right edge; the
    # legend is a block of columns between the title and the top row
    title_lines = textwrap.wrap(title, max(20, int(inside * 72 / (9 * _SANS_ADVANCE))))
    entry = max((_text_width([h.get_label()], 8, _SANS_ADVANCE) for h in handles),
                default=0.0) + _LEGEND_ENTRY
    legend_columns = max(1, min(len(handles), math.floor(inside / entry))) if handles else 1
    legend_rows = math.ceil(len(handles) / legend_columns)
    legend_height = legend_rows * _LEGEND_ROW + 0.1 if handles else 0.0
    title_pad = legend_height * 72 + 6
    title_height = len(title_lines) * 9 * 1.3 / 72 + title_pad / 72 if title_lines else 0.0
    height = axes_height + max(title_height, legend_height) + 2 * _MARGIN
    return _Frame(width, height, axes_width, axes_height, "\n".join(title_lines), title_pad,
                  legend_columns)


def _draw_edges(ax: Any, edges: list[tuple[str, str, Any]],
                pos: dict[str, tuple[float, float]]) -> None:
    """Arrows from referencing to referenced node (plain lines above ``_ARROW_LIMIT`` edges);
    ``subject`` edges dashed."""
    from matplotlib.collections import LineCollection
    from matplotlib.patches import FancyArrowPatch

    if len(edges) <= _ARROW_LIMIT:
        for u, v, roles in edges:
            ax.add_patch(FancyArrowPatch(
                pos[u], pos[v], arrowstyle="-|>", mutation_scale=10, shrinkA=8, shrinkB=8,
                color="#777777", linewidth=0.8, linestyle="--" if roles == {"subject"} else "-",
                zorder=1))
    else:
        for dashed in (False, True):
            segs = [(pos[u], pos[v]) for u, v, r in edges if (r == {"subject"}) == dashed]
            if segs:
                ax.add_collection(LineCollection(segs, colors="#999999", linewidths=0.5,
                                                 linestyles="--" if dashed else "-", zorder=1))


def _draw_nodes(ax: Any, groups: dict[tuple[str, str, bool], list[str]], styles: dict[str, Any],
                pos: dict[str, tuple[float, float]]) -> None:
    """One scatter per (colour, kind, present), in palette order for a stable drawing."""
    order = {name: i for i, name in enumerate(tuple(CATEGORIES) + tuple(KINDS))}
    for (colour, kind, present), ns in sorted(groups.items(),
                                              key=lambda kv: (order[kv[0][0]], order[kv[0][1]],
                                                              not kv[0][2])):
        style = styles[colour]
        ax.scatter([pos[n][0] for n in ns], [pos[n][1] for n in ns], s=_MARKER_AREA,
                   marker=KIND_MARKERS[kind], c=style.fill, edgecolors=style.stroke,
                   linewidths=1.5, linestyles="-" if present else "--", zorder=3,
                   gid=f"nodes:{colour}:{kind}" + ("" if present else ":absent"))


def _draw_labels(ax: Any, texts: dict[str, str], pos: dict[str, tuple[float, float]]) -> None:
    """Each label under its node, on a white box."""
    for n, text in sorted(texts.items()):
        ax.annotate(text, pos[n], xytext=(0, -_LABEL_GAP), textcoords="offset points",
                    ha="center", va="top", fontsize=_LABEL_FONT, family="monospace",
                    zorder=4, gid=f"label:{n}",
                    bbox={"boxstyle": "square,pad=0.05", "facecolor": "white",
                          "edgecolor": "none", "alpha": 0.8})


def draw(graph: nx.DiGraph, plan: Plan | None = None, ax: Any = None, *,
         labels: bool | None = None, legend: bool = True, title: str | None = None,
         focus: str | Iterable[str] | None = None, hops: int | None = None,
         max_width: float = 12.0) -> Any:
    """Draw ``graph`` on ``ax`` (a new figure if ``None``) and return the Axes.

    Marker shape says the kind; colour says the kind without a plan, or what ``plan`` does to
    the node with one (:data:`ocigraph.render.CATEGORIES`).  Absent blobs have a dashed outline.
    Edges are arrows from referencing to referenced node; ``subject`` edges are dashed.  Nodes
    are one scatter point each, in one ``PathCollection`` per (colour, kind, presence) whose
    ``gid`` is ``"nodes:<category or kind>:<kind>"``, with ``:absent`` appended for absent
    blobs.  ``labels`` (short digest and first tag; each a text whose ``gid`` is
    ``"label:<digest>"``) default to on for graphs of at most 60 nodes.

    ``focus`` (tags, digests or digest prefixes) draws only their surroundings within ``hops``
    steps (:func:`focus_nodes`); a plan still colours them as it treats them in the whole
    graph.  A new figure is at most ``max_width`` inches wide: a wider generation wraps onto
    more rows.  With ``ax`` given, the layout wraps to the width of ``ax``.  The figure is
    ``ax.figure``.

    Needs matplotlib (``pip install 'ocigraph[viz]'``); works with any backend, Agg included.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ocigraph.draw needs matplotlib: pip install 'ocigraph[viz]'") from exc

    categories = plan_categories(graph, plan) if plan is not None else None
    if focus is not None:
        focus = (focus,) if isinstance(focus, str) else tuple(focus)
        graph = graph.subgraph(focus_nodes(graph, focus, hops))
    styles = CATEGORY_STYLES if plan is not None else KIND_STYLES
    if labels is None:
        labels = graph.number_of_nodes() <= _LABEL_LIMIT
    texts = {n: _label(graph, n) for n in graph} if labels else {}

    groups = _node_groups(graph, categories)  # nodes by (colour, kind, present)
    edges = sorted(graph.edges(data="roles"))
    dashed_edges = any(r == {"subject"} for _, _, r in edges)
    handles = (_legend_handles(styles, plan, {c for c, _, _ in groups}, {k for _, k, _ in groups},
                               dashed_edges) if legend and groups else [])

    # Geometry, in inches: a column holds the widest label, a row a node and its label.
    lines = [line for text in texts.values() for line in text.split("\n")]
    column = (_text_width(lines, _LABEL_FONT, _MONO_ADVANCE) + _COLUMN_PADDING if texts
              else _BARE_COLUMN)
    row = _ROW_PITCH if texts else _BARE_ROW
    if ax is None:
        room = max_width - 2 * _MARGIN  # the legend goes above the nodes, not beside them
    else:
        room = ax.get_position().width * ax.figure.get_figwidth()
    per_row = max(1, math.floor(room / column - 0.5))
    pos = generation_layout(graph, per_row, _GENERATION_GAP)
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    x_range = (min(xs) - 0.5, max(xs) + 0.5)
    # above the top row: half a node; below the bottom row: its label
    below = (_LABEL_GAP + 2.4 * _LABEL_FONT) / 72 / row + 0.15 if texts else 0.5
    y_range = (min(ys) - below, max(ys) + 0.35)

    if title is None:
        title = _default_title(graph, plan, focus, hops)
    title_at, title_pad = "center", 6.0
    if ax is None:
        frame = _frame(title, handles, x_range, y_range, column, row, max_width)
        title, title_at, title_pad = frame.title, "left", frame.title_pad
        width, height = frame.width, frame.height
        fig = plt.figure(figsize=(width, height))
        ax = fig.add_axes((_MARGIN / width, _MARGIN / height, frame.axes_width / width,
                           frame.axes_height / height))
        legend_place: dict[str, Any] = {"loc": "lower left", "bbox_to_anchor": (0.0, 1.0),
                                        "ncols": frame.legend_columns, "borderaxespad": 0.2}
    else:
        legend_place = {"loc": "upper left", "bbox_to_anchor": (1.0, 1.0)}

    _draw_edges(ax, edges, pos)  # edges first, below the nodes
    _draw_nodes(ax, groups, styles, pos)
    _draw_labels(ax, texts, pos)

    if handles:
        ax.legend(handles=handles, fontsize=8, frameon=False, **legend_place)
    ax.set_title(title, fontsize=9, loc=title_at, pad=title_pad)
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    ax.set_axis_off()
    return ax
