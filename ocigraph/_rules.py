"""The words retention rules are written in: durations, sizes, globs, times, ref names.

Every parser here is a pure function from what a person typed to a value, and refuses a bad
value with a :class:`RetentionRuleError` that names the option and the value at fault, so the
command line can print it as one line.  Nothing here reads a clock: a time is always given.

Rules that keep this module honest:

* one unit table per kind of quantity (a dict, printed by the docs), binary sizes only
  (``1K = 1024``, as RETENTION.md §1 says; ``KB`` means the same, as in ``docker --memory``);
* exact arithmetic for sizes (``1.5GiB`` is exactly 1610612736 bytes, not a float near it);
* one total order of images by age, :func:`age_key`, used by every rule that ranks or evicts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import orjson

from ._errors import RequestError

__all__ = [
    "RetentionRuleError",
    "LifecyclePolicyError",
    "DURATION_UNITS",
    "SIZE_UNITS",
    "AGE_SOURCES",
    "CREATED_ANNOTATION",
    "RefName",
    "parse_ref_name",
    "repository_of",
    "parse_duration",
    "format_duration",
    "parse_size",
    "parse_globs",
    "parse_time",
    "format_time",
    "manifest_created",
    "config_created",
    "image_time",
    "age_key",
]

#: seconds per unit of a duration (``30d``, ``12h``, ``90m``, ``2w``, ``45s``, or bare seconds)
DURATION_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

#: bytes per unit of a size, case-insensitive; every unit is binary (``1K = 1024``)
SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1024**4, "tib": 1024**4,
    "p": 1024**5, "pb": 1024**5, "pib": 1024**5,
}

#: where an image's push time comes from: the manifest blob's mtime (``push``), or its
#: creation date (``created``: the manifest's annotation, else the config's ``created``)
AGE_SOURCES = ("push", "created")

CREATED_ANNOTATION = "org.opencontainers.image.created"

_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class RetentionRuleError(RequestError):
    """A retention rule, or a value in one, is not valid.  ``option`` says which (a command-line
    option such as ``--keep-within``, or a place in a document), ``value`` what was given.

    The command line treats it as a usage error (RETENTION.md: exit 2, nothing changed).

    >>> print(RetentionRuleError("--keep-within", "30x", "unknown unit 'x'"))
    --keep-within '30x': unknown unit 'x'
    """

    def __init__(self, option: str, value: object, why: str) -> None:
        self.option = option
        self.value = value
        self.why = why
        shown = repr(value)
        if len(shown) > 100:
            shown = f"{shown[:80]}... ({len(shown)} characters)"
        super().__init__(f"{option} {shown}: {why}" if value is not None else f"{option}: {why}")


class LifecyclePolicyError(RetentionRuleError):
    """An ECR lifecycle policy document is not valid.  ``position`` is the index of the rule at
    fault in the document's ``rules`` list (``None`` for the document as a whole), ``priority``
    its ``rulePriority`` when it has a valid one, ``field`` the field at fault.

    >>> print(LifecyclePolicyError("must be \\"days\\"", position=1, priority=20,
    ...                            field="selection.countUnit"))
    lifecycle policy rules[1] (rulePriority 20): selection.countUnit: must be "days"
    """

    def __init__(self, why: str, *, position: int | None = None, priority: int | None = None,
                 field: str | None = None) -> None:
        self.position = position
        self.priority = priority
        self.field = field
        where = "lifecycle policy"
        if position is not None:
            where += f" rules[{position}]"
            if priority is not None:
                where += f" (rulePriority {priority})"
        if field is not None:
            why = f"{field}: {why}"
        RequestError.__init__(self, f"{where}: {why}")
        self.option = where
        self.value = None
        self.why = why


# -- ref names --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RefName:
    """An ``org.opencontainers.image.ref.name`` read as an image reference (RETENTION.md §1).

    ``repository`` is ``""`` for a bare tag (the layout itself); ``tag`` is what follows the
    repository and its separator (``:`` or ``@``), so a digest reference's tag is its digest.
    """

    name: str
    repository: str
    tag: str


def parse_ref_name(name: str) -> RefName:
    """Split a ref name into repository and tag.

    The repository ends at the last ``:`` after the last ``/`` -- looking only before an ``@``
    in the last path component, if there is one -- or, with no such ``:``, at the ``@``.  A name
    with neither and no ``/`` is a bare tag; one with a ``/`` and neither (``ghcr.io/org/app``)
    is a repository with an empty tag part.

    >>> parse_ref_name("app:1.4")
    RefName(name='app:1.4', repository='app', tag='1.4')
    >>> parse_ref_name("latest").repository
    ''
    >>> parse_ref_name("ghcr.io/org/app:1.4").repository
    'ghcr.io/org/app'
    >>> parse_ref_name("host:5000/app:1").repository
    'host:5000/app'
    >>> parse_ref_name("app@sha256:" + "a" * 64).tag[:10]
    'sha256:aaa'
    >>> parse_ref_name("app:1@sha256:" + "a" * 64).repository
    'app'
    >>> parse_ref_name("host:5000/app")
    RefName(name='host:5000/app', repository='host:5000/app', tag='')
    """
    start = name.rfind("/") + 1
    at = name.find("@", start)
    head_end = len(name) if at < 0 else at
    colon = name.rfind(":", start, head_end)
    if colon >= 0:
        end = colon
    elif at >= 0:
        end = at
    else:
        return RefName(name, name if start else "", "" if start else name)
    return RefName(name, name[:end], name[end + 1:])


def repository_of(name: str) -> str:
    """The repository of a ref name (see :func:`parse_ref_name`).

    >>> repository_of("app:1"), repository_of("v1.2"), repository_of("a/b@sha256:" + "0" * 64)
    ('app', '', 'a/b')
    """
    return parse_ref_name(name).repository


# -- quantities -------------------------------------------------------------------------------

def _quantity(text: str) -> tuple[Decimal, str] | None:
    m = _QUANTITY.fullmatch(text.strip())
    if m is None:
        return None
    try:
        return Decimal(m.group(1)), m.group(2)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        return None


def parse_duration(value: str | float, option: str = "duration") -> float:
    """Seconds in a duration: ``30d``, ``12h``, ``90m``, ``2w``, ``45s``, or a number of seconds.

    Units are lowercase (``M`` is refused rather than guessed as months or minutes).

    >>> parse_duration("30d"), parse_duration("90m"), parse_duration("3600"), parse_duration(1.5)
    (2592000.0, 5400.0, 3600.0, 1.5)
    >>> parse_duration("2W", "--keep-within")
    Traceback (most recent call last):
    ...
    ocigraph._rules.RetentionRuleError: --keep-within '2W': unknown unit 'W'; use s, m, h, d or w (lowercase), or a bare number of seconds
    """
    if isinstance(value, bool):
        raise RetentionRuleError(option, value, "not a duration")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise RetentionRuleError(option, value, "must be a non-negative number of seconds")
        return float(value)
    if not isinstance(value, str):
        raise RetentionRuleError(option, value, "not a duration")
    q = _quantity(value)
    if q is None:
        raise RetentionRuleError(option, value, "not a duration: write a number and a unit, "
                                                "as in 30d, 12h, 90m, 2w, or seconds")
    number, unit = q
    if unit and unit not in DURATION_UNITS:
        raise RetentionRuleError(option, value, f"unknown unit {unit!r}; use s, m, h, d or w "
                                                "(lowercase), or a bare number of seconds")
    return float(number * DURATION_UNITS.get(unit, 1))


def format_duration(seconds: float) -> str:
    """The shortest way to write a duration in the units :func:`parse_duration` reads.

    >>> format_duration(2592000), format_duration(5400), format_duration(90), format_duration(1.5)
    ('30d', '90m', '90s', '1.5s')
    """
    for unit in ("w", "d", "h", "m"):
        size = DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds}s"


def parse_size(value: str | int, option: str = "size") -> int:
    """Bytes in a size: ``500M``, ``10G``, ``1.5GiB``, ``512KB`` or a number of bytes.

    Every unit is binary and case-insensitive (``1K = 1K = 1KiB = 1024``); a fraction of a
    byte is rounded down.

    >>> parse_size("500M"), parse_size("1.5GiB"), parse_size("10g"), parse_size(0)
    (524288000, 1610612736, 10737418240, 0)
    >>> parse_size("-1")
    Traceback (most recent call last):
    ...
    ocigraph._rules.RetentionRuleError: size '-1': not a size: write a number and a unit, as in 500M, 10G, 1.5GiB, or bytes
    """
    if isinstance(value, bool):
        raise RetentionRuleError(option, value, "not a size")
    if isinstance(value, int):
        if value < 0:
            raise RetentionRuleError(option, value, "must be a non-negative number of bytes")
        return value
    if not isinstance(value, str):
        raise RetentionRuleError(option, value, "not a size")
    q = _quantity(value)
    if q is None:
        raise RetentionRuleError(option, value, "not a size: write a number and a unit, as in "
                                                "500M, 10G, 1.5GiB, or bytes")
    number, unit = q
    scale = SIZE_UNITS.get(unit.lower())
    if scale is None:
        raise RetentionRuleError(option, value, f"unknown unit {unit!r}; use B, K, M, G, T or P "
                                                "(binary: 1K = 1024; KiB, MB... mean the same)")
    return math.floor(Fraction(number) * scale)


def parse_globs(values: Any, option: str) -> tuple[str, ...]:
    """Glob patterns (``fnmatchcase``: ``*``, ``?``, ``[...]``), as a tuple; each must be a
    non-empty string.

    >>> parse_globs(["v*", "stable"], "--keep-tag")
    ('v*', 'stable')
    """
    if isinstance(values, str):
        values = (values,)
    out = []
    for g in values:
        if not isinstance(g, str) or not g:
            raise RetentionRuleError(option, g, "a glob must be a non-empty string")
        out.append(g)
    return tuple(out)


# -- times ------------------------------------------------------------------------------------

def _rfc3339(text: str) -> float | None:
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7)
    zone = m.group(8)
    if zone in ("Z", "z"):
        tz = UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            return None
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:  # 2024-02-30, a leap second, hour 24
        return None
    return when.timestamp() + (float(frac) if frac else 0.0)


def parse_time(text: str, option: str = "--now") -> float:
    """Seconds since the epoch of an RFC 3339 time (``2024-05-01T12:00:00Z``, an offset such as
    ``+02:00``, any fraction of a second).

    >>> parse_time("1970-01-02T00:00:00Z"), parse_time("1970-01-01T01:00:00.5+01:00")
    (86400.0, 0.5)
    >>> parse_time("yesterday")
    Traceback (most recent call last):
    ...
    ocigraph._rules.RetentionRuleError: --now 'yesterday': not an RFC 3339 time (such as 2024-05-01T12:00:00Z)
    """
    when = _rfc3339(text) if isinstance(text, str) else None
    if when is None:
        raise RetentionRuleError(option, text, "not an RFC 3339 time (such as 2024-05-01T12:00:00Z)")
    return when


def format_time(seconds: float | None) -> str:
    """An RFC 3339 time in UTC, to the second (``unknown`` for ``None``).

    >>> format_time(86400.0), format_time(None)
    ('1970-01-02T00:00:00Z', 'unknown')
    """
    if seconds is None:
        return "unknown"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _created_field(data: bytes, annotation: bool) -> str | None:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    if annotation:
        notes = doc.get("annotations")
        value = notes.get(CREATED_ANNOTATION) if isinstance(notes, dict) else None
    else:
        value = doc.get("created")
    return value if isinstance(value, str) else None


def manifest_created(data: bytes) -> str | None:
    """The ``org.opencontainers.image.created`` annotation of a manifest or index, as written
    (``None`` when it has none, or is not a JSON object).

    >>> manifest_created(b'{"annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}}')
    '2024-01-01T00:00:00Z'
    >>> manifest_created(b'not json') is None
    True
    """
    return _created_field(data, annotation=True)


def config_created(data: bytes) -> str | None:
    """The ``created`` field of an image config, as written (``None`` when absent).

    >>> config_created(b'{"created": "2023-06-01T10:00:00.123456789Z", "os": "linux"}')
    '2023-06-01T10:00:00.123456789Z'
    """
    return _created_field(data, annotation=False)


def image_time(mtime: float | None, *, age_from: str = "push", annotation: str | None = None,
               config: str | None = None) -> float | None:
    """The push time RETENTION.md §1 gives an image: with ``age_from="push"`` the mtime of its
    manifest blob; with ``"created"``, the manifest's created annotation, else the config's
    ``created``, else the mtime.  An unparsable date falls back the same way, and so does a
    date at or before the epoch (reproducible builds write ``1970-01-01T00:00:00Z`` or
    ``0001-01-01T00:00:00Z``: no date, not a very old image).

    The shell reads the three values (:func:`manifest_created`, :func:`config_created`, a
    ``stat``); this only picks.

    >>> image_time(500.0), image_time(500.0, age_from="created", annotation="1970-01-01T00:01:40Z")
    (500.0, 100.0)
    >>> image_time(500.0, age_from="created", annotation="garbage", config="1970-01-01T00:03:20Z")
    200.0
    >>> image_time(500.0, age_from="created", config="1970-01-01T00:00:00Z")
    500.0
    """
    if age_from not in AGE_SOURCES:
        raise RetentionRuleError("--age-from", age_from, f"choose from {', '.join(AGE_SOURCES)}")
    if age_from == "created":
        for text in (annotation, config):
            when = _rfc3339(text) if isinstance(text, str) else None
            if when is not None and when > 0:
                return when
    return mtime


def age_key(push_time: float | None, digest: str) -> tuple[bool, float, str]:
    """The one order of images by age, oldest first: by push time, an unknown push time (an
    absent manifest has no mtime) before every known one, and at one push time the smaller
    digest first.  "Newest first" is exactly this order reversed.

    >>> sorted(["b", "a", "c"], key=lambda d: age_key({"a": 2.0, "b": 2.0}.get(d), d))
    ['c', 'a', 'b']
    """
    return (push_time is not None, 0.0 if push_time is None else push_time, digest)
