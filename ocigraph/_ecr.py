"""ECR lifecycle policies: the document ECR accepts, validated, and its rules applied to the
images of one repository (RETENTION.md §4).

What ECR documents, and this module does:

* rules are applied by ascending ``rulePriority``; priorities are unique, need not be
  consecutive, and a rule whose ``tagStatus`` is ``any`` must have the highest one;
* an image is expired by at most one rule; once an image matches the tag selection of a rule,
  no rule of lower priority may expire it -- but every rule still sees it, so it still takes a
  place in a lower rule's ``imageCountMoreThan`` ranking (expired or not);
* ``tagged`` with ``tagPatternList`` (``*`` matches any run of characters, at most four per
  pattern) or ``tagPrefixList`` selects an image when *every* pattern or prefix matches at
  least one of its tags; ``untagged`` selects images with no tag; ``any`` every image;
* ``imageCountMoreThan N``: the selected images newest first, all after the N-th expire;
  ``sinceImagePushed N`` (``countUnit: days``): selected images pushed more than N days ago;
* only one rule may select untagged images, and two ``tagged`` rules may not select by the same
  list (the second could never expire anything).

Evaluation is a pure function of the images (digest, tags, push time) and ``now``; ordering is
:func:`ocigraph._rules.age_key`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ._rules import LifecyclePolicyError, age_key

__all__ = [
    "TAG_STATUSES",
    "COUNT_TYPES",
    "LifecycleRule",
    "LifecyclePolicy",
    "LifecycleImage",
    "LifecycleVerdict",
    "parse_lifecycle_policy",
    "evaluate_lifecycle",
]

TAG_STATUSES = ("tagged", "untagged", "any")
COUNT_TYPES = ("imageCountMoreThan", "sinceImagePushed")
MAX_WILDCARDS = 4
DAY = 86400

_RULE_FIELDS = ("rulePriority", "description", "selection", "action")
_SELECTION_FIELDS = ("tagStatus", "tagPatternList", "tagPrefixList", "countType", "countUnit",
                     "countNumber")
#: fields and values of ECR's archive tier, which a layout does not have: refused with a reason
_ARCHIVE = "ECR's archive tier (pull and transition records) has no counterpart in a layout"


def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in text.split("*")), re.DOTALL)


@dataclass(frozen=True, slots=True)
class LifecycleRule:
    """One rule of a lifecycle policy, valid by construction (see
    :func:`parse_lifecycle_policy`).

    >>> r = LifecycleRule(1, "tagged", "imageCountMoreThan", 3, tag_patterns=("prod*",))
    >>> r.selects({"prod-1", "x"}), r.selects({"dev"}), r.selects(set())
    (True, False, False)
    >>> print(r)
    rulePriority 1: tagged ["prod*"], imageCountMoreThan 3
    """

    priority: int
    tag_status: str
    count_type: str
    count_number: int
    tag_patterns: tuple[str, ...] = ()
    tag_prefixes: tuple[str, ...] = ()
    description: str | None = None
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(_pattern(p) for p in self.tag_patterns))

    def selects(self, tags: Collection[str]) -> bool:
        """Whether the rule's tag selection matches an image with these tags."""
        if self.tag_status == "any":
            return True
        if self.tag_status == "untagged":
            return not tags
        if not tags:
            return False
        if self.tag_patterns:
            return all(any(p.fullmatch(t) for t in tags) for p in self._compiled)
        return all(any(t.startswith(prefix) for t in tags) for prefix in self.tag_prefixes)

    def to_dict(self) -> dict[str, Any]:
        """The rule as ECR writes it."""
        selection: dict[str, Any] = {"tagStatus": self.tag_status}
        if self.tag_patterns:
            selection["tagPatternList"] = list(self.tag_patterns)
        if self.tag_prefixes:
            selection["tagPrefixList"] = list(self.tag_prefixes)
        selection["countType"] = self.count_type
        if self.count_type == "sinceImagePushed":
            selection["countUnit"] = "days"
        selection["countNumber"] = self.count_number
        out: dict[str, Any] = {"rulePriority": self.priority}
        if self.description is not None:
            out["description"] = self.description
        out["selection"] = selection
        out["action"] = {"type": "expire"}
        return out

    def __str__(self) -> str:
        what = self.tag_status
        if self.tag_patterns:
            what += " " + orjson.dumps(list(self.tag_patterns)).decode()
        if self.tag_prefixes:
            what += " prefixes " + orjson.dumps(list(self.tag_prefixes)).decode()
        unit = " days" if self.count_type == "sinceImagePushed" else ""
        return f"rulePriority {self.priority}: {what}, {self.count_type} {self.count_number}{unit}"


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """A valid lifecycle policy: its rules by ascending priority.

    >>> p = parse_lifecycle_policy(b'''{"rules": [{"rulePriority": 1,
    ...   "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5},
    ...   "action": {"type": "expire"}}]}''')
    >>> parse_lifecycle_policy(p.to_dict()) == p, len(p.rules)
    (True, 1)
    """

    rules: tuple[LifecycleRule, ...]

    def to_dict(self) -> dict[str, Any]:
        """The document ECR accepts (``parse_lifecycle_policy`` reads it back unchanged)."""
        return {"rules": [r.to_dict() for r in self.rules]}


def parse_lifecycle_policy(document: bytes | str | Mapping[str, Any]) -> LifecyclePolicy:
    """Validate an ECR lifecycle policy document (JSON text, or the parsed object).

    Every invalid document is refused with a :class:`~ocigraph.LifecyclePolicyError` naming the
    rule's position in ``rules`` (and its priority) and the field at fault.

    >>> parse_lifecycle_policy('{"rules": [{"rulePriority": 1, "selection": {"tagStatus": '
    ...     '"tagged", "countType": "imageCountMoreThan", "countNumber": 3}}]}')
    Traceback (most recent call last):
    ...
    ocigraph._rules.LifecyclePolicyError: lifecycle policy rules[0] (rulePriority 1): selection: tagStatus "tagged" needs a tagPatternList or a tagPrefixList
    """
    if isinstance(document, (bytes, str)):
        try:
            doc = orjson.loads(document)
        except orjson.JSONDecodeError as exc:
            raise LifecyclePolicyError(f"not JSON ({exc})") from None
    else:
        doc = document
    if not isinstance(doc, Mapping):
        raise LifecyclePolicyError("the document must be a JSON object with a \"rules\" list")
    extra = sorted(set(doc) - {"rules"})
    if extra:
        raise LifecyclePolicyError(f"unknown field {extra[0]!r} (a policy has only \"rules\")")
    items = doc.get("rules")
    if not isinstance(items, list) or not items:
        raise LifecyclePolicyError("\"rules\" must be a non-empty list of rules")
    rules = [_parse_rule(i, item) for i, item in enumerate(items)]
    _check_together(rules)
    return LifecyclePolicy(tuple(sorted(rules, key=lambda r: r.priority)))


def _parse_rule(position: int, item: Any) -> LifecycleRule:
    def fail(why: str, where: str | None = None, priority: int | None = None) -> LifecyclePolicyError:
        return LifecyclePolicyError(why, position=position, priority=priority, field=where)

    if not isinstance(item, Mapping):
        raise fail("a rule must be a JSON object")
    priority = item.get("rulePriority")
    if "rulePriority" not in item:
        raise fail("missing (every rule needs a unique rulePriority)", "rulePriority")
    if type(priority) is not int or priority < 1:
        raise fail(f"must be a positive integer, not {priority!r}", "rulePriority")

    def bad(why: str, where: str | None = None) -> LifecyclePolicyError:
        return fail(why, where, priority)

    for name in item:
        if name not in _RULE_FIELDS:
            raise bad(f"unknown field {name!r} (a rule has {', '.join(_RULE_FIELDS)})")
    description = item.get("description")
    if description is not None and not isinstance(description, str):
        raise bad("must be a string", "description")

    sel = item.get("selection")
    if sel is None:
        raise bad("missing: a rule needs a selection", "selection")
    if not isinstance(sel, Mapping):
        raise bad("must be an object", "selection")
    for name in sel:
        if name == "storageClass":
            raise bad(_ARCHIVE, f"selection.{name}")
        if name not in _SELECTION_FIELDS:
            raise bad(f"unknown field {name!r} (a selection has {', '.join(_SELECTION_FIELDS)})",
                      "selection")
    status = sel.get("tagStatus")
    if status not in TAG_STATUSES:
        shown = "missing" if "tagStatus" not in sel else f"{status!r} is not one"
        raise bad(f"{shown}; choose from tagged, untagged, any", "selection.tagStatus")
    patterns = _tag_list(sel, "tagPatternList", bad)
    prefixes = _tag_list(sel, "tagPrefixList", bad)
    if status == "tagged":
        if not patterns and not prefixes:
            raise bad("tagStatus \"tagged\" needs a tagPatternList or a tagPrefixList", "selection")
        if patterns and prefixes:
            raise bad("give a tagPatternList or a tagPrefixList, not both", "selection")
    elif patterns or prefixes:
        name = "tagPatternList" if patterns else "tagPrefixList"
        raise bad(f"only a rule with tagStatus \"tagged\" selects by tags, not {status!r}",
                  f"selection.{name}")
    for p in patterns:
        if p.count("*") > MAX_WILDCARDS:
            raise bad(f"{p!r} has {p.count('*')} wildcards; ECR allows at most {MAX_WILDCARDS}",
                      "selection.tagPatternList")

    count_type = sel.get("countType")
    if count_type in ("sinceImagePulled", "sinceImageTransitioned"):
        raise bad(f"{count_type!r}: {_ARCHIVE}; use imageCountMoreThan or sinceImagePushed",
                  "selection.countType")
    if count_type not in COUNT_TYPES:
        shown = "missing" if "countType" not in sel else f"{count_type!r} is not one"
        raise bad(f"{shown}; choose from {', '.join(COUNT_TYPES)}", "selection.countType")
    number = sel.get("countNumber")
    if "countNumber" not in sel:
        raise bad("missing", "selection.countNumber")
    if type(number) is not int or number < 1:
        raise bad(f"must be a positive integer, not {number!r}", "selection.countNumber")
    if count_type == "sinceImagePushed":
        if sel.get("countUnit") != "days":
            shown = "missing" if "countUnit" not in sel else f"{sel['countUnit']!r}"
            raise bad(f"{shown}; sinceImagePushed counts \"days\"", "selection.countUnit")
    elif "countUnit" in sel:
        raise bad("only sinceImagePushed takes a countUnit", "selection.countUnit")
    action = item.get("action")
    if action is None:
        raise bad("missing: a rule needs an action, {\"type\": \"expire\"}", "action")
    if not isinstance(action, Mapping):
        raise bad("must be an object, {\"type\": \"expire\"}", "action")
    for name in action:
        if name == "targetStorageClass":
            raise bad(_ARCHIVE, f"action.{name}")
        if name != "type":
            raise bad(f"unknown field {name!r}", "action")
    if action.get("type") != "expire":
        what = "missing" if "type" not in action else f"{action['type']!r} is not supported"
        raise bad(f"{what}; the only action is \"expire\"", "action.type")

    return LifecycleRule(priority, status, count_type, number, patterns, prefixes, description)


def _tag_list(sel: Mapping[str, Any], name: str, bad: Any) -> tuple[str, ...]:
    if name not in sel:
        return ()
    value = sel[name]
    if not isinstance(value, list) or not value:
        raise bad("must be a non-empty list of strings", f"selection.{name}")
    for v in value:
        if not isinstance(v, str) or not v:
            raise bad(f"{v!r} is not a non-empty string", f"selection.{name}")
    return tuple(value)


def _check_together(rules: Sequence[LifecycleRule]) -> None:
    """The constraints between rules; each error names the later rule of a clash."""
    by_priority: dict[int, int] = {}
    untagged: int | None = None
    selections: dict[tuple[str, frozenset[str]], int] = {}
    top = max(r.priority for r in rules)
    for i, r in enumerate(rules):
        if r.priority in by_priority:
            raise LifecyclePolicyError(
                f"rules[{by_priority[r.priority]}] has the same priority; every rule needs its "
                "own", position=i, priority=r.priority, field="rulePriority")
        by_priority[r.priority] = i
        if r.tag_status == "any" and r.priority != top:
            raise LifecyclePolicyError(
                f"a rule with tagStatus \"any\" must have the highest rulePriority ({top} is "
                "higher) and be evaluated last", position=i, priority=r.priority,
                field="selection.tagStatus")
        if r.tag_status == "untagged":
            if untagged is not None:
                raise LifecyclePolicyError(
                    f"rules[{untagged}] already selects untagged images; only one rule may",
                    position=i, priority=r.priority, field="selection.tagStatus")
            untagged = i
        if r.tag_status == "tagged":
            key = ("patterns", frozenset(r.tag_patterns)) if r.tag_patterns else (
                "prefixes", frozenset(r.tag_prefixes))
            if key in selections:
                raise LifecyclePolicyError(
                    f"rules[{selections[key]}] selects by the same tag list, so this rule could "
                    "never expire an image", position=i, priority=r.priority, field="selection")
            selections[key] = i


# -- evaluation -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LifecycleImage:
    """An image of one repository as a lifecycle policy sees it: its digest, its tags (the tag
    part of each ref name, in this repository), and its push time (``None``: unknown)."""

    digest: str
    tags: frozenset[str]
    push_time: float | None


@dataclass(frozen=True, slots=True)
class LifecycleVerdict:
    """What a policy decided about one image: ``expired_by`` the rule that expired it, if any;
    ``selected_by`` the first rule (by priority) whose tag selection matched it, if any (the
    rule that protects it from every later rule); ``rank`` its place, newest first from 1, in
    the expiring rule's selection when that rule counts images."""

    digest: str
    expired_by: LifecycleRule | None
    selected_by: LifecycleRule | None
    rank: int | None = None

    @property
    def expired(self) -> bool:
        return self.expired_by is not None


def evaluate_lifecycle(policy: LifecyclePolicy, images: Sequence[LifecycleImage],
                       now: float) -> dict[str, LifecycleVerdict]:
    """Apply ``policy`` to the images of one repository, as ECR does; a verdict per digest.

    >>> p = parse_lifecycle_policy({"rules": [{"rulePriority": 1, "selection": {
    ...     "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
    ...     "action": {"type": "expire"}}]})
    >>> imgs = [LifecycleImage("a", frozenset({"1"}), 1.0), LifecycleImage("b", frozenset(), 2.0)]
    >>> {d: v.expired for d, v in evaluate_lifecycle(p, imgs, now=10.0).items()}
    {'b': False, 'a': True}
    """
    newest_first = sorted(images, key=lambda i: age_key(i.push_time, i.digest), reverse=True)
    expired: dict[str, tuple[LifecycleRule, int | None]] = {}
    claimed: dict[str, LifecycleRule] = {}
    for rule in policy.rules:
        selected = [i for i in newest_first if rule.selects(i.tags)]
        doomed: list[tuple[LifecycleImage, int | None]]
        if rule.count_type == "imageCountMoreThan":
            doomed = [(i, rank) for rank, i in enumerate(selected, 1) if rank > rule.count_number]
        else:
            limit = rule.count_number * DAY
            doomed = [(i, None) for i in selected
                      if i.push_time is None or now - i.push_time > limit]
        for image, rank in doomed:
            if image.digest not in claimed:
                expired[image.digest] = (rule, rank)
        for image in selected:
            claimed.setdefault(image.digest, rule)
    out = {}
    for image in newest_first:
        by, rank = expired.get(image.digest) or (None, None)
        out[image.digest] = LifecycleVerdict(image.digest, by, claimed.get(image.digest), rank)
    return out
