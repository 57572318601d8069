"""The demo layout the notebooks explore (io_adapters.demo): it reads, it is sound, and it has
every shape its docstring promises, so the notebooks' stories stay true."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import ocigraph as og
from io_adapters.demo import DEMO_IMAGES, LAYER_KIB, demo_content, write_demo_layout
from io_adapters.fsck import fsck
from io_adapters.layout import read_layout

SMALL = 0.02  # layer sizes x 0.02: same shapes, a few KiB per layer


@pytest.fixture(scope="module")
def demo() -> og.LayoutGraph:
    return og.build_graph(demo_content(scale=SMALL).layout())


@pytest.fixture(scope="module")
def labels() -> dict[str, str]:
    return dict(demo_content(scale=SMALL).labels)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_written_layout_reads_back_as_the_content_and_fsck_finds_nothing(tmp_path: Path) -> None:
    root = write_demo_layout(tmp_path / "demo", scale=SMALL)
    content = demo_content(scale=SMALL)
    disk = read_layout(root)
    assert disk.junk == ()
    assert set(disk.layout.blobs) == set(content.blobs)
    assert {d: b.size for d, b in disk.layout.blobs.items()} == {d: len(b) for d, b in content.blobs.items()}
    report = fsck(root)
    assert report.ok, report.problems
    assert report.blobs_checked == len(content.blobs)


def test_same_seed_same_bytes_other_seed_other_digests_same_sizes(tmp_path: Path) -> None:
    a = files(write_demo_layout(tmp_path / "a", seed=7, scale=SMALL))
    b = files(write_demo_layout(tmp_path / "b", seed=7, scale=SMALL))
    assert a == b
    one, two = demo_content(seed=1, scale=SMALL), demo_content(seed=2, scale=SMALL)
    assert set(one.labels) == set(two.labels)
    assert not set(one.blobs) & set(two.blobs) - {one.labels["empty-config"]}
    for label in one.labels:
        assert len(one.blobs[one.labels[label]]) == pytest.approx(
            len(two.blobs[two.labels[label]]), rel=0.2), label


def test_refuses_to_write_into_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        write_demo_layout(tmp_path / "x")
    assert (tmp_path / "x" / "keep").read_text() == "mine"


def test_tags_and_two_tags_on_one_index(demo: og.LayoutGraph, labels: dict[str, str]) -> None:
    assert demo_content(scale=SMALL).tags == ("app-1.0", "app-1.1", "latest", "legacy-0.9", "worker-2.3")
    assert og.tags_of(demo, labels["app-1.1"]) == {"app-1.1", "latest"}


def test_multi_platform_oci_index_and_docker_list_carry_platforms(
        demo: og.LayoutGraph, labels: dict[str, str]) -> None:
    for name, list_type, child_type in (("app-1.1", og.OCI_INDEX, og.OCI_MANIFEST),
                                        ("legacy-0.9", og.DOCKER_LIST, og.DOCKER_MANIFEST)):
        index = labels[name]
        assert demo.nodes[index]["media_types"] == {list_type}
        children = {s for s, roles in og.successors_of(demo, index) if roles == {"manifest"}}
        assert children == {labels[f"{name}/amd64"], labels[f"{name}/arm64"]}
        for arch in ("amd64", "arm64"):
            child = demo.nodes[labels[f"{name}/{arch}"]]
            assert child["media_types"] == {child_type}
            assert dict(child["platform"]) == {"architecture": arch, "os": "linux"}


def test_base_layer_is_large_shared_and_seen_under_two_media_types(
        demo: og.LayoutGraph, labels: dict[str, str]) -> None:
    base = labels["layer:base/amd64"]
    users = set(demo.pred[base])
    assert {labels[n] for n in ("app-1.0/amd64", "app-1.1/amd64", "worker-2.3",
                                "legacy-0.9/amd64")} <= users
    assert len(demo.nodes[base]["media_types"]) == 2
    assert LAYER_KIB["base/amd64"] >= 1024  # at full scale: a layer worth charting
    layer_sizes = [demo.nodes[d]["size"] for label, d in labels.items() if label.startswith("layer:")]
    assert demo.nodes[base]["size"] == max(layer_sizes)


def test_referrers_including_a_referrer_of_a_referrer(demo: og.LayoutGraph, labels: dict[str, str]) -> None:
    assert og.referrers_of(demo, labels["app-1.1"]) == tuple(sorted(
        (labels["sig:app-1.1"], labels["sbom:app-1.1"])))
    assert og.referrers_of(demo, labels["sbom:app-1.1"]) == (labels["sig:sbom:app-1.1"],)
    assert og.referrers_of(demo, labels["app-1.1/amd64"]) == (labels["provenance:app-1.1/amd64"],)
    assert demo.nodes[labels["sbom:app-1.1"]]["artifact_type"] == "application/spdx+json"
    # a signature nothing lists is live through its subject
    sig = labels["sig:sbom:app-1.1"]
    assert not demo.pred[sig] and not demo.nodes[sig]["indexed"]
    assert sig in og.live_set(demo)


def test_untagged_entries_orphan_and_dangling_blob_are_the_only_garbage(
        demo: og.LayoutGraph, labels: dict[str, str]) -> None:
    untagged = {e.digest for e in demo.graph["index"].entries if e.tag is None}
    assert untagged == {labels["sbom:app-1.1"], labels["worker-2.2"]}
    orphan, dangling = labels["app-0.9/amd64"], labels["dangling"]
    for node in (orphan, dangling):
        assert not demo.pred[node] and not demo.nodes[node]["indexed"]
    assert demo.succ[orphan] and not demo.succ[dangling]
    garbage = {labels[n] for n in (
        "worker-2.2", "worker-2.2:config", "layer:worker-2.2", "sig:worker-2.2",
        "sig:worker-2.2:payload", "app-0.9/amd64", "app-0.9/amd64:config", "layer:app-0.9",
        "dangling")}
    assert og.plan_gc(demo, og.Policy.preset("default")).deleted_digests() == garbage
    assert og.plan_gc(demo, og.Policy.preset("oras")).deleted_digests() == garbage
    # spec: every index.json entry is a root, so the untagged worker-2.2 (and its signature) stay
    spec = og.plan_gc(demo, og.Policy.preset("spec")).deleted_digests()
    assert spec == garbage - {labels[n] for n in ("worker-2.2", "worker-2.2:config", "layer:worker-2.2",
                                                  "sig:worker-2.2", "sig:worker-2.2:payload")}


def test_deleting_a_listed_platform_manifest_is_guarded_except_under_oras(
        demo: og.LayoutGraph, labels: dict[str, str]) -> None:
    amd64 = labels["app-1.1/amd64"]
    for preset in ("default", "spec"):
        with pytest.raises(og.GuardError) as err:
            og.plan_delete(demo, [amd64], og.Policy.preset(preset))
        assert err.value.holder == labels["app-1.1"]
    plan = og.plan_delete(demo, [amd64], og.Policy.preset("oras"))
    assert labels["provenance:app-1.1/amd64"] in plan.deleted_digests()
    assert labels["layer:app-1.1"] not in plan.deleted_digests()  # arm64 still uses it


def test_options_select_images_and_drop_referrers_and_garbage(labels: dict[str, str]) -> None:
    content = demo_content(images=["worker-2.3"], referrers=False, garbage=False, scale=SMALL)
    graph = og.build_graph(content.layout())
    assert content.tags == ("worker-2.3",)
    assert og.plan_gc(graph).is_empty
    assert not any("subject" in r for _, _, r in graph.edges(data="roles"))
    with pytest.raises(ValueError, match="unknown demo image"):
        demo_content(images=["nope"])
    assert set(DEMO_IMAGES) <= set(labels)


def test_space_accounting_has_numbers_worth_charting(demo: og.LayoutGraph) -> None:
    from ocigraph.space import space_by_tag

    report = space_by_tag(demo)
    assert report.tag("app-1.1").unique_bytes == 0  # `latest` names the same index
    assert all(report.tag(t).unique_bytes > 0 for t in ("app-1.0", "legacy-0.9", "worker-2.3"))
    assert all(t.shared_bytes > t.unique_bytes for t in report.tags)
    assert report.layout.reclaimable_bytes == og.plan_gc(demo).bytes_freed > 0


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
def test_umoci_lists_the_demo_tags(tmp_path: Path) -> None:
    root = write_demo_layout(tmp_path / "demo", scale=SMALL)
    out = subprocess.run(["umoci", "ls", "--layout", str(root)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert set(out.split()) == set(demo_content(scale=SMALL).tags)


REPO = Path(__file__).parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def notebooks_named_in(text: str) -> set[str]:
    """Notebook names the text shows in backticks: `01-explore-a-layout`, with or without
    .ipynb."""
    return set(re.findall(r"`(\d\d-[a-z0-9-]+?)(?:\.ipynb)?`", text))


def test_every_notebook_is_listed_in_the_readme_and_jupyter_docs_and_none_is_missing() -> None:
    on_disk = {p.stem for p in NOTEBOOKS}
    assert on_disk, "notebooks/ holds no notebook"
    readme = (REPO / "README.md").read_text()
    jupyter = (REPO / "docs" / "jupyter.md").read_text()
    assert notebooks_named_in(readme) == on_disk, "README's notebook list is out of date"
    assert notebooks_named_in(jupyter) == on_disk, "docs/jupyter.md's notebook table is out of date"
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert notebooks_named_in(doc.read_text()) <= on_disk, f"{doc.name} names a missing notebook"
    # "the four notebooks", "holds four worked examples": the counts in prose agree too
    counts = re.findall(rf"\b({'|'.join(NUMBER_WORDS)})\s+(?:notebooks|worked examples)\b",
                        readme + jupyter)
    assert counts, "the docs no longer say how many notebooks there are; update this test"
    assert {NUMBER_WORDS.index(word) + 1 for word in counts} == {len(NOTEBOOKS)}


def test_notebooks_are_numbered_in_reading_order_without_gaps() -> None:
    numbers = [p.name[:3] for p in NOTEBOOKS]
    assert numbers == [f"{i:02d}-" for i in range(1, len(NOTEBOOKS) + 1)]


def test_pytest_runs_every_notebook() -> None:
    """The README's one test command (`pytest`) runs the notebooks through nbmake: they are
    under a test path, nbmake is on, and pytest collects each of them."""
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--nbmake" in options["addopts"].split()
    paths = [REPO / p for p in options["testpaths"]]
    for notebook in NOTEBOOKS:
        assert any(notebook.is_relative_to(p) for p in paths), f"{notebook.name} is not a test path"
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "notebooks"], cwd=REPO,
        capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    items = {line.split("::")[0] for line in collected.stdout.splitlines() if "::" in line}
    assert items == {f"notebooks/{p.name}" for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs_and_runs_in_the_default_kernel(path: Path) -> None:
    """Outputs stay out of git (diffs of source only); nbmake runs the kernelspec the notebook
    names, and ``python3`` is the one ipykernel installs into every virtualenv."""
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {i} has outputs"
            assert cell["execution_count"] is None, f"cell {i} has an execution count"
