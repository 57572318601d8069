"""Plans: immutable values that say what goes, why, and from which index.json.

A plan is the whole conversation between planning and applying.  It is computed once, shown to
a person (``str``, a notebook table, JSON), and applied later, maybe by another process, which
refuses it if index.json has changed since (``index_fingerprint``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import orjson

from ._digest import parse_digest
from ._errors import InvalidDigestError, PlanFormatError
from ._policy import Policy

if TYPE_CHECKING:  # _retention builds plans, so it imports this module, not the reverse
    from ._retention import Retention

__all__ = [
    "Reason",
    "Deletion",
    "IndexChange",
    "Kept",
    "Plan",
    "PLAN_FORMAT_VERSION",
    "REASON_KINDS",
    "KEPT_KINDS",
    "OPERATIONS",
    "ReasonKind",
    "KeptKind",
    "Operation",
]

PLAN_FORMAT_VERSION = 1

#: Why a node goes.  ``via`` names the node that pulled it in (none for ``target``/``unreachable``).
ReasonKind = Literal["target", "referrer-of", "orphaned-by", "unreachable"]
REASON_KINDS: tuple[ReasonKind, ...] = get_args(ReasonKind)
#: Why a successor of a deleted node stays (see :class:`Kept`).
KeptKind = Literal["root", "young", "shared", "referrer", "held-by-garbage"]
KEPT_KINDS: tuple[KeptKind, ...] = get_args(KeptKind)
#: What a plan does.
Operation = Literal["delete", "gc", "untag", "remove", "prune"]
OPERATIONS: tuple[Operation, ...] = get_args(Operation)


@dataclass(frozen=True, slots=True)
class Reason:
    """``kind`` is one of :data:`REASON_KINDS`; ``via`` the node it points at, if any.

    >>> str(Reason("referrer-of", "sha256:" + "a" * 64))[:22]
    'referrer-of sha256:aaa'
    """

    kind: ReasonKind
    via: str | None = None

    def __str__(self) -> str:
        return self.kind if self.via is None else f"{self.kind} {self.via}"


@dataclass(frozen=True, slots=True)
class Deletion:
    """One node to delete.  ``present`` is false for a node with no blob (only its entries go)."""

    digest: str
    reason: Reason
    size: int
    present: bool
    media_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IndexChange:
    """One edit of index.json: ``drop`` the entry at ``position``, or ``untag`` it (keep it,
    remove its ``org.opencontainers.image.ref.name``)."""

    position: int
    digest: str
    tag: str | None
    action: Literal["drop", "untag"]


@dataclass(frozen=True, slots=True)
class Kept:
    """A successor of a deleted node that stays, and why, in this order of precedence:

    ``root``             tagged (or listed in index.json under keep_untagged), whoever else
                         points at it;
    ``young``            younger than the policy's grace;
    ``shared``           a live node outside the plan references it (``via`` one: a tagged one
                         if any, else the smallest);
    ``referrer``         its subject stays and is live (``via`` the subject);
    ``held-by-garbage``  only nodes that are not live keep it (``via`` one of them, or its
                         subject): it is garbage, and the next gc removes it with them.
    """

    digest: str
    kind: KeptKind
    via: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What an operation will do.  Deletions are in apply order: predecessors first.

    >>> p = Plan(operation="gc", targets=(), policy=Policy(), index_fingerprint="sha256:" + "0" * 64)
    >>> Plan.from_json(p.to_json()) == p, p.bytes_freed, p.is_empty
    (True, 0, True)
    """

    operation: Operation
    targets: tuple[str, ...]
    policy: Policy
    index_fingerprint: str
    deletions: tuple[Deletion, ...] = ()
    index_changes: tuple[IndexChange, ...] = ()
    kept: tuple[Kept, ...] = ()
    snapshot_time: float | None = None
    #: what the plan was made from, in the words of the adapter that read it (for a layout on
    #: disk, the device and inode of its root directory); apply refuses a plan whose origin is
    #: not what it is about to change.  ``None`` for a plan made from values in memory.
    origin: str | None = None
    #: a ``prune`` plan's retention decisions (the rules, every tag's verdict and why, the
    #: space budget); ``None`` for every other operation
    retention: Retention | None = None

    @property
    def bytes_freed(self) -> int:
        return sum(d.size for d in self.deletions if d.present)

    @property
    def is_empty(self) -> bool:
        return not self.deletions and not self.index_changes

    def deleted_digests(self) -> frozenset[str]:
        return frozenset(d.digest for d in self.deletions)

    def reasons(self) -> dict[str, Reason]:
        return {d.digest: d.reason for d in self.deletions}

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "ocigraphPlan": PLAN_FORMAT_VERSION,
            "operation": self.operation,
            "targets": list(self.targets),
            "policy": self.policy.to_dict(),
            "indexFingerprint": self.index_fingerprint,
            "snapshotTime": self.snapshot_time,
            "origin": self.origin,
            "bytesFreed": self.bytes_freed,
            "deletions": [
                {
                    "digest": d.digest,
                    "reason": d.reason.kind,
                    "via": d.reason.via,
                    "size": d.size,
                    "present": d.present,
                    "mediaTypes": list(d.media_types),
                }
                for d in self.deletions
            ],
            "indexChanges": [
                {"position": c.position, "digest": c.digest, "tag": c.tag, "action": c.action}
                for c in self.index_changes
            ],
            "kept": [{"digest": k.digest, "kind": k.kind, "via": k.via} for k in self.kept],
        } | ({} if self.retention is None else {"retention": self.retention.to_dict()})

    def to_json(self, *, indent: bool = True) -> bytes:
        """Stable JSON: same plan, same bytes."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 if indent else 0)

    @classmethod
    def from_json(cls, data: bytes | str) -> Plan:
        """Read a plan back; :class:`PlanFormatError` says what is wrong with a bad one."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise PlanFormatError(f"not JSON ({exc})") from None
        try:
            return cls.from_dict(doc)
        except InvalidDigestError as exc:
            raise PlanFormatError(str(exc)) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanFormatError(f"{type(exc).__name__}: {exc}") from None

    @classmethod
    def from_dict(cls, doc: Any) -> Plan:
        if not isinstance(doc, dict) or doc.get("ocigraphPlan") != PLAN_FORMAT_VERSION:
            raise PlanFormatError(f"missing or unsupported ocigraphPlan version (want {PLAN_FORMAT_VERSION})")
        op = doc["operation"]
        if op not in OPERATIONS:
            raise PlanFormatError(f"unknown operation {op!r}")
        deletions = []
        for i, d in enumerate(_list(doc, "deletions")):
            kind = d["reason"]
            if kind not in REASON_KINDS:
                raise PlanFormatError(f"deletions[{i}]: unknown reason {kind!r}")
            via = d.get("via")
            deletions.append(Deletion(
                digest=parse_digest(d["digest"], f"deletions[{i}]"),
                reason=Reason(kind, None if via is None else parse_digest(via, f"deletions[{i}].via")),
                size=_int(d["size"], f"deletions[{i}].size"),
                present=_bool(d["present"], f"deletions[{i}].present"),
                media_types=tuple(_str(m, "mediaTypes") for m in d.get("mediaTypes", [])),
            ))
        changes = []
        for i, c in enumerate(_list(doc, "indexChanges")):
            if c["action"] not in ("drop", "untag"):
                raise PlanFormatError(f"indexChanges[{i}]: unknown action {c['action']!r}")
            tag = c.get("tag")
            changes.append(IndexChange(
                position=_int(c["position"], f"indexChanges[{i}].position"),
                digest=parse_digest(c["digest"], f"indexChanges[{i}]"),
                tag=None if tag is None else _str(tag, f"indexChanges[{i}].tag"),
                action=c["action"],
            ))
        kept = []
        for i, k in enumerate(_list(doc, "kept")):
            via = k.get("via")
            if k["kind"] not in KEPT_KINDS:
                raise PlanFormatError(f"kept[{i}]: unknown kind {k['kind']!r}")
            kept.append(Kept(
                digest=parse_digest(k["digest"], f"kept[{i}]"),
                kind=k["kind"],
                via=None if via is None else parse_digest(via, f"kept[{i}].via"),
            ))
        snap = doc.get("snapshotTime")
        if snap is not None and (isinstance(snap, bool) or not isinstance(snap, (int, float))):
            raise PlanFormatError("snapshotTime is not a number")
        origin = doc.get("origin")
        if origin is not None:
            origin = _str(origin, "origin")
        retention = None
        if doc.get("retention") is not None:
            from ._retention import Retention  # (see the import at the top)

            if op != "prune":
                raise PlanFormatError(f"a {op} plan has no retention decisions")
            retention = Retention.from_dict(doc["retention"])
        plan = cls(
            operation=op,
            targets=tuple(_str(t, "targets") for t in _list(doc, "targets")),
            policy=Policy.from_dict(doc["policy"]),
            index_fingerprint=parse_digest(doc["indexFingerprint"], "indexFingerprint"),
            deletions=tuple(deletions),
            index_changes=tuple(changes),
            kept=tuple(kept),
            snapshot_time=snap,
            origin=origin,
            retention=retention,
        )
        if "bytesFreed" in doc and doc["bytesFreed"] != plan.bytes_freed:
            raise PlanFormatError(
                f"bytesFreed says {doc['bytesFreed']} but the deletions add up to {plan.bytes_freed}"
            )
        return plan

    # -- for people ------------------------------------------------------------------------

    def summary(self) -> str:
        """One line: what, how many, how much."""
        n = sum(1 for d in self.deletions if d.present)
        return (
            f"{self.operation} plan (policy {self.policy.name}): {n} blob(s) to delete, "
            f"{format_bytes(self.bytes_freed)} freed, {len(self.index_changes)} index.json "
            f"change(s)"
        )

    def __str__(self) -> str:
        """What the command line prints for this plan (:func:`ocigraph.present.format_plan_text`)."""
        from .present import format_plan_text

        return format_plan_text(self)

    def _repr_html_(self) -> str:
        from .render import plan_html
        return plan_html(self)


def format_bytes(n: int) -> str:
    """Human-readable size, binary units.

    >>> format_bytes(0), format_bytes(1536), format_bytes(5 * 1024**3)
    ('0 B', '1.5 KiB', '5.0 GiB')
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise PlanFormatError(f"{key} is not a list")
    return value


def _int(value: Any, where: str) -> int:
    if type(value) is not int or value < 0:
        raise PlanFormatError(f"{where} is not a non-negative integer")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise PlanFormatError(f"{where} is not a boolean")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PlanFormatError(f"{where} is not a string")
    return value
