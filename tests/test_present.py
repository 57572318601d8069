"""The text the command line prints, made by the core (ocigraph/present.py)."""

from __future__ import annotations

import re

from builder import CONFIG, Builder
from hypothesis import given, settings
from hypothesis import strategies as st

import ocigraph as og
from ocigraph import present
from ocigraph.present import PLAN_TEXT_LIMIT, format_plan_text, format_show_text
from ocigraph.testing import generated_layouts, policies

S = og.short_digest


def app_store() -> tuple[Builder, dict]:
    """A base image, two builds of an app (``app-2`` also ``latest``), as the README's store."""
    b = Builder()
    base = b.manifest(b.blob("base config", CONFIG), [])
    app1 = b.manifest(b.blob("app-1 config", CONFIG), [b.blob("app-1 layer")])
    app2 = b.manifest(b.blob("app-2 config", CONFIG), [b.blob("app-2 layer")])
    b.entry(base, "base")
    b.entry(app1, "app-1")
    b.entry(app2, "app-2")
    b.entry(app2, "latest")
    return b, {"base": base, "app1": app1, "app2": app2}


def test_a_delete_plan_reads_as_the_readme_shows_it():
    b, n = app_store()
    g = b.graph()
    plan = og.plan_delete(g, ["app-1"])
    app1 = n["app1"]["digest"]
    (layer, config) = sorted(s for s in g.succ[app1])
    layer, config = (layer, config) if "layer" in g.edges[app1, layer]["roles"] else (config, layer)
    size = {d: g.nodes[d]["size"] for d in (app1, layer, config)}
    rows = sorted([(layer, "layer     "), (config, "config    ")])
    expected = [
        f"delete plan (policy default): 3 blob(s) to delete, {sum(size.values())} B freed, "
        "1 index.json change(s)",
        "",
        "delete:",
        f"  {S(app1)} (app-1)              manifest        {size[app1]} B  target",
        *(f"  {S(d)}                      {kind}       {size[d]} B  orphaned-by {S(app1)} (app-1)"
          for d, kind in rows),
        "",
        "index.json:",
        f"  drop   entry 1    {S(app1)}  tag app-1",
    ]
    assert format_plan_text(plan).splitlines() == expected
    assert str(plan) == format_plan_text(plan)


def test_an_untag_plan_and_an_empty_plan():
    b, n = app_store()
    g = b.graph()
    text = format_plan_text(og.plan_untag(g, ["base"]))
    assert text.splitlines()[-1] == f"  untag  entry 0    {S(n['base']['digest'])}  tag base"
    assert format_plan_text(og.plan_gc(g)).splitlines() == [
        "gc plan (policy default): 0 blob(s) to delete, 0 B freed, 0 index.json change(s)",
        "nothing to do"]


def test_tags_from_the_graph_are_shown_beside_digests_in_reasons_and_kept():
    b = Builder()
    shared = b.blob("shared")
    one = b.manifest(b.blob("c1", CONFIG), [shared])
    two = b.manifest(b.blob("c2", CONFIG), [shared])
    b.entry(one, "one")
    b.entry(two, "two")
    plan = og.plan_delete(b.graph(), ["one"])
    plain = format_plan_text(plan)
    tagged = format_plan_text(plan, {two["digest"]: ["two", "2.0"]})
    assert f"shared via {S(two['digest'])}\n" in plain + "\n"
    assert f"shared via {S(two['digest'])} (two, 2.0)" in tagged


def test_at_most_limit_deletions_of_each_reason_are_listed_then_a_count_of_the_rest():
    b = Builder()
    target = b.manifest(b.blob("config", CONFIG), [b.blob(f"layer {i}") for i in range(60)])
    for i in range(55):
        b.manifest(layers=[b.blob(f"signature {i}")], subject=target)
    b.entry(target, "t")
    plan = og.plan_delete(b.graph(), ["t"])
    kinds = [d.reason.kind for d in plan.deletions]
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert counts["orphaned-by"] == 60 + 1 + 55 + 1 and counts["referrer-of"] == 55  # +1: {}
    lines = format_plan_text(plan).splitlines()
    listed = [line for line in lines if re.match(r"  sha256:\S+ .* (target|referrer-of|orphaned-by)", line)]
    assert len([x for x in listed if "orphaned-by" in x]) == PLAN_TEXT_LIMIT == 50
    assert len([x for x in listed if "referrer-of" in x]) == 50
    assert "  \u2026 and 72 more: 5 referrer-of, 67 orphaned-by (-v lists all)" in lines
    every = format_plan_text(plan, limit=None).splitlines()
    assert len(every) == len(lines) + 72 - 1 and not any("more" in line for line in every)
    assert format_plan_text(plan, limit=1).count("\n  sha256:") == 3


def test_a_gc_plan_over_the_limit_says_how_many_more_go():
    b = Builder()
    for i in range(120):
        b.blob(f"garbage {i}")
    plan = og.plan_gc(b.graph())
    lines = format_plan_text(plan, limit=50).splitlines()
    assert sum(line.endswith("unreachable") for line in lines) == 50
    assert lines[-1] == "  \u2026 and 70 more (-v lists all)"


@settings(max_examples=200)
@given(generated_layouts(ambiguous_tags=False), policies(force=True), st.integers(1, 4), st.data())
def test_the_listed_deletions_and_the_count_of_the_rest_add_up(g, policy, limit, data):
    graph = og.build_graph(g.layout())
    if data.draw(st.booleans()) and g.known:
        plan = og.plan_delete(graph, [data.draw(st.sampled_from(sorted(g.known)))], policy)
    else:
        try:
            plan = og.plan_gc(graph, policy)
        except og.BrokenManifestError:
            return
    def delete_section(text: str) -> list[str]:
        lines = text.splitlines()
        if "delete:" not in lines:
            return []
        rest = lines[lines.index("delete:") + 1:]
        return rest[:rest.index("")] if "" in rest else rest

    section = delete_section(format_plan_text(plan, limit=limit))
    listed = [line.split()[0] for line in section if "\u2026" not in line]
    more = [line for line in section if "\u2026" in line]
    hidden = int(re.search(r"and (\d+) more", more[0]).group(1)) if more else 0
    assert len(more) <= 1 and (not more or section[-1] == more[0])  # one count, last
    assert len(listed) + hidden == len(plan.deletions)
    for kind in og.REASON_KINDS:
        of_kind = [S(d.digest) for d in plan.deletions if d.reason.kind == kind]
        assert [x for x in listed if x in of_kind] == of_kind[:limit]  # apply order kept
    every = [line.split()[0] for line in delete_section(format_plan_text(plan, limit=None))]
    assert every == [S(d.digest) for d in plan.deletions]


def test_show_lists_a_tree_per_entry_then_what_index_json_does_not_reach():
    b, n = app_store()
    sig = b.manifest(layers=[b.blob("signature")], subject=n["app2"])
    junk = b.blob("left over")
    g = b.graph()
    text = format_show_text("my store", g, og.Policy())
    lines = text.splitlines()
    present = [d for d, p in g.nodes(data="present") if p]
    total = sum(g.nodes[d]["size"] for d in present)
    assert lines[0] == (f"my store: 4 index.json entries (3 images, 1 more entry shown within "
                        f"them), {len(present)} blob(s) "
                        f"({og.format_bytes(total)}); not live under policy default: 1 blob(s) "
                        f"({og.format_bytes(len(b'left over'))})")
    app2 = n["app2"]["digest"]
    a = g.nodes[app2]
    head = f"{S(app2)}  manifest  {og.format_bytes(a['size'])}  tags: app-2, latest"
    assert head in lines
    below = lines[lines.index(head) + 1:]
    assert below[-1] == f"{S(junk['digest'])}  blob  {og.format_bytes(9)}  [garbage]"
    assert below[-2] == "not reachable from index.json:"
    assert f"    <- referrer {S(sig['digest'])}  manifest  " in "\n".join(below)
    assert format_show_text("t", g, og.Policy(), entries=()).count("[garbage]") == 1
    with_entries = format_show_text("my store", g, og.Policy(), g.graph["index"].entries)
    assert with_entries == text


# --- the command line's reports: a JSON document, and text rendered from it ------------------

def test_the_streamed_plan_json_is_the_plans_json():
    b, _ = app_store()
    for plan in (og.plan_delete(b.graph(), ["app-1"]), og.plan_gc(b.graph())):
        text = "".join(present.plan_json_chunks(plan))
        assert og.Plan.from_json(text.encode()) == og.Plan.from_json(plan.to_json())
        assert text.endswith("}\n")


def test_the_report_text_is_rendered_from_the_report_document():
    b, _ = app_store()
    plan = og.plan_untag(b.graph(), ["base"])  # the entry stays, untagged
    gone, skipped = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    doc = present.report_document("L", plan, {
        "deleted": [], "alreadyGone": [gone], "skipped": [{"digest": skipped, "why": "odd"}],
        "bytesFreed": 0, "indexWritten": True, "relisted": [], "quarantine": None,
        "clockWarning": None})
    assert doc["ocigraphReport"] == present.REPORT_FORMAT_VERSION and doc["layout"] == "L"
    assert doc["plan"] == plan.to_dict()
    assert present.format_report_text(doc).splitlines() == [
        "deleted 0 blob(s), freed 0 B; index.json updated (1 untagged)",
        "1 blob(s) were already gone",
        f"skipped {S(skipped)}: odd"]


def test_the_interrupted_line_says_the_state_exact_or_at_least():
    assert present.interrupted_line(applying=False) == "interrupted: nothing was changed"
    assert present.interrupted_line(applying=True, index_written=False, deleted=0,
                                    total=9) == "interrupted: nothing was changed"
    exact = present.interrupted_line(applying=True, index_written=False, deleted=3, total=9)
    assert "index.json not updated, 3 of 9 blobs deleted; the layout is valid" in exact
    unknown = present.interrupted_line(applying=True, deleted=1024, total=5000)
    assert "index.json may already be updated, at least 1,024 of 5,000 blobs deleted" in unknown


def test_quarantined_blobs_are_one_line_and_none_without_quarantines():
    assert present.format_quarantined([], "L") is None
    two = [{"id": "a", "blobs": 1, "bytes": 1024, "keepUntil": 0.0},
           {"id": "b", "blobs": 2, "bytes": 2048, "keepUntil": None}]
    assert present.format_quarantined(two, "L") == (
        "quarantined: 3 blobs, 3.0 KiB, until 1970-01-01T00:00Z in 2 applies "
        "(`ocigraph restore L [APPLY_ID]` brings back the last one's, or APPLY_ID's)")


def test_the_registry_report_and_the_restore_report():
    doc = present.registry_report_document(["sha256:1"], [], [("tag x", "moved")], 2048, "hint")
    assert present.format_registry_report_text(doc).splitlines() == [
        "deleted 1 manifest(s), untagged 0; 2.0 KiB of blobs now unreferenced",
        "skipped tag x: moved", "hint"]
    restored = present.restore_document("L", "id", ["sha256:1", "sha256:2"], 1)
    assert present.format_restore_text(restored) == (
        "restored 2 blob(s) and 1 index.json entry in L (the apply id is undone)")


def test_show_document_lists_junk_and_quarantines_apart_from_nodes():
    b, _ = app_store()
    g = b.graph()
    doc = present.show_document("L", g, og.Policy(), [{"path": "blobs/md5", "why": "x"}],
                                [{"id": "q", "blobs": 1, "bytes": 5, "keepUntil": None}])
    assert doc["ocigraphShow"] == present.SHOW_FORMAT_VERSION
    assert doc["junk"] == [{"path": "blobs/md5", "why": "x"}]
    assert doc["quarantined"][0]["id"] == "q" and len(doc["nodes"]) == g.number_of_nodes()


def test_an_error_is_one_line_naming_the_file():
    assert present.error_line(og.OcigraphError("bad thing")) == "bad thing"
    name = b"/x/\xff.json"
    assert present.error_line(FileNotFoundError(2, "No such file or directory", name)) == (
        "/x/\\xff.json: No such file or directory")
    assert present.error_line(OSError(5, "")) == "EIO"
    assert present.error_line(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")).startswith(
        "cannot encode or decode text")
    assert present.one_line("two\nlines  here") == "two lines here"


def test_quiet_output_is_the_summary_and_the_untagged_note():
    b = Builder()
    b.entry(b.manifest(layers=[b.blob("kept")]), "t")
    b.entry(b.manifest(layers=[b.blob("untagged")]))
    plan = og.plan_gc(b.graph())
    quiet = present.format_plan_output(plan, None, -1).splitlines()
    assert quiet == [plan.summary(), "1 untagged index.json entry is garbage under policy "
                     "default (--keep-untagged or --policy spec keep them)"]
    assert present.untagged_note(og.plan_gc(b.graph(), og.Policy.preset("spec"))) is None
