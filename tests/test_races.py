"""The layout directory renamed or exchanged under a running command (issue: the shell rebuilt).

Two ways a live blob was lost before the shell worked through one directory handle:

1. ``ocigraph delete P img5`` waited at its prompt; meanwhile ``P`` was exchanged with a copy
   ``Q`` that also holds a referrer of img7 using the layer only img5 used.  Answering ``y``
   deleted that layer from the directory now at ``P``.
2. ``P`` exchanged with a backup during gc's listing and back afterwards made the store record
   the real directory's stamps with the backup's graph; a later quiet ``delete --yes`` then
   deleted a live layer.

Exchanges use ``renameat2(RENAME_EXCHANGE)`` (atomic, as an adversary would), hooked in at the
moment that matters.  After each: every blob live under each directory's own index.json is
present, the directory that was not planned on is byte-for-byte unchanged, and a command that
noticed the swap says so in one line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from builder import Builder
from click.testing import CliRunner

import ocigraph as og
from io_adapters import cli as cli_module
from io_adapters import layout as layout_module
from io_adapters import planner as planner_module
from io_adapters.apply import apply_plan
from io_adapters.cli import cli
from io_adapters.layout import LayoutDir, LayoutLock, read_layout
from ocigraph import LayoutMovedError, PlanOriginError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically, as ``renameat2(RENAME_EXCHANGE)`` does."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        pytest.skip(f"renameat2(RENAME_EXCHANGE) unavailable here ({os.strerror(err)})")


def write(root: Path, b: Builder) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_bytes(b.index_json())
    for digest, data in b.blobs.items():
        (root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
    return root


def images(with_referrer_of_img7: bool) -> tuple[Builder, dict[str, Any]]:
    """img5 and img7 share nothing; img5 alone uses ``only5``.  The second variant adds a
    signature of img7 that uses ``only5`` as a layer: there, deleting img5 must keep it."""
    b = Builder()
    only5 = b.blob("layer only img5 uses")
    img5 = b.manifest(layers=[only5, b.blob("img5 base")])
    img7 = b.manifest(layers=[b.blob("img7 base")])
    b.entry(img5, "img5")
    b.entry(img7, "img7")
    if with_referrer_of_img7:
        sig = b.manifest(config=b.blob("{}", "application/vnd.example.sig"), layers=[only5],
                         subject=img7)
        b.entry(sig)
    return b, {"only5": only5["digest"], "img5": img5["digest"], "img7": img7["digest"]}


def tree_digest(root: Path) -> str:
    """Every file's name and bytes under ``root``: a directory unchanged hashes the same."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def live_blobs_missing(root: Path) -> set[str]:
    """Blobs live (default policy) under ``root``'s own index.json that are gone."""
    graph = og.build_graph(read_layout(root).layout)
    live = og.live_set(graph)
    return {n for n in live if not graph.nodes[n]["present"]}


@pytest.fixture
def p_and_q(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    p = write(tmp_path / "P", images(False)[0])
    b, names = images(True)
    q = write(tmp_path / "Q", b)
    return p, q, names


def test_exchanged_at_the_prompt_nothing_is_changed_and_the_swap_is_named(
        p_and_q: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    p, q, names = p_and_q
    before = {"P": tree_digest(p), "Q": tree_digest(q)}

    def answer_yes_after_a_swap(*args: object, **kwargs: object) -> bool:
        exchange(p, q)  # what the adversary did while the prompt waited
        return True

    monkeypatch.setattr(cli_module, "is_terminal", lambda stream: True)
    monkeypatch.setattr(cli_module.click, "confirm", answer_yes_after_a_swap)
    result = CliRunner().invoke(cli, ["delete", str(p), "img5"])
    assert result.exit_code == 1
    assert "moved or replaced" in result.stderr and str(p) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # the directory now at P is the one with img7's signature: its layer is still there
    assert (p / "blobs" / "sha256" / names["only5"].split(":")[1]).exists()
    assert live_blobs_missing(p) == set() and live_blobs_missing(q) == set()
    # nothing changed in either directory
    assert tree_digest(p) == before["Q"] and tree_digest(q) == before["P"]


def test_a_plan_made_from_one_directory_is_refused_by_another(
        p_and_q: tuple[Path, Path, dict[str, Any]]) -> None:
    p, q, _ = p_and_q
    # same index.json bytes would fool a fingerprint check: make them so
    shutil.copyfile(p / "index.json", q / "index.json")
    plan = planner_module.plan_layout(p, "delete", ["img5"], og.Policy(), cache=False).plan
    assert plan.origin == LayoutDir(p).origin
    before = tree_digest(q)
    with pytest.raises(PlanOriginError, match="another directory"):
        apply_plan(q, plan)
    assert tree_digest(q) == before


def test_a_saved_plan_applied_after_the_layout_was_swapped_is_refused(
        p_and_q: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    p, q, _ = p_and_q
    shutil.copyfile(p / "index.json", q / "index.json")
    runner = CliRunner()
    out = tmp_path / "plan.json"
    assert runner.invoke(cli, ["plan", "delete", str(p), "img5", "-o", str(out)]).exit_code == 0
    exchange(p, q)
    before = tree_digest(p)
    result = runner.invoke(cli, ["apply", str(p), str(out)])
    assert result.exit_code == 1 and "another directory" in result.stderr
    assert tree_digest(p) == before


@pytest.mark.parametrize("moment", ["listing", "reading manifests", "before apply"])
def test_exchanged_during_a_yes_run_no_live_blob_is_lost(
        p_and_q: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
        moment: str) -> None:
    p, q, _ = p_and_q
    swapped = []

    def swap_once() -> None:
        if not swapped:
            swapped.append(True)
            exchange(p, q)

    if moment == "listing":
        real_scan = layout_module.scan_blobs

        def scan(layout_dir: LayoutDir) -> Any:
            swap_once()
            return real_scan(layout_dir)
        monkeypatch.setattr(layout_module, "scan_blobs", scan)
    elif moment == "reading manifests":
        real_read = layout_module.DiskManifestSource.read_manifests

        def read(self: Any, digests: Any) -> Any:
            swap_once()
            return real_read(self, digests)
        monkeypatch.setattr(layout_module.DiskManifestSource, "read_manifests", read)
    else:
        real_check = LayoutDir.require_in_place

        def check(self: LayoutDir) -> None:
            swap_once()
            real_check(self)
        monkeypatch.setattr(LayoutDir, "require_in_place", check)
    result = CliRunner().invoke(cli, ["delete", str(p), "img5", "--yes"])
    assert swapped
    # whichever way it went, nothing live is lost in either directory
    assert live_blobs_missing(p) == set() and live_blobs_missing(q) == set()
    if result.exit_code != 0:
        assert "moved or replaced" in result.stderr


def test_a_swap_during_a_stored_gc_cannot_pair_one_directorys_stamps_with_anothers_graph(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 2: the real layout R and a backup B (without img7's signature) are exchanged
    while gc lists R, and exchanged back afterwards.  Whatever the store recorded, a later
    quiet delete of img5 must keep the layer img7's signature uses."""
    monkeypatch.setattr(planner_module, "_MIN_BLOBS", 0)
    monkeypatch.setattr("ocigraph.snapshot.SETTLE_NS", 0)
    cache = tmp_path / "cache"
    monkeypatch.setenv("OCIGRAPH_CACHE_DIR", str(cache))
    b, names = images(True)
    real = write(tmp_path / "R", b)
    backup = write(tmp_path / "B", images(False)[0])
    real_scan = layout_module.scan_blobs

    def scan_the_backup(layout_dir: LayoutDir) -> Any:
        exchange(real, backup)
        try:
            return real_scan(layout_dir)
        finally:
            exchange(real, backup)

    monkeypatch.setattr(layout_module, "scan_blobs", scan_the_backup)
    runner = CliRunner()
    assert runner.invoke(cli, ["gc", str(real), "--dry-run"]).exit_code == 0
    monkeypatch.setattr(layout_module, "scan_blobs", real_scan)
    assert list(cache.glob("*.store")), "the store was written (the attack needs one)"
    result = runner.invoke(cli, ["delete", str(real), "img5", "--yes"])
    assert result.exit_code == 0, result.stderr
    assert (real / "blobs" / "sha256" / names["only5"].split(":")[1]).exists()
    assert live_blobs_missing(real) == set()
    assert runner.invoke(cli, ["fsck", str(real)]).exit_code == 0


def test_a_lock_is_on_the_directory_not_the_path(tmp_path: Path) -> None:
    """Two commands on one directory exclude each other even when one reached it by a path
    that was renamed meanwhile."""
    p = write(tmp_path / "P", images(False)[0])
    with LayoutLock(p, timeout=0):
        moved = tmp_path / "moved"
        p.rename(moved)
        with pytest.raises(og.OcigraphError, match="locked"):
            LayoutLock(moved, timeout=0.1).acquire()


def test_the_handle_refuses_a_path_swapped_for_a_symlink(tmp_path: Path) -> None:
    p = write(tmp_path / "P", images(False)[0])
    handle = LayoutDir(p)
    p.rename(tmp_path / "elsewhere")
    p.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LayoutMovedError):
        handle.require_in_place()
    with pytest.raises(og.OcigraphError, match="symlink"):
        LayoutDir(p)
