"""Digests: the OCI image-spec grammar, and which algorithms ocigraph may sweep.

Grammar (image-spec descriptor.md)::

    digest                ::= algorithm ":" encoded
    algorithm             ::= algorithm-component (algorithm-separator algorithm-component)*
    algorithm-component   ::= [a-z0-9]+
    algorithm-separator   ::= [+._-]
    encoded               ::= [a-zA-Z0-9=_-]+

A digest of a *registered* algorithm must also match that algorithm's encoding exactly.  Only
registered algorithms are ever swept: a well-formed digest of another algorithm is kept as an
opaque node, never read, never deleted.
"""

from __future__ import annotations

import hashlib
import re

from ._errors import InvalidDigestError

__all__ = [
    "SWEEPABLE_ALGORITHMS",
    "SHORT_DIGEST_LENGTH",
    "parse_digest",
    "is_sweepable",
    "digest_bytes",
    "verify",
    "short_digest",
    "blob_parts",
    "are_digest_names",
    "printable",
]

#: algorithm -> length of its lowercase-hex encoding.  Also the set of ``blobs/<alg>`` folders
#: the adapter lists.
SWEEPABLE_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}

#: hex characters :func:`short_digest` keeps: enough to recognise a blob among millions, and
#: what people may type back (a digest prefix names the one blob it starts).
SHORT_DIGEST_LENGTH = 12

_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX = {alg: re.compile(rf"[a-f0-9]{{{n}}}") for alg, n in SWEEPABLE_ALGORITHMS.items()}


def parse_digest(value: object, where: str | None = None) -> str:
    """Return ``value`` if it is a valid digest, else raise :class:`InvalidDigestError`.

    >>> parse_digest("sha256:" + "a" * 64)[:10]
    'sha256:aaa'
    >>> parse_digest("sha256:../../etc/passwd")
    Traceback (most recent call last):
    ...
    ocigraph._errors.InvalidDigestError: invalid digest 'sha256:../../etc/passwd': not of the form algorithm:encoded
    >>> parse_digest("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8")[:9]
    'multihash'
    """
    if type(value) is str and len(value) == 71 and value.startswith("sha256:") and not \
            value[7:].strip("0123456789abcdef"):
        return value  # the common case, without the regular expressions
    if not isinstance(value, str):
        raise InvalidDigestError(value, "not a string", where)
    if not _GRAMMAR.fullmatch(value):
        raise InvalidDigestError(value, "not of the form algorithm:encoded", where)
    alg, encoded = value.split(":", 1)
    pattern = _HEX.get(alg)
    if pattern is not None and not pattern.fullmatch(encoded):
        n = SWEEPABLE_ALGORITHMS[alg]
        raise InvalidDigestError(value, f"{alg} needs {n} lowercase hex characters", where)
    return value


def is_sweepable(digest: str) -> bool:
    """True when ``digest`` uses an algorithm whose blobs ocigraph reads, verifies and sweeps.

    >>> is_sweepable("sha512:" + "0" * 128), is_sweepable("blake3:" + "0" * 64)
    (True, False)
    """
    return digest.split(":", 1)[0] in SWEEPABLE_ALGORITHMS


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    """The digest of ``data``.

    >>> digest_bytes(b"")
    'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    if algorithm not in SWEEPABLE_ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify(digest: str, data: bytes) -> bool:
    """True when ``data`` hashes to ``digest`` (a sweepable digest)."""
    alg = digest.split(":", 1)[0]
    return digest_bytes(data, alg) == digest


def short_digest(digest: str | None, length: int = SHORT_DIGEST_LENGTH) -> str:
    """``digest`` cut to its algorithm and first ``length`` characters, the one short form the
    core prints (texts, tables, pictures); ``-`` for ``None``.  Whole digests stay in JSON.

    >>> short_digest("sha256:" + "0123456789abcdef" * 4)
    'sha256:0123456789ab'
    >>> short_digest("sha512:" + "c" * 128, 8), short_digest(None)
    ('sha512:cccccccc', '-')
    """
    if digest is None:
        return "-"
    alg, sep, encoded = digest.partition(":")
    if not sep:
        return digest[:length]
    return f"{alg}:{encoded[:length]}"


def blob_parts(digest: str) -> tuple[str, str]:
    """``(algorithm, encoded)`` of a valid digest of a sweepable algorithm -- the one gate
    through which a digest becomes a file name (``sha256:../../x`` never does); anything else
    raises :class:`InvalidDigestError`.  The common case is checked without regular expressions.

    >>> blob_parts("sha256:" + "0" * 64)[0]
    'sha256'
    >>> blob_parts("blake3:" + "0" * 64)
    Traceback (most recent call last):
    ...
    ocigraph._errors.InvalidDigestError: invalid digest 'blake3:0000000000000000000000000000000000000000000000000000000000000000': not an algorithm ocigraph stores or deletes
    """
    alg, _, encoded = digest.partition(":")
    width = SWEEPABLE_ALGORITHMS.get(alg)
    if width is None or len(encoded) != width or encoded.strip("0123456789abcdef"):
        parse_digest(digest)  # its error, for a digest that is not one
        raise InvalidDigestError(digest, "not an algorithm ocigraph stores or deletes")
    return alg, encoded


def are_digest_names(names: list[str], width: int) -> bool:
    """Whether every name is ``width`` lowercase hex characters, checked for all at once: one
    ``bytes.fromhex`` of them joined (which also takes uppercase and spaces, so those are ruled
    out apart) takes a tenth of the time of a check per name -- a million names in a listing.

    >>> are_digest_names(["ab" * 32, "cd" * 32], 64), are_digest_names(["AB" * 32], 64)
    (True, False)
    """
    if not names:
        return True
    if set(map(len, names)) != {width}:
        return False
    joined = "".join(names)
    if any(c in joined for c in "ABCDEF \t\n\r\x0b\x0c"):
        return False
    try:
        return len(bytes.fromhex(joined)) * 2 == len(joined)
    except ValueError:
        return False


def printable(name: str) -> str:
    """A file name safe to print: bytes that are not UTF-8 become ``\\xNN`` escapes.

    >>> printable(bytes([97, 255]).decode("utf-8", "surrogateescape"))
    'a\\\\xff'
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
