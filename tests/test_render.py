"""Mermaid, DOT, HTML and matplotlib views of a graph and a plan (ocigraph.render, ocigraph.draw)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import builder
import networkx as nx
import orjson
import pytest
from builder import CONFIG

import ocigraph as og
from ocigraph.render import (
    CATEGORY_STYLES,
    KIND_STYLES,
    graph_html,
    graph_mimebundle,
    graph_summary,
    node_kind,
    plan_categories,
    plan_html,
    short_digest,
    to_dot,
    to_mermaid,
)

SIG = "application/vnd.example.signature"
ODD_TAG = 'v1"]|<script>alert(1)</script>#x `\\N\nend'


class Builder(builder.Builder):
    """The shared test builder, plus withdrawn OCI artifact manifests and re-ordered index.json."""

    def artifact(self, blobs: list[dict[str, Any]], subject: dict[str, Any] | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"mediaType": og.OCI_ARTIFACT, "artifactType": SIG, "blobs": blobs}
        if subject is not None:
            doc["subject"] = subject
        return self._doc(doc, og.OCI_ARTIFACT)

    def graph_with_entries(self, entries: list[dict[str, Any]]) -> nx.DiGraph:
        index = orjson.dumps({"schemaVersion": 2, "manifests": entries})
        return og.build_graph(og.layout_from_bytes(index, self.blobs))


def worked_example() -> tuple[Builder, dict[str, str]]:
    """SEMANTICS §7: A -> {B, C}; B -> {K, D, E}; C -> {K, E, F}; G has subject C and blob H;
    plus an artifact X (no subject) that also holds H, a stray blob S, and an absent layer Z
    under B.  A has two tags, one of them hostile; X is tagged ``sbom``."""
    b = Builder()
    k = b.blob('{"os":"linux"}', CONFIG)
    d, e, f = (b.blob(f"layer {n}") for n in "DEF")
    z = b.blob("layer Z", present=False)
    h = b.blob("signature H", SIG)
    bm = b.manifest(k, [d, e, z])
    cm = b.manifest(k, [e, f])
    a = b.index([bm, cm])
    g = b.artifact([h], subject=cm)
    x = b.artifact([h])
    s = b.blob("stray", "application/octet-stream")
    b.entry(a, "latest")
    b.entry(a, ODD_TAG)
    b.entry(x, "sbom")
    names = {"A": a, "B": bm, "C": cm, "D": d, "E": e, "F": f, "G": g, "H": h, "K": k,
             "S": s, "X": x, "Z": z}
    return b, {n: desc["digest"] for n, desc in names.items()}


@pytest.fixture
def example() -> tuple[nx.DiGraph, dict[str, str]]:
    b, ids = worked_example()
    return b.graph(), ids


@pytest.fixture
def oras_plan(example: tuple[nx.DiGraph, dict[str, str]]) -> og.Plan:
    g, ids = example
    return og.plan_delete(g, [ids["C"]], og.Policy.preset("oras"))


def mermaid_ids(g: nx.DiGraph) -> dict[str, str]:
    return {n: f"n{i}" for i, n in enumerate(sorted(g))}


def mermaid_class_members(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m in re.finditer(r"^\s*class (\S+) (\S+)$", text, re.M):
        out.setdefault(m.group(2), set()).update(m.group(1).split(","))
    return out


# -- kinds ----------------------------------------------------------------------------------------


def test_node_kind_from_media_types_and_edge_roles(example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    g, ids = example
    kinds = {name: node_kind(g, d) for name, d in ids.items()}
    assert kinds == {
        "A": "index", "B": "manifest", "C": "manifest", "G": "referrer", "X": "artifact",
        "K": "config", "D": "layer", "E": "layer", "F": "layer", "Z": "layer", "H": "layer",
        "S": "blob",
    }


def test_short_digest_is_the_algorithm_and_twelve_hex_characters() -> None:
    d = og.digest_bytes(b"x")
    assert short_digest(d) == d[:19] == og.short_digest(d)


# -- Mermaid --------------------------------------------------------------------------------------


def test_mermaid_has_a_node_line_per_node_and_an_edge_line_per_edge(
        example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    g, _ = example
    text = to_mermaid(g)
    ids = mermaid_ids(g)
    node_lines = re.findall(r"^    (n\d+)[\[(>{/]", text, re.M)
    assert sorted(node_lines) == sorted(ids.values())
    for n, nid in ids.items():
        line = next(line for line in text.splitlines() if line.startswith(f"    {nid}") and "|" not in line)
        assert short_digest(n) in line
    edge_lines = re.findall(r"^    (n\d+) -\.?->\|\"([a-z,]+)\"\| (n\d+)$", text, re.M)
    assert len(edge_lines) == g.number_of_edges()
    for u, v, roles in g.edges(data="roles"):
        assert (ids[u], ",".join(sorted(roles)), ids[v]) in edge_lines


def test_mermaid_subject_edge_is_dashed_and_others_are_not(
        example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    g, names = example
    text = to_mermaid(g)
    ids = mermaid_ids(g)
    assert f'{ids[names["G"]]} -.->|"subject"| {ids[names["C"]]}' in text
    assert text.count("-.->") == 1
    assert f'{ids[names["A"]]} -->|"manifest"| {ids[names["C"]]}' in text


def test_mermaid_labels_carry_kind_tags_and_size(example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    g, names = example
    text = to_mermaid(g)
    a_line = next(line for line in text.splitlines()
                  if line.startswith(f'    {mermaid_ids(g)[names["A"]]}[['))
    assert f"index {short_digest(names['A'])}" in a_line
    assert "tags: latest, " in a_line
    assert og.format_bytes(g.nodes[names["A"]]["size"]) in a_line
    z_line = next(line for line in text.splitlines()
                  if line.startswith(f'    {mermaid_ids(g)[names["Z"]]}['))
    assert "absent" in z_line
    assert mermaid_ids(g)[names["Z"]] in mermaid_class_members(text)["absent"]


def test_mermaid_escapes_odd_tag_names(example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    g, _ = example
    text = to_mermaid(g)
    assert "<script>" not in text and "alert" in text
    assert "end" not in re.findall(r"\S+", text)  # a newline in a tag cannot start a statement
    node_lines = [line for line in text.splitlines() if re.match(r"    n\d+[\[(>{]", line)]
    assert len(node_lines) == g.number_of_nodes()
    for line in node_lines:
        m = re.fullmatch(r'    n\d+(\[\[|\[\(|\[/|\[|>|\{\{|\()"([^"]*)"(\]\]|\)\]|/\]|\]|\}\}|\))', line)
        assert m is not None, line
        assert not set(m.group(2).replace("<br/>", "")) & set('"[]|`<>(){}#'.replace("#", "")), line
    assert "#34;" in text and "#124;" in text and "#60;script#62;" in text and "#10;end" in text


def test_mermaid_plan_classes_follow_reasons(example: tuple[nx.DiGraph, dict[str, str]],
                                            oras_plan: og.Plan) -> None:
    g, names = example
    ids = mermaid_ids(g)
    members = mermaid_class_members(to_mermaid(g, oras_plan))
    assert ids[names["C"]] in members["target"]
    assert ids[names["G"]] in members["referrer_of"]
    assert {ids[names["F"]]} <= members["orphaned_by"]
    assert {ids[names["E"]], ids[names["K"]]} <= members["kept_shared"]
    assert ids[names["A"]] in members["kept"]
    for cls in members.values():  # legend boxes aside, every node has exactly one colour class
        cls.discard("")
    coloured = [n for c, ns in members.items() if c != "absent" for n in ns if n.startswith("n")]
    assert sorted(coloured) == sorted(ids.values())


def test_mermaid_is_deterministic_and_independent_of_index_order() -> None:
    b, _ = worked_example()
    one = to_mermaid(b.graph())
    assert one == to_mermaid(b.graph())
    assert one == to_mermaid(b.graph_with_entries(list(reversed(b.entries))))


def test_mermaid_parses_with_mermaid_js_when_available(
        example: tuple[nx.DiGraph, dict[str, str]], oras_plan: og.Plan) -> None:
    """Runs where node can import ``mermaid`` and ``jsdom`` (from the folder named by
    ``OCIGRAPH_MERMAID_DIR``, else the current one); skipped elsewhere."""
    node = shutil.which("node")
    cwd = os.environ.get("OCIGRAPH_MERMAID_DIR") or None
    probe = (subprocess.run([node, "-e", "require.resolve('mermaid'); require.resolve('jsdom')"],
                            capture_output=True, cwd=cwd) if node else None)
    if probe is None or probe.returncode != 0:
        pytest.skip("node with the mermaid and jsdom packages is not available")
    g, _ = example
    script = (
        "import('jsdom').then(async ({JSDOM}) => {"
        " const w = new JSDOM('').window; globalThis.window = w; globalThis.document = w.document;"
        " const m = (await import('mermaid')).default;"
        " await m.parse(require('fs').readFileSync(0, 'utf8')); })"
        ".catch(e => { console.error(String(e)); process.exit(1); });"
    )
    for text in (to_mermaid(g), to_mermaid(g, oras_plan), to_mermaid(g, og.plan_remove(g, ["latest"]))):
        run = subprocess.run([node, "-e", script], input=text, capture_output=True, text=True, cwd=cwd)
        assert run.returncode == 0, run.stderr


# -- DOT ------------------------------------------------------------------------------------------


def _strip_dot_strings(text: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)


def test_dot_is_balanced_and_lists_every_node_and_edge(
        example: tuple[nx.DiGraph, dict[str, str]], oras_plan: og.Plan) -> None:
    g, _ = example
    for text in (to_dot(g), to_dot(g, oras_plan)):
        bare = _strip_dot_strings(text)
        assert bare.count("{") == bare.count("}") >= 1
        assert bare.count("[") == bare.count("]")
        assert text.startswith('digraph "ocigraph" {') and text.rstrip().endswith("}")
        for n in g:
            assert re.search(rf'^    "{re.escape(n)}" \[label=', text, re.M)
        edges = re.findall(r'^    "([^"]+)" -> "([^"]+)" \[', text, re.M)
        assert sorted(edges) == sorted(g.edges)


def test_dot_dashes_subject_edges_and_classes_plan_nodes(
        example: tuple[nx.DiGraph, dict[str, str]], oras_plan: og.Plan) -> None:
    g, names = example
    text = to_dot(g, oras_plan)
    assert re.search(rf'"{names["G"]}" -> "{names["C"]}" \[label="subject", style=dashed\]', text)
    assert re.search(rf'"{names["A"]}" -> "{names["C"]}" \[label="manifest"\]', text)
    assert re.search(rf'^    "{names["C"]}" \[.*class="target"\];$', text, re.M)
    assert re.search(rf'^    "{names["F"]}" \[.*class="orphaned_by"\];$', text, re.M)
    assert f'fillcolor="{CATEGORY_STYLES["target"].fill}"' in text
    assert re.search(rf'^    "{names["Z"]}" \[.*style="filled,dashed"', text, re.M)
    plain = to_dot(g)
    assert re.search(rf'^    "{names["A"]}" \[.*shape=folder.*class="index"\];$', plain, re.M)


def test_dot_escapes_quotes_backslashes_and_newlines_in_tags(
        example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    g, _ = example
    text = to_dot(g)
    assert 'v1\\"]|<script>alert(1)</script>#x `\\\\N\\\\nend' in text
    assert "\nend" not in text


def test_dot_renders_with_graphviz_when_available(
        example: tuple[nx.DiGraph, dict[str, str]], oras_plan: og.Plan) -> None:
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("graphviz is not installed")
    g, _ = example
    run = subprocess.run([dot, "-Tsvg"], input=to_dot(g, oras_plan), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert 'class="node target"' in run.stdout


# -- HTML -----------------------------------------------------------------------------------------


def test_plan_html_has_one_row_per_deletion_and_the_total(
        example: tuple[nx.DiGraph, dict[str, str]], oras_plan: og.Plan) -> None:
    g, names = example
    text = plan_html(oras_plan, g)
    assert text.count('<tr class="ocigraph-deletion">') == len(oras_plan.deletions) == 3  # C F G
    assert f"{oras_plan.bytes_freed:,} ({og.format_bytes(oras_plan.bytes_freed)})" in text
    rows = re.findall(r'<tr class="ocigraph-deletion">(.*?)</tr>', text)
    for row, d in zip(rows, oras_plan.deletions, strict=True):
        assert f'title="{d.digest}">{short_digest(d.digest)}</code>' in row
        assert f">{d.reason.kind}</span>" in row
        assert f">{d.size:,}</td>" in row
    g_row = rows[[d.digest for d in oras_plan.deletions].index(names["G"])]
    assert "referrer" in g_row and f">{short_digest(names['C'])}</code>" in g_row


def test_plan_html_escapes_tags_and_lists_index_changes() -> None:
    b, names = worked_example()
    g = b.graph()
    plan = og.plan_delete(g, [names["A"]])
    text = plan_html(plan)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert text.count('<tr class="ocigraph-index-change">') == len(plan.index_changes) == 2
    assert "<td style=\"text-align:right\">absent</td>" in text  # Z has no blob
    assert plan._repr_html_() == text


def test_plan_html_of_an_empty_plan_says_so(example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    g, _ = example
    plan = og.plan_gc(g, og.Policy.preset("spec"))
    plan = og.plan_gc(g) if plan.deletions else plan
    empty = og.Plan(operation="gc", targets=(), policy=og.Policy(), index_fingerprint=plan.index_fingerprint)
    assert "Nothing to delete." in plan_html(empty)
    assert "ocigraph-deletion" not in plan_html(empty)


def test_graph_html_summarises_and_embeds_mermaid_only_for_small_graphs(
        example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    g, _ = example
    text = graph_html(g)
    assert graph_summary(g) in text
    assert "12 nodes" in graph_summary(g) and "3 tags" in graph_summary(g)
    assert '<pre class="mermaid">flowchart TB' in text
    assert "&lt;br/&gt;" in text  # the Mermaid source is escaped into the page
    assert "<pre" not in graph_html(g, max_mermaid_nodes=g.number_of_nodes() - 1)
    kinds = re.findall(r"<tr><td style=\"text-align:left\"><span[^>]*>(\w+)</span></td>"
                       r"<td style=\"text-align:right\">(\d+)</td>", text)
    assert dict(kinds) == {"index": "1", "manifest": "2", "referrer": "1", "artifact": "1",
                           "config": "1", "layer": "5", "blob": "1"}


def test_graph_mimebundle_serves_a_graph_subclass(example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    g, _ = example

    class LayoutGraph(nx.DiGraph):  # what build_graph may return
        def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
            return graph_mimebundle(self, include, exclude)

    lg = nx.freeze(LayoutGraph(g))
    bundle = lg._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/vnd.mermaid", "text/plain"}
    assert bundle["text/vnd.mermaid"] == to_mermaid(g)
    assert bundle["text/plain"] == graph_summary(g)
    assert set(lg._repr_mimebundle_(include=["text/plain"])) == {"text/plain"}
    assert "text/html" not in lg._repr_mimebundle_(exclude=["text/html"])
    big = graph_mimebundle(g, max_mermaid_nodes=3)
    assert set(big) == {"text/html", "text/plain"}


def test_plan_categories_mark_untagged_nodes_of_a_remove_plan() -> None:
    b, names = worked_example()
    g = b.graph()
    plan = og.plan_remove(g, ["latest"])  # A keeps another tag: only untagged
    assert not plan.deletions
    cats = plan_categories(g, plan)
    assert cats[names["A"]] == "untagged"
    assert set(cats.values()) == {"untagged", "kept"}


# -- matplotlib -----------------------------------------------------------------------------------


@pytest.fixture
def plt() -> Any:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def _node_collections(ax: Any) -> list[Any]:
    return [c for c in ax.collections if (c.get_gid() or "").startswith("nodes:")]


def test_draw_makes_one_scatter_point_per_node(plt: Any, example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    from ocigraph.draw import draw

    g, _ = example
    ax = draw(g)
    assert sum(len(c.get_offsets()) for c in _node_collections(ax)) == g.number_of_nodes()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"index", "manifest", "referrer", "artifact", "config", "layer", "blob"} <= set(labels)
    assert ax.figure is not None
    ax.figure.canvas.draw()  # renders offline with Agg


def test_draw_colours_nodes_by_plan_reason(plt: Any, example: tuple[nx.DiGraph, dict[str, str]],
                                           oras_plan: og.Plan) -> None:
    from matplotlib.colors import to_rgba

    from ocigraph.draw import draw

    g, _ = example
    fig, ax = plt.subplots()
    assert draw(g, oras_plan, ax=ax) is ax
    by_gid = {c.get_gid(): c for c in _node_collections(ax)}
    target = by_gid["nodes:target:manifest"]
    assert len(target.get_offsets()) == 1
    assert tuple(target.get_facecolor()[0]) == to_rgba(CATEGORY_STYLES["target"].fill)
    assert len(by_gid["nodes:orphaned-by:layer"].get_offsets()) == 1  # F
    assert len(by_gid["nodes:kept-shared:layer"].get_offsets()) == 2  # E (B), H (X)
    assert sum(len(c.get_offsets()) for c in by_gid.values()) == g.number_of_nodes()
    assert "target" in [t.get_text() for t in ax.get_legend().get_texts()]
    fig.canvas.draw()


def test_draw_without_a_plan_uses_the_kind_palette(plt: Any, example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    from matplotlib.colors import to_rgba

    from ocigraph.draw import draw

    g, _ = example
    ax = draw(g, labels=False, legend=False)
    index = next(c for c in _node_collections(ax) if c.get_gid() == "nodes:index:index")
    assert tuple(index.get_facecolor()[0]) == to_rgba(KIND_STYLES["index"].fill)
    assert ax.get_legend() is None and not ax.texts


def test_generation_layout_puts_roots_on_top_and_referrers_below_subjects(
        example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    from ocigraph.draw import generation_layout

    g, n = example
    pos = generation_layout(g)
    y = {name: pos[d][1] for name, d in n.items()}
    assert y["A"] == y["X"] == 0
    assert y["B"] == y["C"] == -1
    assert y["G"] < y["C"] and y["K"] < y["B"] and y["H"] < y["G"]
    assert y["S"] == min(y.values())  # the stray blob gets the bottom row
    assert len(set(pos.values())) == len(pos)


def test_draw_survives_a_cycle(plt: Any, example: tuple[nx.DiGraph, dict[str, str]]) -> None:
    from ocigraph.draw import draw, generation_layout

    g, n = example
    cyclic = nx.DiGraph(g)
    cyclic.add_edge(n["F"], n["A"], roles=frozenset({"layer"}))
    cyclic.add_edge(n["C"], n["G"], roles=frozenset({"subject"}))
    assert not nx.is_directed_acyclic_graph(cyclic)
    assert len(generation_layout(cyclic)) == cyclic.number_of_nodes()
    ax = draw(cyclic)
    assert sum(len(c.get_offsets()) for c in _node_collections(ax)) == cyclic.number_of_nodes()
