"""The ``ocigraph`` command line, through click's CliRunner and through real subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from casefile import Materialized, load_cases, materialize, write_layout
from click.testing import CliRunner, Result

import ocigraph as og
from io_adapters import cli as cli_module
from io_adapters import planner as planner_module
from io_adapters import progress, targets
from io_adapters.cli import cli
from io_adapters.layout import blob_path, lock_holder, read_layout
from ocigraph.present import parse_option_duration

CASES = load_cases()
STEP_OPS = ("delete", "gc", "untag", "remove")


# --- helpers ---------------------------------------------------------------------------------


def run(*args: str | Path, input: str | None = None, env: Mapping[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env)


def assert_one_line_error(result: Result, code: int = 1, *mentions: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr
    assert "Traceback" not in result.output
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocigraph: error: "), err
    for m in mentions:
        assert m in lines[0], (m, lines[0])
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    out: dict[str, tuple[bytes | None, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            out[str(p.relative_to(root))] = (data, p.lstat().st_mtime_ns)
    return out


def present(root: Path) -> set[str]:
    return set(read_layout(root).layout.blobs)


def index_state(root: Path) -> list[tuple[str, str | None]]:
    return [(e.digest, e.tag) for e in read_layout(root).layout.index.entries]


def case_layout(tmp_path: Path, name: str) -> tuple[Path, Materialized]:
    case = next(c for c in CASES if c["name"] == name)
    m = materialize(case)
    return write_layout(m, tmp_path / name), m


@pytest.fixture
def worked(tmp_path: Path) -> tuple[Path, Materialized]:
    """SEMANTICS §7: index A (tag latest) -> {B, C}; G is a referrer of C."""
    return case_layout(tmp_path, "semantics_worked_example")


@pytest.fixture
def gc_case(tmp_path: Path) -> tuple[Path, Materialized]:
    """oras-go's GC scenario: one tagged image, its referrer, and much garbage."""
    return case_layout(tmp_path, "oras_gc")


# --- every case, end to end through the CLI --------------------------------------------------


def cli_policy_args(spec: str | Mapping[str, Any], op: str) -> list[str] | None:
    """The CLI options for a case's policy, or None if the CLI cannot say it."""
    if isinstance(spec, str):
        return ["--policy", spec]
    fields = dict(spec)
    preset = fields.pop("preset", "default")
    args = ["--policy", preset]
    base = og.Policy.preset(preset)
    for name, value in fields.items():
        if getattr(base, name) == value:
            continue
        if name == "keep_untagged" and value:
            args.append("--keep-untagged")
        elif name == "cascade_referrers" and not value:
            args.append("--keep-referrers")
        elif name == "force" and value and op in ("delete", "remove"):
            args.append("--force")
        elif name == "grace":
            args += ["--grace", str(value)]
        else:
            return None  # e.g. guard=False on a guarded preset: only the oras preset says that
    return args


def step_args(m: Materialized, root: Path, step: Mapping[str, Any]) -> list[str] | None:
    op = step["op"]
    if op == "untag":
        return ["untag", str(root), *(m.ref(r, bare_is_tag=True) for r in step["refs"])]
    policy = cli_policy_args(step.get("policy", "default"), op)
    if policy is None:
        return None
    refs = [m.ref(t) for t in step.get("targets", step.get("refs", []))]
    return [op, str(root), *refs, *policy]


def run_case_step(m: Materialized, root: Path, step: Mapping[str, Any], where: str) -> bool:
    """Run one step through the CLI and check it; False if the CLI cannot express it."""
    args = step_args(m, root, step)
    if args is None:
        return False
    expect = step["expect"]
    before_files = snapshot(root)
    before = present(root)
    if "error" in expect:
        result = run(*args, "--yes" if step["op"] != "untag" else "--format=text")
        line = assert_one_line_error(result, 1)
        for item in expect.get("mentions", []):
            assert m.mention(item) in line, f"{where}: error does not mention {item}: {line}"
        assert snapshot(root) == before_files, f"{where}: a refused step changed the layout"
        return True
    dry = step.get("apply", True) is False
    extra = ["--dry-run"] if dry else ([] if step["op"] == "untag" else ["--yes"])
    result = run(*args, *extra, "--format", "json")
    assert result.exit_code == 0, f"{where}: exit {result.exit_code}: {result.output}"
    doc = orjson.loads(result.stdout)
    plan = og.Plan.from_dict(doc if dry else doc["plan"])
    got = {d.digest for d in plan.deletions if d.present or step.get("include_absent", False)}
    want = m.digests(expect["deleted"])
    assert got == want, f"{where}: plan deletes {m.names(got)}, want {m.names(want)}"
    if dry:
        assert snapshot(root) == before_files, f"{where}: --dry-run changed the layout"
        return True
    assert doc["result"]["deleted"] == [d.digest for d in plan.deletions if d.present
                                        and d.digest in before]
    gone = {d.digest for d in plan.deletions}
    assert present(root) == before - gone, f"{where}: the disk lost other blobs than planned"
    if "index" in expect:
        want_index = [(m.digest(e["ref"]), e.get("tag")) for e in expect["index"]]
        assert index_state(root) == want_index, f"{where}: index.json differs"
    return True


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case_end_to_end_through_the_cli(tmp_path: Path, case: dict[str, Any]) -> None:
    """Each case's delete/gc/untag/remove steps, with the case's policy as CLI options
    (``--policy oras`` for the oras-go scenarios), end with exactly the expected blobs on disk
    and the expected index.json entries."""
    m = materialize(case)
    root = write_layout(m, tmp_path / "layout")
    stray_before = {rel: snapshot(root).get(rel) for rel in m.stray}
    complete = True
    for i, step in enumerate(case["steps"]):
        if step["op"] not in STEP_OPS:
            continue
        where = f"{case['name']} step {i} ({step['op']})"
        ran = run_case_step(m, root, step, where)
        if not ran and step.get("apply", True) is not False and "error" not in step["expect"]:
            complete = False  # the layout now differs from what later steps expect
            break
    final = case.get("final")
    if not complete or final is None:
        pytest.skip("a step uses a policy the CLI cannot express")
    if "present" in final:
        got, want = present(root), m.digests(final["present"])
        assert got == want, f"final blobs {m.names(got)}, want {m.names(want)}"
    if "index" in final:
        assert index_state(root) == [(m.digest(e["ref"]), e.get("tag")) for e in final["index"]]
    after = snapshot(root)
    for rel, state in stray_before.items():
        assert after.get(rel) == state, f"stray {rel} was touched"


def test_oras_scenarios_are_among_the_end_to_end_cases() -> None:
    """The oras-go scenarios with oras-policy steps really run with --policy oras."""
    oras_steps = [(c["name"], s) for c in CASES for s in c["steps"]
                  if s["op"] in STEP_OPS and s.get("policy") == "oras"]
    assert len(oras_steps) >= 5
    for _, s in oras_steps:
        assert "--policy" in (cli_policy_args("oras", s["op"]) or [])


# --- exit codes, errors, confirmation ------------------------------------------------------


def test_help_and_version() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("show", "plan", "apply", "delete", "gc", "remove", "untag", "fsck", "du"):
        assert command in result.stdout
    assert run("--version").stdout.strip().endswith(og.__version__)
    assert "delete" in run("plan", "--help").stdout


@pytest.mark.parametrize("args", [
    ["delete"],
    ["delete", "LAYOUT"],
    ["gc", "LAYOUT", "--policy", "nope"],
    ["show", "LAYOUT", "--format", "yaml"],
    ["gc", "LAYOUT", "--grace", "soon"],
    ["no-such-command"],
])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert run(*args).exit_code == 2


def test_guard_refusal_is_one_line_exit_1_and_changes_nothing(worked: Any) -> None:
    root, m = worked
    before = snapshot(root)
    result = run("delete", root, m.digest("C"), "--yes")
    assert_one_line_error(result, 1, m.digest("C"), m.digest("A"))
    assert snapshot(root) == before


def test_unknown_tag_and_bad_digest_are_one_line_errors(worked: Any) -> None:
    root, _ = worked
    assert_one_line_error(run("delete", root, "nope", "--yes"), 1, "nope")
    assert_one_line_error(run("plan", "delete", root, "sha256:zz"), 1, "sha256:zz")


def test_a_broken_layout_is_a_one_line_error(tmp_path: Path, worked: Any) -> None:
    root, _ = worked
    (root / "index.json").write_bytes(b"{not json")
    assert_one_line_error(run("show", root), 1, "index.json")
    assert_one_line_error(run("gc", tmp_path / "nowhere", "--yes"), 1, "nowhere",
                          "no such directory", "oci-layout, index.json and blobs/")
    assert_one_line_error(run("plan", "gc", tmp_path / "nowhere"), 1, "nowhere", "no such directory")


def test_an_unreadable_plan_file_is_a_one_line_error(tmp_path: Path, worked: Any) -> None:
    root, _ = worked
    assert_one_line_error(run("apply", root, tmp_path / "missing.json"), 1, "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"ocigraphPlan": 99}')
    assert_one_line_error(run("apply", root, bad), 1, "not a valid ocigraph plan")


def test_an_unexpected_exception_is_one_line_unless_debugging(
        worked: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = worked

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(targets, "plan_layout", explode)
    line = assert_one_line_error(run("plan", "gc", root), 1, "internal error", "kaboom")
    assert "second line" in line  # folded onto the one line
    result = run("plan", "gc", root, env={"OCIGRAPH_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)


def test_an_os_error_is_one_line(worked: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = worked

    def denied(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(root / "index.json"))

    monkeypatch.setattr(targets, "read_layout", denied)
    assert_one_line_error(run("show", root), 1, "index.json", "Permission denied")


@pytest.mark.parametrize("command", [["gc"], ["delete", "latest"], ["remove", "latest"]])
def test_destructive_commands_refuse_without_yes_when_stdin_is_not_a_terminal(
        worked: Any, command: list[str]) -> None:
    root, _ = worked
    before = snapshot(root)
    result = run(command[0], root, *command[1:])
    assert_one_line_error(result, 2, "--yes")
    assert snapshot(root) == before


def test_on_a_terminal_a_no_changes_nothing_and_a_yes_applies(
        gc_case: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, m = gc_case
    monkeypatch.setattr(cli_module, "is_terminal", lambda stream: True)
    before = snapshot(root)
    result = run("gc", root, input="n\n")
    assert result.exit_code == 1
    assert "Delete 15 blob(s)" in result.stderr
    assert snapshot(root) == before
    result = run("gc", root, input="y\n")
    assert result.exit_code == 0, result.output
    assert present(root) == m.digests(["b0", "b1", "b3", "b4"])
    assert "deleted 15 blob(s)" in result.stdout


def test_dry_run_prints_the_plan_touches_nothing_and_exits_0(gc_case: Any) -> None:
    root, _ = gc_case
    before = snapshot(root)
    result = run("gc", root, "--dry-run")
    assert result.exit_code == 0
    assert "dry run" in result.stdout and "unreachable" in result.stdout
    assert "freed" in result.stdout
    result = run("gc", root, "--dry-run", "--format", "json")
    assert result.exit_code == 0
    plan = og.Plan.from_json(result.stdout)
    assert len(plan.deletions) == 15
    assert run("delete", root, "latest", "--dry-run").exit_code == 0
    assert snapshot(root) == before


def test_text_plan_says_what_goes_why_and_how_much(worked: Any) -> None:
    root, m = worked
    result = run("plan", "delete", root, m.digest("C"), "--policy", "oras")
    assert result.exit_code == 0
    out = result.stdout
    plan = og.plan_delete(og.build_graph(read_layout(root).layout), [m.digest("C")],
                          og.Policy.preset("oras"))
    assert og.format_bytes(plan.bytes_freed) in out
    for d in plan.deletions:
        assert d.digest[:19] in out
    assert "referrer-of" in out and "orphaned-by" in out and "target" in out


def test_short_digests_from_the_text_output_are_accepted(worked: Any) -> None:
    root, m = worked
    short = m.digest("C")[:19]
    result = run("plan", "delete", root, short, "--policy", "oras", "--format", "json")
    assert result.exit_code == 0, result.output
    assert og.Plan.from_json(result.stdout).targets == (m.digest("C"),)
    assert_one_line_error(run("plan", "delete", root, "sha256:"), 1)


def test_plan_to_a_file_then_apply(tmp_path: Path, worked: Any) -> None:
    root, m = worked
    plan_file = tmp_path / "plan.json"
    before = snapshot(root)
    result = run("plan", "delete", root, m.digest("C"), "--policy", "oras", "-o", plan_file)
    assert result.exit_code == 0, result.output
    assert snapshot(root) == before
    plan = og.Plan.from_json(plan_file.read_bytes())
    assert plan.deleted_digests() == m.digests(["C", "F", "G", "H"])
    result = run("apply", root, plan_file, "--format", "json")
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.stdout)
    assert doc["ocigraphReport"] == 1
    assert og.Plan.from_dict(doc["plan"]) == plan
    assert set(doc["result"]["deleted"]) == m.digests(["C", "F", "G", "H"])
    assert present(root).isdisjoint(plan.deleted_digests())


def test_apply_reads_a_plan_from_stdin(gc_case: Any) -> None:
    root, m = gc_case
    plan_json = run("plan", "gc", root, "--format", "json").stdout
    result = run("apply", root, "-", input=plan_json)
    assert result.exit_code == 0, result.output
    assert present(root) == m.digests(["b0", "b1", "b3", "b4"])


def test_a_stale_plan_is_refused_with_exit_1(tmp_path: Path, gc_case: Any) -> None:
    root, _ = gc_case
    plan_file = tmp_path / "plan.json"
    assert run("plan", "gc", root, "-o", plan_file).exit_code == 0
    assert run("untag", root, "latest").exit_code == 0  # index.json changes
    before = snapshot(root)
    assert_one_line_error(run("apply", root, plan_file), 1, "stale plan")
    assert snapshot(root) == before


def test_untag_deletes_nothing_and_needs_no_yes(worked: Any) -> None:
    root, m = worked
    before = present(root)
    result = run("untag", root, "latest")
    assert result.exit_code == 0, result.output
    assert present(root) == before
    assert index_state(root) == [(m.digest("A"), None)]
    assert_one_line_error(run("untag", root, "latest"), 1, "latest")


def test_keep_referrers_and_force_reach_the_policy(worked: Any) -> None:
    root, m = worked
    result = run("plan", "delete", root, m.digest("C"), "--force", "--keep-referrers",
                 "--keep-untagged", "--grace", "1h", "--format", "json")
    assert result.exit_code == 0, result.output
    policy = og.Plan.from_json(result.stdout).policy
    assert (policy.force, policy.cascade_referrers, policy.keep_untagged, policy.grace) == (
        True, False, True, 3600.0)
    assert m.digest("G") not in og.Plan.from_json(result.stdout).deleted_digests()


def test_grace_keeps_young_blobs(gc_case: Any) -> None:
    root, _ = gc_case
    result = run("gc", root, "--grace", "10m", "--dry-run", "--format", "json")
    assert result.exit_code == 0
    assert og.Plan.from_json(result.stdout).deletions == ()


# --- locking ---------------------------------------------------------------------------------


HOLD_LOCK = """
import sys
from io_adapters.layout import LayoutLock
LayoutLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_locked_layout_is_refused_naming_the_pid(gc_case: Any) -> None:
    root, _ = gc_case
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        before = snapshot(root)
        result = run("gc", root, "--yes", "--lock-timeout", "0.2")
        assert_one_line_error(result, 1, f"pid {child.pid}")
        assert snapshot(root) == before
        assert run("plan", "gc", root).exit_code == 0  # planning takes no lock
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


@pytest.mark.parametrize("command", [["gc", "--yes"], ["delete", "latest", "--yes"],
                                     ["remove", "latest", "--yes"], ["untag", "latest"]])
def test_one_shot_commands_read_the_layout_under_the_lock(
        gc_case: Any, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    root, _ = gc_case
    seen: list[int | None] = []
    real = planner_module.read_layout

    def spying_read_layout(path: Any, **kw: Any) -> Any:
        seen.append(lock_holder(Path(getattr(path, "path", path))))
        return real(path, **kw)

    monkeypatch.setattr(planner_module, "read_layout", spying_read_layout)
    result = run(command[0], root, *command[1:])
    assert result.exit_code == 0, result.output
    assert seen == [os.getpid()]


# --- other commands and formats --------------------------------------------------------------


def test_show_in_every_format(worked: Any) -> None:
    root, m = worked
    text = run("show", root)
    assert text.exit_code == 0
    assert "latest" in text.stdout and m.digest("A")[:19] in text.stdout
    doc = orjson.loads(run("show", root, "--format", "json").stdout)
    assert doc["ocigraphShow"] == 1
    assert {n["digest"] for n in doc["nodes"]} >= set(m.blobs)
    assert {(e["from"], e["to"]) for e in doc["edges"]} >= {(m.digest("G"), m.digest("C"))}
    assert run("show", root, "--format", "mermaid").stdout.startswith("flowchart")
    assert "digraph" in run("show", root, "--format", "dot").stdout


def test_junk_is_a_warning_line_in_text_mode_only(tmp_path: Path) -> None:
    root, _ = case_layout(tmp_path, "oras_gc_error_path")
    result = run("plan", "gc", root)
    assert result.exit_code == 0
    warnings = [w for w in result.stderr.splitlines() if w.startswith("ocigraph: warning:")]
    assert len(warnings) == 1 and "4 items under blobs/" in warnings[0]
    result = run("plan", "gc", root, "--format", "json")
    assert result.stderr == ""
    og.Plan.from_json(result.stdout)


def test_fsck_exit_codes_and_json(worked: Any) -> None:
    root, m = worked
    ok = run("fsck", root)
    assert ok.exit_code == 0 and "no problems" in ok.stdout
    blob_path(root, m.digest("E")).write_bytes(b"bit rot, longer")
    bad = run("fsck", root, "--format", "json")
    assert bad.exit_code == 1
    doc = orjson.loads(bad.stdout)
    assert doc["ok"] is False
    assert {p["kind"] for p in doc["problems"]} == {"digest-mismatch", "size-mismatch"}


def test_du_in_text_and_json(worked: Any) -> None:
    root, _ = worked
    text = run("du", root)
    assert text.exit_code == 0 and "latest" in text.stdout
    doc = orjson.loads(run("du", root, "--format", "json").stdout)
    assert [t["tag"] for t in doc["tags"]] == ["latest"]


def test_report_json_for_gc(gc_case: Any) -> None:
    root, _ = gc_case
    result = run("gc", root, "--yes", "--format", "json")
    assert result.exit_code == 0
    doc = orjson.loads(result.stdout)
    assert set(doc) == {"ocigraphReport", "layout", "plan", "result"}
    assert doc["result"]["bytesFreed"] == doc["plan"]["bytesFreed"]
    again = orjson.loads(run("gc", root, "--yes", "--format", "json").stdout)
    assert again["plan"]["deletions"] == [] and again["result"]["deleted"] == []


def test_progress_bars_go_to_stderr_on_a_terminal_only(
        gc_case: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = gc_case
    quiet = run("gc", root, "--yes", "--format", "json", "--dry-run")
    assert "reading manifests" not in quiet.stderr
    monkeypatch.setattr(progress, "is_terminal", lambda stream: True)
    result = run("gc", root, "--yes", "--format", "json")
    assert result.exit_code == 0, result.output
    assert "reading manifests" in result.stderr and "deleting" in result.stderr
    orjson.loads(result.stdout)  # stdout stays clean JSON


def test_parse_duration() -> None:
    assert [parse_option_duration(s) for s in ("30s", "10m", "1h", "2d", "45", "1.5h")] == [
        30, 600, 3600, 172800, 45, 5400]
    with pytest.raises(ValueError):
        parse_option_duration("-1h")


# --- real subprocesses -----------------------------------------------------------------------


def _entry_points() -> list[list[str]]:
    out = [[sys.executable, "-m", "io_adapters"]]
    script = shutil.which("ocigraph")
    if script is not None:
        out.append([script])
    return out


def sub(cmd: Sequence[str], *args: str | Path, stdin: Any = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *(str(a) for a in args)], stdin=stdin, capture_output=True,
                          text=True, timeout=60, env=None if env is None else {**os.environ, **env})


@pytest.mark.parametrize("cmd", _entry_points(), ids=lambda c: Path(c[-1]).name)
def test_subprocess_gc_end_to_end(gc_case: Any, cmd: list[str]) -> None:
    root, m = gc_case
    assert sub(cmd, "--help").returncode == 0
    refused = sub(cmd, "gc", root)
    assert refused.returncode == 2
    assert refused.stderr.startswith("ocigraph: error:") and "--yes" in refused.stderr
    assert len(present(root)) == 19
    done = sub(cmd, "gc", root, "--yes", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["result"]["deleted"]
    assert present(root) == m.digests(["b0", "b1", "b3", "b4"])
    assert sub(cmd, "fsck", root).returncode == 0


def test_subprocess_errors_have_no_traceback(tmp_path: Path, worked: Any) -> None:
    root, m = worked
    cmd = _entry_points()[0]
    for args, code in [
        (("delete", root, m.digest("C"), "--yes"), 1),  # guard
        (("show", tmp_path / "nowhere"), 1),
        (("apply", root, tmp_path / "nowhere.json"), 1),
        (("delete", root), 2),
    ]:
        p = sub(cmd, *args)
        assert p.returncode == code, (args, p.stderr)
        assert "Traceback" not in p.stderr
        if code == 1:
            assert len(p.stderr.strip().splitlines()) == 1
            assert p.stderr.startswith("ocigraph: error: ")


def test_subprocess_debug_env_shows_the_traceback(tmp_path: Path) -> None:
    p = sub(_entry_points()[0], "show", tmp_path / "nowhere", env={"OCIGRAPH_DEBUG": "1"})
    assert p.returncode == 1 and "Traceback" in p.stderr


def test_subprocess_closed_pipe_is_quiet(gc_case: Any) -> None:
    root, _ = gc_case
    cmd = _entry_points()[0]
    p = subprocess.run(f"{' '.join(cmd)} show {root} --format json | head -c 10", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" not in p.stderr and "Exception" not in p.stderr



@pytest.mark.parametrize("redirect, code, error", [
    (">&-", 0, None),                      # stdout closed: --version has nowhere to go, no harm
    ("> /dev/full", 1, "cannot write the output"),   # output lost: a failure, said in one line
    ("2>&- > /dev/null", 0, None),         # stderr closed
])
def test_subprocess_exit_status_survives_closed_or_full_streams(redirect: str, code: int,
                                                                error: str | None) -> None:
    cmd = " ".join(_entry_points()[0])
    p = subprocess.run(f"{cmd} --version {redirect}", shell=True, capture_output=False,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == code, p.stderr
    assert "Traceback" not in (p.stderr or "")
    if error is not None:
        assert p.stderr.startswith("ocigraph: error:") and error in p.stderr


def test_subprocess_usage_error_keeps_its_status_with_stderr_closed(tmp_path: Path) -> None:
    cmd = " ".join(_entry_points()[0])
    p = subprocess.run(f"{cmd} gc 2>&-", shell=True, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2


def test_main_returns_to_its_caller() -> None:
    """``main`` is the library entry point: it raises SystemExit like any click program and
    leaves the process alone (only the ``ocigraph`` script leaves with os._exit)."""
    with pytest.raises(SystemExit) as exc:
        cli_module.main(["--version"])
    assert exc.value.code == 0
