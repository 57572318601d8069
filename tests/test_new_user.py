"""What a new user tripped on (issue: explanations, output volume, the cache folder, CLI
habits) -- one test per point, through the command line."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from builder import Builder, write_layout
from click.shell_completion import BashComplete
from click.testing import CliRunner, Result

import ocigraph as og
from io_adapters import cli as cli_module
from io_adapters import targets
from io_adapters.cli import cli
from ocigraph import present


def run(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def store_with(images: int, garbage: int = 0, untagged: int = 0) -> tuple[Builder, list[str]]:
    b = Builder()
    tags = []
    for i in range(images):
        m = b.manifest(layers=[b.blob(f"layer {i}")])
        b.entry(m, f"app:{i}")
        tags.append(f"app:{i}")
    for i in range(garbage):
        b.blob(f"garbage {i}")
    for i in range(untagged):
        b.entry(b.manifest(layers=[b.blob(f"untagged layer {i}")]))
    return b, tags


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    b, _ = store_with(3, garbage=2)
    return write_layout(tmp_path / "store", b.index_json(), b.blobs)


def test_the_tests_keep_their_cache_in_a_temporary_folder() -> None:
    folder = os.environ["OCIGRAPH_CACHE_DIR"]
    assert folder.startswith(tempfile.gettempdir())
    assert not folder.startswith(os.path.expanduser("~"))


def test_gc_rejects_keep_referrers_with_a_reason(layout: Path) -> None:
    result = run("gc", layout, "--keep-referrers", "--dry-run")
    assert result.exit_code == 2
    assert "--keep-referrers applies to delete and remove" in result.stderr


def test_gc_with_grace_lists_what_it_spares_as_young(layout: Path) -> None:
    plain = orjson.loads(run("gc", layout, "--dry-run", "--format", "json").stdout)
    spared = orjson.loads(run("gc", layout, "--dry-run", "--grace", "1h", "--format", "json").stdout)
    garbage = {d["digest"] for d in plain["deletions"]}
    assert len(garbage) == 2 and spared["deletions"] == []
    assert {k["digest"] for k in spared["kept"] if k["kind"] == "young"} == garbage


def test_a_plain_folder_is_named_as_not_a_layout(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    result = run("show", tmp_path / "notes")
    assert result.exit_code == 1
    assert "notes: not an OCI image layout (no oci-layout file)" in result.stderr
    (tmp_path / "notes" / "index.json").write_text("{}")
    assert "has an index.json but no oci-layout" in run("show", tmp_path / "notes").stderr


def test_the_oci_form_names_the_layout_and_a_ref(layout: Path) -> None:
    whole = run("show", f"oci:{layout}")
    assert whole.exit_code == 0 and "app:0" in whole.stdout and "app:2" in whole.stdout
    one = run("show", f"oci:{layout}:app:1")
    assert one.exit_code == 0, one.stderr
    assert "app:1" in one.stdout and "app:0" not in one.stdout
    plan = orjson.loads(run("delete", f"oci:{layout}:app:1", "--dry-run", "--format", "json").stdout)
    assert plan["targets"] == [og.resolve_ref(og.build_graph(
        __import__("io_adapters.layout", fromlist=["read_layout"]).read_layout(layout).layout),
        "app:1")]


def test_show_with_a_ref_shows_one_image(layout: Path) -> None:
    result = run("show", layout, "app:2")
    assert result.exit_code == 0
    assert "tags: app:2" in result.stdout
    assert "app:0" not in result.stdout and "not reachable" not in result.stdout


def test_ctrl_c_exits_130_and_says_nothing_was_changed(layout: Path, monkeypatch: Any) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    before = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
    monkeypatch.setattr(targets, "plan_layout", interrupted)
    result = run("gc", layout, "--yes")
    assert result.exit_code == 130
    assert result.stderr.strip() == "ocigraph: interrupted: nothing was changed"
    assert sorted(p.name for p in (layout / "blobs" / "sha256").iterdir()) == before


def test_ctrl_c_during_apply_says_the_state(layout: Path, monkeypatch: Any) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(targets, "apply_plan", interrupted)
    result = run("gc", layout, "--yes")
    assert result.exit_code == 130
    assert "interrupted while applying" in result.stderr and "run the same command again" in result.stderr
    assert "Aborted" not in result.output


def test_declining_the_prompt_is_not_an_error(layout: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(cli_module, "is_terminal", lambda stream: True)
    result = run("gc", layout, input="n\n")
    assert result.exit_code == 1
    assert "nothing was changed" in result.stdout and "error" not in result.stderr


def test_text_plans_list_fifty_deletions_per_reason_unless_verbose(tmp_path: Path) -> None:
    b, _ = store_with(1, garbage=120)
    root = write_layout(tmp_path / "store", b.index_json(), b.blobs)
    text = run("gc", root, "--dry-run").stdout
    assert text.count(" unreachable") == 50
    assert "… and 70 more (-v lists all)" in text
    assert run("gc", root, "--dry-run", "-v").stdout.count(" unreachable") == 120
    quiet = run("gc", root, "--dry-run", "-q").stdout.strip().splitlines()
    assert quiet == ["gc plan (policy default): 120 blob(s) to delete, "
                     f"{og.format_bytes(sum(len(f'garbage {i}') for i in range(120)))} freed, "
                     "0 index.json change(s)"]


def test_the_streamed_json_plan_is_the_plan(tmp_path: Path) -> None:
    b, _ = store_with(2, garbage=30)
    root = write_layout(tmp_path / "store", b.index_json(), b.blobs)
    for args in (("plan", "gc", root, "--format", "json"), ("gc", root, "--dry-run", "--format", "json")):
        out = run(*args).stdout
        plan = og.Plan.from_json(out)
        assert orjson.loads(out) == orjson.loads(plan.to_json())
    empty = run("plan", "delete", root, "app:0", "--format", "json").stdout
    assert og.Plan.from_json(empty).operation == "delete"


def test_untagged_garbage_is_said_once(tmp_path: Path) -> None:
    b, _ = store_with(1, untagged=3)
    root = write_layout(tmp_path / "store", b.index_json(), b.blobs)
    text = run("gc", root, "--dry-run").stdout
    assert text.count("3 untagged index.json entries are garbage under policy default "
                      "(--keep-untagged or --policy spec keep them)") == 1
    assert "untagged index.json" not in run("gc", root, "--dry-run", "--policy", "spec").stdout


def test_the_cache_command_lists_and_clears(tmp_path: Path, monkeypatch: Any) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("OCIGRAPH_CACHE_DIR", str(cache))
    cache.mkdir()
    (cache / ("0" * 32 + ".cache")).write_bytes(b"x" * 100)  # an old version's file
    (cache / "notes.txt").write_text("mine")
    info = orjson.loads(run("cache", "--format", "json").stdout)
    assert info["ocigraphCache"] == 1 and info["folder"] == str(cache)
    assert "freed 100 B" in run("cache", "clear").stdout
    assert sorted(p.name for p in cache.iterdir()) == ["notes.txt"]


def test_refs_complete_from_the_layout_named_before(layout: Path) -> None:
    complete = BashComplete(cli, {}, "ocigraph", "_OCIGRAPH_COMPLETE")
    got = [c.value for c in complete.get_completions(["delete", str(layout)], "app:")]
    assert sorted(got) == ["app:0", "app:1", "app:2"]


def test_every_phase_of_a_plan_shows_on_a_terminal(layout: Path, capsys: Any) -> None:
    from io_adapters.planner import plan_layout

    reporter = cli_module.ProgressReporter(enabled=True)
    plan_layout(layout, "gc", [], og.Policy(), reporter=reporter, cache=False)
    reporter.close()
    shown = capsys.readouterr().err
    for phase in ("listing blobs", "reading manifests", "building the graph", "planning"):
        assert phase in shown, phase
    quiet = cli_module.ProgressReporter(enabled=False)
    plan_layout(layout, "gc", [], og.Policy(), reporter=quiet, cache=False)
    assert capsys.readouterr().err == ""


# --- issue 12: --keep-deleted, restore, quarantined bytes -------------------------------------


def blob_names(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "blobs" / "sha256").iterdir())


def test_keep_deleted_then_restore_brings_the_blobs_and_the_tag_back(layout: Path) -> None:
    before, index = blob_names(layout), (layout / "index.json").read_bytes()
    done = run("delete", layout, "app:1", "--yes", "--keep-deleted", "1h")
    assert done.exit_code == 0, done.output
    assert "kept in quarantine" in done.stdout and f"`ocigraph restore {layout}`" in done.stdout
    assert len(blob_names(layout)) == len(before) - 2  # its manifest and layer (config shared)
    du = run("du", layout)
    assert du.exit_code == 0
    assert du.stdout.splitlines()[-1].startswith("quarantined: 2 blobs, ")
    assert "(`ocigraph restore" in du.stdout.splitlines()[-1]
    held = orjson.loads(run("du", layout, "--format", "json").stdout)["quarantined"]
    assert [q["blobs"] for q in held] == [2] and held[0]["keepUntil"] is not None
    shown = orjson.loads(run("show", layout, "--format", "json").stdout)
    assert shown["quarantined"] == held
    assert "quarantined: 2 blobs" in run("show", layout).stdout
    restored = run("restore", layout, "--format", "json")
    assert restored.exit_code == 0, restored.output
    doc = orjson.loads(restored.stdout)
    assert doc["ocigraphRestore"] == 1 and len(doc["blobs"]) == 2 and doc["entries"] == 1
    assert blob_names(layout) == before and (layout / "index.json").read_bytes() == index
    assert "quarantined" not in run("du", layout).stdout
    again = run("restore", layout)
    assert again.exit_code == 1 and again.stderr.count("\n") == 1
    assert again.stderr.startswith("ocigraph: error: refusing to restore")


def test_gc_purges_the_quarantines_whose_time_is_up(layout: Path) -> None:
    assert run("delete", layout, "app:0", "--yes", "--keep-deleted", "0.001").exit_code == 0
    assert orjson.loads(run("du", layout, "--format", "json").stdout)["quarantined"]
    result = run("gc", layout, "--yes")
    assert result.exit_code == 0 and "purged 2 quarantined blob(s)" in result.stdout
    assert orjson.loads(run("du", layout, "--format", "json").stdout)["quarantined"] == []
    assert run("restore", layout).exit_code == 1


def test_the_apply_report_says_what_relisted_quarantine_and_clock_mean() -> None:
    text = present.format_report_text({
        "layout": "L", "plan": {"indexChanges": []},
        "result": {"deleted": [], "bytesFreed": 0, "indexWritten": False,
                   "relisted": ["sha256:" + "1" * 64], "quarantine": "Q",
                   "clockWarning": "the file system's clock is 3600 s behind this machine's"}})
    lines = text.splitlines()
    assert len(lines) == 4
    assert "index.json was rewritten meanwhile" in lines[1] and "live again" in lines[1]
    assert "quarantine Q" in lines[2] and "`ocigraph restore L`" in lines[2]
    assert lines[3] == "warning: the file system's clock is 3600 s behind this machine's"


def test_keep_deleted_and_restore_are_refused_on_a_registry_before_any_request() -> None:
    nowhere = "docker://127.0.0.1:9/app"  # the discard port: nothing is ever asked there
    for args in (["delete", nowhere, "a", "--yes", "--keep-deleted", "1h"],
                 ["gc", nowhere, "--dry-run", "--keep-deleted", "1d"],
                 ["untag", nowhere, "a", "--keep-deleted", "1h"],
                 ["restore", nowhere]):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.count("\n") == 1 and "applies to layouts" in result.stderr, args
        assert "unreachable" not in result.stderr


# --- issue 14: an unreadable LAYOUT; Ctrl-C with apply's exact state ---------------------------


def _unprivileged() -> list[str] | None:
    """A command prefix running as nobody (when root), [] when not root, None if impossible."""
    if os.geteuid() != 0:
        return []
    import shutil

    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    return None


def test_an_unreadable_layout_folder_is_one_line_exit_1(tmp_path: Path) -> None:
    import subprocess
    import sys

    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv or runuser")
    b, _ = store_with(1)
    home = tmp_path / "home"
    home.mkdir()
    root = write_layout(home / "store", b.index_json(), b.blobs)
    for folder in (tmp_path, home):
        folder.chmod(0o755)  # traversable by the unprivileged user
    root.chmod(0)
    try:
        for command in (["show"], ["gc", "--dry-run"], ["delete", "--yes", "--dry-run"]):
            args = [*command[:1], str(root), *(["app:0"] if command[0] == "delete" else []),
                    *command[1:]]
            done = subprocess.run([*prefix, sys.executable, "-m", "io_adapters", *args],
                                  capture_output=True, text=True, timeout=60, check=False,
                                  cwd=Path(__file__).parent.parent,
                                  env={**os.environ, "OCIGRAPH_CACHE_DIR": str(tmp_path / "c")})
            assert done.returncode == 1, (command, done.stderr)
            assert done.stderr == f"ocigraph: error: {root}: cannot read (Permission denied)\n"
    finally:
        root.chmod(0o755)


def test_ctrl_c_during_apply_says_the_exact_state_it_carries(layout: Path, monkeypatch: Any) -> None:
    from ocigraph import ApplyInterrupted

    def interrupted(*args: object, **kwargs: object) -> None:
        raise ApplyInterrupted(True, 643, 2788)

    monkeypatch.setattr(targets, "apply_plan", interrupted)
    result = run("gc", layout, "--yes")
    assert result.exit_code == 130
    assert result.stderr == ("ocigraph: interrupted while applying: index.json already updated, "
                             "643 of 2,788 blobs deleted; the layout is valid; run the same "
                             "command again to finish\n")

    def before_anything(*args: object, **kwargs: object) -> None:
        raise ApplyInterrupted(False, 0, 2)

    monkeypatch.setattr(targets, "apply_plan", before_anything)
    result = run("gc", layout, "--yes")
    assert result.exit_code == 130 and result.stderr == "ocigraph: interrupted: nothing was changed\n"


# --- issue 15: an empty one-shot plan prints no report ------------------------------------------


def test_an_empty_one_shot_plan_says_nothing_to_do_and_prints_no_report(tmp_path: Path) -> None:
    b, _ = store_with(2)
    root = write_layout(tmp_path / "store", b.index_json(), b.blobs)
    result = run("gc", root, "--yes")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "nothing to do" and "deleted" not in result.stdout
    quiet = run("gc", root, "--yes", "-q")
    assert quiet.stdout.splitlines() == [
        "gc plan (policy default): 0 blob(s) to delete, 0 B freed, 0 index.json change(s)"]
