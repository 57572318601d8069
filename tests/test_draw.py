"""Pictures people can read (ocigraph.draw): the notebooks' 48-node demo graph fits a notebook
at its natural size, no two labels overlap, and a big store can be drawn around one image."""

from __future__ import annotations

import io
import itertools
import struct
from collections import Counter
from typing import Any

import networkx as nx
import pytest
from builder import CONFIG, Builder

import ocigraph as og
from io_adapters.demo import demo_content

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.transforms import Bbox  # noqa: E402

from ocigraph.draw import draw, focus_nodes, generation_layout  # noqa: E402

MAX_PIXELS = 1400  # wide, at the notebook's 100 dpi and "tight" crop


@pytest.fixture(scope="module")
def demo() -> tuple[og.LayoutGraph, dict[str, str]]:
    content = demo_content(scale=0.02)
    return og.build_graph(content.layout()), dict(content.labels)


@pytest.fixture
def plt() -> Any:
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def png_size(figure: Any) -> tuple[int, int]:
    """Width and height of the PNG a notebook shows (inline: 100 dpi, bbox_inches="tight")."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    width, height = struct.unpack(">II", buffer.getvalue()[16:24])
    return width, height


def is_label(text: Any) -> bool:
    return (text.get_gid() or "").startswith("label:")


def marker_boxes(ax: Any) -> list[tuple[tuple[float, float], Bbox]]:
    """(data position, a square around the marker in display pixels) for every node drawn."""
    out = []
    for c in ax.collections:
        if (c.get_gid() or "").startswith("nodes:"):
            radius = c.get_sizes()[0] ** 0.5 / 2 * ax.figure.dpi / 72  # sizes are points**2
            for xy in c.get_offsets():
                x, y = ax.transData.transform(xy)
                out.append((tuple(xy), Bbox([[x - radius, y - radius], [x + radius, y + radius]])))
    return out


def drawn(graph: nx.DiGraph, *args: Any, **kwargs: Any) -> Any:
    """``draw(...)``, rendered; every node drawn once, and labelled at its marker."""
    ax = draw(graph, *args, **kwargs)
    ax.figure.canvas.draw()
    markers = [xy for xy, _ in marker_boxes(ax)]
    anchors = [tuple(t.xy) for t in ax.texts if is_label(t)]
    assert sorted(anchors) == sorted(markers) and len(set(markers)) == len(markers)
    return ax


def assert_readable(ax: Any) -> None:
    """No two labels overlap, no label covers another node, and none is cut off."""
    renderer = ax.figure.canvas.get_renderer()
    labels = {t.get_gid(): (tuple(t.xy), t.get_window_extent(renderer))
              for t in ax.texts if is_label(t)}
    for (a, (_, box_a)), (b, (_, box_b)) in itertools.combinations(sorted(labels.items()), 2):
        assert not box_a.overlaps(box_b), f"labels {a} and {b} overlap"
    for a, (anchor, box) in labels.items():
        for xy, marker in marker_boxes(ax):
            assert xy == anchor or not box.overlaps(marker), f"{a} covers the node at {xy}"
    whole = ax.figure.bbox
    for a, (_, box) in labels.items():
        assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0, f"{a} is cut off"


def test_the_demo_graph_fits_a_notebook_and_no_labels_overlap(plt: Any, demo: Any) -> None:
    graph, _ = demo
    assert graph.number_of_nodes() == 48
    ax = drawn(graph)
    fig = ax.figure
    assert fig.get_figwidth() * fig.dpi <= 1200
    width, height = png_size(fig)
    assert width <= MAX_PIXELS and height <= 1.2 * MAX_PIXELS
    assert len([t for t in ax.texts if is_label(t)]) == 48
    assert_readable(ax)
    # the widest generation of the demo (21 nodes) had to wrap to fit
    rows = Counter(round(xy[1], 3) for xy, _ in marker_boxes(ax))
    assert max(rows.values()) < 21


def test_a_plan_picture_of_the_demo_graph_is_as_readable(plt: Any, demo: Any) -> None:
    graph, labels = demo
    plan = og.plan_delete(graph, [labels["app-1.1/amd64"]], og.Policy.preset("oras"))
    ax = drawn(graph, plan)
    assert png_size(ax.figure)[0] <= MAX_PIXELS
    assert_readable(ax)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "target" in legend and "manifest" in legend


def test_a_long_tag_is_cut_rather_than_widening_every_column(plt: Any, demo: Any) -> None:
    graph, labels = demo
    long = "a-very-long-tag-name-that-goes-on-and-on-" * 3
    tagged = nx.DiGraph(graph)
    tagged.nodes[labels["app-1.0"]]["tags"] = frozenset({long})
    ax = drawn(tagged)
    texts = [t.get_text() for t in ax.texts if (t.get_gid() or "") == f"label:{labels['app-1.0']}"]
    assert len(texts) == 1 and long not in texts[0] and texts[0].endswith("\N{HORIZONTAL ELLIPSIS}")
    assert png_size(ax.figure)[0] <= MAX_PIXELS
    assert_readable(ax)


def test_wrapped_generations_keep_their_order_and_never_exceed_the_row_width(demo: Any) -> None:
    graph, _ = demo
    flat = generation_layout(graph)
    for per_row in (1, 4, 7):
        pos = generation_layout(graph, per_row, gap=0.4)
        assert set(pos) == set(flat) and len(set(pos.values())) == len(pos)
        rows = Counter(y for _, y in pos.values())
        assert max(rows.values()) <= per_row
        # a node of a lower generation (unwrapped: a lower y) is on a lower row, wrapped too
        for a, b in itertools.combinations(pos, 2):
            if flat[a][1] > flat[b][1]:
                assert pos[a][1] > pos[b][1]
        # a continuation row (one unit down: the gap parts generations) is shifted by half a
        # column, so that edges from above pass between its nodes
        columns: dict[float, set[float]] = {}
        for x, y in pos.values():
            columns.setdefault(round(y, 6), set()).add(x)
        for y, xs in columns.items():
            assert not xs & columns.get(round(y - 1, 6), set())


def test_focus_draws_a_tag_with_what_it_references_and_its_referrers(plt: Any, demo: Any) -> None:
    graph, labels = demo
    app = labels["app-1.1"]
    around = focus_nodes(graph, "app-1.1")
    assert around == og.live_set(graph, root_set=[app])
    assert labels["sig:sbom:app-1.1"] in around and labels["app-1.0"] not in around
    one_step = focus_nodes(graph, "app-1.1", hops=1)
    assert one_step == {app, *graph.succ[app], *og.referrers_of(graph, app)}
    assert focus_nodes(graph, "app-1.1", hops=0) == {app}
    # a referrer brings the subject it describes along, but not that image's layers
    provenance = labels["provenance:app-1.1/amd64"]
    subject = labels["app-1.1/amd64"]
    assert subject in focus_nodes(graph, [provenance])
    assert not set(graph.succ[subject]) - {provenance} & focus_nodes(graph, [provenance])
    with pytest.raises(og.UnknownRefError):
        focus_nodes(graph, "no-such-tag")

    plan = og.plan_delete(graph, [subject], og.Policy.preset("oras"))
    ax = drawn(graph, plan, focus="app-1.1")
    target = [c for c in ax.collections if c.get_gid() == "nodes:target:manifest"]
    assert [len(c.get_offsets()) for c in target] == [1]
    assert "around app-1.1" in ax.get_title(loc="left")
    assert_readable(ax)


def test_a_graph_too_big_for_labels_stays_within_the_width(plt: Any) -> None:
    # 45 images side by side: a generation of 45 manifests, 90 blobs below
    b = Builder()
    for i in range(45):
        b.entry(b.manifest(config=b.blob(f'{{"image": {i}}}', CONFIG), layers=[b.blob(f"{i}")]),
                f"image-{i}")
    graph = b.graph()
    assert graph.number_of_nodes() == 135
    ax = draw(graph)
    assert not [t for t in ax.texts if is_label(t)]
    rows = Counter(round(xy[1], 3) for xy, _ in marker_boxes(ax))
    assert len(rows) > 3 and max(rows.values()) < 45
    assert png_size(ax.figure)[0] <= MAX_PIXELS
