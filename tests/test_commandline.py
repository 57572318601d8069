"""The command line's pure half, tested without a process, a file or a terminal:
ocigraph/commandline.py (the verbs, what the options decide, Ctrl-C's line, the exit status),
ocigraph/cachedir.py (which cache folder names are ocigraph's, the cap), and what
ocigraph/present.py and ocigraph/manpage.py render for the shell (show, du, cache, progress)."""

from __future__ import annotations

import dataclasses
import inspect
from collections import Counter
from pathlib import PurePosixPath
from typing import Any, get_args

import orjson
import pytest
from builder import two_images_and_a_signature

import ocigraph as og
from ocigraph import present
from ocigraph.cachedir import DEFAULT_CAP, MAX_AGE, CacheEntry, CacheInfo, cache_cap, entry_kind
from ocigraph.commandline import (
    COMMAND_OPTIONS,
    POLICY_OPTIONS,
    PRUNE_OPTIONS,
    REGISTRY_OPTIONS,
    VERBS,
    ApplyProgress,
    Option,
    OptionError,
    OptionKind,
    asks,
    exit_status,
    layout_argument,
    option_policy,
    prune_rules,
    verb_options,
)
from ocigraph.manpage import page_date

VERB = {v.name: v for v in VERBS}
HEX = "0123456789abcdef" * 2

# -- the verbs -----------------------------------------------------------------------------------


def test_the_verbs_are_the_five_commands_that_change_a_layout() -> None:
    assert [v.name for v in VERBS] == ["delete", "gc", "remove", "untag", "prune"]
    assert [v.name for v in VERBS if v.plan_help is None] == ["untag"]  # no `plan untag`
    assert [v.name for v in VERBS if not v.confirm] == ["untag"]  # deletes no blob
    assert [v.name for v in VERBS if v.force] == ["delete", "remove"]
    assert [v.name for v in VERBS if v.prune] == ["prune"]
    assert {v.name: v.refs for v in VERBS if v.refs} == {"delete": "TARGET...", "remove": "REF...",
                                                         "untag": "REF..."}


# -- the options table ---------------------------------------------------------------------------


def every_command() -> dict[str, tuple[Option, ...]]:
    """Each command's options by its name, ``plan NAME`` for a verb's plan command."""
    out = dict(COMMAND_OPTIONS)
    for verb in VERBS:
        out[verb.name] = verb_options(verb, one_shot=True)
        if verb.plan_help is not None:
            out[f"plan {verb.name}"] = verb_options(verb, one_shot=False)
    return out


def flags_of(options: tuple[Option, ...]) -> list[str]:
    return [flag for o in options for flag in o.flags]


def test_each_parameter_of_a_command_is_filled_by_one_option() -> None:
    commands = every_command()
    assert set(commands) == {"delete", "gc", "remove", "untag", "prune", "plan delete", "plan gc",
                             "plan remove", "plan prune", "show", "apply", "restore", "fsck",
                             "du", "cache"}
    for name, options in commands.items():
        flags = flags_of(options)
        assert len(flags) == len(set(flags)), name
        for dest, count in Counter(o.dest for o in options).items():
            sharing = [o for o in options if o.dest == dest]
            if count > 1:  # one switch spelled several ways: each a flag with its own value
                assert all(o.kind == "flag" and o.flag_value is not None for o in sharing), name
                assert len({o.flag_value for o in sharing}) == count, name
                assert sum(o.default is not None for o in sharing) == 1, name
        assert all(o.dest.isidentifier() for o in options), name
    assert [o.dest for o in commands["gc"] if o.dest == "verbosity"] == ["verbosity"] * 2


def test_every_option_is_declared_as_its_kind_wants() -> None:
    options = {o for opts in every_command().values() for o in opts}
    assert {o.kind for o in options} == set(get_args(OptionKind))  # every kind is used
    for o in options:
        assert o.flags and all(f.startswith("-") for f in o.flags), o
        assert bool(o.choices) == (o.kind == "choice"), o
        if o.kind == "choice" and o.default is not None:
            assert o.default in o.choices, o
        assert o.flag_value is None or o.kind == "flag", o
        assert not o.multiple or o.kind == "text", o
        assert not o.show_default or o.default is not None, o
        assert o.help.endswith("."), o


def test_which_options_each_verb_takes() -> None:
    for verb in VERBS:
        one_shot, plan = verb_options(verb, one_shot=True), verb_options(verb, one_shot=False)
        assert ("--yes" in flags_of(one_shot)) == verb.confirm
        assert ("--force" in flags_of(one_shot)) == bool(verb.force)
        assert ("--keep-last" in flags_of(one_shot)) == verb.prune
        referrers = [o for o in one_shot if o.dest == "keep_referrers"]
        assert [o.hidden for o in referrers] == ([] if verb.force is None else [not verb.force])
        assert {"--dry-run", "--lock-timeout", "--keep-deleted"} <= set(flags_of(one_shot))
        assert not {"--dry-run", "--yes", "--lock-timeout", "--keep-deleted"} & set(flags_of(plan))
        assert "-o" in flags_of(plan) and "-o" not in flags_of(one_shot)
        for options in (one_shot, plan):
            fmt = next(o for o in options if o.dest == "fmt")
            assert (fmt.choices, fmt.default) == (("text", "json"), "text")
            assert {"-v", "-q", "--tls-verify", "--creds", "--authfile"} <= set(flags_of(options))
    assert [o.flags[0] for o in verb_options(VERB["gc"], one_shot=True)][:4] == [
        "--policy", "--keep-untagged", "--keep-referrers", "--grace"]
    show = next(o for o in COMMAND_OPTIONS["show"] if o.dest == "fmt")
    assert show.choices == ("text", "json", "mermaid", "dot")


def test_the_option_names_the_core_reads_come_from_the_table() -> None:
    keywords = set(inspect.signature(option_policy).parameters) - {"can_force"}
    assert set(POLICY_OPTIONS) == keywords
    assert set(POLICY_OPTIONS) <= {o.dest for o in verb_options(VERB["delete"], one_shot=True)}
    assert set(PRUNE_OPTIONS) < set(inspect.signature(og.retention_rules).parameters)
    prune = {o.dest for o in verb_options(VERB["prune"], one_shot=False)}
    assert set(PRUNE_OPTIONS) | {"policy_file", "now_text"} <= prune
    assert "policy_file" not in PRUNE_OPTIONS and "now_text" not in PRUNE_OPTIONS
    assert REGISTRY_OPTIONS == ("tls_verify", "creds", "authfile")
    for name, options in every_command().items():
        dests = {o.dest for o in options}
        assert set(REGISTRY_OPTIONS) <= dests or not set(REGISTRY_OPTIONS) & dests, name


# -- the policy options --------------------------------------------------------------------------


def test_the_policy_is_the_preset_with_what_each_option_given_changes() -> None:
    assert option_policy() == og.Policy.preset("default")
    assert option_policy("spec") == og.Policy.preset("spec")
    assert option_policy(keep_untagged=True).keep_untagged is True
    assert option_policy("spec", keep_untagged=False).keep_untagged is True  # not given: preset's
    assert option_policy(grace=90.0).grace == 90.0
    assert option_policy(force=True, can_force=True).force is True
    assert option_policy(keep_referrers=True, can_force=True).cascade_referrers is False
    assert option_policy(keep_referrers=False, can_force=True).cascade_referrers is True
    assert set(POLICY_OPTIONS) == {"preset", "keep_untagged", "grace", "keep_referrers", "force"}


def test_keep_referrers_is_a_usage_error_where_nothing_can_be_forced() -> None:
    with pytest.raises(OptionError) as raised:
        option_policy(keep_referrers=True, can_force=False)
    assert str(raised.value) == ("--keep-referrers applies to delete and remove: a gc or prune "
                                 "deletes what is not live, and a referrer of a live image is live")
    with pytest.raises(ValueError, match="unknown policy preset"):
        option_policy("strict")


# -- prune's options -----------------------------------------------------------------------------


def rules(**given: Any) -> dict[str, Any]:
    return {name: given.get(name, () if name in ("keep_tags", "only") else None)
            for name in PRUNE_OPTIONS}


def test_age_from_defaults_to_push_on_a_layout_and_created_on_a_registry() -> None:
    on_layout, now = prune_rules(rules(keep_last=1), on_registry=False, now=None, clock=7.5)
    assert on_layout.age_from == "push" and now == 7.5
    on_registry, _ = prune_rules(rules(keep_last=1), on_registry=True, now=None, clock=7.5)
    assert on_registry.age_from == "created"
    said, _ = prune_rules(rules(keep_last=1, age_from="created"), on_registry=False, now=None,
                          clock=0.0)
    assert said.age_from == "created"
    with pytest.raises(OptionError, match=r"^--age-from push: push time is not exposed by the "
                                          r"registry API; use --age-from created"):
        prune_rules(rules(keep_last=1, age_from="push"), on_registry=True, now=None, clock=0.0)


def test_now_is_parsed_or_the_clock() -> None:
    _, now = prune_rules(rules(keep_last=1), on_registry=False, now="1970-01-02T00:00:00Z",
                         clock=5.0)
    assert now == 86400.0
    with pytest.raises(OptionError, match=r"^--now 'soon': not an RFC 3339 time"):
        prune_rules(rules(keep_last=1), on_registry=False, now="soon", clock=5.0)


def test_bad_keep_rules_are_usage_errors_naming_the_option() -> None:
    with pytest.raises(OptionError, match=r"^--keep-within '3 fortnights'"):
        prune_rules(rules(keep_within="3 fortnights"), on_registry=False, now=None, clock=0.0)
    with pytest.raises(OptionError, match=r"^prune: no keep rule and no --max-size"):
        prune_rules(rules(), on_registry=False, now=None, clock=0.0)


def test_a_policy_file_is_read_only_once_the_options_go_together() -> None:
    read: list[int] = []

    def policy() -> bytes:
        read.append(1)
        return orjson.dumps({"rules": [{"rulePriority": 1, "selection": {
            "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2},
            "action": {"type": "expire"}}]})

    with pytest.raises(OptionError) as raised:
        prune_rules(rules(keep_tags=("v*",)), on_registry=False, now=None, clock=0.0,
                    policy=policy)
    assert str(raised.value) == ("--policy-file: cannot be mixed with --keep-last, --keep-within "
                                 "or --keep-tag")
    assert read == []
    got, _ = prune_rules(rules(only=("app*",)), on_registry=False, now=None, clock=0.0,
                         policy=policy)
    assert read == [1] and got.lifecycle is not None and got.only == ("app*",)


def test_a_policy_file_that_cannot_be_read_is_a_usage_error_naming_it() -> None:
    def missing() -> bytes:
        raise FileNotFoundError(2, "No such file or directory", "/x/policy.json")

    with pytest.raises(OptionError) as raised:
        prune_rules(rules(), on_registry=False, now=None, clock=0.0, policy=missing)
    assert str(raised.value) == "/x/policy.json: No such file or directory"


# -- LAYOUT ----------------------------------------------------------------------------------------


def test_layout_argument_reads_folders_oci_and_docker_forms() -> None:
    folders = {"lay", "a:b"}
    exists = folders.__contains__
    assert layout_argument("lay", exists, exists) == ("lay", None, False)
    assert layout_argument("missing", exists, exists) == ("missing", None, False)
    # the shortest existing prefix before a colon is the folder; the rest is the ref
    assert layout_argument("oci:lay:app:1", exists, exists) == ("lay", "app:1", False)
    assert layout_argument("oci:a:b:v2", exists, exists) == ("a:b", "v2", False)
    assert layout_argument("oci:a:b:v2", exists, lambda p: p == "a") == ("a", "b:v2", False)
    assert layout_argument("oci:lay", exists, exists) == ("lay", None, False)
    assert layout_argument("oci:new:tag", exists, exists) == ("new:tag", None, False)  # as skopeo
    # a path that exists is that path, whatever it starts with
    assert layout_argument("oci:lay", lambda p: p == "oci:lay", exists) == ("oci:lay", None, False)
    assert layout_argument("docker://h:5000/r", lambda p: True, exists) == (
        "docker://h:5000/r", None, False)
    digest = "sha256:" + "ab" * 32
    assert layout_argument("docker://h:5000/team/r", exists, exists) == (
        "docker://h:5000/team/r", None, True)
    assert layout_argument("docker://h/r:v1", exists, exists) == ("docker://h/r:v1", "v1", True)
    assert layout_argument(f"docker://h/r@{digest}", exists, exists) == (
        f"docker://h/r@{digest}", digest, True)
    with pytest.raises(og.OcigraphError, match="not a registry reference"):
        layout_argument("docker://bad", exists, exists)


# -- asking ---------------------------------------------------------------------------------------


def test_a_change_asks_unless_yes_and_refuses_when_it_cannot_ask() -> None:
    gc, untag = VERB["gc"], VERB["untag"]
    assert asks(gc, yes=False, dry_run=False, can_ask=True) is True
    assert asks(gc, yes=True, dry_run=False, can_ask=False) is False
    assert asks(gc, yes=False, dry_run=True, can_ask=False) is True  # a dry run changes nothing
    assert asks(untag, yes=False, dry_run=False, can_ask=False) is False  # deletes no blob
    with pytest.raises(OptionError) as raised:
        asks(VERB["delete"], yes=False, dry_run=False, can_ask=False)
    assert str(raised.value) == ("`ocigraph delete` changes the layout: pass --yes to confirm "
                                 "(stdin is not a terminal, so ocigraph cannot ask), or "
                                 "--dry-run to only see the plan")


# -- Ctrl-C and the exit status -------------------------------------------------------------------


def test_ctrl_c_says_the_counted_state_unless_the_interruption_carries_the_exact_one() -> None:
    state = ApplyProgress()
    assert state.interrupted_line(KeyboardInterrupt()) == "interrupted: nothing was changed"
    state.applying, state.total = True, 10
    state.count(4)
    assert state.done == 4
    assert state.interrupted_line(KeyboardInterrupt()).startswith(
        "interrupted while applying: index.json may already be updated, at least 4 of 10 blobs "
        "deleted; the layout is valid")
    exact = og.ApplyInterrupted(True, 7, 9)
    assert "index.json already updated, 7 of 9 blobs deleted" in state.interrupted_line(exact)
    assert state.interrupted_line(og.ApplyInterrupted(False, 0, 9)) == (
        "interrupted: nothing was changed")


def test_an_apply_starts_from_none_of_the_present_blobs_its_plan_deletes() -> None:
    plan = og.plan_delete(two_images_and_a_signature()[0].graph(), ["app:0"])
    no_blob = dataclasses.replace(plan.deletions[0], present=False)  # only its entries go
    state = ApplyProgress(done=5)
    state.start(dataclasses.replace(plan, deletions=(no_blob, *plan.deletions[1:])), applying=True)
    assert (state.applying, state.total, state.done) == (True, len(plan.deletions) - 1, 0)


def test_the_exit_status_of_each_way_out() -> None:
    assert exit_status(SystemExit()) == (0, None)
    assert exit_status(SystemExit(0)) == (0, None)
    assert exit_status(SystemExit(130)) == (130, None)
    assert exit_status(SystemExit("ocigraph: gone")) == (1, "ocigraph: gone")
    assert exit_status(BrokenPipeError(32, "Broken pipe")) == (
        1, "ocigraph: error: cannot write the output (Broken pipe)")
    assert exit_status(OSError("no strerror")) == (
        1, "ocigraph: error: cannot write the output (no strerror)")


# -- the cache folder ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind", "what"), [
    (f"{HEX}.store", "f", "store"),
    (f"{HEX}.store", "d", None),  # a folder with a store's name is not ours
    (f"{HEX}.store", "", None),  # nor a symlink
    (f"{HEX}.store-journal", "f", None),  # its store is there: removed with it
    (f"{'1' * 32}.store-journal", "f", "leftover"),  # a journal whose store is gone
    (f"{HEX}.store.lock", "f", None),
    (f"{'1' * 32}.store.lock", "f", "leftover"),
    (f"{HEX}.cache", "f", "leftover"),
    (f"{HEX}.graph", "f", "leftover"),
    (f"{HEX}.plans", "d", "leftover"),
    (f"{HEX}.plans", "f", None),
    (f"{HEX.upper()}.store", "f", None),
    (f"{HEX}0.store", "f", None),
    (f"{HEX}.store.bak", "f", None),
    (".tmp-x1.graph", "f", "leftover"),
    (".tmp-folder", "d", None),
    ("notes.txt", "f", None),
])
def test_which_names_in_the_cache_folder_are_ocigraphs(name: str, kind: str, what: str | None
                                                      ) -> None:
    assert entry_kind(name, kind, {f"{HEX}.store", name}) == what


def test_the_cap_is_ocigraph_cache_max_when_it_is_a_size() -> None:
    assert cache_cap({}) == DEFAULT_CAP == 1 << 30
    assert cache_cap({"OCIGRAPH_CACHE_MAX": ""}) == DEFAULT_CAP
    assert cache_cap({"OCIGRAPH_CACHE_MAX": "500M"}) == 500 << 20
    assert cache_cap({"OCIGRAPH_CACHE_MAX": "2G"}) == 2 << 30
    assert cache_cap({"OCIGRAPH_CACHE_MAX": "big"}) == DEFAULT_CAP
    assert cache_cap({"OCIGRAPH_CACHE_MAX": "-1G"}) == DEFAULT_CAP


def test_the_cache_document_lists_entries_and_leftovers() -> None:
    entry = CacheEntry(PurePosixPath("/c", f"{HEX}.store"), 10, 5.0, "/l\udcff", False)
    dead = CacheEntry(PurePosixPath("/c", ".tmp-1"), 3, 6.0, None, None)
    doc = present.cache_document(CacheInfo(PurePosixPath("/c\udcff"), (entry,), (dead,), 13, 99))
    assert doc == {"ocigraphCache": 1, "folder": og.printable("/c\udcff"), "totalBytes": 13,
                   "capBytes": 99, "maxAgeSeconds": MAX_AGE,
                   "entries": [{"file": f"{HEX}.store", "bytes": 10, "lastUsed": 5.0,
                                "layout": "/l\udcff", "layoutExists": False}],
                   "leftovers": [{"file": ".tmp-1", "bytes": 3, "lastUsed": 6.0}]}
    assert "\udcff" not in doc["folder"]
    assert present.cache_document(CacheInfo(None, (), (), 0, 1))["folder"] is None
    assert "(gone)" in present.format_cache_text(doc, str)


# -- show, du and the reports --------------------------------------------------------------------


def test_show_output_in_each_format() -> None:
    b, n = two_images_and_a_signature()
    graph, policy = b.graph(), og.Policy()
    entries = list(graph.graph["index"].entries)
    quarantined = [{"id": "q", "blobs": 2, "bytes": 10, "keepUntil": None}]
    as_json = orjson.loads(present.show_output("json", "L", graph, policy, entries, (), [],
                                               quarantined))
    assert as_json == orjson.loads(orjson.dumps(present.show_document("L", graph, policy, [],
                                                                      quarantined)))
    assert present.show_output("mermaid", "L", graph, policy, entries) == og.to_mermaid(graph)
    assert present.show_output("dot", "L", graph, policy, entries) == og.to_dot(graph)
    text = present.show_output("text", "L", graph, policy, entries, (), [], quarantined)
    assert text.startswith(present.format_show_text("L", graph, policy, entries))
    assert text.endswith(present.format_quarantined(quarantined, "L") or "?")
    one = present.show_output("text", "L", graph, policy, entries, ["app:1"])
    assert "tags: app:1" in one and "tags: app:0" not in one and "not reachable" not in one
    assert og.short_digest(n["img"]["digest"]) in one.splitlines()[1]
    with pytest.raises(og.UnknownRefError):  # in any format
        present.show_output("json", "L", graph, policy, entries, ["nope"])


def test_show_of_a_ref_no_entry_lists_shows_its_tree() -> None:
    b, n = two_images_and_a_signature()
    graph = b.graph()
    layer = min(graph.succ[n["img"]["digest"]])
    text = present.show_output("text", "L", graph, og.Policy(), list(graph.graph["index"].entries),
                               [layer])
    assert text.splitlines()[1].startswith(og.short_digest(layer))
    assert "tags: app:1" not in text and len(text.splitlines()) == 2


def test_du_output_in_each_format() -> None:
    b, _ = two_images_and_a_signature()
    report = og.space_by_tag(b.graph(), og.Policy())
    quarantined = [{"id": "q", "blobs": 1, "bytes": 10, "keepUntil": None}]
    doc = orjson.loads(present.du_output("json", "L", report, quarantined))
    assert doc == {**orjson.loads(orjson.dumps(report.to_dict())), "quarantined": quarantined}
    text = present.du_output("text", "L", report, quarantined, sort="total", human=False)
    assert text.startswith(og.format_space_text(report, sort="total", human=False))
    assert text.splitlines()[-1] == present.format_quarantined(quarantined, "L")
    assert present.du_output("text", "L", report, []) == og.format_space_text(report)


def test_a_report_is_its_document_or_the_text_of_that_document() -> None:
    doc = {"n": 1}
    assert present.rendered(doc) == '{\n  "n": 1\n}'
    assert present.rendered(doc, "json", lambda d: "text") == '{\n  "n": 1\n}'
    assert present.rendered(doc, "text", lambda d: f"n is {d['n']}") == "n is 1"
    assert present.rendered(doc, "text") == '{\n  "n": 1\n}'  # no text form: JSON


def test_the_lines_around_a_plan() -> None:
    assert present.plan_written_line("p\udcff.json", "L") == (
        "plan written to p\\xff.json; apply it with `ocigraph apply L p\\xff.json`")
    assert present.purged_line(1, 1 << 20) == (
        "purged 1 quarantined blob(s) (1.0 MiB) whose keep time was up")


def test_every_phase_a_plan_reports_has_a_name() -> None:
    assert set(present.PHASE_NAMES) == {"list", "read", "build", "close", "plan"}
    assert present.PHASE_NAMES["read"] == "reading manifests"


def test_the_man_page_date_comes_from_source_date_epoch() -> None:
    assert page_date("0") == "1970-01-01"
    assert page_date("1700000000") == "2023-11-14"
    assert page_date("") == page_date("-5") == page_date("1e9") == ""
