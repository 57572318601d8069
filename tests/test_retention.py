"""Retention and space budgets (RETENTION.md): the rules' words, lifecycle policies, and
``plan_prune`` on small layouts -- every example of RETENTION §6 among them."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from builder import CONFIG, Builder

import ocigraph as og

DAY = 86400.0
NOW = 100 * DAY
SPEC = og.Policy.preset("spec")


# -- the words -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("30d", 30 * DAY), ("12h", 12 * 3600.0), ("90m", 5400.0), ("2w", 14 * DAY), ("45s", 45.0),
    ("3600", 3600.0), ("1.5d", 1.5 * DAY), (" 7d ", 7 * DAY), ("0", 0.0), (120, 120.0),
])
def test_durations_are_read_in_their_units(text: Any, seconds: float) -> None:
    assert og.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30x", "d", "-1d", "1M", "2W", "", "1e3", True, float("inf"), -5])
def test_bad_durations_name_the_option_and_value(text: Any) -> None:
    with pytest.raises(og.RetentionRuleError) as err:
        og.parse_duration(text, "--keep-within")
    assert str(err.value).startswith(f"--keep-within {text!r}")
    assert isinstance(err.value, og.RequestError)


@pytest.mark.parametrize(("text", "size"), [
    ("500M", 500 * 1024**2), ("10G", 10 * 1024**3), ("1.5GiB", 1610612736), ("1K", 1024),
    ("1kb", 1024), ("1KiB", 1024), ("123", 123), ("123B", 123), ("0", 0), ("2 t", 2 * 1024**4),
    ("0.5K", 512), ("1.0001K", 1024), (4096, 4096),
])
def test_sizes_are_binary_and_exact(text: Any, size: int) -> None:
    assert og.parse_size(text) == size


@pytest.mark.parametrize("text", ["10X", "G", "-3", "1,5G", "", -1, 2.5, False])
def test_bad_sizes_are_refused(text: Any) -> None:
    with pytest.raises(og.RetentionRuleError, match="--max-size"):
        og.parse_size(text, "--max-size")


@pytest.mark.parametrize(("name", "repository", "tag"), [
    ("app:1.4", "app", "1.4"),
    ("latest", "", "latest"),
    ("v1.2", "", "v1.2"),
    ("app@sha256:" + "a" * 64, "app", "sha256:" + "a" * 64),
    ("ghcr.io/org/app:1.4", "ghcr.io/org/app", "1.4"),
    ("host:5000/app:1", "host:5000/app", "1"),
    ("host:5000/app", "host:5000/app", ""),
    ("docker.io/library/alpine:3.18", "docker.io/library/alpine", "3.18"),
    ("a/b:c@sha256:" + "0" * 64, "a/b", "c@sha256:" + "0" * 64),
    ("v1@sha256:" + "0" * 64, "v1", "sha256:" + "0" * 64),
    (":x", "", "x"),
    ("name:", "name", ""),
])
def test_repository_of_a_ref_name_follows_retention_section_1(name: str, repository: str,
                                                               tag: str) -> None:
    ref = og.parse_ref_name(name)
    assert (ref.repository, ref.tag) == (repository, tag)
    assert og.repository_of(name) == repository


def test_times_are_rfc3339_with_a_zone() -> None:
    assert og.parse_time("2024-05-01T12:00:00Z") == 1714564800.0
    assert og.parse_time("2024-05-01T14:00:00+02:00") == 1714564800.0
    assert og.parse_time("2024-05-01t12:00:00.25z") == 1714564800.25
    for bad in ("2024-05-01T12:00:00", "2024-02-30T00:00:00Z", "2024-05-01", "now", "12:00"):
        with pytest.raises(og.RetentionRuleError, match="--now"):
            og.parse_time(bad)


def test_push_time_falls_back_from_annotation_to_config_to_mtime() -> None:
    ann = b'{"annotations": {"org.opencontainers.image.created": "1970-01-01T00:16:40Z"}}'
    cfg = b'{"created": "1970-01-01T00:33:20.000000001Z"}'
    assert og.manifest_created(ann) == "1970-01-01T00:16:40Z"
    assert og.config_created(cfg) == "1970-01-01T00:33:20.000000001Z"
    assert og.manifest_created(b"[1]") is None and og.config_created(b"{") is None
    created = {"age_from": "created"}
    assert og.image_time(5.0) == 5.0
    assert og.image_time(5.0, annotation="1970-01-01T00:16:40Z") == 5.0  # push: mtime only
    assert og.image_time(5.0, **created, annotation="1970-01-01T00:16:40Z", config="x") == 1000.0
    assert og.image_time(5.0, **created, annotation="soon", config="1970-01-01T00:33:20Z") == 2000.0
    assert og.image_time(5.0, **created, annotation=None, config=None) == 5.0
    assert og.image_time(None, **created, config="0001-01-01T00:00:00Z") is None
    with pytest.raises(og.RetentionRuleError, match="--age-from"):
        og.image_time(5.0, age_from="pulled")


# -- rules ---------------------------------------------------------------------------------------

def test_rules_refuse_to_expire_everything() -> None:
    with pytest.raises(og.RetentionRuleError, match="no keep rule and no --max-size"):
        og.retention_rules()
    with pytest.raises(og.RetentionRuleError, match="no keep rule and no --max-size"):
        og.retention_rules(only=["app:*"])
    assert og.retention_rules(max_size="0").max_size == 0  # a budget alone judges
    assert og.retention_rules(keep_tags=["stable"]).keep_tags == ("stable",)


@pytest.mark.parametrize(("kwargs", "option"), [
    ({"keep_last": 0}, "--keep-last"),
    ({"keep_last": "-2"}, "--keep-last"),
    ({"keep_last": True}, "--keep-last"),
    ({"keep_within": "soon"}, "--keep-within"),
    ({"keep_tags": [""]}, "--keep-tag"),
    ({"keep_last": 1, "only": [3]}, "--only"),
    ({"max_size": "lots"}, "--max-size"),
    ({"keep_last": 1, "age_from": "mtime"}, "--age-from"),
])
def test_each_bad_rule_names_its_option(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(og.RetentionRuleError) as err:
        og.retention_rules(**kwargs)
    assert str(err.value).startswith(option)


POLICY = {"rules": [{"rulePriority": 1, "selection": {
    "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2},
    "action": {"type": "expire"}}]}


def test_a_policy_file_excludes_keep_flags_but_not_a_budget_or_only() -> None:
    with pytest.raises(og.RetentionRuleError, match="cannot be combined"):
        og.retention_rules(policy=POLICY, keep_last=3)
    rules = og.retention_rules(policy=orjson.dumps(POLICY), max_size="1G", only=["app:*"])
    assert rules.lifecycle is not None and rules.lifecycle.rules[0].count_number == 2
    assert og.RetentionRules.from_dict(rules.to_dict()) == rules


# -- lifecycle policy documents ------------------------------------------------------------------

def rule(priority: Any = 1, status: str = "tagged", **selection: Any) -> dict[str, Any]:
    sel: dict[str, Any] = {"tagStatus": status}
    if status == "tagged" and "tagPrefixList" not in selection:
        sel["tagPatternList"] = ["prod*"]
    sel |= {"countType": "imageCountMoreThan", "countNumber": 1} | selection
    return {"rulePriority": priority, "selection": sel, "action": {"type": "expire"}}


def doc(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"rules": list(rules)} | extra


def without(d: dict[str, Any], *path: str) -> dict[str, Any]:
    out = orjson.loads(orjson.dumps(d))
    here = out
    for p in path[:-1]:
        here = here[p]
    del here[path[-1]]
    return out  # type: ignore[no-any-return]


INVALID_POLICIES = [
    # (document, where the message must point, words it must contain)
    (b"{not json", "lifecycle policy: not JSON", ""),
    ([1], "lifecycle policy: the document", "object"),
    (doc(rule(), version=2), "lifecycle policy: unknown field 'version'", ""),
    (doc(), "lifecycle policy: \"rules\"", "non-empty"),
    (doc(rule(), 7), "rules[1]:", "JSON object"),
    (doc(rule() | {"note": "x"}), "rules[0] (rulePriority 1)", "unknown field 'note'"),
    (doc(rule(), without(rule(2), "rulePriority")), "rules[1]: rulePriority", "missing"),
    (doc(rule(0)), "rules[0]: rulePriority", "positive integer"),
    (doc(rule(True)), "rules[0]: rulePriority", "positive integer"),
    (doc(rule("1")), "rules[0]: rulePriority", "positive integer"),
    (doc(rule(1), rule(1, tagPatternList=["dev*"])), "rules[1] (rulePriority 1): rulePriority",
     "rules[0] has the same priority"),
    (doc(rule(2, "any"), rule(5)), "rules[0] (rulePriority 2): selection.tagStatus",
     "highest rulePriority (5 is higher)"),
    (doc(rule(1, "any"), rule(2, "any")), "rules[0] (rulePriority 1): selection.tagStatus",
     "highest"),
    (doc(without(rule(3), "action")), "rules[0] (rulePriority 3): action", "missing"),
    (doc(rule() | {"action": {"type": "transition", "targetStorageClass": "archive"}}),
     "rules[0] (rulePriority 1): action.targetStorageClass", "archive"),
    (doc(rule() | {"action": {"type": "delete"}}), "action.type", "'delete' is not supported"),
    (doc(rule() | {"action": {}}), "action.type", "missing"),
    (doc(rule() | {"action": {"type": "expire", "now": True}}), "action", "unknown field 'now'"),
    (doc(without(rule(), "selection")), "rules[0] (rulePriority 1): selection", "missing"),
    (doc(rule(extra=1)), "selection", "unknown field 'extra'"),
    (doc(rule(storageClass="archive")), "selection.storageClass", "archive"),
    (doc(rule(status="old")), "selection.tagStatus", "'old' is not one"),
    (doc(without(rule(), "selection", "tagStatus")), "selection.tagStatus", "missing"),
    (doc(without(rule(), "selection", "tagPatternList")), "selection",
     "needs a tagPatternList or a tagPrefixList"),
    (doc(rule(tagPatternList=["x"], tagPrefixList=["a"])), "selection", "not both"),
    (doc(rule(status="untagged", tagPatternList=["x"])), "selection.tagPatternList",
     "only a rule with tagStatus \"tagged\""),
    (doc(rule(status="any", tagPrefixList=["x"])), "selection.tagPrefixList", "'any'"),
    (doc(rule(tagPatternList=[])), "selection.tagPatternList", "non-empty list"),
    (doc(rule(tagPatternList=["ok", ""])), "selection.tagPatternList", "'' is not"),
    (doc(rule(tagPatternList=["*a*b*c*d*"])), "selection.tagPatternList", "at most 4"),
    (doc(rule(countType="sinceImagePulled")), "selection.countType", "archive"),
    (doc(rule(countType="imageCountLessThan")), "selection.countType", "is not one"),
    (doc(without(rule(), "selection", "countType")), "selection.countType", "missing"),
    (doc(without(rule(), "selection", "countNumber")), "selection.countNumber", "missing"),
    (doc(rule(countNumber=0)), "selection.countNumber", "positive integer"),
    (doc(rule(countNumber=1.5)), "selection.countNumber", "positive integer"),
    (doc(rule(countType="sinceImagePushed", countNumber=3)), "selection.countUnit", "missing"),
    (doc(rule(countType="sinceImagePushed", countUnit="hours")), "selection.countUnit", "'hours'"),
    (doc(rule(countUnit="days")), "selection.countUnit", "only sinceImagePushed"),
    (doc(rule(1, "untagged"), rule(2, "untagged", countNumber=3)),
     "rules[1] (rulePriority 2): selection.tagStatus", "only one rule may"),
    (doc(rule(1), rule(2, tagPatternList=["prod*"], countNumber=9)),
     "rules[1] (rulePriority 2): selection", "same tag list"),
    (doc(rule(1) | {"description": 3}), "description", "string"),
]


@pytest.mark.parametrize(("document", "where", "words"), INVALID_POLICIES)
def test_every_invalid_policy_is_refused_naming_the_rule(document: Any, where: str,
                                                         words: str) -> None:
    data = document if isinstance(document, bytes) else orjson.dumps(document)
    with pytest.raises(og.LifecyclePolicyError) as err:
        og.parse_lifecycle_policy(data)
    message = str(err.value)
    assert where in message
    assert words in message
    assert isinstance(err.value, og.RetentionRuleError)
    with pytest.raises(og.LifecyclePolicyError):  # the same through the rules
        og.retention_rules(policy=data)


def test_a_valid_policy_reads_in_priority_order_and_writes_back_unchanged() -> None:
    d = doc(rule(20, "any", countNumber=10),
            rule(3, tagPrefixList=["rel-"], countType="sinceImagePushed", countUnit="days",
                 countNumber=30) | {"description": "old releases"},
            rule(7, "untagged", countType="sinceImagePushed", countUnit="days", countNumber=1))
    policy = og.parse_lifecycle_policy(d)
    assert [r.priority for r in policy.rules] == [3, 7, 20]
    assert policy.rules[0].description == "old releases"
    assert og.parse_lifecycle_policy(orjson.dumps(policy.to_dict())) == policy
    assert str(policy.rules[0]) == 'rulePriority 3: tagged prefixes ["rel-"], sinceImagePushed 30 days'


def test_tag_patterns_match_with_star_only_and_every_pattern_must_match() -> None:
    r = og.parse_lifecycle_policy(doc(rule(tagPatternList=["prod*", "*-v[1]"]))).rules[0]
    assert r.selects({"prod", "x-v[1]"})            # brackets are literal, * may match nothing
    assert not r.selects({"prod-v[1]x"})
    assert not r.selects({"prod"})                   # every pattern must match some tag
    assert r.selects({"prod-v[1]"})                  # one tag may match both
    q = og.parse_lifecycle_policy(doc(rule(tagPrefixList=["a", "b"]))).rules[0]
    assert q.selects({"ax", "by"}) and not q.selects({"ax"}) and not q.selects(set())


# -- layouts for plan_prune ----------------------------------------------------------------------

class Store:
    """A builder with push times: ``image(tag, day)`` pushes an image of its own config and
    layer (plus any ``shared`` layers) on that day."""

    def __init__(self) -> None:
        self.b = Builder()
        self.push: dict[str, float] = {}
        self.by_tag: dict[str, dict[str, Any]] = {}

    def image(self, tag: str | None, day: float, *shared: dict[str, Any],
              size: int = 10) -> dict[str, Any]:
        own = self.b.blob(f"layer of {tag} {day}".ljust(size, "."))
        m = self.b.manifest(self.b.blob(f"config of {tag} {day}", CONFIG), [own, *shared])
        self.b.entry(m, tag)
        self.push[m["digest"]] = day * DAY
        if tag is not None:
            self.by_tag[tag] = m
        return m

    def tag(self, desc: dict[str, Any], tag: str | None) -> None:
        self.b.entry(desc, tag)

    def layout(self, **kw: Any) -> og.Layout:
        return self.b.layout(**kw)

    def prune(self, gc: og.Policy | None = None, now: float = NOW,
              **rules: Any) -> tuple[og.Plan, og.Layout]:
        layout = self.layout()
        plan = og.plan_prune(og.build_graph(layout), og.retention_rules(**rules), now=now,
                             push_times=self.push, policy=gc)
        return plan, og.simulate(layout, plan)


def tags_after(layout: og.Layout) -> set[str]:
    return {e.tag for e in layout.index.entries if e.tag is not None}


def verdicts(plan: og.Plan) -> dict[str | None, tuple[str, str]]:
    assert plan.retention is not None
    return {d.tag: (d.verdict, d.rule) for d in plan.retention.decisions}


def live_bytes(layout: og.Layout, policy: og.Policy | None = None) -> int:
    g = og.build_graph(layout)
    live = og.live_set(g, policy)
    return sum(g.nodes[n]["size"] for n in live if g.nodes[n]["present"])


def eight_tags(shared_with_new: bool = True) -> tuple[Store, dict[str, Any], dict[str, Any]]:
    s = Store()
    base = s.b.blob("base layer shared by all")
    recent = s.b.blob("layer shared by app:5 and app:6")
    for i in range(1, 9):
        extra = [recent] if shared_with_new and i in (5, 6) else []
        s.image(f"app:{i}", i, base, *extra)
    return s, base, recent


# -- RETENTION §6 --------------------------------------------------------------------------------

def test_example_keep_last_3_of_8_tags_a_day_apart() -> None:
    s, base, recent = eight_tags()
    plan, after = s.prune(keep_last=3)
    assert tags_after(after) == {"app:6", "app:7", "app:8"}
    v = verdicts(plan)
    assert [t for t, (verdict, _) in v.items() if verdict == "expired"] == [
        "app:5", "app:4", "app:3", "app:2", "app:1"]
    assert {v[f"app:{i}"] for i in (6, 7, 8)} == {("kept", "keep-last")}
    assert base["digest"] in after.blobs and recent["digest"] in after.blobs  # shared with kept
    gone = {s.by_tag[f"app:{i}"]["digest"] for i in range(1, 6)}
    assert gone <= plan.deleted_digests()
    assert not gone & set(after.blobs)
    assert plan.operation == "prune" and set(plan.targets) == {f"app:{i}" for i in range(1, 6)}
    ranks = {d.tag: d.rank for d in plan.retention.decisions}  # type: ignore[union-attr]
    assert ranks["app:8"] == 1 and ranks["app:1"] == 8
    assert og.plan_gc(og.build_graph(after)).is_empty


def test_example_keep_tag_keeps_the_oldest_v1() -> None:
    s = Store()
    base = s.b.blob("base")
    s.image("app:v1", 1, base)
    for i in range(2, 9):
        s.image(f"app:{i}", i, base)
    plan, after = s.prune(keep_last=3, keep_tags=["v*"])
    assert tags_after(after) == {"app:v1", "app:6", "app:7", "app:8"}
    assert verdicts(plan)["app:v1"] == ("kept", "keep-tag")
    assert s.by_tag["app:v1"]["digest"] in after.blobs


def test_example_max_size_0_keeps_only_stable_and_says_the_budget_is_not_reached() -> None:
    s, _, _ = eight_tags()
    s.tag(s.by_tag["app:3"], "app:stable")
    plan, after = s.prune(max_size=0, keep_tags=["stable"])
    assert tags_after(after) == {"app:stable"}
    assert plan.retention is not None
    stable_bytes = live_bytes(after)
    assert stable_bytes > 0
    assert plan.retention.live_bytes == stable_bytes
    assert plan.retention.over_budget == stable_bytes
    assert f"budget not reached: {stable_bytes} bytes over" in plan.retention.summary()
    assert verdicts(plan)["app:stable"] == ("kept", "keep-tag")
    # app:3 loses its other tag but stays: it is stable's image
    assert verdicts(plan)["app:3"][0] == "expired"
    assert s.by_tag["app:3"]["digest"] not in plan.deleted_digests()


def test_example_max_size_0_alone_evicts_everything_oldest_first() -> None:
    s, _, _ = eight_tags()
    plan, after = s.prune(max_size=0)
    assert tags_after(after) == set()
    assert plan.retention is not None and plan.retention.budget_reached
    evicted = sorted((d for d in plan.retention.decisions), key=lambda d: -(d.live_bytes or 0))
    assert [d.tag for d in evicted] == [f"app:{i}" for i in range(1, 9)]  # oldest evicted first
    assert all(d.rule == "max-size" for d in evicted)
    assert sum(d.bytes_freed for d in evicted) == live_bytes(s.layout())


# -- the budget ----------------------------------------------------------------------------------

def test_budget_evicts_the_oldest_until_it_fits_and_frees_only_what_it_alone_used() -> None:
    s, base, recent = eight_tags()
    total = live_bytes(s.layout())
    own = {i: total - live_bytes(s.prune(max_size=0, only=[f"app:{i}"])[1]) for i in range(1, 9)}
    plan, after = s.prune(max_size=total - own[1] - own[2] - own[3] + 1)
    # app:1-3 did not fit; app:4 fits after them (strictly more than the budget is over)
    assert tags_after(after) == {f"app:{i}" for i in range(4, 9)}
    assert live_bytes(after) <= plan.retention.rules.max_size  # type: ignore[union-attr, operator]
    d = {x.tag: x for x in plan.retention.decisions}  # type: ignore[union-attr]
    assert [d[f"app:{i}"].rule for i in (1, 2, 3)] == ["max-size"] * 3
    assert d["app:1"].live_bytes == total
    assert d["app:2"].live_bytes == total - own[1]
    assert d["app:1"].bytes_freed == own[1]
    # app:5 shares a layer with app:6: evicting app:5 alone would not free that layer
    plan5, _ = s.prune(max_size=0, only=["app:5"])
    assert recent["digest"] not in plan5.deleted_digests()
    assert base["digest"] not in plan5.deleted_digests()


def test_budget_overrules_keep_last_and_keep_within_but_never_keep_tag_or_only() -> None:
    s, _, _ = eight_tags()
    s.image("web:1", 0.5)  # outside --only, the oldest of all
    plan, after = s.prune(keep_last=5, keep_within="4d", keep_tags=["7"], only=["app:*"],
                          max_size=0, now=9 * DAY)
    assert tags_after(after) == {"app:7", "web:1"}
    v = verdicts(plan)
    assert v["web:1"] == ("kept", "outside-only")
    assert v["app:7"] == ("kept", "keep-tag")
    assert v["app:8"] == ("expired", "max-size")
    by_tag = {d.tag: d for d in plan.retention.decisions}  # type: ignore[union-attr]
    assert "was kept by keep-last 5" in by_tag["app:8"].detail
    assert by_tag["web:1"].rank is None


def test_budget_counts_referrers_with_their_subject() -> None:
    s = Store()
    old = s.image("app:old", 1)
    sig = s.b.manifest(layers=[s.b.blob("signature of old".ljust(1000, "x"))], subject=old,
                       artifact_type="application/x-sig")
    s.image("app:new", 2)
    total = live_bytes(s.layout())
    plan, after = s.prune(max_size=total - 1)
    assert sig["digest"] in plan.deleted_digests()
    assert tags_after(after) == {"app:new"}
    assert plan.retention.live_bytes == live_bytes(after)  # type: ignore[union-attr]
    freed = {d.tag: d.bytes_freed for d in plan.retention.decisions}  # type: ignore[union-attr]
    assert freed["app:old"] == total - live_bytes(after) > 1000


def test_budget_evicts_an_index_and_its_tagged_children_in_age_order() -> None:
    s = Store()
    amd = s.image("app:amd64", 1)
    arm = s.image("app:arm64", 2)
    idx = s.b.index([amd, arm])
    s.tag(idx, "app:multi")
    s.push[idx["digest"]] = 3 * DAY
    s.image("app:solo", 4)
    # the children go first (older) but free nothing while the index holds them
    plan, after = s.prune(max_size=0, only=["app:amd64", "app:arm64", "app:multi"])
    d = {x.tag: x for x in plan.retention.decisions}  # type: ignore[union-attr]
    assert d["app:amd64"].bytes_freed == 0 and d["app:arm64"].bytes_freed == 0
    assert d["app:multi"].bytes_freed > 0
    assert tags_after(after) == {"app:solo"}
    assert {amd["digest"], arm["digest"], idx["digest"]} <= plan.deleted_digests()


def test_budget_that_fits_already_expires_nothing() -> None:
    s, _, _ = eight_tags()
    plan, after = s.prune(max_size="1G")
    assert plan.is_empty and tags_after(after) == {f"app:{i}" for i in range(1, 9)}
    assert {v for v in verdicts(plan).values()} == {("kept", "within-budget")}
    assert plan.retention.budget_reached and "budget reached" in plan.retention.summary()  # type: ignore[union-attr]


# -- keep rules in detail ------------------------------------------------------------------------

def test_keep_within_keeps_images_pushed_within_the_duration_inclusive() -> None:
    s, _, _ = eight_tags()
    _, after = s.prune(keep_within="3d", now=8 * DAY)
    assert tags_after(after) == {"app:5", "app:6", "app:7", "app:8"}


def test_keep_last_counts_per_repository_and_ties_break_by_digest() -> None:
    s = Store()
    a = s.image("ghcr.io/org/a:1", 1)
    b = s.image("ghcr.io/org/a:2", 1)       # same push time as a:1
    s.image("host:5000/b:1", 1)
    s.image("bare", 1)
    plan, after = s.prune(keep_last=1)
    newer = max(a["digest"], b["digest"])  # at one push time the larger digest is newer
    kept_a = "ghcr.io/org/a:1" if newer == a["digest"] else "ghcr.io/org/a:2"
    assert tags_after(after) == {kept_a, "host:5000/b:1", "bare"}
    repos = {d.tag: d.repository for d in plan.retention.decisions}  # type: ignore[union-attr]
    assert repos["bare"] == "" and repos["host:5000/b:1"] == "host:5000/b"


def test_every_tag_of_a_kept_image_is_kept_and_an_untagged_expiry_only_untags() -> None:
    s = Store()
    old = s.image("app:1", 1)
    s.tag(old, "app:also-1")
    s.image("app:2", 2)
    s.tag(old, "other:x")  # another repository: judged there
    plan, after = s.prune(keep_last=1)
    assert tags_after(after) == {"app:2", "other:x"}
    assert old["digest"] not in plan.deleted_digests()
    assert old["digest"] in after.blobs


def test_only_leaves_other_tags_alone_and_ranks_among_selected_images() -> None:
    s = Store()
    for i in range(1, 5):
        s.image(f"app:pr-{i}", i)
    s.image("app:main", 10)
    _plan, after = s.prune(keep_last=2, only=["app:pr-*"])
    assert tags_after(after) == {"app:pr-3", "app:pr-4", "app:main"}


def test_unknown_push_time_counts_as_oldest_and_never_within() -> None:
    s, _, _ = eight_tags()
    del s.push[s.by_tag["app:8"]["digest"]]
    _, after = s.prune(keep_last=7)
    assert "app:8" not in tags_after(after) and "app:1" in tags_after(after)
    plan, after = s.prune(keep_within="1000d")
    assert tags_after(after) == {f"app:{i}" for i in range(1, 8)}
    d = {x.tag: x for x in plan.retention.decisions}  # type: ignore[union-attr]
    assert d["app:8"].push_time is None and d["app:8"].rank == 8


def test_an_ambiguous_tag_is_never_expired() -> None:
    s = Store()
    one = s.image("app:dup", 1)
    two = s.image("app:2", 2)
    s.tag(two, "app:dup")
    s.image("app:3", 3)
    plan, after = s.prune(keep_last=1)
    v = verdicts(plan)
    assert v["app:dup"] == ("kept", "ambiguous")
    assert {e.digest for e in after.index.entries if e.tag == "app:dup"} == {
        one["digest"], two["digest"]}


def test_young_images_lose_expired_tags_but_stay() -> None:
    s, _, _ = eight_tags()
    layout = s.layout(mtimes={d: 9 * DAY for d in s.b.blobs}, now=9 * DAY + 10)
    policy = og.Policy(grace=3600)
    plan = og.plan_prune(og.build_graph(layout, mtimes=True), og.retention_rules(keep_last=1),
                         now=NOW, push_times=s.push, policy=policy)
    after = og.simulate(layout, plan)
    assert tags_after(after) == {"app:8"}
    assert not plan.deletions  # everything is younger than grace
    assert set(after.blobs) == set(layout.blobs)


def test_a_broken_live_manifest_stops_the_plan_unless_pruned() -> None:
    s = Store()
    s.image("app:1", 1)
    broken = s.b.blob(b'{"schemaVersion": 2, "mediaType": "', og.OCI_MANIFEST)  # bad JSON
    s.tag(broken, "app:broken")
    s.push[broken["digest"]] = 0.5 * DAY
    with pytest.raises(og.BrokenManifestError):
        s.prune(keep_last=2)
    plan, _after = s.prune(keep_last=1)  # the broken one is the oldest: it goes
    assert broken["digest"] in plan.deleted_digests()


def test_prune_refuses_a_neighbourhood_view() -> None:
    s, _, _ = eight_tags()
    view = og.neighbourhood(og.WholeGraph(og.build_graph(s.layout())), [s.by_tag["app:1"]["digest"]],
                            og.Policy())
    with pytest.raises(ValueError, match="whole graph"):
        og.plan_prune(view, og.retention_rules(keep_last=1), now=NOW, push_times=s.push)


# -- lifecycle policies on a layout --------------------------------------------------------------

def test_lifecycle_policy_expires_per_repository_with_ecr_priorities() -> None:
    s = Store()
    for i in range(1, 5):
        s.image(f"app:prod-{i}", i)
        s.image(f"app:dev-{i}", i + 0.5)
    s.image("other:prod-1", 1)
    policy = doc(rule(1, tagPatternList=["prod-*"], countNumber=3),
                 rule(2, "any", countNumber=2))
    plan, after = s.prune(policy=policy)
    # rule 1 keeps the 3 newest prod images; rule 2 ranks every image, prod ones included
    # (dev-4, prod-4, dev-3, ...), but may expire only those rule 1 did not select
    assert tags_after(after) == {"app:prod-2", "app:prod-3", "app:prod-4", "app:dev-4",
                                 "other:prod-1"}
    d = {x.tag: x for x in plan.retention.decisions}  # type: ignore[union-attr]
    assert d["app:prod-1"].rule == "lifecycle" and "rulePriority 1" in d["app:prod-1"].detail
    assert "rulePriority 2" in d["app:dev-3"].detail
    assert "selected by rulePriority 1" in d["app:prod-4"].detail


def test_lifecycle_since_image_pushed_counts_days_strictly() -> None:
    s = Store()
    for i in range(1, 6):
        s.image(f"v{i}", i)
    policy = doc(rule(1, "any", countType="sinceImagePushed", countUnit="days", countNumber=2))
    _, after = s.prune(policy=policy, now=5 * DAY)
    assert tags_after(after) == {"v3", "v4", "v5"}  # v3 is exactly 2 days old: not more


def test_lifecycle_untagged_rules_judge_untagged_entries_only_when_they_are_roots() -> None:
    s = Store()
    s.image("app:1", 1)
    olds = [s.image(None, d) for d in (1, 2, 3)]
    policy = doc(rule(1, "untagged", countNumber=1))
    plan, after = s.prune(policy=policy)
    # default policy: untagged entries are garbage anyway -- the sweep takes them all
    assert not any(d.tag is None for d in plan.retention.decisions)  # type: ignore[union-attr]
    assert {o["digest"] for o in olds} <= plan.deleted_digests()
    plan, after = s.prune(SPEC, policy=policy)
    untagged = [d for d in plan.retention.decisions if d.tag is None]  # type: ignore[union-attr]
    assert len(untagged) == 3
    assert {d.digest for d in untagged if d.expired} == {olds[0]["digest"], olds[1]["digest"]}
    assert {e.digest for e in after.index.entries if e.tag is None} == {olds[2]["digest"]}
    assert og.plan_gc(og.build_graph(after), SPEC).is_empty


# -- the plan ------------------------------------------------------------------------------------

def test_prune_plan_round_trips_through_json_with_its_decisions() -> None:
    s, _, _ = eight_tags()
    for kwargs in ({"keep_last": 3, "max_size": "2K", "keep_tags": ["8"]},
                   {"policy": doc(rule(1, "any", countNumber=2)), "only": ["app:*"]}):
        plan, _ = s.prune(**kwargs)
        back = og.Plan.from_json(plan.to_json())
        assert back == plan
        assert back.retention is not None and back.retention.decisions
        assert orjson.loads(plan.to_json())["retention"]["rules"] == plan.retention.rules.to_dict()  # type: ignore[union-attr]


def test_plans_of_other_operations_have_no_retention_and_old_json_still_loads() -> None:
    s, _, _ = eight_tags()
    gc = og.plan_gc(og.build_graph(s.layout()))
    assert gc.retention is None and "retention" not in orjson.loads(gc.to_json())
    assert og.Plan.from_json(gc.to_json()) == gc
    prune, _ = s.prune(keep_last=3)
    old_style = orjson.loads(prune.to_json())
    del old_style["retention"]
    assert og.Plan.from_dict(old_style).retention is None


@pytest.mark.parametrize(("path", "value", "words"), [
    (("retention", "decisions", 0, "verdict"), "gone", "is not expired or kept"),
    (("retention", "decisions", 7, "rule"), "keep-last", "cannot make a tag expired"),
    (("retention", "decisions", 0, "rule"), "unkept", "cannot make a tag kept"),
    (("retention", "decisions", 0, "digest"), "sha256:nope", "invalid digest"),
    (("retention", "decisions", 0, "bytesFreed"), -1, "non-negative"),
    (("retention", "decisions", 0, "pushTime"), "yesterday", "not a number"),
    (("retention", "now"), None, "not a number"),
    (("retention", "rules", "keepLast"), 0, "--keep-last"),
    (("retention", "rules", "lifecyclePolicy"), {"rules": []}, "lifecycle policy"),
    (("retention", "decisions"), {}, "not a list"),
    (("operation",), "gc", "a gc plan has no retention"),
])
def test_a_bad_retention_in_a_plan_is_a_plan_format_error(path: tuple[Any, ...], value: Any,
                                                          words: str) -> None:
    s, _, _ = eight_tags()
    plan, _ = s.prune(keep_last=3)
    d = orjson.loads(plan.to_json())
    if path == ("operation",):
        d["deletions"] = d["indexChanges"] = d["kept"] = []
        d["bytesFreed"] = 0
    here = d
    for p in path[:-1]:
        here = here[p]
    here[path[-1]] = value
    with pytest.raises(og.PlanFormatError, match=words):
        og.Plan.from_json(orjson.dumps(d))


def test_decisions_hold_the_facts() -> None:
    s, _, _ = eight_tags()
    plan, _ = s.prune(keep_last=3)
    assert plan.retention is not None
    d = {x.tag: x for x in plan.retention.decisions}
    assert d["app:1"].push_time == 1 * DAY and d["app:1"].repository == "app"
    assert d["app:1"].bytes_freed > 0 and d["app:8"].bytes_freed == 0
    assert d["app:1"].live_bytes is None
    assert plan.retention.now == NOW
    lines = plan.retention.lines()
    assert len(lines) == 1 + 8 and "keep-last 3" in lines[1]
    assert math.isclose(sum(x.bytes_freed for x in plan.retention.decisions), plan.bytes_freed)
