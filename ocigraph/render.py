"""See the graph, see the plan: Mermaid, DOT, HTML tables and notebook mime bundles.

Everything here is text out of values in: no I/O, no clock, no global state.  The same tables
drive every view (:data:`KIND_STYLES`, :data:`CATEGORY_STYLES`), so a node is the same colour in
Mermaid, in Graphviz, in an HTML plan and in :func:`ocigraph.draw.draw`.

Rules that keep this module honest:

* output is deterministic: nodes in digest order, edges in (source, target) order, classes in
  the order of the palette tables -- same graph and plan, same bytes;
* every string that comes from a layout (tags above all: index.json may hold anything) is
  escaped for the format it lands in; only text this module writes itself is left raw;
* a node's *kind* comes from its media types and the roles of its edges, never from guessing
  at content (see :func:`node_kind`).

>>> import ocigraph as og
>>> g = og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {}))
>>> to_mermaid(g).splitlines()[0]
'flowchart TB'
>>> graph_summary(g)
'OCI layout: 0 nodes, 0 edges, 0 present blobs (0 B), 0 tags'
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ._digest import short_digest
from ._mediatypes import DOCKER_LIST, MANIFEST_MEDIA_TYPES, OCI_ARTIFACT, OCI_INDEX, media_kind
from ._plan import Plan, format_bytes

__all__ = [
    "KINDS",
    "CATEGORIES",
    "Style",
    "KIND_STYLES",
    "CATEGORY_STYLES",
    "MERMAID_MAX_NODES",
    "short_digest",
    "node_kind",
    "kind_of_media_types",
    "plan_categories",
    "to_mermaid",
    "to_dot",
    "plan_html",
    "graph_html",
    "graph_summary",
    "graph_mimebundle",
]

#: Node kinds, in the order legends list them.  ``blob`` is a node nothing types: a present blob
#: no manifest references, under a media type that says neither config nor layer.
KINDS = ("index", "manifest", "referrer", "artifact", "config", "layer", "blob")

#: What a plan says about a node, in the order legends list them.  The first four are the
#: plan's deletion reasons (:data:`ocigraph.REASON_KINDS`); ``kept-shared`` is a successor of a
#: deleted node kept because a node outside the plan still references it (the plan's ``kept``
#: entries of kind ``shared``); ``untagged`` loses index.json entries but keeps its blob;
#: ``kept`` is everything else.
CATEGORIES = ("target", "referrer-of", "orphaned-by", "unreachable", "kept-shared", "untagged", "kept")

#: Above this many nodes, HTML views and mime bundles leave the Mermaid diagram out: a browser
#: renders a few dozen boxes legibly, not thousands.
MERMAID_MAX_NODES = 60

_INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
_MAX_TAGS_IN_LABEL = 3
_MAX_TAGS_IN_HTML = 50


@dataclass(frozen=True, slots=True)
class Style:
    """How one kind or category looks: a fill and a stroke colour, and its legend text."""

    fill: str
    stroke: str
    legend: str


#: kind -> style, used when there is no plan.
KIND_STYLES: dict[str, Style] = {
    "index": Style("#d9c8ef", "#6a3d9a", "index (image index / manifest list)"),
    "manifest": Style("#c6dbef", "#1f5a96", "image manifest"),
    "referrer": Style("#fde0c5", "#b35806", "referrer (has a subject)"),
    "artifact": Style("#fff2ae", "#8c6d00", "artifact manifest"),
    "config": Style("#d9f0d3", "#1b7837", "config"),
    "layer": Style("#e0e0e0", "#4d4d4d", "layer / blob"),
    "blob": Style("#ffffff", "#7f7f7f", "untyped blob"),
}

#: plan category -> style (Okabe-Ito hues: tell-apart for colour-blind readers too).
CATEGORY_STYLES: dict[str, Style] = {
    "target": Style("#f4a582", "#b2182b", "target"),
    "referrer-of": Style("#fdd49e", "#d55e00", "referrer of a deleted node"),
    "orphaned-by": Style("#f1b6da", "#cc79a7", "orphaned by a deleted node"),
    "unreachable": Style("#bdbdbd", "#525252", "unreachable (garbage)"),
    "kept-shared": Style("#a6cee3", "#0072b2", "kept: shared with a kept node"),
    "untagged": Style("#c7eae5", "#56b4e9", "kept, index.json entry dropped/untagged"),
    "kept": Style("#e5f5e0", "#009e73", "kept"),
}

# kind -> (opening, closing) of a Mermaid flowchart node shape.
_MERMAID_SHAPES: dict[str, tuple[str, str]] = {
    "index": ("[[", "]]"),
    "manifest": ("[", "]"),
    "referrer": (">", "]"),
    "artifact": ("{{", "}}"),
    "config": ("[/", "/]"),
    "layer": ("[(", ")]"),
    "blob": ("(", ")"),
}

# kind -> Graphviz node shape.
_DOT_SHAPES: dict[str, str] = {
    "index": "folder",
    "manifest": "box",
    "referrer": "note",
    "artifact": "component",
    "config": "hexagon",
    "layer": "cylinder",
    "blob": "ellipse",
}

# :func:`ocigraph.media_kind`'s words -> the kinds pictures draw, most telling first (a node
# described both as an index and as a blob is drawn as an index).
_KIND_OF_MEDIA_KIND: dict[str, str] = {
    "index": "index",
    "docker-list": "index",
    "artifact": "artifact",
    "manifest": "manifest",
    "docker-manifest": "manifest",
    "config": "config",
    "layer": "layer",
    "empty": "blob",
    "blob": "blob",
}
_KIND_PRECEDENCE = ("index", "artifact", "manifest", "config", "layer", "blob")


def _css_class(name: str) -> str:
    """A class name every target format accepts: ``referrer-of`` -> ``referrer_of``."""
    return name.replace("-", "_")


# -- what a node is -----------------------------------------------------------------------------


def kind_of_media_types(media_types: Iterable[str]) -> str:
    """The kind (:data:`KINDS`) that media types alone tell (no edges known): what a plan's
    deletion says.  The words are :func:`ocigraph.media_kind`'s, drawn coarser.

    >>> kind_of_media_types(["application/vnd.oci.image.index.v1+json"])
    'index'
    >>> kind_of_media_types(["application/vnd.oci.image.layer.v1.tar+gzip"])
    'layer'
    """
    found = {_KIND_OF_MEDIA_KIND[k] for k in media_kind(media_types).split("/")}
    return next(k for k in _KIND_PRECEDENCE if k in found)


def node_kind(graph: nx.DiGraph, digest: str) -> str:
    """One of :data:`KINDS` for ``digest``.

    A manifest with a ``subject`` edge is a ``referrer`` (whatever its media type); else an index
    or manifest list is an ``index``; an artifact manifest, or an image manifest with an
    ``artifactType``, is an ``artifact``; other manifests are ``manifest``.  A blob is a
    ``config`` or ``layer`` by the role of the edges that reach it (``blob`` role counts as
    layer), else by a hint in its media type, else it is a ``blob``.
    """
    attrs = graph.nodes[digest]
    mts: frozenset[str] = attrs["media_types"]
    if mts & MANIFEST_MEDIA_TYPES:
        if any("subject" in a["roles"] for a in graph._succ[digest].values()):
            return "referrer"
        if mts & _INDEX_TYPES:
            return "index"
        if OCI_ARTIFACT in mts or attrs.get("artifact_type"):
            return "artifact"
        return "manifest"
    roles: set[str] = set()
    for a in graph._pred[digest].values():
        roles |= a["roles"]
    if "config" in roles:
        return "config"
    if roles & {"layer", "blob"}:
        return "layer"
    return kind_of_media_types(mts)


def plan_categories(graph: nx.DiGraph, plan: Plan) -> dict[str, str]:
    """``{node: category}`` (see :data:`CATEGORIES`) for every node of ``graph``.

    A deletion's reason wins over anything else; nodes of the plan that are not in ``graph``
    are left out.
    """
    out = {n: "kept" for n in graph}
    for c in plan.index_changes:
        if c.digest in out:
            out[c.digest] = "untagged"
    for k in plan.kept:
        if k.kind == "shared" and k.digest in out:
            out[k.digest] = "kept-shared"
    for d in plan.deletions:
        if d.digest in out:
            out[d.digest] = d.reason.kind
    return out


def _tags(graph: nx.DiGraph, digest: str) -> list[str]:
    return sorted(graph.nodes[digest]["tags"])


def _size_text(attrs: Mapping[str, Any]) -> str:
    text = format_bytes(attrs["size"]) if attrs["present"] else "absent"
    if attrs["status"] == "broken":
        text += ", broken"
    return text


def _label_lines(graph: nx.DiGraph, digest: str, kind: str, plan: Plan | None,
                 reasons: Mapping[str, Any], kept: Mapping[str, Any]) -> list[str]:
    """The lines of a node's label, unescaped: kind and short digest, tags, size, and what the
    plan does to it."""
    attrs = graph.nodes[digest]
    lines = [f"{kind} {short_digest(digest)}"]
    tags = _tags(graph, digest)
    if tags:
        shown = ", ".join(tags[:_MAX_TAGS_IN_LABEL])
        more = len(tags) - _MAX_TAGS_IN_LABEL
        lines.append(f"tags: {shown}" + (f" +{more} more" if more > 0 else ""))
    lines.append(_size_text(attrs))
    if plan is not None:
        reason = reasons.get(digest)
        if reason is not None:
            lines.append(reason.kind if reason.via is None
                         else f"{reason.kind} {short_digest(reason.via)}")
        elif digest in kept:
            k = kept[digest]
            lines.append(f"kept: {k.kind}" + (f" via {short_digest(k.via)}" if k.via else ""))
    return lines


def _edge_label(roles: frozenset[str]) -> str:
    return ",".join(sorted(roles))


def _weak(roles: frozenset[str]) -> bool:
    """A ``subject``-only edge: drawn dashed, the weak link of SEMANTICS §3.4."""
    return roles == {"subject"}


# -- Mermaid ------------------------------------------------------------------------------------

_MERMAID_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._:/+=,@-")


def _mermaid_text(text: str) -> str:
    """Escape text for a quoted Mermaid label: every character outside a small safe set becomes
    a numeric entity (``#35;``), which Mermaid decodes; quotes, brackets, pipes, ``<``, ``#``,
    backticks and newlines can then never end a label or open markup."""
    return "".join(ch if ch in _MERMAID_SAFE else f"#{ord(ch)};" for ch in text)


def _mermaid_classdef(name: str, style: Style, *, dashed: bool = False) -> str:
    extra = ",stroke-dasharray:4 3" if dashed else ""
    return f"    classDef {_css_class(name)} fill:{style.fill},stroke:{style.stroke},color:#111{extra}"


def to_mermaid(graph: nx.DiGraph, plan: Plan | None = None, *, legend: bool = True,
               direction: str = "TB") -> str:
    """The graph as a Mermaid flowchart.

    Nodes are ``n0, n1, ...`` in digest order, labelled with kind, short digest, tags and size
    (and, with a plan, what it does to the node).  The shape says the kind; the class says the
    kind without a plan and the plan's category (:data:`CATEGORIES`) with one.  Absent blobs get
    the extra class ``absent`` (dashed border).  Edges are labelled with their roles;
    ``subject``-only edges are dashed (``-.->``).  With a plan and ``legend``, a ``legend``
    subgraph shows the categories used.

    >>> import ocigraph as og
    >>> g = og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {}))
    >>> to_mermaid(g, direction="LR")
    'flowchart LR\\n'
    """
    if direction not in ("TB", "TD", "BT", "LR", "RL"):
        raise ValueError(f"unknown Mermaid direction {direction!r}")
    names = sorted(graph)
    ids = {n: f"n{i}" for i, n in enumerate(names)}
    reasons = plan.reasons() if plan is not None else {}
    kept = {k.digest: k for k in plan.kept} if plan is not None else {}
    categories = plan_categories(graph, plan) if plan is not None else {}
    lines = [f"flowchart {direction}"]
    members: dict[str, list[str]] = {}
    absent: list[str] = []
    for n in names:
        kind = node_kind(graph, n)
        opening, closing = _MERMAID_SHAPES[kind]
        label = "<br/>".join(_mermaid_text(s) for s in
                             _label_lines(graph, n, kind, plan, reasons, kept))
        lines.append(f'    {ids[n]}{opening}"{label}"{closing}')
        members.setdefault(categories.get(n, kind), []).append(ids[n])
        if not graph.nodes[n]["present"]:
            absent.append(ids[n])
    for u, v in sorted(graph.edges):
        roles = graph.edges[u, v]["roles"]
        arrow = "-.->" if _weak(roles) else "-->"
        lines.append(f'    {ids[u]} {arrow}|"{_mermaid_text(_edge_label(roles))}"| {ids[v]}')
    styles = CATEGORY_STYLES if plan is not None else KIND_STYLES
    if plan is not None and legend and names:
        lines.append('    subgraph legend["legend"]')
        for name in styles:
            if name in members:
                lines.append(f'        legend_{_css_class(name)}["{_mermaid_text(name)}"]')
                members[name].append(f"legend_{_css_class(name)}")
        lines.append("    end")
    for name, style in styles.items():
        if name in members:
            lines.append(_mermaid_classdef(name, style))
    for name in styles:
        if name in members:
            lines.append(f"    class {','.join(members[name])} {_css_class(name)}")
    if absent:
        lines.append("    classDef absent stroke-dasharray:4 3")
        lines.append(f"    class {','.join(absent)} absent")
    return "\n".join(lines) + "\n"


# -- Graphviz DOT -------------------------------------------------------------------------------


def _dot_text(text: str) -> str:
    """Escape text for a double-quoted DOT string.  Backslashes are doubled so that Graphviz's
    label escapes (``\\N``, ``\\G``, ``\\l``...) in a tag stay literal; other control characters
    are shown as ``\\xNN``."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\\\n")
        elif not ch.isprintable():
            out.append(f"\\\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def to_dot(graph: nx.DiGraph, plan: Plan | None = None, *, legend: bool = True,
           name: str = "ocigraph") -> str:
    """The graph in Graphviz DOT.

    Node ids are the digests; labels, colours and the ``class`` attribute (kind, or the plan's
    category, ``-`` written ``_``) follow :func:`to_mermaid`.  Absent blobs are dashed;
    ``subject``-only edges are dashed.  With a plan and ``legend``, a ``cluster_legend``
    subgraph shows the categories used.

    >>> import ocigraph as og
    >>> g = og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {}))
    >>> print(to_dot(g))  # doctest: +NORMALIZE_WHITESPACE
    digraph "ocigraph" {
        graph [rankdir=TB];
        node [style="filled", fontname="Helvetica", fontsize=10];
        edge [fontname="Helvetica", fontsize=9, color="#555555"];
    }
    """
    reasons = plan.reasons() if plan is not None else {}
    kept = {k.digest: k for k in plan.kept} if plan is not None else {}
    categories = plan_categories(graph, plan) if plan is not None else {}
    styles = CATEGORY_STYLES if plan is not None else KIND_STYLES
    lines = [
        f'digraph "{_dot_text(name)}" {{',
        "    graph [rankdir=TB];",
        '    node [style="filled", fontname="Helvetica", fontsize=10];',
        '    edge [fontname="Helvetica", fontsize=9, color="#555555"];',
    ]
    used: set[str] = set()
    for n in sorted(graph):
        kind = node_kind(graph, n)
        cat = categories.get(n, kind)
        used.add(cat)
        style = styles[cat]
        label = "\\n".join(_dot_text(s) for s in _label_lines(graph, n, kind, plan, reasons, kept))
        node_style = "filled" if graph.nodes[n]["present"] else "filled,dashed"
        lines.append(
            f'    "{_dot_text(n)}" [label="{label}", shape={_DOT_SHAPES[kind]}, '
            f'style="{node_style}", fillcolor="{style.fill}", color="{style.stroke}", '
            f'class="{_css_class(cat)}"];'
        )
    for u, v in sorted(graph.edges):
        roles = graph.edges[u, v]["roles"]
        dashed = ", style=dashed" if _weak(roles) else ""
        lines.append(f'    "{_dot_text(u)}" -> "{_dot_text(v)}" '
                     f'[label="{_dot_text(_edge_label(roles))}"{dashed}];')
    if plan is not None and legend and used:
        lines.append("    subgraph cluster_legend {")
        lines.append('        label="legend";')
        for cat, style in styles.items():
            if cat in used:
                lines.append(
                    f'        "legend_{_css_class(cat)}" [label="{_dot_text(cat)}", shape=box, '
                    f'fillcolor="{style.fill}", color="{style.stroke}", class="{_css_class(cat)}"];'
                )
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- HTML ---------------------------------------------------------------------------------------

_E = html.escape
_TABLE = 'style="border-collapse:collapse;font-size:90%"'
_CELL = 'style="text-align:left"'
_NUM = 'style="text-align:right"'


def _count(n: int, noun: str) -> str:
    """``1 tag``, ``2 tags``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _code(digest: str) -> str:
    """A short digest in ``<code>``, the full one in its tooltip."""
    return f'<code title="{_E(digest)}">{_E(short_digest(digest))}</code>'


def _swatch(name: str, style: Style) -> str:
    return (f'<span style="background:{style.fill};border:1px solid {style.stroke};'
            f'padding:0 4px;border-radius:3px">{_E(name)}</span>')


def _bytes_cell(n: int) -> str:
    return f'<td {_NUM} title="{_E(format_bytes(n))}">{n:,}</td>'


def plan_html(plan: Plan, graph: nx.DiGraph | None = None) -> str:
    """An HTML view of ``plan``: what goes, why, how many bytes, and the total freed.

    One ``<tr class="ocigraph-deletion">`` per deletion, in apply order, with the kind (from
    ``graph`` if given, else from the media types), tags (from the plan's index.json changes),
    reason (coloured as in :data:`CATEGORY_STYLES`) and its ``via`` node; a footer with the
    bytes freed; then the index.json changes and the kept successors.
    """
    tags: dict[str, list[str]] = {}
    for c in plan.index_changes:
        if c.tag is not None:
            tags.setdefault(c.digest, []).append(c.tag)
    out = ['<div class="ocigraph-plan">',
           f"<p><b>{_E(plan.summary())}</b></p>"]
    if plan.targets:
        out.append("<p>targets: " + ", ".join(
            f"<code>{_E(t)}</code>" for t in plan.targets) + "</p>")
    if plan.deletions:
        out.append(f'<table class="ocigraph-deletions" {_TABLE}>')
        out.append("<thead><tr>" + "".join(
            f"<th {_NUM if h == 'bytes' else _CELL}>{h}</th>"
            for h in ("#", "digest", "kind", "tags", "reason", "via", "bytes")) + "</tr></thead>")
        out.append("<tbody>")
        for i, d in enumerate(plan.deletions, 1):
            kind = (node_kind(graph, d.digest) if graph is not None and d.digest in graph
                    else kind_of_media_types(d.media_types))
            kind_tags = ", ".join(_E(t) for t in sorted(tags.get(d.digest, ())))
            reason = _swatch(d.reason.kind, CATEGORY_STYLES[d.reason.kind])
            via = _code(d.reason.via) if d.reason.via is not None else ""
            size = _bytes_cell(d.size) if d.present else f"<td {_NUM}>absent</td>"
            out.append(
                f'<tr class="ocigraph-deletion"><td {_NUM}>{i}</td><td {_CELL}>{_code(d.digest)}'
                f"</td><td {_CELL}>{kind}</td><td {_CELL}>{kind_tags}</td><td {_CELL}>{reason}"
                f"</td><td {_CELL}>{via}</td>{size}</tr>"
            )
        out.append("</tbody>")
        out.append(
            f'<tfoot><tr class="ocigraph-total"><th {_CELL} colspan="6">total freed '
            f"({_count(sum(1 for d in plan.deletions if d.present), 'blob')})</th>"
            f'<th {_NUM} title="{plan.bytes_freed:,} bytes">{plan.bytes_freed:,} '
            f"({_E(format_bytes(plan.bytes_freed))})</th></tr></tfoot>"
        )
        out.append("</table>")
    else:
        out.append("<p>Nothing to delete.</p>")
    if plan.index_changes:
        out.append(f'<table class="ocigraph-index-changes" {_TABLE}>')
        out.append("<thead><tr>" + "".join(
            f"<th {_CELL}>{h}</th>" for h in ("index.json entry", "digest", "tag", "action"))
            + "</tr></thead><tbody>")
        for c in plan.index_changes:
            tag = "<i>untagged</i>" if c.tag is None else f"<code>{_E(c.tag)}</code>"
            out.append(f'<tr class="ocigraph-index-change"><td {_NUM}>{c.position}</td>'
                       f"<td {_CELL}>{_code(c.digest)}</td><td {_CELL}>{tag}</td>"
                       f"<td {_CELL}>{c.action}</td></tr>")
        out.append("</tbody></table>")
    if plan.kept:
        out.append(f"<details><summary>{len(plan.kept)} successor(s) kept</summary><ul>")
        for k in plan.kept:
            via = f" via {_code(k.via)}" if k.via is not None else ""
            out.append(f"<li>{_code(k.digest)}: {_E(k.kind)}{via}</li>")
        out.append("</ul></details>")
    out.append("</div>")
    return "\n".join(out)


def _kind_counts(graph: nx.DiGraph) -> dict[str, tuple[int, int]]:
    """kind -> (nodes, present bytes), in :data:`KINDS` order, kinds present only."""
    counts = {k: [0, 0] for k in KINDS}
    for n, attrs in graph.nodes.items():
        c = counts[node_kind(graph, n)]
        c[0] += 1
        if attrs["present"]:
            c[1] += attrs["size"]
    return {k: (c[0], c[1]) for k, c in counts.items() if c[0]}


def _tag_table(graph: nx.DiGraph) -> dict[str, list[str]]:
    """tag -> digests it names (more than one: ambiguous), from index.json."""
    index = graph.graph.get("index")
    out: dict[str, list[str]] = {}
    for e in index.entries if index is not None else ():
        if e.tag is not None and e.digest not in out.setdefault(e.tag, []):
            out[e.tag].append(e.digest)
    return out


def graph_summary(graph: nx.DiGraph) -> str:
    """One line about ``graph``: nodes by kind, edges, present bytes, tags.

    >>> import ocigraph as og
    >>> graph_summary(og.build_graph(og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {})))
    'OCI layout: 0 nodes, 0 edges, 0 present blobs (0 B), 0 tags'
    """
    kinds = _kind_counts(graph)
    present = [a["size"] for _, a in graph.nodes.items() if a["present"]]
    by_kind = ", ".join(f"{c} {k}" for k, (c, _) in kinds.items())
    missing = graph.number_of_nodes() - len(present)
    return (
        f"OCI layout: {_count(graph.number_of_nodes(), 'node')}"
        + (f" ({by_kind})" if by_kind else "")
        + f", {_count(graph.number_of_edges(), 'edge')}, {_count(len(present), 'present blob')} "
        f"({format_bytes(sum(present))})" + (f", {missing:,} absent" if missing else "")
        + f", {_count(len(_tag_table(graph)), 'tag')}"
    )


def graph_html(graph: nx.DiGraph, *, max_mermaid_nodes: int = MERMAID_MAX_NODES) -> str:
    """An HTML summary of ``graph``: counts and bytes by kind, the tags, and, for a graph of at
    most ``max_mermaid_nodes`` nodes, its Mermaid source in ``<pre class="mermaid">`` (rendered
    where mermaid.js is loaded, readable where it is not)."""
    out = ['<div class="ocigraph-graph">', f"<p><b>{_E(graph_summary(graph))}</b></p>"]
    kinds = _kind_counts(graph)
    if kinds:
        out.append(f'<table class="ocigraph-kinds" {_TABLE}><thead><tr>'
                   f"<th {_CELL}>kind</th><th {_NUM}>nodes</th><th {_NUM}>present bytes</th>"
                   "</tr></thead><tbody>")
        for k, (count, size) in kinds.items():
            out.append(f"<tr><td {_CELL}>{_swatch(k, KIND_STYLES[k])}</td>"
                       f"<td {_NUM}>{count:,}</td>{_bytes_cell(size)}</tr>")
        out.append("</tbody></table>")
    tags = _tag_table(graph)
    if tags:
        out.append(f'<table class="ocigraph-tags" {_TABLE}><thead><tr>'
                   f"<th {_CELL}>tag</th><th {_CELL}>digest</th><th {_CELL}>kind</th>"
                   f"<th {_NUM}>size</th></tr></thead><tbody>")
        for tag in sorted(tags)[:_MAX_TAGS_IN_HTML]:
            digests = tags[tag]
            d = digests[0]
            note = f" <b>ambiguous: {len(digests)} digests</b>" if len(digests) > 1 else ""
            size_cell = (_bytes_cell(graph.nodes[d]["size"]) if graph.nodes[d]["present"]
                         else f"<td {_NUM}>absent</td>")
            out.append(f"<tr><td {_CELL}><code>{_E(tag)}</code>{note}</td>"
                       f"<td {_CELL}>{_code(d)}</td><td {_CELL}>{node_kind(graph, d)}</td>"
                       f"{size_cell}</tr>")
        out.append("</tbody></table>")
        if len(tags) > _MAX_TAGS_IN_HTML:
            out.append(f"<p>... and {len(tags) - _MAX_TAGS_IN_HTML:,} more tags.</p>")
    if 0 < graph.number_of_nodes() <= max_mermaid_nodes:
        out.append(f'<pre class="mermaid">{_E(to_mermaid(graph))}</pre>')
    out.append("</div>")
    return "\n".join(out)


def graph_mimebundle(graph: nx.DiGraph, include: Iterable[str] | None = None,
                     exclude: Iterable[str] | None = None, *,
                     max_mermaid_nodes: int = MERMAID_MAX_NODES) -> dict[str, str]:
    """IPython's ``_repr_mimebundle_`` for a layout graph.

    Returns ``text/html`` (:func:`graph_html`), ``text/plain`` (:func:`graph_summary`) and, for
    a graph of at most ``max_mermaid_nodes`` nodes, ``text/vnd.mermaid`` (:func:`to_mermaid`;
    JupyterLab 4.1+ renders it as a diagram).  ``include``/``exclude`` filter mime types as
    IPython passes them, so a graph class can delegate straight to this::

        def _repr_mimebundle_(self, include=None, exclude=None):
            return graph_mimebundle(self, include, exclude)
    """
    wanted = None if include is None else set(include)
    unwanted = set(exclude or ())

    def want(mime: str) -> bool:
        return (wanted is None or mime in wanted) and mime not in unwanted

    bundle: dict[str, str] = {}
    if want("text/html"):
        bundle["text/html"] = graph_html(graph, max_mermaid_nodes=max_mermaid_nodes)
    if want("text/vnd.mermaid") and graph.number_of_nodes() <= max_mermaid_nodes:
        bundle["text/vnd.mermaid"] = to_mermaid(graph)
    if want("text/plain"):
        bundle["text/plain"] = graph_summary(graph)
    return bundle
