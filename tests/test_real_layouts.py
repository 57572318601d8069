"""Layouts made by real tools (Debian's umoci and skopeo), planned and applied by ocigraph, and
read back by those tools.  Skipped when the tools are absent; ``.ci/run`` installs them.

The agreement check: on copies of the same layout, ``ocigraph gc --policy spec`` removes
exactly the blobs ``umoci gc`` removes (umoci treats every index.json entry as a root, which is
what the ``spec`` preset means).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

import ocigraph as og
from io_adapters.fsck import fsck
from io_adapters.layout import read_layout

UMOCI = shutil.which("umoci")
SKOPEO = shutil.which("skopeo")
needs_umoci = pytest.mark.skipif(UMOCI is None, reason="umoci is not installed (.ci/run installs it)")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (.ci/run installs it)")

OCIGRAPH = [sys.executable, "-m", "io_adapters"]


def sh(*args: str | Path, cwd: Path | None = None) -> str:
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert p.returncode == 0, f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}"
    return p.stdout


def ocigraph(*args: str | Path) -> str:
    return sh(*OCIGRAPH, *args)


def umoci(*args: str | Path) -> str:
    assert UMOCI is not None
    return sh(UMOCI, *args)


def skopeo_copy(src: str, dst: str) -> None:
    assert SKOPEO is not None
    # --insecure-policy: no /etc/containers/policy.json needed; nothing leaves the machine.
    sh(SKOPEO, "--insecure-policy", "copy", "--quiet", src, dst)


def blob_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "blobs").rglob("*") if p.is_file()}


def tags(root: Path) -> set[str]:
    return set(umoci("ls", "--layout", root).split())


def unpack(root: Path, tag: str, bundle: Path) -> None:
    rootless = ["--rootless"] if os.geteuid() != 0 else []
    umoci("unpack", *rootless, "--image", f"{root}:{tag}", bundle)


def repack(root: Path, tag: str, bundle: Path) -> None:
    umoci("repack", "--image", f"{root}:{tag}", bundle)


def add_image(root: Path, tag: str, work: Path, files: Sequence[tuple[str, str]]) -> None:
    """``umoci new`` then one ``umoci insert`` per file: every insert leaves the previous
    manifest and config behind as garbage, as umoci does."""
    umoci("new", "--image", f"{root}:{tag}")
    for i, (dest, content) in enumerate(files):
        src = work / f"{tag}-{i}"
        src.write_text(content)
        umoci("insert", "--image", f"{root}:{tag}", src, dest)


def umoci_still_reads(root: Path, work: Path) -> None:
    """umoci can list, stat and unpack every tag, and fsck finds nothing wrong."""
    for tag in tags(root):
        assert "LAYER" in umoci("stat", "--image", f"{root}:{tag}")
        bundle = work / f"check-{tag}-{os.urandom(4).hex()}"
        unpack(root, tag, bundle)
        assert (bundle / "rootfs").is_dir()
    report = fsck(root)
    assert report.ok, report.problems


@pytest.fixture
def work(tmp_path: Path) -> Path:
    w = tmp_path / "work"
    w.mkdir()
    return w


@pytest.fixture
def umoci_layout(tmp_path: Path, work: Path) -> Path:
    """Two images made by umoci: ``app`` (three inserts, an unpack/repack with a new file,
    tagged again as ``app-stable``) and ``tools`` (two inserts).  Leftovers of every insert and
    repack are garbage."""
    if UMOCI is None:
        pytest.skip("umoci is not installed")
    root = tmp_path / "layout"
    umoci("init", "--layout", root)
    add_image(root, "app", work, [("/etc/app.conf", "port=80\n"), ("/usr/bin/app", "#!/bin/sh\n"),
                                  ("/srv/data", "data " * 100)])
    bundle = work / "app-bundle"
    unpack(root, "app", bundle)
    (bundle / "rootfs" / "added-by-repack").write_text("new layer\n")
    repack(root, "app", bundle)
    umoci("tag", "--image", f"{root}:app", "app-stable")
    add_image(root, "tools", work, [("/usr/bin/tool", "tool\n"), ("/etc/tool.conf", "x=1\n")])
    return root


def agree_on_gc(root: Path, tmp_path: Path, name: str) -> set[str]:
    """Copy ``root`` twice, run umoci gc on one and ocigraph gc --policy spec on the other;
    the surviving blob files must be the same.  Returns what both removed."""
    by_umoci = tmp_path / f"{name}-umoci"
    by_ocigraph = tmp_path / f"{name}-ocigraph"
    shutil.copytree(root, by_umoci, symlinks=True)
    shutil.copytree(root, by_ocigraph, symlinks=True)
    umoci("gc", "--layout", by_umoci)
    ocigraph("gc", by_ocigraph, "--policy", "spec", "--yes")
    before = blob_files(root)
    assert blob_files(by_ocigraph) == blob_files(by_umoci), (
        f"umoci removed {sorted(before - blob_files(by_umoci))}, "
        f"ocigraph removed {sorted(before - blob_files(by_ocigraph))}"
    )
    assert (by_ocigraph / "index.json").read_bytes() == (root / "index.json").read_bytes()
    return before - blob_files(by_umoci)


# --- agreement with umoci gc -----------------------------------------------------------------


@needs_umoci
def test_gc_agrees_with_umoci_on_insert_and_repack_leftovers(umoci_layout: Path, tmp_path: Path) -> None:
    removed = agree_on_gc(umoci_layout, tmp_path, "leftovers")
    assert len(removed) >= 8  # every insert left a manifest and a config behind


@needs_umoci
def test_gc_agrees_with_umoci_after_umoci_rm(umoci_layout: Path, tmp_path: Path) -> None:
    umoci("rm", "--image", f"{umoci_layout}:tools")
    removed = agree_on_gc(umoci_layout, tmp_path, "rm-tools")
    assert len(removed) > 0


@needs_umoci
def test_gc_agrees_with_umoci_when_a_removed_tag_shares_its_image(
        umoci_layout: Path, tmp_path: Path) -> None:
    umoci("rm", "--image", f"{umoci_layout}:app")  # app-stable still names the same manifest
    agree_on_gc(umoci_layout, tmp_path, "rm-shared")


@needs_umoci
@needs_skopeo
def test_gc_agrees_with_umoci_on_a_skopeo_copy_with_an_untagged_entry(
        umoci_layout: Path, tmp_path: Path) -> None:
    skopeo_copy(f"oci:{umoci_layout}:tools", f"oci:{umoci_layout}:tools-copy")
    doc = orjson.loads((umoci_layout / "index.json").read_bytes())
    for entry in doc["manifests"]:  # drop the tag of one entry: spec and umoci keep it anyway
        if entry.get("annotations", {}).get(og.REF_NAME) == "tools":
            del entry["annotations"]
    (umoci_layout / "index.json").write_bytes(orjson.dumps(doc))
    agree_on_gc(umoci_layout, tmp_path, "untagged")


# --- ocigraph changes, umoci and skopeo read -------------------------------------------------


@needs_umoci
def test_gc_by_default_then_umoci_reads_every_tag(umoci_layout: Path, work: Path) -> None:
    before = tags(umoci_layout)
    ocigraph("gc", umoci_layout, "--yes")
    assert tags(umoci_layout) == before == {"app", "app-stable", "tools"}
    umoci_still_reads(umoci_layout, work)


@needs_umoci
def test_delete_an_image_keeps_the_other_readable(umoci_layout: Path, work: Path) -> None:
    ocigraph("gc", umoci_layout, "--yes")
    kept = blob_files(umoci_layout)
    out = orjson.loads(ocigraph("delete", umoci_layout, "tools", "--yes", "--format", "json"))
    deleted = {f"blobs/{d.replace(':', '/')}" for d in out["result"]["deleted"]}
    assert deleted and blob_files(umoci_layout) == kept - deleted
    assert tags(umoci_layout) == {"app", "app-stable"}
    # nothing left behind: a gc after the delete finds no garbage
    assert og.plan_gc(og.build_graph(read_layout(umoci_layout).layout)).is_empty
    umoci_still_reads(umoci_layout, work)


@needs_umoci
def test_remove_of_a_tag_whose_image_has_another_tag_only_untags(
        umoci_layout: Path, work: Path) -> None:
    before = blob_files(umoci_layout)
    ocigraph("remove", umoci_layout, "app", "--yes")
    assert tags(umoci_layout) == {"app-stable", "tools"}
    assert blob_files(umoci_layout) == before
    ocigraph("remove", umoci_layout, "app-stable", "--yes")
    assert tags(umoci_layout) == {"tools"}
    assert blob_files(umoci_layout) < before
    umoci_still_reads(umoci_layout, work)


@needs_umoci
def test_plan_then_apply_on_a_umoci_layout(umoci_layout: Path, tmp_path: Path, work: Path) -> None:
    plan_file = tmp_path / "plan.json"
    ocigraph("plan", "delete", umoci_layout, "app", "-o", plan_file)
    plan = og.Plan.from_json(plan_file.read_bytes())
    assert plan.deletions and tags(umoci_layout) == {"app", "app-stable", "tools"}
    # "app" and "app-stable" name one manifest: deleting it drops both entries
    assert {c.tag for c in plan.index_changes} == {"app", "app-stable"}
    report = orjson.loads(ocigraph("apply", umoci_layout, plan_file, "--format", "json"))
    assert report["result"]["indexWritten"]
    assert tags(umoci_layout) == {"tools"}
    umoci_still_reads(umoci_layout, work)


@needs_umoci
@needs_skopeo
def test_skopeo_copies_delete_and_gc(umoci_layout: Path, tmp_path: Path, work: Path) -> None:
    copy = tmp_path / "copy"
    skopeo_copy(f"oci:{umoci_layout}:app", f"oci:{copy}:app2")
    skopeo_copy(f"oci:{umoci_layout}:tools", f"oci:{copy}:tools2")
    assert tags(copy) == {"app2", "tools2"}
    assert ocigraph("gc", copy, "--dry-run", "--format", "json").count('"digest"') == 0
    ocigraph("delete", copy, "app2", "--yes")
    assert tags(copy) == {"tools2"}
    umoci_still_reads(copy, work)
    skopeo_copy(f"oci:{copy}:tools2", f"oci:{tmp_path / 'again'}:tools3")  # skopeo still reads it
    ocigraph("delete", copy, "tools2", "--yes")
    assert tags(copy) == set() and blob_files(copy) == set()
    assert fsck(copy).ok
