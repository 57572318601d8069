"""Properties of ``plan_prune`` on generated layouts with repositories and push times, an
independent model of ECR lifecycle policies, and the space budget's work growing linearly."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

import ocigraph as og
from ocigraph.testing import generated_layouts, policies

DAY = 86400.0
NOW = 10 * DAY
REPOSITORIES = ("", "app", "ghcr.io/org/app", "host:5000/x")
TAG_WORDS = ("v1", "v2", "stable", "pr", "rc")
KEEP_TAG_GLOBS = ("v*", "stable*", "*c-*")
ONLY_GLOBS = ("app:*", "ghcr.io/*", "*:pr-*", "v*", "host:5000/x:*")


# -- a layout with repositories and push times ---------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A generated layout whose tags are image references in a few repositories, each image
    with a push time (some unknown), and a GC policy."""

    layout: og.Layout
    push: Mapping[str, float]
    policy: og.Policy

    def graph(self) -> og.LayoutGraph:
        return og.build_graph(self.layout)


_LAYOUTS = {flag: generated_layouts(max_images=5, max_indexes=2, max_referrers=3, max_dangling=2,
                                    ambiguous_tags=flag) for flag in (False, True)}
_POLICIES = policies()
_CHOICES = st.binary(min_size=64, max_size=64)  # one draw read as many choices (fast to draw)


@st.composite
def cases(draw: st.DrawFn, ambiguous: bool = False) -> Case:
    g = draw(_LAYOUTS[ambiguous])
    choices = iter(draw(_CHOICES) * 4)
    doc = orjson.loads(g.index_json)
    names: dict[str, str] = {}
    for tag in sorted(g.tags):
        repo = REPOSITORIES[next(choices) % len(REPOSITORIES)]
        part = f"{TAG_WORDS[next(choices) % len(TAG_WORDS)]}-{tag}"
        names[tag] = f"{repo}:{part}" if repo else part
    for entry in doc["manifests"]:
        notes = entry.get("annotations") or {}
        if og.REF_NAME in notes:
            notes[og.REF_NAME] = names[notes[og.REF_NAME]]
    layout = og.layout_from_bytes(orjson.dumps(doc), g.blobs)
    push: dict[str, float] = {}
    for d in g.known:
        day = next(choices) % 10  # 0-8 days, 9: unknown; ties happen
        if day < 9:
            push[d] = day * DAY
    policy = draw(_POLICIES)
    note(f"tags: {names}\npush days: { {g.label_of(d): t / DAY for d, t in push.items()} }"
         f"\npolicy: {policy}")
    return Case(layout, push, policy)


@st.composite
def keep_rules(draw: st.DrawFn, budget: bool | None = None) -> og.RetentionRules:
    keep_last = draw(st.one_of(st.none(), st.integers(1, 3)))
    keep_within = draw(st.one_of(st.none(), st.integers(0, 6).map(lambda d: d * DAY)))
    keep_tags = tuple(draw(st.lists(st.sampled_from(KEEP_TAG_GLOBS), max_size=2, unique=True)))
    only = tuple(draw(st.lists(st.sampled_from(ONLY_GLOBS), max_size=2, unique=True)))
    if budget is None:
        budget = draw(st.booleans())
    max_size = draw(st.integers(0, 6000)) if budget else None
    if keep_last is None and keep_within is None and not keep_tags and max_size is None:
        keep_last = 1
    rules = og.RetentionRules(keep_last=keep_last, keep_within=keep_within, keep_tags=keep_tags,
                              only=only, max_size=max_size)
    note(f"rules: {rules.describe()}")
    return rules


def prune(case: Case, rules: og.RetentionRules) -> tuple[og.Plan, og.Layout]:
    plan = og.plan_prune(case.graph(), rules, now=NOW, push_times=case.push, policy=case.policy)
    note(str(plan))
    assert plan.retention is not None
    note("\n".join(plan.retention.lines()))
    return plan, og.simulate(case.layout, plan)


def entries(layout: og.Layout) -> list[tuple[str, str | None]]:
    return [(e.digest, e.tag) for e in layout.index.entries]


def live_bytes(layout: og.Layout, policy: og.Policy) -> int:
    g = og.build_graph(layout)
    return sum(g.nodes[n]["size"] for n in og.live_set(g, policy) if g.nodes[n]["present"])


def judged(tag: str, rules: og.RetentionRules, ambiguous: set[str]) -> bool:
    from fnmatch import fnmatchcase

    return tag not in ambiguous and (not rules.only or any(fnmatchcase(tag, g) for g in rules.only))


def pinned(tag: str, rules: og.RetentionRules) -> bool:
    from fnmatch import fnmatchcase

    return any(fnmatchcase(og.parse_ref_name(tag).tag, g) for g in rules.keep_tags)


def ambiguous_tags(layout: og.Layout) -> set[str]:
    return {t for t, ds in layout.tags().items() if len(ds) > 1}


def age(push: Mapping[str, float], digest: str) -> tuple[float, str]:
    """Oldest first; written apart from og.age_key on purpose."""
    return (push.get(digest, -math.inf), digest)


# -- properties ----------------------------------------------------------------------------------

@given(cases(ambiguous=True), keep_rules())
def test_a_tag_pinned_by_keep_tag_or_outside_only_is_never_expired(case: Case,
                                                                  rules: og.RetentionRules) -> None:
    plan, after = prune(case, rules)
    left = set(entries(after))
    ambiguous = ambiguous_tags(case.layout)
    for digest, tag in entries(case.layout):
        if tag is None:
            continue
        if not judged(tag, rules, ambiguous) or pinned(tag, rules):
            assert (digest, tag) in left, tag
    for d in plan.retention.expired():  # type: ignore[union-attr]
        assert d.tag is not None and judged(d.tag, rules, ambiguous) and not pinned(d.tag, rules)


@given(cases(), keep_rules(), st.integers(1, 3))
def test_the_n_newest_images_of_each_repository_survive_keep_last_unless_the_budget_evicts(
        case: Case, rules: og.RetentionRules, n: int) -> None:
    rules = og.RetentionRules(keep_last=n, keep_within=rules.keep_within, keep_tags=rules.keep_tags,
                              only=rules.only, max_size=rules.max_size)
    plan, after = prune(case, rules)
    evicted = {(d.tag, d.digest) for d in plan.retention.decisions  # type: ignore[union-attr]
               if d.rule == "max-size"}
    left = set(entries(after))
    images: dict[str, set[str]] = {}
    for digest, tag in entries(case.layout):
        if tag is not None and judged(tag, rules, set()):
            images.setdefault(og.repository_of(tag), set()).add(digest)
    for repo, digests in images.items():
        newest = sorted(digests, key=lambda d: age(case.push, d), reverse=True)[:n]
        for digest, tag in entries(case.layout):
            if digest in newest and tag is not None and og.repository_of(tag) == repo \
                    and judged(tag, rules, set()):
                assert (digest, tag) in left or (tag, digest) in evicted, (repo, tag)
    if rules.max_size is None:
        assert not evicted


@given(cases(), keep_rules())
def test_pruning_the_result_again_plans_nothing_and_gc_after_prune_plans_nothing(
        case: Case, rules: og.RetentionRules) -> None:
    _plan, after = prune(case, rules)
    graph = og.build_graph(after)
    assert og.plan_gc(graph, case.policy).is_empty
    again = og.plan_prune(graph, rules, now=NOW, push_times=case.push, policy=case.policy)
    note(f"again: {again}")
    assert again.is_empty
    assert again.retention is not None and not again.retention.expired()


@given(cases(), keep_rules(budget=True))
def test_a_reachable_budget_is_met_and_evicts_oldest_first(case: Case,
                                                          rules: og.RetentionRules) -> None:
    plan, after = prune(case, rules)
    r = plan.retention
    assert r is not None and rules.max_size is not None
    live = live_bytes(after, case.policy)
    assert r.live_bytes == live
    assert r.over_budget == max(0, live - rules.max_size)
    if r.budget_reached:
        assert live <= rules.max_size
    # the candidates, from the decisions: images with a judged tag the rules kept, none pinned
    by_digest: dict[str, list[og.RetentionDecision]] = {}
    for d in r.decisions:
        by_digest.setdefault(d.digest, []).append(d)
    candidates = sorted(
        (dg for dg, ds in by_digest.items()
         if any(d.rule == "max-size" or (d.verdict == "kept" and d.rank is not None) for d in ds)
         and not any(d.rule in ("keep-tag", "ambiguous") for d in ds)),
        key=lambda dg: age(case.push, dg))
    evicted = [dg for dg in candidates if any(d.rule == "max-size" for d in by_digest[dg])]
    assert evicted == candidates[:len(evicted)]  # no newer image went before an older one
    if not r.budget_reached:
        assert evicted == candidates
    for d in r.decisions:
        if d.rule == "max-size":
            assert d.live_bytes is not None and d.live_bytes > rules.max_size


@given(cases(), keep_rules())
def test_prune_is_remove_of_its_expired_tags_then_gc(case: Case, rules: og.RetentionRules) -> None:
    plan, after = prune(case, rules)
    expired = sorted({d.tag for d in plan.retention.expired() if d.tag is not None})  # type: ignore[union-attr]
    graph = case.graph()
    removed = og.plan_remove(graph, expired, case.policy)
    mid = og.simulate(case.layout, removed)
    swept = og.plan_gc(og.build_graph(mid), case.policy)
    final = og.simulate(mid, swept)
    assert entries(after) == entries(final)
    assert set(after.blobs) == set(final.blobs)
    assert plan.deleted_digests() == removed.deleted_digests() | swept.deleted_digests()
    reasons = plan.reasons()
    for d in removed.deletions:
        assert reasons[d.digest] == d.reason
    assert plan.bytes_freed == removed.bytes_freed + swept.bytes_freed


@given(cases(), st.data())
def test_prune_round_trips_through_json(case: Case, data: st.DataObject) -> None:
    rules = data.draw(st.one_of(keep_rules(), lifecycle_rules()))
    plan, _ = prune(case, rules)
    assert og.Plan.from_json(plan.to_json()) == plan


# -- ECR lifecycle policies, against a model written here ----------------------------------------

PATTERNS = ("prod*", "*1", "dev", "*", "rel-*", "p*d*", "v*-*")
PREFIXES = ("prod", "dev", "rel", "v")
ECR_TAGS = ("prod", "prod-1", "dev", "rel-2", "v1-x", "x")


@st.composite
def policy_documents(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 4))
    priorities = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n, unique=True))
    rules = []
    for p in priorities:
        status = draw(st.sampled_from(("tagged", "tagged", "untagged", "any")))
        sel: dict[str, Any] = {"tagStatus": status}
        if status == "tagged":
            if draw(st.booleans()):
                sel["tagPatternList"] = draw(st.lists(st.sampled_from(PATTERNS), min_size=1,
                                                      max_size=2, unique=True))
            else:
                sel["tagPrefixList"] = draw(st.lists(st.sampled_from(PREFIXES), min_size=1,
                                                     max_size=2, unique=True))
        if draw(st.booleans()):
            sel |= {"countType": "imageCountMoreThan", "countNumber": draw(st.integers(1, 3))}
        else:
            sel |= {"countType": "sinceImagePushed", "countUnit": "days",
                    "countNumber": draw(st.integers(1, 6))}
        rules.append({"rulePriority": p, "selection": sel, "action": {"type": "expire"}})
    doc = {"rules": rules}
    try:
        og.parse_lifecycle_policy(doc)
    except og.LifecyclePolicyError:
        assume(False)
    note(f"policy: {orjson.dumps(doc).decode()}")
    return doc


@st.composite
def lifecycle_rules(draw: st.DrawFn) -> og.RetentionRules:
    doc = draw(policy_documents())
    max_size = draw(st.one_of(st.none(), st.integers(0, 6000)))
    only = tuple(draw(st.lists(st.sampled_from(ONLY_GLOBS), max_size=1)))
    return og.retention_rules(policy=doc, max_size=max_size, only=only)


def wildcard(pattern: str, text: str) -> bool:
    """ECR's ``*`` (any run of characters, everything else literal), by dynamic programming."""
    row = [True] + [False] * len(text)
    for ch in pattern:
        nxt = [row[0] and ch == "*"] + [False] * len(text)
        for j in range(1, len(text) + 1):
            nxt[j] = (nxt[j - 1] or row[j]) if ch == "*" else (row[j - 1] and text[j - 1] == ch)
        row = nxt
    return row[-1]


def model_expired(doc: Mapping[str, Any], images: list[tuple[str, frozenset[str], float | None]],
                  now: float) -> dict[str, int]:
    """digest -> priority of the rule that expires it, as ECR's documentation describes it."""
    expired: dict[str, int] = {}
    matched_before: set[str] = set()
    for rule in sorted(doc["rules"], key=lambda r: r["rulePriority"]):
        sel = rule["selection"]

        def selects(tags: frozenset[str], sel: Mapping[str, Any] = sel) -> bool:
            if sel["tagStatus"] == "any":
                return True
            if sel["tagStatus"] == "untagged":
                return len(tags) == 0
            if "tagPatternList" in sel:
                return bool(tags) and all(any(wildcard(p, t) for t in tags)
                                          for p in sel["tagPatternList"])
            return bool(tags) and all(any(t.startswith(p) for t in tags)
                                      for p in sel["tagPrefixList"])

        chosen = [i for i in images if selects(i[1])]
        chosen.sort(key=lambda i: (-math.inf if i[2] is None else i[2], i[0]), reverse=True)
        if sel["countType"] == "imageCountMoreThan":
            over = chosen[sel["countNumber"]:]
        else:
            over = [i for i in chosen if i[2] is None or now - i[2] > sel["countNumber"] * DAY]
        for digest, _, _ in over:
            if digest not in matched_before and digest not in expired:
                expired[digest] = rule["rulePriority"]
        matched_before |= {i[0] for i in chosen}
    return expired


def test_wildcard_model_itself() -> None:
    assert wildcard("prod*", "prod") and wildcard("*1", "v1") and wildcard("p*d*", "prod-1")
    assert not wildcard("dev", "devx") and not wildcard("*1", "1x") and wildcard("*", "")


@given(policy_documents(),
       st.lists(st.tuples(st.frozensets(st.sampled_from(ECR_TAGS), max_size=3),
                          st.one_of(st.none(), st.integers(0, 8))), max_size=8))
def test_lifecycle_evaluation_matches_the_model(doc: dict[str, Any],
                                                drawn: list[tuple[frozenset[str], int | None]]) -> None:
    images = [(f"d{i}", tags, None if day is None else day * DAY)
              for i, (tags, day) in enumerate(drawn)]
    policy = og.parse_lifecycle_policy(doc)
    got = og.evaluate_lifecycle(policy, [og.LifecycleImage(*i) for i in images], NOW)
    want = model_expired(doc, images, NOW)
    assert {d: v.expired_by.priority for d, v in got.items() if v.expired_by is not None} == want


@given(cases(), policy_documents())
def test_prune_with_a_lifecycle_policy_matches_the_model_per_repository(
        case: Case, doc: dict[str, Any]) -> None:
    rules = og.retention_rules(policy=doc)
    plan, after = prune(case, rules)
    ambiguous = ambiguous_tags(case.layout)
    per_repo: dict[str, dict[str, set[str]]] = {}
    for digest, tag in entries(case.layout):
        if tag is not None and tag not in ambiguous:
            ref = og.parse_ref_name(tag)
            per_repo.setdefault(ref.repository, {}).setdefault(digest, set()).add(ref.tag)
    g = case.graph()
    if case.policy.keep_untagged:  # untagged images are judged in repository "" too
        for digest, tag in entries(case.layout):
            if tag is None and not g.nodes[digest]["tags"]:
                per_repo.setdefault("", {}).setdefault(digest, set())
    want: set[tuple[str, str | None]] = set()
    for repo, images in per_repo.items():
        listed = [(d, frozenset(t), case.push.get(d)) for d, t in images.items()]
        for digest in model_expired(doc, listed, NOW):
            want |= {(digest, f"{repo}:{t}" if repo else t) for t in images[digest]} if images[
                digest] else {(digest, None)}
    got = {(d.digest, d.tag) for d in plan.retention.expired()}  # type: ignore[union-attr]
    assert got == want
    left = set(entries(after))
    for digest, tag in want:
        if tag is not None:
            assert (digest, tag) not in left
    assert og.plan_gc(og.build_graph(after), case.policy).is_empty
    if not case.policy.keep_untagged:  # (under keep_untagged an image stripped of its tags
        # but kept by an untagged entry is an untagged image the next run may judge)
        again = og.plan_prune(og.build_graph(after), rules, now=NOW, push_times=case.push,
                              policy=case.policy)
        assert again.is_empty


# -- the budget's work is linear -----------------------------------------------------------------

class CountingReporter(og.PruneReporter):
    def __init__(self) -> None:
        self.steps = 0

    def liveness_steps(self, count: int) -> None:
        self.steps += count


def synthetic(n: int) -> tuple[og.Layout, dict[str, float]]:
    """``n`` images in 4 repositories sharing one base layer (a node with ``n`` predecessors),
    each with its own config and layer, a signature, and every tenth in a two-image index."""
    blobs: dict[str, bytes] = {}

    def put(data: bytes, media_type: str) -> dict[str, Any]:
        d = og.digest_bytes(data)
        blobs[d] = data
        return {"mediaType": media_type, "digest": d, "size": len(data)}

    layer = "application/vnd.oci.image.layer.v1.tar"
    config = "application/vnd.oci.image.config.v1+json"
    base = put(b"base layer" * 100, layer)
    index: list[dict[str, Any]] = []
    push: dict[str, float] = {}
    previous: dict[str, Any] | None = None
    for i in range(n):
        cfg = put(b'{"image": %d}' % i, config)
        own = put(b"layer %d" % i, layer)
        man = put(orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_MANIFEST, "config": cfg,
                                "layers": [base, own]}), og.OCI_MANIFEST)
        put(orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_MANIFEST, "config": cfg,
                          "layers": [put(b"sig %d" % i, layer)], "subject": man,
                          "artifactType": "application/x-sig"}), og.OCI_MANIFEST)
        push[man["digest"]] = float(i)
        index.append(man | {"annotations": {og.REF_NAME: f"repo{i % 4}:{i}"}})
        if i % 10 == 9 and previous is not None:
            idx = put(orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_INDEX,
                                    "manifests": [previous, man]}), og.OCI_INDEX)
            push[idx["digest"]] = i + 0.5
            index.append(idx | {"annotations": {og.REF_NAME: f"repo{i % 4}:multi-{i}"}})
        previous = man
    doc = {"schemaVersion": 2, "manifests": index}
    return og.layout_from_bytes(orjson.dumps(doc), blobs), push


def budget_steps(n: int) -> int:
    layout, push = synthetic(n)
    reporter = CountingReporter()
    rules = og.retention_rules(keep_last=n // 8, max_size=0)  # the budget evicts everything
    plan = og.plan_prune(og.build_graph(layout), rules, now=float(n), push_times=push,
                         reporter=reporter)
    assert plan.retention is not None and plan.retention.live_bytes == 0
    assert not og.simulate(layout, plan).blobs
    return reporter.steps


def test_space_accounting_work_grows_linearly_with_the_number_of_images() -> None:
    small, large = budget_steps(250), budget_steps(2500)
    assert small > 250 * 5  # every image's config, layers and signature were counted
    assert large / small < 10.5, (small, large)  # 10x the images: 10x the steps, not 100x


@pytest.mark.parametrize("n", [3, 40])
def test_the_synthetic_layout_prunes_to_keep_last(n: int) -> None:
    layout, push = synthetic(n)
    plan = og.plan_prune(og.build_graph(layout), og.retention_rules(keep_last=1), now=float(n),
                         push_times=push)
    after = og.simulate(layout, plan)
    assert len({og.repository_of(t) for t in after.tags()}) == min(n, 4)
    assert og.plan_gc(og.build_graph(after)).is_empty
