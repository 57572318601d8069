"""The registry through the command line: ``ocigraph COMMAND docker://HOST:PORT/REPO ...``.

End to end: Debian's docker-registry (distribution 2.8, no Referrers API: referrers travel in
``sha256-<hex>`` fallback tag indexes) runs on 127.0.0.1, content is pushed to it with plain HTTP
(tests/registry_server.py), and the commands run through click's CliRunner on
``io_adapters.cli.cli`` -- once as ``python -m io_adapters`` in a process of its own.  What a
command did is checked by asking the registry itself (tags, manifests, fallback listings), never
by trusting the command's own report.  Skipped when docker-registry is not installed; no test
sends anything anywhere but to the 127.0.0.1 servers it starts.


"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from builder import two_images_and_a_signature, write_layout
from click.testing import CliRunner, Result
from registry_server import (
    HAVE_REGISTRY,
    OCI_MANIFEST,
    Pusher,
    Registry,
    bcrypt_htpasswd,
    digest_of,
    free_port,
    start_registry,
)

import ocigraph as og
from io_adapters import cli as cli_module
from io_adapters.cli import cli

SIG, SBOM = "application/vnd.example.signature", "application/vnd.example.sbom"
NOT_INSTALLED = "docker-registry is not installed (apt-get install docker-registry)"
PROJECT = Path(__file__).resolve().parent.parent

# -- fixtures and helpers ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry for the module (deletes enabled); each test has a repository of its own."""
    if not HAVE_REGISTRY:
        pytest.skip(NOT_INSTALLED)
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    return "cli/" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")


@pytest.fixture
def push(registry: Registry) -> Pusher:
    return Pusher(registry.host)


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[Any]:
    """Start a registry of the test's own (``own_registry(delete=False)``, ...); stopped after."""
    if not HAVE_REGISTRY:
        pytest.skip(NOT_INSTALLED)
    started: list[Registry] = []

    def start(**options: Any) -> Registry:
        root = tmp_path / f"registry{len(started)}"
        root.mkdir()
        started.append(start_registry(root, **options))
        return started[-1]

    yield start
    for reg in started:
        reg.stop()


#: no credentials reach a test from the environment of whoever runs it
NO_CREDENTIALS = {"REGISTRY_AUTH_FILE": None, "XDG_RUNTIME_DIR": None, "OCIGRAPH_DEBUG": None}


def ocigraph(*args: str | Path, env: Mapping[str, str | None] | None = None,
             input: str | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input,
                              env={**NO_CREDENTIALS, **(env or {})})


def url(reg: Registry, repo: str, suffix: str = "") -> str:
    return f"docker://{reg.host}/{repo}{suffix}"


def target(reg: Registry, repo: str, tag: str, form: str) -> list[str]:
    """The command's LAYOUT and REF: ``docker://H/R:TAG``, or ``docker://H/R TAG``."""
    return [url(reg, repo, f":{tag}")] if form == "reference" else [url(reg, repo), tag]


#: a tag named in the reference (documented: LAYOUT is docker://HOST[:PORT]/REPO[:TAG|@DIGEST])
#: and the same tag given as a REF argument
FORMS = ["reference", "argument"]


def state(push: Pusher, repo: str, digests: Sequence[str] = ()) -> tuple[dict[str, str | None],
                                                                        dict[str, bool]]:
    """What the registry holds, as the registry says: every tag (fallback tags included) and
    the digest it names, and which of ``digests`` are still there."""
    return ({t: push.resolve(repo, t) for t in push.tags(repo)},
            {d: push.exists(repo, d) for d in digests})


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr,
                                   result.exception)


def assert_one_line_error(result: Result, pattern: str) -> str:
    """Exit 1, no traceback, and exactly one line on stderr: ``ocigraph: error: `` then text
    matching ``pattern`` (a regular expression, searched)."""
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped error
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ocigraph: error: "), lines[0]
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def report_of(result: Result) -> dict[str, Any]:
    assert_ok(result)
    doc = json.loads(result.stdout)
    assert doc["ocigraphRegistryReport"] == 1
    return doc  # type: ignore[no-any-return]


# -- show and plan: reading only ---------------------------------------------------------------

def test_show_lists_the_tags_of_the_repository(registry: Registry, repo: str,
                                               push: Pusher) -> None:
    app = push.image(repo, "v1", "app")
    push.retag(repo, "v1", "latest")
    other = push.image(repo, "v2", "other")
    sig = push.referrer(repo, app, SIG, "app")
    result = ocigraph("show", url(registry, repo), "--tls-verify=false")
    assert_ok(result)
    assert "tags: latest, v1" in result.stdout and "tags: v2" in result.stdout
    assert og.short_digest(sig["digest"]) in result.stdout  # the signature, under its image
    assert "sha256-" not in result.stdout  # fallback tags are bookkeeping, not tags
    assert "not live under policy default: 0 blob(s)" in result.stdout

    doc = json.loads(ocigraph("show", url(registry, repo), "--tls-verify=false",
                              "--format", "json").stdout)
    assert [(e["tag"], e["digest"]) for e in doc["entries"]] == [
        ("latest", app["digest"]), ("v1", app["digest"]), ("v2", other["digest"]),
        (None, sig["digest"])]
    assert all(n["live"] for n in doc["nodes"])


def test_plan_gc_json_is_a_plan_for_the_repository_and_changes_nothing(
        registry: Registry, repo: str, push: Pusher) -> None:
    old = push.image(repo, "app", "old")
    sig_old = push.referrer(repo, old, SIG, "old")  # the fallback tag makes old known, untagged
    new = push.image(repo, "app", "new")
    before = state(push, repo, [old["digest"], sig_old["digest"], new["digest"]])
    for layout in (url(registry, repo), url(registry, repo, ":app")):  # a tag names no less
        result = ocigraph("plan", "gc", layout, "--tls-verify=false", "--format", "json")
        assert_ok(result)
        plan = og.Plan.from_json(result.stdout.encode())
        assert plan.origin == f"docker://{registry.host}/{repo}"
        assert plan.operation == "gc" and plan.targets == ()
        assert {d.digest for d in plan.deletions if og.is_manifest_type(d.media_types[0])} == {
            old["digest"], sig_old["digest"]}
        assert new["digest"] not in plan.deleted_digests()
    assert state(push, repo, [old["digest"], sig_old["digest"], new["digest"]]) == before


# -- one-shot commands -------------------------------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
def test_delete_takes_the_image_its_referrers_and_fallback_tag_and_leaves_another(
        registry: Registry, repo: str, push: Pusher, form: str) -> None:
    one = push.image(repo, "one", "one")
    two = push.image(repo, "two", "two")
    sig1 = push.referrer(repo, one, SIG, "one")
    sbom1 = push.referrer(repo, one, SBOM, "one")
    sig2 = push.referrer(repo, two, SIG, "two")
    result = ocigraph("delete", *target(registry, repo, "one", form), "--tls-verify=false",
                      "--yes", "--format", "json")
    report = report_of(result)
    gone = [one["digest"], sig1["digest"], sbom1["digest"]]
    assert sorted(report["deleted"]) == sorted(gone) and report["skipped"] == []
    assert report["deleted"][-1] == one["digest"]  # referrers before their subject
    assert report["bytesUnreferenced"] > 0 and "garbage-collect" in report["gcHint"]
    assert state(push, repo, [*gone, two["digest"], sig2["digest"]]) == (
        {"two": two["digest"], push.fallback_tag(two["digest"]): push.resolve(
            repo, push.fallback_tag(two["digest"]))},
        {**dict.fromkeys(gone, False), two["digest"]: True, sig2["digest"]: True})
    assert push.fallback_listing(repo, one["digest"]) is None  # its fallback tag is gone
    assert push.fallback_listing(repo, two["digest"]) == [sig2["digest"]]


@pytest.mark.parametrize("form", FORMS)
def test_remove_of_one_of_two_tags_on_one_digest_only_untags(
        registry: Registry, repo: str, push: Pusher, form: str) -> None:
    image = push.image(repo, "a", "shared")
    push.retag(repo, "a", "b")
    sig = push.referrer(repo, image, SIG, "shared")
    result = ocigraph("remove", *target(registry, repo, "a", form), "--tls-verify=false", "--yes")
    assert_ok(result)
    assert "deleted 0 manifest(s), untagged 1" in result.stdout
    assert push.tags(repo) == sorted(["b", push.fallback_tag(image["digest"])])
    assert push.resolve(repo, "b") == image["digest"]
    assert push.exists(repo, image["digest"]) and push.exists(repo, sig["digest"])
    assert push.fallback_listing(repo, image["digest"]) == [sig["digest"]]


def test_remove_of_the_last_tag_deletes_the_image_with_its_signature(
        registry: Registry, repo: str, push: Pusher) -> None:
    image = push.image(repo, "a", "shared")
    push.retag(repo, "a", "b")
    sig = push.referrer(repo, image, SIG, "shared")
    assert_ok(ocigraph("remove", url(registry, repo), "a", "--tls-verify=false", "--yes"))
    report = report_of(ocigraph("remove", url(registry, repo), "b", "--tls-verify=false",
                                "--yes", "--format", "json"))
    assert report["deleted"] == [sig["digest"], image["digest"]]
    assert push.tags(repo) == [] and not push.exists(repo, image["digest"])


def test_gc_deletes_untagged_manifests_and_keeps_referrers_of_live_images(
        registry: Registry, repo: str, push: Pusher) -> None:
    old = push.image(repo, "app", "old")
    sig_old = push.referrer(repo, old, SIG, "old")
    new = push.image(repo, "app", "new")  # the tag moves: old is untagged now
    sig_new = push.referrer(repo, new, SIG, "new")
    sbom_new = push.referrer(repo, new, SBOM, "new")
    never_pushed = {"mediaType": OCI_MANIFEST, "digest": digest_of(b"never pushed"), "size": 12}
    dangling = push.referrer(repo, never_pushed, SIG, "nothing")
    report = report_of(ocigraph("gc", url(registry, repo), "--tls-verify=false", "--yes",
                                "--format", "json"))
    doomed = {old["digest"], sig_old["digest"], dangling["digest"]}
    assert set(report["deleted"]) == doomed and report["skipped"] == []
    kept = [new["digest"], sig_new["digest"], sbom_new["digest"]]
    assert state(push, repo, [*doomed, *kept])[1] == {
        **dict.fromkeys(doomed, False), **dict.fromkeys(kept, True)}
    assert push.tags(repo) == sorted(["app", push.fallback_tag(new["digest"])])
    assert push.resolve(repo, "app") == new["digest"]
    assert sorted(push.fallback_listing(repo, new["digest"]) or []) == sorted(kept[1:])
    # and then there is nothing left to collect
    again = ocigraph("plan", "gc", url(registry, repo), "--tls-verify=false", "--format", "json")
    assert_ok(again)
    assert og.Plan.from_json(again.stdout.encode()).is_empty


def test_untag_removes_the_tag_and_deletes_nothing(registry: Registry, repo: str,
                                                   push: Pusher) -> None:
    image = push.image(repo, "a", "shared")
    push.retag(repo, "a", "b")
    sig = push.referrer(repo, image, SIG, "shared")
    result = ocigraph("untag", url(registry, repo), "a", "--tls-verify=false", "--format", "json")
    report = report_of(result)
    assert (report["untagged"], report["deleted"]) == (["a"], [])
    assert push.tags(repo) == sorted(["b", push.fallback_tag(image["digest"])])
    assert push.exists(repo, image["digest"]) and push.exists(repo, sig["digest"])


def test_declining_the_question_changes_nothing(registry: Registry, repo: str, push: Pusher,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    image = push.image(repo, "a", "a")
    sig = push.referrer(repo, image, SIG, "a")
    before = state(push, repo, [image["digest"], sig["digest"]])
    monkeypatch.setattr(cli_module, "is_terminal", lambda stream: True)
    result = ocigraph("delete", url(registry, repo), "a", "--tls-verify=false", input="n\n")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Delete " in result.stderr and "nothing was changed" in result.stdout
    assert state(push, repo, [image["digest"], sig["digest"]]) == before
    # without --yes and without a terminal: exit 2, asked nothing, changed nothing
    monkeypatch.setattr(cli_module, "is_terminal", lambda stream: False)
    result = ocigraph("delete", url(registry, repo), "a", "--tls-verify=false")
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert state(push, repo, [image["digest"], sig["digest"]]) == before


def test_dry_runs_change_nothing(registry: Registry, repo: str, push: Pusher) -> None:
    a = push.image(repo, "a", "a")
    push.retag(repo, "a", "b")
    sig_a = push.referrer(repo, a, SIG, "a")
    old = push.image(repo, "c", "old")
    sig_old = push.referrer(repo, old, SIG, "old")
    new = push.image(repo, "c", "new")  # old: untagged garbage a gc would take
    digests = [a["digest"], sig_a["digest"], old["digest"], sig_old["digest"], new["digest"]]
    before = state(push, repo, digests)
    assert len(before[0]) == 5 and all(before[1].values())
    repository = url(registry, repo)
    for command in (["delete", repository, "c"], ["delete", repository, "a", "b"],
                    ["remove", repository, "a"], ["remove", repository, "c"],
                    ["gc", repository], ["untag", repository, "a"]):
        result = ocigraph(*command, "--tls-verify=false", "--dry-run")
        assert_ok(result)
        assert f"{command[0]} plan" in result.stdout, command
        assert "nothing to do" not in result.stdout, command  # a plan that would change things
        assert "deleted" not in result.stdout, command  # no apply report
        assert result.stdout.rstrip().endswith("dry run: nothing was changed"), command
        assert state(push, repo, digests) == before, command
    # the plan a dry run prints is the one the command would apply, made for this repository
    result = ocigraph("delete", repository, "c", "--tls-verify=false", "--dry-run",
                      "--format", "json")
    assert_ok(result)
    plan = og.Plan.from_json(result.stdout.encode())
    assert plan.origin == repository and new["digest"] in plan.deleted_digests()
    assert state(push, repo, digests) == before


# -- plan, then apply --------------------------------------------------------------------------

def test_a_saved_plan_applies_to_its_repository_and_no_other(
        registry: Registry, repo: str, push: Pusher, tmp_path: Path) -> None:
    keep = push.image(repo, "keep", "keep")
    gone = push.image(repo, "gone", "gone")
    sig = push.referrer(repo, gone, SIG, "gone")
    other = f"{repo}-other"  # the same image in another repository
    assert push.image(other, "gone", "gone") == gone
    plan_file = tmp_path / "plan.json"
    repository = url(registry, repo)
    mine = [keep["digest"], gone["digest"], sig["digest"]]
    before = state(push, repo, mine)
    result = ocigraph("plan", "delete", repository, "gone", "--tls-verify=false", "-o", plan_file)
    assert_ok(result)
    assert state(push, repo, mine) == before  # planning changes nothing
    plan = og.Plan.from_json(plan_file.read_bytes())
    assert plan.origin == repository and plan.targets == (gone["digest"],)
    assert {gone["digest"], sig["digest"]} <= plan.deleted_digests()

    # refused on another repository of the same registry, before anything changes there
    other_before = state(push, other, [gone["digest"]])
    refused = ocigraph("apply", url(registry, other), plan_file, "--tls-verify=false")
    assert_one_line_error(refused, re.escape(
        f"the plan was made for {repository}, not {url(registry, other)}"))
    assert state(push, other, [gone["digest"]]) == other_before
    assert state(push, repo, mine) == before

    report = report_of(ocigraph("apply", repository, plan_file, "--tls-verify=false",
                                "--format", "json"))
    assert report["deleted"] == [sig["digest"], gone["digest"]] and report["skipped"] == []
    assert push.tags(repo) == ["keep"] and push.exists(repo, keep["digest"])
    assert not push.exists(repo, gone["digest"]) and not push.exists(repo, sig["digest"])
    assert push.tags(other) == ["gone"]

    # the same plan again: nothing left to do, and it says why
    again = report_of(ocigraph("apply", repository, plan_file, "--tls-verify=false",
                               "--format", "json"))
    assert again["deleted"] == [] and {"what": "tag gone", "why": "gone since planning"} in (
        again["skipped"])
    assert push.tags(repo) == ["keep"]


def test_a_plan_of_a_folder_and_a_plan_of_a_registry_do_not_cross(
        registry: Registry, repo: str, push: Pusher, tmp_path: Path) -> None:
    built, _ = two_images_and_a_signature()
    folder = write_layout(tmp_path / "layout", built.index_json(), built.blobs)
    index_before = (folder / "index.json").read_bytes()
    folder_plan, registry_plan = tmp_path / "folder.json", tmp_path / "registry.json"
    assert_ok(ocigraph("plan", "gc", folder, "-o", folder_plan))
    assert not og.Plan.from_json(folder_plan.read_bytes()).is_empty
    old = push.image(repo, "app", "old")
    push.referrer(repo, old, SIG, "old")
    push.image(repo, "app", "new")
    assert_ok(ocigraph("plan", "gc", url(registry, repo), "--tls-verify=false",
                       "-o", registry_plan))
    before = state(push, repo, [old["digest"]])

    refused = ocigraph("apply", url(registry, repo), folder_plan, "--tls-verify=false")
    assert_one_line_error(refused, rf"the plan was made for \S+, "
                                   rf"not {re.escape(url(registry, repo))}$")
    assert state(push, repo, [old["digest"]]) == before
    refused = ocigraph("apply", folder, registry_plan)
    assert_one_line_error(refused, "another directory")
    assert (folder / "index.json").read_bytes() == index_before


def test_the_repository_is_named_as_typed(registry: Registry, repo: str, push: Pusher,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = push.image(repo, "a", "a")
    repository = url(registry, repo)
    plan_file = tmp_path / "plan.json"
    result = ocigraph("plan", "delete", repository, "a", "--tls-verify=false", "-o", plan_file)
    assert_ok(result)
    hint = re.search(r"apply it with `ocigraph ([^`]+)`", result.stdout)
    assert hint is not None, result.stdout
    assert f"apply {repository} " in hint.group(1)
    # the command the hint gives works as printed
    assert_ok(ocigraph(*shlex.split(hint.group(1)), "--tls-verify=false"))
    assert not push.exists(repo, image["digest"])

    push.image(repo, "b", "b")
    monkeypatch.setattr(cli_module, "is_terminal", lambda stream: True)
    result = ocigraph("delete", repository, "b", "--tls-verify=false", input="n\n")
    assert result.exit_code == 1 and f"in {repository}?" in result.stderr


# -- errors: one line naming the host and the cause, exit 1, no traceback ----------------------

def _commands(repository: str) -> dict[str, list[str]]:
    return {"plan gc": ["plan", "gc", repository, "--format", "json"],
            "delete": ["delete", repository, "v1", "--yes"],
            "gc": ["gc", repository, "--yes", "--format", "json"],
            "show": ["show", repository]}


COMMANDS = ["plan gc", "delete", "gc", "show"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_closed_port_is_one_line(command: str) -> None:
    port = free_port()  # nothing listens there
    result = ocigraph(*_commands(f"docker://127.0.0.1:{port}/r")[command], "--tls-verify=false")
    assert_one_line_error(result, rf"^ocigraph: error: 127\.0\.0\.1:{port}: unreachable "
                                  r"\(.*refused.*\)$")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_repository_is_one_line(registry: Registry, command: str) -> None:
    result = ocigraph(*_commands(url(registry, "no/such-repository"))[command],
                      "--tls-verify=false")
    assert_one_line_error(result, rf"^ocigraph: error: {re.escape(registry.host)}: tags of "
                                  r"no/such-repository: unknown repository \(404 NAME_UNKNOWN\)$")


@pytest.mark.parametrize("command", COMMANDS)
def test_tls_verification_of_a_plain_http_registry_is_one_line(registry: Registry,
                                                               command: str) -> None:
    result = ocigraph(*_commands(url(registry, "r"))[command])  # --tls-verify defaults to true
    assert_one_line_error(result, rf"^ocigraph: error: {re.escape(registry.host)}: TLS failure")


def test_a_tls_failure_names_the_option_that_allows_it(registry: Registry) -> None:
    line = assert_one_line_error(ocigraph("plan", "gc", url(registry, "r")), "TLS failure")
    assert "--tls-verify=false" in line


def test_401_without_credentials_then_with_creds_and_authfile(own_registry: Any,
                                                              tmp_path: Path) -> None:
    htpasswd = bcrypt_htpasswd(tmp_path / "htpasswd", "alice", "s3cret")
    if htpasswd is None:
        pytest.skip("the bcrypt package is not installed (needed to write an htpasswd file)")
    reg = own_registry(htpasswd=htpasswd)
    push = Pusher(reg.host, auth=("alice", "s3cret"))
    v1, v2 = push.image("r", "v1", "v1"), push.image("r", "v2", "v2")
    env = {"HOME": str(tmp_path / "nohome")}  # no ~/.docker/config.json either
    repository = url(reg, "r")
    before = state(push, "r", [v1["digest"], v2["digest"]])
    for command in _commands(repository).values():
        result = ocigraph(*command, "--tls-verify=false", env=env)
        assert_one_line_error(result, rf"^ocigraph: error: {re.escape(reg.host)}: 401 "
                                      "unauthorized: no credentials given or found in an auth "
                                      "file for this host$")
    result = ocigraph("delete", repository, "v1", "--yes", "--tls-verify=false",
                      "--creds", "alice:wrong", env=env)
    line = assert_one_line_error(result, rf"{re.escape(reg.host)}: 401 unauthorized: the "
                                         r"credentials \(given\) were rejected")
    assert "wrong" not in line
    assert state(push, "r", [v1["digest"], v2["digest"]]) == before

    result = ocigraph("delete", repository, "v1", "--yes", "--tls-verify=false", "--format",
                      "json", "--creds", "alice:s3cret", env=env)
    assert report_of(result)["deleted"] == [v1["digest"]]
    assert "s3cret" not in result.stdout + result.stderr
    assert push.tags("r") == ["v2"]

    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {reg.host: {
        "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
    result = ocigraph("delete", repository, "v2", "--yes", "--tls-verify=false", "--format",
                      "json", "--authfile", authfile, env=env)
    assert report_of(result)["deleted"] == [v2["digest"]]
    assert push.tags("r") == []


def test_a_registry_with_delete_disabled_refuses_and_nothing_is_deleted(own_registry: Any) -> None:
    reg = own_registry(delete=False)
    push = Pusher(reg.host)
    image = push.image("r", "a", "shared")
    push.retag("r", "a", "b")
    sig = push.referrer("r", image, SIG, "shared")
    old = push.image("r", "c", "old")
    sig_old = push.referrer("r", old, SIG, "old")
    push.image("r", "c", "new")  # old is garbage now
    digests = [image["digest"], sig["digest"], old["digest"], sig_old["digest"]]
    before = state(push, "r", digests)
    repository = url(reg, "r")
    for command in (["remove", repository, "a"], ["delete", repository, "a"],
                    ["gc", repository], ["untag", repository, "b"]):
        yes = ["--yes"] if command[0] != "untag" else []  # untag asks nothing
        result = ocigraph(*command, "--tls-verify=false", *yes)
        assert_one_line_error(result, rf"^ocigraph: error: {re.escape(reg.host)}: DELETE in r: "
                                      r"the registry refuses it \(405")
        assert state(push, "r", digests) == before, command


def test_an_unknown_tag_is_one_line_and_changes_nothing(registry: Registry, repo: str,
                                                        push: Pusher) -> None:
    image = push.image(repo, "a", "a")
    before = state(push, repo, [image["digest"]])
    result = ocigraph("delete", url(registry, repo), "nosuch", "--tls-verify=false", "--yes")
    assert_one_line_error(result, rf"^ocigraph: error: {re.escape(registry.host)}: unknown tag "
                                  rf"'nosuch' in repository '{re.escape(repo)}'$")
    assert state(push, repo, [image["digest"]]) == before


def test_du_reports_the_repository_as_on_a_layout(registry: Registry, repo: str,
                                                  push: Pusher) -> None:
    a = push.image(repo, "a", "shared")
    push.retag(repo, "a", "b")
    push.image(repo, "c", "own")
    result = ocigraph("du", url(registry, repo), "--tls-verify=false")
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["a", "b", "c"], result.stdout
    assert "quarantined" not in result.stdout
    doc = json.loads(ocigraph("du", url(registry, repo), "--tls-verify=false", "--format",
                              "json").stdout)
    assert [t["tag"] for t in doc["tags"]] == ["a", "b", "c"] and doc["quarantined"] == []
    assert a["digest"] in doc["tags"][0]["digests"]


def test_an_empty_plan_says_nothing_to_do_and_applies_nothing(registry: Registry, repo: str,
                                                             push: Pusher) -> None:
    push.image(repo, "a", "a")
    result = ocigraph("gc", url(registry, repo), "--tls-verify=false", "--yes")
    assert_ok(result)
    assert result.stdout.splitlines()[-1] == "nothing to do"
    assert "deleted" not in result.stdout and "garbage-collect" not in result.stdout


# -- a process of its own ----------------------------------------------------------------------

def test_python_m_io_adapters_deletes_on_a_registry_and_fails_in_one_line(
        registry: Registry, repo: str, push: Pusher, tmp_path: Path) -> None:
    one = push.image(repo, "one", "one")
    two = push.image(repo, "two", "two")
    sig = push.referrer(repo, one, SIG, "one")
    env = {k: v for k, v in os.environ.items() if k not in NO_CREDENTIALS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "io_adapters", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    done = run("delete", url(registry, repo), "one", "--tls-verify=false", "--yes",
               "--format", "json")
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["deleted"]) == sorted([one["digest"], sig["digest"]])
    assert push.tags(repo) == ["two"] and push.exists(repo, two["digest"])
    assert not push.exists(repo, one["digest"]) and not push.exists(repo, sig["digest"])

    port = free_port()
    failed = run("gc", f"docker://127.0.0.1:{port}/r", "--tls-verify=false", "--yes")
    assert failed.returncode == 1 and failed.stdout == ""
    assert re.fullmatch(rf"ocigraph: error: 127\.0\.0\.1:{port}: unreachable \(.*refused.*\)\n",
                        failed.stderr), failed.stderr
