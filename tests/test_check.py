"""The core of fsck (ocigraph.check): what a graph shows is broken, with no I/O."""

from __future__ import annotations

from builder import Builder, two_images_and_a_signature

import ocigraph as og
from ocigraph.check import MISSING_HINT, Problem, blob_problem, check_graph, format_fsck_text


def _graph(b: Builder) -> tuple[og.LayoutGraph, str, dict[str, int]]:
    """The graph, a name, and the blobs' actual sizes: what an adapter passes."""
    return og.build_graph(b.layout()), "L", {d: len(data) for d, data in b.blobs.items()}


def test_a_whole_layout_has_no_problems() -> None:
    b, _ = two_images_and_a_signature()
    report = check_graph(*_graph(b))
    assert report.ok and report.problems == () and report.hints == ()
    # both images, their configs and layers, the unlisted signature and its blobs; not the dangling one
    assert report.reachable == len(b.blobs) - 1
    assert format_fsck_text(report).endswith("reachable from index.json: no problems")


def test_a_missing_layer_names_its_holders_with_their_tags_and_the_hint() -> None:
    b = Builder()
    gone = b.blob("gone", present=False)
    img = b.manifest(layers=[gone])
    b.entry(img, "app:1")
    report = check_graph(*_graph(b))
    assert [(p.kind, p.where) for p in report.problems] == [("missing", gone["digest"])]
    assert report.problems[0].detail == f"referenced by {img['digest']} (tag app:1)"
    assert report.hints == (MISSING_HINT,)


def test_an_unlisted_referrer_of_a_live_image_is_checked_like_a_listed_one() -> None:
    b, d = two_images_and_a_signature()
    sig_layer = b.blob("sig")["digest"]
    del b.blobs[sig_layer]
    report = check_graph(*_graph(b))
    assert [(p.kind, p.where) for p in report.problems] == [("missing", sig_layer)]
    assert d["sig"]["digest"] in report.problems[0].detail


def test_a_quarantined_blob_says_where_it_is_held() -> None:
    b = Builder()
    gone = b.blob("gone", present=False)
    b.entry(b.manifest(layers=[gone]), "app:1")
    report = check_graph(*_graph(b), held={gone["digest"]: "; in Q1"})
    assert report.problems[0].detail.endswith("; in Q1")


def test_a_declared_size_that_differs_from_the_blob_is_reported() -> None:
    b = Builder()
    layer = b.blob("twelve bytes")
    b.entry(b.manifest(layers=[dict(layer, size=99)]), "app:1")
    report = check_graph(*_graph(b))
    assert [(p.kind, p.where) for p in report.problems] == [("size-mismatch", layer["digest"])]
    assert "declare 99 bytes but the blob has 12" in report.problems[0].detail
    # the sizes the adapter read are the truth, not the graph's declared ones
    sized = check_graph(og.build_graph(b.layout()), "L", {d: 99 for d in b.blobs})
    assert all(p.where != layer["digest"] for p in sized.problems)


def test_a_broken_manifest_is_reported_unless_it_failed_its_digest() -> None:
    b = Builder()
    bad = b.blob(b"{not json", og.OCI_MANIFEST)
    b.entry(bad, "app:1")
    graph, _, sizes = _graph(b)
    assert [p.kind for p in check_graph(graph, "L", sizes).problems] == ["broken-manifest"]
    found = [Problem("digest-mismatch", bad["digest"], "content hashes to something else")]
    report = check_graph(graph, "L", sizes, found=found, blobs_checked=3, bytes_checked=10)
    assert [p.kind for p in report.problems] == ["digest-mismatch"]
    assert format_fsck_text(report).splitlines()[-1] == (
        "3 blob(s) checked (10 B), 1 reachable from index.json: 1 digest-mismatch")


def test_problems_come_in_kind_order_then_by_where() -> None:
    b = Builder()
    gone = b.blob("gone", present=False)
    b.entry(b.manifest(layers=[gone]), "app:1")
    found = [Problem("junk", "blobs/zz", "not a blob"), Problem("unreadable", "sha256:1", "x"),
             Problem("layout", "L", "y"), Problem("junk", "blobs/aa", "not a blob")]
    report = check_graph(*_graph(b), found=found)
    assert [(p.kind, p.where) for p in report.problems] == [
        ("layout", "L"), ("missing", gone["digest"]), ("unreadable", "sha256:1"),
        ("junk", "blobs/aa"), ("junk", "blobs/zz")]
    doc = report.to_dict()
    assert doc["ok"] is False and doc["problems"][0]["kind"] == "layout"  # type: ignore[index]


def test_a_blob_is_judged_by_what_its_content_hashes_to() -> None:
    d = og.digest_bytes(b"content")
    assert blob_problem(d, (d.split(":")[1], 7)) is None
    other = og.digest_bytes(b"other")
    assert blob_problem(d, (other.split(":")[1], 5)) == Problem(
        "digest-mismatch", d, f"content hashes to {other} (5 bytes)")
    assert blob_problem(d, "Input/output error") == Problem(
        "unreadable", d, "cannot read the blob (Input/output error)")


def test_a_blob_of_another_algorithm_is_named_with_its_own() -> None:
    d = og.digest_bytes(b"content", "sha512")
    got = blob_problem(d, ("0" * 128, 7))
    assert got is not None and got.detail == f"content hashes to sha512:{'0' * 128} (7 bytes)"
