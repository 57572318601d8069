"""Retention: which tags to let go, and a plan that lets them go (``ocigraph prune``).

RETENTION.md is the contract.  The rules judge tags; expiring tags is one ``remove`` of all of
them (SEMANTICS §3), and the same plan then sweeps what is garbage, as ``gc`` would -- so a
prune is exactly "remove the expired tags, then gc", and a gc after it plans nothing.

Rules that keep this module honest:

* the core has no clock and no files: ``now`` and every image's push time are given
  (:func:`~ocigraph.image_time` picks a push time from what the shell read);
* one order of images by age (:func:`~ocigraph.age_key`): keep-last ranks by it, the space
  budget evicts by it, a lifecycle policy counts by it;
* the space budget never recounts liveness: each image that may stop being a root counts once
  on every node it keeps live (beyond what stays live whatever happens), and an eviction
  decrements those counts -- linear in what the images reach, not images x graph;
* every decision is a value in the plan, with the rule that decided and the facts it used.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal, get_args

import networkx as nx

from ._ecr import LifecycleImage, LifecyclePolicy, evaluate_lifecycle, parse_lifecycle_policy
from ._errors import BrokenManifestError, PlanFormatError
from ._graph import NeighbourhoodView, live_set, roots, young_nodes
from ._model import Reporter
from ._plan import Deletion, IndexChange, Kept, Plan, Reason, format_bytes
from ._planning import _order, deletion_closure, liveness
from ._policy import Policy
from ._rules import (
    AGE_SOURCES,
    RefName,
    RetentionRuleError,
    age_key,
    format_duration,
    format_time,
    parse_duration,
    parse_globs,
    parse_ref_name,
    parse_size,
)

__all__ = [
    "RetentionRules",
    "retention_rules",
    "RetentionDecision",
    "Retention",
    "PruneReporter",
    "plan_prune",
    "VERDICTS",
    "KEPT_RULES",
    "EXPIRED_RULES",
]

Verdict = Literal["expired", "kept"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)

#: Why a tag stays.  ``keep-tag``, ``keep-last``, ``keep-within``: that rule keeps it;
#: ``outside-only``: no ``--only`` glob selects it, so no rule judges it; ``ambiguous``: the tag
#: names two digests (SEMANTICS §1), so it is never expired; ``lifecycle``: a lifecycle policy
#: did not expire it; ``within-budget``: only ``--max-size`` judges, and it fits.
KeptRule = Literal["keep-tag", "keep-last", "keep-within", "outside-only", "ambiguous",
                   "lifecycle", "within-budget"]
KEPT_RULES: tuple[KeptRule, ...] = get_args(KeptRule)
#: Why a tag goes.  ``unkept``: no keep rule keeps it; ``lifecycle``: a lifecycle policy rule
#: expired its image; ``max-size``: the space budget evicted its image.
ExpiredRule = Literal["unkept", "lifecycle", "max-size"]
EXPIRED_RULES: tuple[ExpiredRule, ...] = get_args(ExpiredRule)


# -- the rules --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RetentionRules:
    """What ``ocigraph prune`` was asked to keep (RETENTION.md §2-§4); valid by construction.

    keep_last
        in each repository, the tags of its N most recently pushed images
    keep_within
        seconds: tags whose image was pushed within this long before now
    keep_tags
        globs on a tag's tag part (after its repository): tags always kept
    only
        globs on the full ref name: the rules judge only these tags; every other tag is kept
    max_size
        bytes: after the rules, evict the oldest images until what stays live fits
    lifecycle
        an ECR lifecycle policy, instead of the three keep rules
    age_from
        where push times came from, ``push`` (manifest blob mtime) or ``created``; the core
        does not read it (it is given push times), the plan records it

    >>> RetentionRules(keep_last=3).describe()
    '--keep-last 3'
    >>> RetentionRules(only=("app:*",))
    Traceback (most recent call last):
    ...
    ocigraph._rules.RetentionRuleError: prune: no keep rule and no --max-size: every tag would expire; give --keep-last, --keep-within, --keep-tag, --policy-file or --max-size
    """

    keep_last: int | None = None
    keep_within: float | None = None
    keep_tags: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    max_size: int | None = None
    lifecycle: LifecyclePolicy | None = None
    age_from: str = "push"

    def __post_init__(self) -> None:
        if self.keep_last is not None and (type(self.keep_last) is not int or self.keep_last < 1):
            raise RetentionRuleError("--keep-last", self.keep_last, "must be a positive integer "
                                     "(to keep no image by count, leave it out)")
        if self.keep_within is not None:
            object.__setattr__(self, "keep_within", parse_duration(self.keep_within, "--keep-within"))
        object.__setattr__(self, "keep_tags", parse_globs(self.keep_tags, "--keep-tag"))
        object.__setattr__(self, "only", parse_globs(self.only, "--only"))
        if self.max_size is not None:
            object.__setattr__(self, "max_size", parse_size(self.max_size, "--max-size"))
        if self.lifecycle is not None and not isinstance(self.lifecycle, LifecyclePolicy):
            raise RetentionRuleError("--policy-file", None, "not a lifecycle policy")
        if self.age_from not in AGE_SOURCES:
            raise RetentionRuleError("--age-from", self.age_from, f"choose from {', '.join(AGE_SOURCES)}")
        if self.lifecycle is not None and self.has_keep_rules:
            raise RetentionRuleError("--policy-file", None, "cannot be combined with --keep-last, "
                                     "--keep-within or --keep-tag: the policy's rules decide")
        if not self.has_keep_rules and self.lifecycle is None and self.max_size is None:
            raise RetentionRuleError("prune", None, "no keep rule and no --max-size: every tag "
                                     "would expire; give --keep-last, --keep-within, --keep-tag, "
                                     "--policy-file or --max-size")

    @property
    def has_keep_rules(self) -> bool:
        """Whether a ``--keep-*`` rule is given (without one, only a policy or the budget
        judges)."""
        return self.keep_last is not None or self.keep_within is not None or bool(self.keep_tags)

    def describe(self) -> str:
        """The rules as command-line options.

        >>> RetentionRules(keep_within=86400 * 30, keep_tags=("v*",), max_size=10 * 1024**3).describe()
        "--keep-within 30d --keep-tag 'v*' --max-size 10.0GiB"
        """
        words: list[str] = []
        if self.keep_last is not None:
            words.append(f"--keep-last {self.keep_last}")
        if self.keep_within is not None:
            words.append(f"--keep-within {format_duration(self.keep_within)}")
        words += [f"--keep-tag {shlex.quote(g)}" for g in self.keep_tags]
        if self.lifecycle is not None:
            words.append(f"--policy-file ({len(self.lifecycle.rules)} rule(s))")
        words += [f"--only {shlex.quote(g)}" for g in self.only]
        if self.max_size is not None:
            words.append(f"--max-size {format_bytes(self.max_size).replace(' ', '')}")
        if self.age_from != "push":
            words.append(f"--age-from {self.age_from}")
        return " ".join(words)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keepLast": self.keep_last,
            "keepWithin": self.keep_within,
            "keepTags": list(self.keep_tags),
            "only": list(self.only),
            "maxSize": self.max_size,
            "lifecyclePolicy": None if self.lifecycle is None else self.lifecycle.to_dict(),
            "ageFrom": self.age_from,
        }

    @classmethod
    def from_dict(cls, doc: Any) -> RetentionRules:
        """Read rules back (raises :class:`RetentionRuleError` for invalid ones)."""
        if not isinstance(doc, dict):
            raise RetentionRuleError("rules", None, "not an object")
        policy = doc.get("lifecyclePolicy")
        keep_last = doc.get("keepLast")
        keep_within = doc.get("keepWithin")
        max_size = doc.get("maxSize")
        if isinstance(keep_within, str) or isinstance(max_size, str):
            raise RetentionRuleError("rules", None, "keepWithin and maxSize are numbers")
        return cls(
            keep_last=keep_last,
            keep_within=keep_within,
            keep_tags=doc.get("keepTags", ()),
            only=doc.get("only", ()),
            max_size=max_size,
            lifecycle=None if policy is None else parse_lifecycle_policy(policy),
            age_from=doc.get("ageFrom", "push"),
        )


def retention_rules(*, keep_last: int | str | None = None, keep_within: str | float | None = None,
                    keep_tags: Iterable[str] = (), only: Iterable[str] = (),
                    max_size: str | int | None = None,
                    policy: bytes | str | Mapping[str, Any] | LifecyclePolicy | None = None,
                    age_from: str = "push") -> RetentionRules:
    """Rules from what a person typed: the command line's values, unparsed.

    ``keep_within`` is a duration (``30d``), ``max_size`` a size (``10G``), ``policy`` an ECR
    lifecycle policy document (its bytes, text or parsed JSON).  Every bad value raises
    :class:`~ocigraph.RetentionRuleError` naming the option.

    >>> r = retention_rules(keep_last="3", keep_within="2w", max_size="1.5GiB")
    >>> r.keep_last, r.keep_within, r.max_size
    (3, 1209600.0, 1610612736)
    >>> retention_rules(keep_last="three")
    Traceback (most recent call last):
    ...
    ocigraph._rules.RetentionRuleError: --keep-last 'three': must be a positive integer
    """
    if isinstance(keep_last, str):
        text = keep_last.strip()
        if not text.isdigit():
            raise RetentionRuleError("--keep-last", keep_last, "must be a positive integer")
        keep_last = int(text)
    lifecycle = policy if isinstance(policy, LifecyclePolicy) or policy is None else (
        parse_lifecycle_policy(policy))
    return RetentionRules(
        keep_last=keep_last,
        keep_within=None if keep_within is None else parse_duration(keep_within, "--keep-within"),
        keep_tags=parse_globs(tuple(keep_tags), "--keep-tag"),
        only=parse_globs(tuple(only), "--only"),
        max_size=None if max_size is None else parse_size(max_size, "--max-size"),
        lifecycle=lifecycle,
        age_from=age_from,
    )


# -- decisions --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RetentionDecision:
    """What prune decided about one tag, and why.

    tag          the full ref name (``None`` for an untagged image a lifecycle policy judged)
    digest       its image
    repository   the tag's repository (RETENTION.md §1; ``""`` for bare tags)
    verdict      ``expired`` or ``kept``
    rule         the rule that decided (:data:`KEPT_RULES`, :data:`EXPIRED_RULES`)
    detail       that rule's parameter in words (``3``, ``30d``, ``v*``, a lifecycle rule...)
    push_time    the image's push time (seconds since the epoch; ``None``: unknown)
    rank         the image's place among its repository's judged images, newest first from 1
                 (``None`` for a tag no rule judged)
    live_bytes   for a budget eviction, the bytes live just before it (else ``None``)
    bytes_freed  the bytes freed when this tag's image lost its tags (the same figure on each
                 of its expired tags; 0 when the image stays)
    """

    tag: str | None
    digest: str
    repository: str
    verdict: Verdict
    rule: str
    detail: str = ""
    push_time: float | None = None
    rank: int | None = None
    live_bytes: int | None = None
    bytes_freed: int = 0

    @property
    def expired(self) -> bool:
        return self.verdict == "expired"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag, "digest": self.digest, "repository": self.repository,
            "verdict": self.verdict, "rule": self.rule, "detail": self.detail,
            "pushTime": self.push_time, "rank": self.rank, "liveBytes": self.live_bytes,
            "bytesFreed": self.bytes_freed,
        }

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> RetentionDecision:
        from ._digest import parse_digest

        if not isinstance(doc, dict):
            raise PlanFormatError(f"{where} is not an object")
        verdict = doc["verdict"]
        allowed: tuple[str, ...] = KEPT_RULES if verdict == "kept" else EXPIRED_RULES
        if verdict not in VERDICTS:
            raise PlanFormatError(f"{where}.verdict: {verdict!r} is not expired or kept")
        if doc["rule"] not in allowed:
            raise PlanFormatError(f"{where}.rule: {doc['rule']!r} cannot make a tag {verdict}")
        tag = doc.get("tag")
        return cls(
            tag=None if tag is None else _str(tag, f"{where}.tag"),
            digest=parse_digest(doc["digest"], f"{where}.digest"),
            repository=_str(doc["repository"], f"{where}.repository"),
            verdict=verdict,
            rule=doc["rule"],
            detail=_str(doc.get("detail", ""), f"{where}.detail"),
            push_time=_number(doc.get("pushTime"), f"{where}.pushTime"),
            rank=_count(doc.get("rank"), f"{where}.rank", optional=True),
            live_bytes=_count(doc.get("liveBytes"), f"{where}.liveBytes", optional=True),
            bytes_freed=_count(doc.get("bytesFreed", 0), f"{where}.bytesFreed") or 0,
        )


@dataclass(frozen=True, slots=True)
class Retention:
    """The retention half of a prune plan: the rules, the ``now`` they were judged at, every
    decision, and the space that stays.

    ``live_bytes``: the bytes of the present blobs that stay live after the plan (shared blobs
    once).  ``over_budget``: by how much that exceeds ``rules.max_size`` (0 when it fits or
    there is no budget).
    """

    rules: RetentionRules
    now: float
    decisions: tuple[RetentionDecision, ...] = ()
    live_bytes: int = 0
    over_budget: int = 0

    @property
    def budget_reached(self) -> bool:
        return self.over_budget == 0

    def expired(self) -> tuple[RetentionDecision, ...]:
        return tuple(d for d in self.decisions if d.expired)

    def kept(self) -> tuple[RetentionDecision, ...]:
        return tuple(d for d in self.decisions if not d.expired)

    def summary(self) -> str:
        """One line: how many tags go and stay, what stays live, and the budget.

        >>> Retention(RetentionRules(max_size=0), now=0.0, live_bytes=10, over_budget=10).summary()
        'retention at 1970-01-01T00:00:00Z (--max-size 0B): 0 tag(s) expired, 0 kept; 10 B live after; budget not reached: 10 bytes over'
        """
        expired = sum(1 for d in self.decisions if d.expired)
        line = (f"retention at {format_time(self.now)} ({self.rules.describe()}): {expired} tag(s) "
                f"expired, {len(self.decisions) - expired} kept; {format_bytes(self.live_bytes)} "
                "live after")
        if self.rules.max_size is not None:
            line += ("; budget reached" if self.budget_reached
                     else f"; budget not reached: {self.over_budget} bytes over")
        return line

    def lines(self) -> list[str]:
        """The summary, then one line per decision (for the text form of a plan)."""
        out = [self.summary()]
        width = max((len(d.tag or "(untagged)") for d in self.decisions), default=0)
        for d in self.decisions:
            rank = "" if d.rank is None else f"  rank {d.rank}"
            why = d.rule + (f" {d.detail}" if d.detail else "")
            freed = f"  frees {format_bytes(d.bytes_freed)}" if d.bytes_freed else ""
            out.append(f"  {d.verdict:<7}  {(d.tag or '(untagged)'):<{width}}  {d.digest[:19]}  "
                       f"pushed {format_time(d.push_time)}{rank}  {why}{freed}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "rules": self.rules.to_dict(),
            "liveBytes": self.live_bytes,
            "overBudget": self.over_budget,
            "decisions": [d.to_dict() for d in self.decisions],
        }

    @classmethod
    def from_dict(cls, doc: Any) -> Retention:
        """Read the retention part of a plan back; :class:`PlanFormatError` says what is wrong."""
        if not isinstance(doc, dict):
            raise PlanFormatError("retention is not an object")
        try:
            rules = RetentionRules.from_dict(doc["rules"])
        except RetentionRuleError as exc:
            raise PlanFormatError(f"retention.rules: {exc}") from None
        decisions = doc.get("decisions", [])
        if not isinstance(decisions, list):
            raise PlanFormatError("retention.decisions is not a list")
        now = _number(doc["now"], "retention.now")
        if now is None:
            raise PlanFormatError("retention.now is not a number")
        return cls(
            rules=rules,
            now=now,
            decisions=tuple(RetentionDecision.from_dict(d, f"retention.decisions[{i}]")
                            for i, d in enumerate(decisions)),
            live_bytes=_count(doc.get("liveBytes", 0), "retention.liveBytes") or 0,
            over_budget=_count(doc.get("overBudget", 0), "retention.overBudget") or 0,
        )


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PlanFormatError(f"{where} is not a string")
    return value


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlanFormatError(f"{where} is not a number")
    return float(value)


def _count(value: Any, where: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if type(value) is not int or value < 0:
        raise PlanFormatError(f"{where} is not a non-negative integer")
    return value


# -- judging ----------------------------------------------------------------------------------

class PruneReporter(Reporter):
    """Progress hooks of a prune, beyond :class:`~ocigraph.Reporter`'s (all no-ops)."""

    def liveness_steps(self, count: int) -> None:
        """The space accounting took ``count`` steps (node visits, edges followed, counts
        changed): a measure of its work that grows linearly with the layout."""


_NULL_REPORTER = PruneReporter()


@dataclass(slots=True)
class _Tag:
    """A tag being judged (mutable while judging; decisions are made from it at the end)."""

    ref: RefName | None  # None: an untagged image (judged only by a lifecycle policy)
    digest: str
    positions: list[int]
    judged: bool = True
    verdict: Verdict = "kept"
    rule: str = ""
    detail: str = ""
    rank: int | None = None
    live_bytes: int | None = None
    bytes_freed: int = 0


@dataclass(slots=True)
class _Judging:
    tags: list[_Tag] = field(default_factory=list)
    #: repository -> digest -> its judged tags there (for an untagged image, one _Tag with ref None)
    images: dict[str, dict[str, list[_Tag]]] = field(default_factory=dict)


def _collect(graph: nx.DiGraph, rules: RetentionRules, policy: Policy) -> _Judging:
    """Every tag of index.json, one :class:`_Tag` per (tag, digest), with what the rules may
    judge; and, under a lifecycle policy that keeps untagged entries, the untagged images."""
    entries = graph.graph["index"].entries
    by_name: dict[tuple[str, str], list[int]] = {}
    digests_of: dict[str, set[str]] = {}
    untagged: dict[str, list[int]] = {}
    for e in entries:
        if e.tag is None:
            untagged.setdefault(e.digest, []).append(e.position)
            continue
        by_name.setdefault((e.tag, e.digest), []).append(e.position)
        digests_of.setdefault(e.tag, set()).add(e.digest)
    out = _Judging()
    for (name, digest), positions in by_name.items():
        t = _Tag(parse_ref_name(name), digest, positions)
        if rules.only and not any(fnmatchcase(name, g) for g in rules.only):
            t.judged, t.rule, t.detail = False, "outside-only", ", ".join(rules.only)
        elif len(digests_of[name]) > 1:
            others = sorted(digests_of[name] - {digest})
            t.judged, t.rule, t.detail = False, "ambiguous", "also names " + ", ".join(others)
        out.tags.append(t)
        if t.judged and t.ref is not None:
            out.images.setdefault(t.ref.repository, {}).setdefault(digest, []).append(t)
    if rules.lifecycle is not None and policy.keep_untagged and not rules.only:
        nodes = graph._node
        for digest, positions in untagged.items():
            if not nodes[digest]["tags"]:
                t = _Tag(None, digest, positions)
                out.tags.append(t)
                out.images.setdefault("", {}).setdefault(digest, []).append(t)
    return out


def _judge_by_keep_rules(j: _Judging, rules: RetentionRules, now: float,
                         push: Mapping[str, float]) -> None:
    within = rules.keep_within
    for images in j.images.values():
        for digest, tags in images.items():
            pushed = push.get(digest)
            rank = tags[0].rank or 0
            for t in tags:
                assert t.ref is not None
                pin = next((g for g in rules.keep_tags if fnmatchcase(t.ref.tag, g)), None)
                if pin is not None:
                    t.rule, t.detail = "keep-tag", pin
                elif rules.keep_last is not None and rank <= rules.keep_last:
                    t.rule, t.detail = "keep-last", str(rules.keep_last)
                elif within is not None and pushed is not None and now - pushed <= within:
                    t.rule, t.detail = "keep-within", format_duration(within)
                elif rules.has_keep_rules:
                    t.verdict, t.rule, t.detail = "expired", "unkept", ""
                else:
                    t.rule, t.detail = "within-budget", format_bytes(rules.max_size or 0)


def _judge_by_lifecycle(j: _Judging, policy: LifecyclePolicy, now: float,
                        push: Mapping[str, float]) -> None:
    for images in j.images.values():
        seen = [LifecycleImage(d, frozenset(t.ref.tag for t in tags if t.ref is not None),
                               push.get(d)) for d, tags in images.items()]
        verdicts = evaluate_lifecycle(policy, seen, now)
        for digest, tags in images.items():
            v = verdicts[digest]
            for t in tags:
                t.rule = "lifecycle"
                if v.expired_by is not None:
                    t.verdict = "expired"
                    t.detail = str(v.expired_by) + ("" if v.rank is None else f" (rank {v.rank})")
                elif v.selected_by is not None:
                    t.detail = f"selected by {v.selected_by}, not expired"
                else:
                    t.detail = "no rule selects it"


class _LiveCounts:
    """Liveness kept by counting, for a space budget (RETENTION.md §3).

    ``permanent`` is what stays live whatever the rules and the budget expire (the closure of
    the roots that cannot go).  Every other root that may go ("movable") counts once on each
    node it keeps live beyond ``permanent``: its reach over successors and referrers, a walk
    that stops at ``permanent``.  A node is live while its count is above zero, so releasing a
    root is a walk over its own reach -- never a recount of the graph.  Live is a reachability
    closure, and the closure of a union of roots is the union of their closures, so this is
    exactly the liveness SEMANTICS §2 defines.
    """

    __slots__ = ("_counts", "_nodes", "_reach", "live_bytes", "steps")

    def __init__(self, graph: nx.DiGraph, permanent: Collection[str],
                 movable: Iterable[str]) -> None:
        nodes, succ = graph._node, graph._succ
        self._nodes = nodes
        self.steps = 0
        referrers: dict[str, list[str]] = {}  # subject -> its referrers: one pass over edges
        for u, out in succ.items():
            for v, attrs in out.items():
                if "subject" in attrs["roles"]:
                    referrers.setdefault(v, []).append(u)
        self._counts: dict[str, int] = {}
        self._reach: dict[str, list[str]] = {}
        steps = 0
        for root in movable:
            if root in permanent or root in self._reach:
                self._reach.setdefault(root, [])
                continue
            seen = {root}
            order = [root]
            i = 0
            while i < len(order):
                n = order[i]
                i += 1
                for nxt in (succ[n], referrers.get(n, ())):
                    for x in nxt:
                        steps += 1
                        if x not in seen and x not in permanent:
                            seen.add(x)
                            order.append(x)
            self._reach[root] = order
            counts = self._counts
            for n in order:
                counts[n] = counts.get(n, 0) + 1
            steps += 2 * len(order)
        self.steps = steps
        self.live_bytes = sum(nodes[n]["size"] for n in permanent if nodes[n]["present"]) + sum(
            nodes[n]["size"] for n in self._counts if nodes[n]["present"])

    def release(self, root: str) -> int:
        """``root`` is no longer a root: the bytes that stop being live."""
        freed = 0
        counts, nodes = self._counts, self._nodes
        reach = self._reach.pop(root, [])
        for n in reach:
            left = counts[n] - 1
            counts[n] = left
            if left == 0 and nodes[n]["present"]:
                freed += nodes[n]["size"]
        self.steps += len(reach)
        self.live_bytes -= freed
        return freed


def _expire_and_sweep(graph: nx.DiGraph, policy: Policy, expired: Collection[int],
                      ) -> tuple[dict[str, Reason], tuple[Kept, ...], list[IndexChange], frozenset[str]]:
    """SEMANTICS ``remove`` of the index.json entries at ``expired``, then a gc of the result,
    as one plan on this graph: ``(reasons, kept, index changes, what stays live)``.

    Remove: liveness is judged as if the expired entries were gone; an image they named that
    is then not live is deleted as by a delete (its referrers, its orphans); one still live
    only loses those entries (the last of them is kept untagged, as ``untag`` does).  Gc: every
    other present or listed node that is not live goes as ``unreachable``.  What remove
    deletes is never live, so the guard (SEMANTICS §3.4) has nothing to refuse.
    """
    entries = graph.graph["index"].entries
    nodes = graph._node
    root_set = {e.digest for e in entries
                if e.position not in expired and (e.tag is not None or policy.keep_untagged)}
    root_set |= young_nodes(graph, policy)
    facts = liveness(graph, policy, root_set)
    live = facts.live
    affected: dict[str, None] = {}
    for p in sorted(expired):
        affected.setdefault(entries[p].digest)
    doomed = [d for d in affected if d not in live]
    if doomed:
        reasons, kept = deletion_closure(graph, doomed, policy, root_set, live=live)
    else:
        reasons, kept = {}, ()
    unreachable = Reason("unreachable")
    for n in sorted(n for n, a in nodes.items()
                    if n not in live and n not in reasons and (a["present"] or a["indexed"])):
        reasons[n] = unreachable
    for n, error, holder in facts.unusable:
        if n not in reasons:
            raise BrokenManifestError(n, error, holder)
    changes = [IndexChange(p, n, entries[p].tag, "drop") for n in reasons for p in nodes[n]["entries"]]
    untag = {p for p in expired if entries[p].tag is not None and entries[p].digest not in reasons}
    for d in sorted({entries[p].digest for p in untag}):
        mine = nodes[d]["entries"]
        keep_one = all(p in untag for p in mine)
        for p in mine:
            if p in untag:
                action: Literal["drop", "untag"] = "untag" if keep_one and p == mine[0] else "drop"
                changes.append(IndexChange(p, d, entries[p].tag, action))
    kept = tuple(k for k in kept if k.digest not in reasons)
    return reasons, kept, changes, live


_Age = tuple[bool, float, str]


def _judge(graph: nx.DiGraph, rules: RetentionRules, policy: Policy, now: float,
           push_times: Mapping[str, float]) -> tuple[_Judging, dict[str, _Age]]:
    """Collect the tags, rank each repository's images newest first (from 1), and judge them
    by the lifecycle policy or the keep rules: ``(the judging, digest -> its age key)``."""
    j = _collect(graph, rules, policy)
    age = {d: age_key(push_times.get(d), d) for d in {t.digest for t in j.tags}}
    for images in j.images.values():  # rank: newest first, from 1
        for rank, digest in enumerate(sorted(images, key=age.__getitem__, reverse=True), 1):
            for t in images[digest]:
                t.rank = rank
    if rules.lifecycle is not None:
        _judge_by_lifecycle(j, rules.lifecycle, now, push_times)
    else:
        _judge_by_keep_rules(j, rules, now, push_times)
    return j, age


def _budget_candidates(tags_of: Mapping[str, list[_Tag]], rules: RetentionRules,
                       age: Mapping[str, _Age]) -> list[str]:
    """The images the space budget may evict, oldest first: those with a judged tag left, and
    no tag pinned or ambiguous (none without ``max_size``)."""
    candidates: list[str] = []
    if rules.max_size is not None:
        for d, mine in tags_of.items():
            if any(t.ref is not None and t.judged and t.verdict == "kept" for t in mine) and all(
                    t.rule not in ("keep-tag", "ambiguous") for t in mine):
                candidates.append(d)
        candidates.sort(key=age.__getitem__)
    return candidates


def _movable_roots(graph: nx.DiGraph, policy: Policy, may_go: Collection[int],
                   age: Mapping[str, _Age]) -> tuple[list[str], frozenset[str]]:
    """``(the roots that may stop being roots, oldest first; what stays live whatever
    happens)``: a root is fixed when it is young or keeps an entry that cannot go."""
    entries = graph.graph["index"].entries
    nodes = graph._node
    all_roots = roots(graph, policy)
    young = young_nodes(graph, policy)
    fixed = set()
    for d in all_roots:
        if d in young or any(p not in may_go and (entries[p].tag is not None or policy.keep_untagged)
                             for p in nodes[d]["entries"]):
            fixed.add(d)
    movable = sorted(all_roots - fixed, key=lambda d: age.get(d) or age_key(None, d))
    return movable, live_set(graph, policy, fixed)


def _root_entries_gone(graph: nx.DiGraph, policy: Policy, d: str, gone: Collection[int]) -> bool:
    """Whether every entry that makes ``d`` a root is at a position in ``gone``."""
    entries = graph.graph["index"].entries
    return all(p in gone or not (entries[p].tag is not None or policy.keep_untagged)
               for p in graph._node[d]["entries"])


def _evict_over_budget(graph: nx.DiGraph, policy: Policy, counts: _LiveCounts, limit: int,
                       candidates: Iterable[str], tags_of: Mapping[str, list[_Tag]],
                       expired: set[int]) -> int:
    """Evict the ``candidates``, oldest first, until what stays live fits in ``limit`` bytes:
    their kept tags expire by ``max-size`` (their positions join ``expired``).  Returns the
    bytes still over the budget."""
    for d in candidates:
        if counts.live_bytes <= limit:
            break
        before = counts.live_bytes
        mine = [t for t in tags_of[d] if t.judged and t.verdict == "kept"]
        for t in mine:
            expired.update(t.positions)
        freed = counts.release(d) if _root_entries_gone(graph, policy, d, expired) else 0
        for t in mine:
            was = "" if t.rule == "within-budget" else f" (was kept by {t.rule} {t.detail})"
            t.verdict, t.rule = "expired", "max-size"
            t.detail = f"{format_bytes(before)} live > {format_bytes(limit)}{was}"
            t.live_bytes, t.bytes_freed = before, freed
    over: int = max(0, counts.live_bytes - limit)
    return over


def _account_space(graph: nx.DiGraph, rules: RetentionRules, policy: Policy, j: _Judging,
                   age: Mapping[str, _Age]) -> tuple[set[int], _LiveCounts, int]:
    """What the rules' expirations free, and the space budget's evictions (RETENTION.md §3):
    ``(the expired entries' positions, the live counts after them, bytes over the budget)``."""
    # What may stop being a root: entries the rules expire, and the selected tags of the images
    # the budget may evict (those with a judged tag left, and no tag pinned or ambiguous).
    by_rules = {p for t in j.tags if t.verdict == "expired" for p in t.positions}
    tags_of: dict[str, list[_Tag]] = {}
    for t in j.tags:
        tags_of.setdefault(t.digest, []).append(t)
    candidates = _budget_candidates(tags_of, rules, age)
    evictable = {p for d in candidates for t in tags_of[d]
                 if t.judged and t.verdict == "kept" for p in t.positions}
    movable, permanent = _movable_roots(graph, policy, by_rules | evictable, age)
    counts = _LiveCounts(graph, permanent, movable)

    for d in movable:  # the rules' expirations, oldest first, each with what it frees
        if _root_entries_gone(graph, policy, d, by_rules):
            freed = counts.release(d)
            for t in tags_of.get(d, ()):
                if t.verdict == "expired":
                    t.bytes_freed = freed

    expired = set(by_rules)
    over = 0
    if rules.max_size is not None:
        over = _evict_over_budget(graph, policy, counts, rules.max_size, candidates, tags_of,
                                  expired)
    return expired, counts, over


def _decisions(j: _Judging, push_times: Mapping[str, float]) -> list[RetentionDecision]:
    """Every tag's decision, by repository, rank, tag and digest."""
    return sorted(
        (RetentionDecision(
            tag=None if t.ref is None else t.ref.name, digest=t.digest,
            repository="" if t.ref is None else t.ref.repository, verdict=t.verdict,
            rule=t.rule, detail=t.detail, push_time=push_times.get(t.digest),
            rank=t.rank if t.judged else None, live_bytes=t.live_bytes,
            bytes_freed=t.bytes_freed if t.verdict == "expired" else 0)
         for t in j.tags),
        key=lambda d: (d.repository, d.rank is None, d.rank or 0, d.tag or "", d.digest))


def plan_prune(graph: nx.DiGraph, rules: RetentionRules, *, now: float,
               push_times: Mapping[str, float], policy: Policy | None = None,
               reporter: Reporter | None = None) -> Plan:
    """Judge every tag by ``rules`` at ``now``, and plan to let the expired ones go
    (RETENTION.md): one ``remove`` of the expired tags, then a gc sweep, in one plan (operation
    ``prune``), with every decision in ``plan.retention``.

    ``push_times`` maps an image's digest to its push time (seconds since the epoch), as the
    shell read it (:func:`~ocigraph.image_time`); an image without one counts as the oldest
    and is never "within" a duration.  ``policy`` is the GC policy of the remove and the sweep.
    ``reporter`` gets phases, and with a :class:`PruneReporter` the work of the space
    accounting.

    Raises :class:`~ocigraph.BrokenManifestError` when a manifest that stays live cannot be
    read (SEMANTICS §5).

    >>> import ocigraph as og
    >>> layout = og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {})
    >>> plan = plan_prune(og.build_graph(layout), RetentionRules(keep_last=1), now=0.0,
    ...                   push_times={})
    >>> plan.operation, plan.is_empty, plan.retention.decisions
    ('prune', True, ())
    """
    policy = policy or Policy()
    if isinstance(graph, NeighbourhoodView):
        raise ValueError("prune needs the whole graph; a neighbourhood view plans deletes only")
    rep = reporter or _NULL_REPORTER
    nodes = graph._node

    rep.phase_started("close")
    j, age = _judge(graph, rules, policy, now, push_times)
    expired, counts, over = _account_space(graph, rules, policy, j, age)
    rep.phase_finished("close")
    if isinstance(rep, PruneReporter):
        rep.liveness_steps(counts.steps)

    rep.phase_started("plan")
    reasons, kept, changes, _ = _expire_and_sweep(graph, policy, expired)
    deletions = []
    for n in _order(graph, reasons):
        a = nodes[n]
        deletions.append(Deletion(n, reasons[n], a["size"], a["present"],
                                  tuple(sorted(a["media_types"]))))
    decisions = _decisions(j, push_times)
    targets = tuple(d.tag if d.tag is not None else d.digest for d in decisions if d.expired)
    by_pos = {c.position: c for c in changes}
    plan = Plan(
        operation="prune",
        targets=targets,
        policy=policy,
        index_fingerprint=graph.graph["fingerprint"],
        deletions=tuple(deletions),
        index_changes=tuple(by_pos[p] for p in sorted(by_pos)),
        kept=kept,
        snapshot_time=graph.graph.get("now"),
        retention=Retention(rules, float(now), tuple(decisions), counts.live_bytes, over),
    )
    rep.phase_finished("plan")
    return plan
