"""Tools that write a layout without ocigraph's lock, at the same time as a delete or a gc.

skopeo (``copy oci:SRC:x oci:DST:x``: reads DST's index.json when it starts, rewrites it in
place when it ends), umoci (``tag``; ``new`` + ``config``: index.json by rename) and two plain
Python writers (blobs first, then index.json by rename, or rewritten in place with O_TRUNC)
push images that share every blob with what the delete or gc removes, at many instants of the
run.  Afterwards, every blob reachable from the index.json then on disk is present; or the
run refused; or the loss is the documented one (docs/guarantees.md §5: the writer looked at
the layout before ocigraph removed a blob and wrote index.json after ocigraph last checked
it) -- and then fsck reports exactly those blobs, names the quarantine when the run kept its
blobs, and ``recover`` brings them back.

The first test drives a Python writer from inside apply (it looks before the i-th removal and
writes before the j-th), so the loss it expects is exact.  The others race real processes
against the run with delays, and judge each outcome by the rule above.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hostile.layoutgen import REF_NAME, LayoutBuilder, model_reachable, present_blobs, sha256

import ocigraph as og
from io_adapters.apply import ApplyReport, apply_plan
from io_adapters.fsck import MISSING_HINT, fsck
from io_adapters.layout import LayoutDir, LayoutLock, read_layout
from io_adapters.quarantine import quarantined, recover

UMOCI = shutil.which("umoci")
SKOPEO = shutil.which("skopeo")
KEEP = 3600.0


# --- a writer that pushes an image, in two steps ---------------------------------------------


@dataclass
class Writer:
    """Pushes ``blobs`` and an index.json entry for ``entry``: :meth:`look` reads index.json
    and which blobs exist; :meth:`write` uploads the blobs it saw missing, then writes the
    index.json it read plus its entry -- by rename, or in place (``in_place``)."""

    root: Path
    blobs: dict[str, bytes]
    entry: dict[str, Any]
    in_place: bool = False
    index: bytes = b""
    missing: list[str] = field(default_factory=list)

    def look(self) -> None:
        self.index = (self.root / "index.json").read_bytes()
        self.missing = [d for d in self.blobs if not _blob(self.root, d).exists()]

    def write(self) -> None:
        for d in self.missing:
            tmp = self.root / f"upload-{d[7:19]}"
            tmp.write_bytes(self.blobs[d])
            os.replace(tmp, _blob(self.root, d))
        doc = json.loads(self.index)
        doc["manifests"].append(self.entry)
        data = json.dumps(doc, indent=2).encode()
        if self.in_place:
            fd = os.open(self.root / "index.json", os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, data[: len(data) // 2])  # a reader may see half of it
                os.write(fd, data[len(data) // 2:])
            finally:
                os.close(fd)
        else:
            tmp = self.root / "index.json.writer"
            tmp.write_bytes(data)
            os.replace(tmp, self.root / "index.json")


def _blob(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.split(":", 1)[1]


@dataclass(frozen=True)
class Scene:
    template: Path
    pushed: dict[str, bytes]  # the writer's image: a's shared layer and config, its own manifest
    entry: dict[str, Any]


def build_scene(base: Path) -> Scene:
    """Images ``a`` (to delete) and ``b``; the writer's image ``w`` uses a's layers and config."""
    b = LayoutBuilder()
    layer, other = b.blob("layer shared by a and w"), b.blob("second layer of a")
    a = b.image("a", [layer, other])
    b.entry(a, "a")
    b.entry(b.image("b"), "b")
    b.write(base / "template")
    a_doc = json.loads(b.blobs[a["digest"]])
    w_doc = {"schemaVersion": 2, "mediaType": og.OCI_MANIFEST, "config": a_doc["config"],
             "layers": [layer, other, {"mediaType": layer["mediaType"], "digest": sha256(b"w's own"),
                                       "size": 7}]}
    w_bytes = json.dumps(w_doc).encode()
    pushed = {d["digest"]: b.blobs[d["digest"]] for d in (layer, other, a_doc["config"])}
    pushed[sha256(b"w's own")] = b"w's own"
    pushed[sha256(w_bytes)] = w_bytes
    entry = {"mediaType": og.OCI_MANIFEST, "digest": sha256(w_bytes), "size": len(w_bytes),
             "annotations": {REF_NAME: "w"}}
    return Scene(base / "template", pushed, entry)


def plan_delete_a(root: Path | LayoutDir) -> og.Plan:
    return og.plan_delete(og.build_graph(read_layout(root).layout), ["a"])


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return build_scene(tmp_path_factory.mktemp("scene"))


def removal_order(scene: Scene, tmp_path: Path, keep: float | None) -> list[str]:
    root = tmp_path / "dry"
    shutil.copytree(scene.template, root)
    report = apply_plan(root, plan_delete_a(root), keep_deleted=keep)
    shutil.rmtree(root)
    return list(report.deleted)


def steps(n: int) -> Iterator[tuple[int, int]]:
    """(look at removal i, write at removal j -- each just before that removal, after the
    re-check before it): 0 is before the run, n + 1 after it."""
    for i in range(0, n + 1):
        for j in range(max(i, 1), n + 2):
            yield i, j


@pytest.mark.parametrize("in_place", [False, True], ids=["by-rename", "in-place"])
@pytest.mark.parametrize("keep", [None, KEEP], ids=["purge", "keep"])
def test_a_writer_at_every_step_loses_only_what_it_saw_before_a_removal_and_wrote_after(
        scene: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: float | None,
        in_place: bool) -> None:
    order = removal_order(scene, tmp_path, keep)
    n = len(order)
    assert n >= 6
    losses = 0
    real_rename = os.rename
    for i, j in steps(n):
        root = tmp_path / f"L-{i}-{j}"
        shutil.copytree(scene.template, root)
        writer = Writer(root, scene.pushed, scene.entry, in_place)
        calls = [0]

        def removal(src: str, dst: str, writer: Writer = writer, i: int = i, j: int = j,
                    calls: list[int] = calls, **kw: Any) -> None:
            into = os.readlink(f"/proc/self/fd/{kw.get('dst_dir_fd')}")
            if "/.ocigraph/quarantine/" in into:  # a blob leaving blobs/ (not one going back)
                calls[0] += 1
                if calls[0] == i:
                    writer.look()
                if calls[0] == j:
                    writer.write()
            real_rename(src, dst, **kw)

        with monkeypatch.context() as m:
            m.setattr(os, "rename", removal)
            if i == 0:
                writer.look()
            with LayoutLock(root, 5) as lock:
                report = apply_plan(lock.dir, plan_delete_a(lock.dir), lock=lock, keep_deleted=keep)
        if j == n + 1:
            writer.write()
        # every removal went through the hook: moves back are not removals, spared blobs none
        assert calls[0] == len(report.deleted) + len(report.relisted)
        reachable = model_reachable(root)
        assert reachable is not None
        missing = reachable - present_blobs(root)
        # a write before the re-check after the last move gets everything back; one after the
        # run loses what the writer saw present and ocigraph removed
        seen_then_removed = {order[k - 1] for k in range(max(i, 1), n + 1)} - set(writer.missing)
        expected = reachable & seen_then_removed if j == n + 1 else frozenset()
        assert missing == expected, (i, j)
        if missing:
            losses += 1
            assert_reported(root, missing, keep)
        shutil.rmtree(root)
    assert losses > 0  # the documented loss does happen, and was reported each time


def assert_reported(root: Path, missing: frozenset[str], keep: float | None) -> None:
    """fsck names exactly what is missing (and the quarantine holding it); ``recover`` brings
    back whatever a quarantine holds."""
    report = fsck(root)
    assert {p.where for p in report.problems if p.kind == "missing"} == missing
    assert report.hints == (MISSING_HINT,)
    if keep:
        ids = {q.id for q in quarantined(root)}
        for p in report.problems:
            if p.kind == "missing":
                assert any(f"quarantine {i}" in p.detail for i in ids), p.detail
        recover(root)
        reachable = model_reachable(root)
        assert reachable is not None and reachable <= present_blobs(root)
        assert fsck(root).ok


# --- real processes, raced with delays --------------------------------------------------------


@dataclass
class Span:
    start: float = 0.0
    end: float = 0.0
    code: int | None = None
    error: str | None = None
    report: ApplyReport | None = None


def ocigraph_run(root: Path, operation: str, keep: float | None, span: Span) -> None:
    """What ``ocigraph delete a`` / ``gc`` does, in this process: lock, recover, plan, apply."""
    try:
        with LayoutLock(root, 30) as lock:
            span.start = time.monotonic()
            recover(lock.dir, lock=lock)
            graph = og.build_graph(read_layout(lock.dir).layout)
            plan = og.plan_delete(graph, ["a"]) if operation == "delete" else og.plan_gc(graph)
            span.report = apply_plan(lock.dir, plan, lock=lock, keep_deleted=keep)
    except og.OcigraphError as exc:
        span.error = str(exc)
    finally:
        span.end = time.monotonic()


def race(root: Path, write: Callable[[], int], delay: float, operation: str,
         keep: float | None) -> tuple[Span, Span]:
    """The writer starts ``delay`` seconds after ocigraph (before it when negative)."""
    og_span, w_span = Span(), Span()
    t0 = time.monotonic() + 0.05

    def writer() -> None:
        time.sleep(max(0.0, t0 + delay - time.monotonic()))
        w_span.start = time.monotonic()
        w_span.code = write()
        w_span.end = time.monotonic()

    def runner() -> None:
        time.sleep(max(0.0, t0 - time.monotonic()))
        ocigraph_run(root, operation, keep, og_span)

    threads = [threading.Thread(target=writer), threading.Thread(target=runner)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return og_span, w_span


def judge(root: Path, og_span: Span, w_span: Span, keep: float | None) -> str:
    """``ok``, ``refused`` or ``documented loss`` -- anything else fails the test."""
    reachable = model_reachable(root)
    assert reachable is not None, "index.json is not valid JSON after both finished"
    missing = reachable - present_blobs(root)
    if not missing:
        return "refused" if og_span.error else "ok"  # (stale plan; index.json half written)
    assert og_span.error is None and og_span.report is not None, og_span.error
    # the writer was at work while ocigraph was: it looked before a removal, wrote after
    assert w_span.start < og_span.end and w_span.end > og_span.start, (w_span, og_span)
    assert missing <= set(og_span.report.deleted), "a blob ocigraph did not delete is missing"
    assert_reported(root, missing, keep)
    return "documented loss"


def sh(*args: str | Path) -> None:
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"{' '.join(map(str, args))}: {p.stderr}"


@dataclass(frozen=True)
class RealScene:
    base: Path
    dst: Path  # umoci-made: images a (several inserts: garbage too) and b, and 400 loose blobs
    src: Path  # skopeo's copy of dst:a, as tag x: every blob of it is one a has


@pytest.fixture(scope="module")
def real_scene(tmp_path_factory: pytest.TempPathFactory) -> RealScene:
    if UMOCI is None or SKOPEO is None:
        pytest.skip("umoci and skopeo are not both installed (.ci/run installs them)")
    base = tmp_path_factory.mktemp("real")
    dst, src = base / "dst", base / "src"
    sh(UMOCI, "init", "--layout", dst)
    for tag, files in (("a", ("shared base", "only in a", "more of a")), ("b", ("b's",))):
        sh(UMOCI, "new", "--image", f"{dst}:{tag}")
        for k, text in enumerate(files):
            f = base / f"{tag}-{k}"
            f.write_text(text)
            sh(UMOCI, "insert", "--image", f"{dst}:{tag}", f, f"/{tag}{k}")
    sh(SKOPEO, "--insecure-policy", "copy", "--quiet", f"oci:{dst}:a", f"oci:{src}:x")
    for k in range(400):  # loose blobs, so that a gc takes a while
        data = f"loose {k}".encode()
        (dst / "blobs" / "sha256" / sha256(data)[7:]).write_bytes(data)
    return RealScene(base, dst, src)


def fresh(real: RealScene, tmp_path: Path, operation: str) -> Path:
    root = tmp_path / "dst"
    if root.exists():
        shutil.rmtree(root)
    # blobs as hard links (no writer here changes a blob file's bytes), the rest copied
    shutil.copytree(real.dst, root, copy_function=os.link)
    for name in ("index.json", "oci-layout"):
        (root / name).unlink()
        shutil.copyfile(real.dst / name, root / name)
    if operation == "gc":
        sh(UMOCI or "umoci", "rm", "--image", f"{root}:a")  # a's blobs are garbage for the gc
    return root


def run_tool(*args: str | Path) -> int:
    return subprocess.run([str(a) for a in args], capture_output=True, timeout=60).returncode


def tool_writer(tool: str, root: Path, src: Path, operation: str) -> Callable[[], int]:
    umoci, skopeo = UMOCI or "umoci", SKOPEO or "skopeo"
    if tool == "skopeo-copy":
        return lambda: run_tool(skopeo, "--insecure-policy", "copy", "--quiet", f"oci:{src}:x",
                                f"oci:{root}:x")
    if tool == "umoci-tag":  # re-tags a (which a delete removes); after `umoci rm` a has no tag
        source = "a" if operation == "delete" else "b"
        return lambda: run_tool(umoci, "tag", "--image", f"{root}:{source}", "again")
    return lambda: run_tool(umoci, "new", "--image", f"{root}:fresh") or run_tool(
        umoci, "config", "--image", f"{root}:fresh", "--config.user", "me")


DELAYS = [-0.1, -0.05, -0.03, -0.015, 0.0, 0.01, 0.03]
LATE_DELAYS = [0.3, 1.0, 3.0]


@pytest.mark.parametrize("keep", [None, KEEP], ids=["purge", "keep"])
@pytest.mark.parametrize("operation", ["delete", "gc"])
@pytest.mark.parametrize("tool", ["skopeo-copy", "umoci-tag", "umoci-new-config"])
def test_real_tools_racing_a_run_lose_nothing_but_the_documented_case(
        real_scene: RealScene, tmp_path: Path, tool: str, operation: str, keep: float | None) -> None:
    outcomes: dict[str, int] = {}
    # on a loaded machine every overlap may end in a refusal (index.json changed under the
    # run); then later starts, until a run that was not refused shows the race was judged
    for delay in [*DELAYS, *LATE_DELAYS]:
        if delay in LATE_DELAYS and outcomes.get("ok", 0) + outcomes.get("documented loss", 0):
            break
        root = fresh(real_scene, tmp_path, operation)
        write = tool_writer(tool, root, real_scene.src, operation)
        og_span, w_span = race(root, write, delay, operation, keep)
        outcome = judge(root, og_span, w_span, keep)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("ok", 0) + outcomes.get("documented loss", 0) >= 1, outcomes


@pytest.mark.parametrize("keep", [None, KEEP], ids=["purge", "keep"])
@pytest.mark.parametrize("in_place", [False, True], ids=["by-rename", "in-place"])
def test_python_writers_racing_a_gc_lose_nothing_but_the_documented_case(
        real_scene: RealScene, tmp_path: Path, in_place: bool, keep: float | None) -> None:
    src = real_scene.src
    doc = json.loads((src / "index.json").read_bytes())
    entry = {**doc["manifests"][0], "annotations": {REF_NAME: "pushed"}}
    blobs = {f"sha256:{p.name}": p.read_bytes() for p in (src / "blobs" / "sha256").iterdir()}
    outcomes: dict[str, int] = {}
    for delay in DELAYS:
        for pause in (0.0, 0.02):
            root = fresh(real_scene, tmp_path, "gc")
            writer = Writer(root, blobs, entry, in_place)

            def write(writer: Writer = writer, pause: float = pause) -> int:
                writer.look()
                time.sleep(pause)
                writer.write()
                return 0

            og_span, w_span = race(root, write, delay, "gc", keep)
            outcome = judge(root, og_span, w_span, keep)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("ok", 0) >= 1, outcomes
