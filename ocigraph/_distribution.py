"""The OCI Distribution API's formats as values: what a registry adapter parses and writes
without making a request -- fallback tags, auth challenges, error bodies, page links, the
manifests a manifest names, and a repository as the core's :class:`~ocigraph.Layout`.

A repository becomes a layout thus: an index.json entry per tag
(``org.opencontainers.image.ref.name``), sorted, then an untagged one per manifest known
without a tag (referrers, subjects of fallback tags), sorted.  Fallback tags are bookkeeping,
never entries: a signature lives exactly as long as its image.  The present blobs are the
manifests fetched and every blob they name, at its descriptor's size.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import orjson

from ._build import build_graph
from ._digest import is_sweepable
from ._errors import OcigraphError
from ._mediatypes import OCI_INDEX, OCI_MANIFEST, REF_NAME, SUCCESSOR_FIELDS, is_manifest_type
from ._model import BlobInfo, Descriptor, Layout
from ._parse import BytesManifestSource, parse_descriptor, parse_index, parse_manifest
from ._plan import Deletion, Plan
from ._policy import Policy
from ._retention import RetentionRules
from ._revalidate import SkippedStep, revalidate
from ._rules import manifest_created

__all__ = ["EMPTY_DESCRIPTOR", "RETRY_STATUSES", "fallback_tag", "fallback_subject", "parse_challenge",
           "error_code", "next_link", "retry_after", "index_descriptors",
           "manifest_successors", "repository_layout", "without_referrers", "throwaway_manifest",
           "FallbackIndex", "Repository", "RepositoryReader", "FailureKind", "describe_failure",
           "auth_config_credentials", "next_tags_page", "manifest_identity", "images_to_date",
           "RepositoryChanges", "repository_changes"]

#: The OCI empty descriptor (the blob ``{}``): config and layer of a throw-away manifest.
EMPTY_DESCRIPTOR: Mapping[str, Any] = {
    "mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
    "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()}
#: The statuses worth asking again: too many requests, and a server's passing trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_FALLBACK = re.compile(r"(sha256(?=-[0-9a-f]{64}$)|sha512(?=-[0-9a-f]{128}$))-([0-9a-f]+)")
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_PARAM = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def fallback_tag(digest: str) -> str:
    """The tag whose index lists ``digest``'s referrers where there is no Referrers API.

    >>> fallback_tag("sha256:" + "ab" * 32) == "sha256-" + "ab" * 32
    True
    """
    return digest.replace(":", "-", 1)


def fallback_subject(tag: str) -> str | None:
    """The subject a fallback tag is for, ``None`` for any other tag.

    >>> fallback_subject("sha256-" + "ab" * 32) == "sha256:" + "ab" * 32, fallback_subject("v1")
    (True, None)
    """
    m = _FALLBACK.fullmatch(tag)
    return f"{m[1]}:{m[2]}" if m else None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """A ``WWW-Authenticate`` header: its scheme (lower case) and quoted parameters.

    >>> parse_challenge('Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"')
    ('bearer', {'realm': 'https://auth/token', 'service': 'reg', 'scope': 'repository:a:pull'})
    """
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


def error_code(body: bytes) -> tuple[str, str]:
    """The first ``errors[]`` code and message of an error body, else ``("", its first line)``.

    >>> error_code(b'{"errors":[{"code":"NAME_UNKNOWN","message":"no such repository"}]}')
    ('NAME_UNKNOWN', 'no such repository')
    """
    with contextlib.suppress(orjson.JSONDecodeError, KeyError, IndexError, TypeError,
                             AttributeError):
        err = orjson.loads(body)["errors"][0]
        return str(err.get("code", "")), str(err.get("message", ""))
    return "", body[:80].decode("utf-8", "replace").split("\n", 1)[0].strip()


def next_link(header: str) -> str | None:
    """The target of a ``Link: <...>; rel="next"`` header, if any."""
    m = _NEXT.search(header)
    return m.group(1) if m else None


def retry_after(value: str | None, now: float) -> float | None:
    """The seconds a ``Retry-After`` value (seconds, or an HTTP date) asks to wait at ``now``;
    ``None`` if it says nothing usable.

    >>> retry_after("3", 0.0), retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 50.0), retry_after("x", 0.0)
    (3.0, 10.0, None)
    """
    with contextlib.suppress(TypeError, ValueError):
        if value and value.strip().isdigit():
            return float(value)
        if value:  # (imported here: email is a heavy import every command would pay)
            from email.utils import parsedate_to_datetime

            return parsedate_to_datetime(value).timestamp() - now
    return None


def index_descriptors(data: bytes) -> list[Descriptor]:
    """The well-formed descriptors of an index document's ``manifests`` (a bad one names
    nothing)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    listed = doc.get("manifests") if isinstance(doc, dict) else None
    out = []
    for obj in listed if isinstance(listed, list) else ():
        with contextlib.suppress(ValueError, OcigraphError):
            out.append(parse_descriptor(obj))
    return out


def manifest_successors(digest: str, media_type: str, data: bytes,
                        ) -> tuple[list[str], dict[str, BlobInfo]]:
    """What a manifest names in the fields the core walks for its media type: the manifests
    (to read next) and every other blob, at its descriptor's size."""
    fields = SUCCESSOR_FIELDS.get(media_type, ())
    manifests: list[str] = []
    blobs: dict[str, BlobInfo] = {}
    for name, desc in parse_manifest(digest, data).refs:
        if name in fields and is_manifest_type(desc.media_type):
            manifests.append(desc.digest)
        elif name in fields:
            blobs.setdefault(desc.digest, BlobInfo(desc.size))
    return manifests, blobs


def repository_layout(tags: Mapping[str, str], untagged: Iterable[str],
                      manifests: Mapping[str, tuple[str, bytes]],
                      blobs: Mapping[str, BlobInfo], now: float | None) -> Layout:
    """A repository as a :class:`~ocigraph.Layout` (see the module): ``tags`` name digests,
    ``untagged`` are the manifests known without a tag, ``manifests`` maps a digest to its
    media type and bytes, ``blobs`` are what they name (:func:`manifest_successors`)."""
    rows = [*sorted(tags.items()),
            *((None, d) for d in sorted(set(untagged) - set(tags.values())) if d in manifests)]
    entries = [{"mediaType": manifests[d][0], "digest": d, "size": len(manifests[d][1]),
                **({"annotations": {REF_NAME: t}} if t else {})} for t, d in rows]
    index = parse_index(orjson.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                      "manifests": entries}))
    present = {**blobs, **{d: BlobInfo(len(body)) for d, (_, body) in manifests.items()}}
    return Layout(index=index, blobs=present, now=now,
                  manifests=BytesManifestSource({d: b for d, (_, b) in manifests.items()}))


def without_referrers(raw: bytes, gone: Collection[str]) -> bytes | None:
    """A fallback index's bytes without the referrers in ``gone``; ``None`` if none remain."""
    doc = orjson.loads(raw)
    keep = [m for m in doc.get("manifests") or []
            if not (isinstance(m, dict) and m.get("digest") in gone)]
    return orjson.dumps({**doc, "manifests": keep}) if keep else None


def throwaway_manifest(nonce: str) -> bytes:
    """A manifest of the empty blob, unique by ``nonce``: a tag is pointed at it, then it is
    deleted by digest, which removes one tag of several without touching the others."""
    return orjson.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                         "config": EMPTY_DESCRIPTOR, "layers": [EMPTY_DESCRIPTOR],
                         "annotations": {"org.ocigraph.untag": nonce}})


@dataclass(frozen=True, slots=True)
class FallbackIndex:
    """A ``sha256-<hex>`` tag: the index (``digest``, ``raw``) listing a subject's referrers."""

    tag: str
    digest: str
    raw: bytes = field(repr=False)
    referrers: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository as read: the core's ``layout``, ``tags`` (fallback tags left out), subject
    -> ``fallback`` index, the ``manifests`` fetched and those ``missing``, and whether the
    registry has the Referrers API."""

    layout: Layout
    tags: Mapping[str, str]
    fallback: Mapping[str, FallbackIndex]
    manifests: frozenset[str]
    missing: frozenset[str]
    referrers_api: bool
    bodies: Mapping[str, bytes] = field(repr=False)  # the manifests' bytes


Fetched = tuple[str, str, bytes] | None  # (digest, media type, bytes) of a manifest, or none


class RepositoryReader:
    """What to request, in order, to read a repository, without requesting it (as h11: the
    caller does the I/O).  Given the tags, ask :meth:`to_fetch` for the manifests to GET (tags
    first, then digests) and answer each with :meth:`fetched`; when there are none, ask
    :meth:`to_ask` for the digests whose referrers to list and answer each with
    :meth:`referred` (``None``: the registry has no Referrers API; the first answer decides);
    when neither has anything left, :meth:`result` is the repository (the module says how)."""

    def __init__(self, tags: Iterable[str]) -> None:
        self._pending: dict[str, None] = dict.fromkeys(tags)  # to fetch, in order
        self._tags = frozenset(self._pending)
        self._manifests: dict[str, tuple[str, bytes]] = {}
        self._tagged: dict[str, str] = {}
        self._fallback: dict[str, FallbackIndex] = {}
        self._blobs: dict[str, BlobInfo] = {}
        self._missing: set[str] = set()
        self._untagged: set[str] = set()  # referrers, subjects of fallback tags
        self._asked: set[str] = set()
        self._api: bool | None = None

    def to_fetch(self) -> list[str]:
        batch = [r for r in self._pending if r in self._tags or (
            r not in self._manifests and r not in self._missing and is_sweepable(r))]
        self._pending.clear()
        return batch

    def fetched(self, ref: str, got: Fetched) -> None:
        subject = fallback_subject(ref) if ref in self._tags else None
        if got is None:
            if ref not in self._tags:  # a tag deleted since it was listed names nothing
                self._missing.add(ref)
        elif subject and got[1] == OCI_INDEX:
            listed = tuple(index_descriptors(got[2]))
            self._fallback[subject] = FallbackIndex(ref, got[0], got[2], listed)
            self._learn(subject, *(x.digest for x in listed))
        else:
            if ref in self._tags:
                self._tagged[ref] = got[0]
            self._manifests[got[0]] = (got[1], got[2])
            children, named = manifest_successors(*got)
            self._pending.update(dict.fromkeys(children))
            for d, info in named.items():
                self._blobs.setdefault(d, info)

    def to_ask(self) -> list[str]:
        if self._api is False:
            return []
        ask = [d for d in self._manifests if d not in self._asked]
        return ask[:1] if self._api is None else ask

    def referred(self, digest: str, listed: Sequence[Descriptor] | None) -> None:
        self._asked.add(digest)
        self._api = self._api if self._api is not None else listed is not None
        self._learn(*(x.digest for x in listed or ()))

    def _learn(self, *digests: str) -> None:
        """Manifests known without a tag: entries of their own, and to fetch."""
        self._untagged.update(digests)
        self._pending.update((d, None) for d in digests if d not in self._manifests)

    def result(self, now: float | None) -> Repository:
        layout = repository_layout(self._tagged, self._untagged, self._manifests, self._blobs, now)
        return Repository(layout, dict(self._tagged), dict(self._fallback),
                          frozenset(self._manifests), frozenset(self._missing), bool(self._api),
                          {d: body for d, (_, body) in self._manifests.items()})


FailureKind = Literal["auth", "not-found", "delete-refused", "server", "other"]


def describe_failure(status: int, body: bytes, what: str, *, attempts: int,
                     credentials: str | None) -> tuple[FailureKind, str]:
    """Why a response with ``status`` and error ``body`` is not what ``what`` needed, in one
    line, and its kind; ``credentials`` says where the credentials sent came from, if any.

    >>> describe_failure(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', "tags of a", attempts=1,
    ...                  credentials=None)
    ('not-found', 'tags of a: unknown repository (404 NAME_UNKNOWN)')
    """
    code, message = error_code(body)
    detail = f" ({status} {code})" if code else f" ({status})"
    if status == 401:
        return "auth", "401 unauthorized: " + (
            f"the credentials ({credentials}) were rejected" if credentials
            else "no credentials given or found in an auth file for this host")
    if status == 403:
        return "auth", f"{what}: access denied{detail}"
    if status == 404:
        kind = "unknown repository" if code == "NAME_UNKNOWN" else "not found"
        return "not-found", f"{what}: {kind}{detail}"
    if status == 405 or code == "UNSUPPORTED":
        return "delete-refused", (f"{what}: the registry refuses it (405 unsupported; "
                                  "distribution: storage.delete.enabled)")
    if status in RETRY_STATUSES:
        return "server", f"{what}: HTTP {status} after {attempts} attempt(s)"
    return "other", f"{what}: unexpected HTTP {status} {code} {message}".rstrip()


def auth_config_credentials(doc: Any, host: str) -> tuple[str, str] | None:
    """The user and password an auth file (``{"auths": {HOST: {"auth": base64 of
    user:pass}}}``, as Docker and containers/image write it) holds for ``host``; a key may be
    a URL (``https://HOST/v1/``).  Raises ``ValueError`` for an entry it cannot read.

    >>> auth_config_credentials({"auths": {"https://r:5000/v1/": {"auth": "dTpwOnc="}}}, "r:5000")
    ('u', 'p:w')
    """
    auths = (doc.get("auths") if isinstance(doc, dict) else None) or {}
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        if re.sub(r"^[a-z]+://", "", key).split("/", 1)[0] != host:
            continue
        with contextlib.suppress(KeyError, TypeError, ValueError, UnicodeDecodeError):
            user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            if sep:
                return user, password
        raise ValueError(f'the entry for {key} has no "auth" (base64 of user:pass)')
    return None


def next_tags_page(repo: str, page: int, doc: Any, seen: Collection[str],
                   link: str | None, linked: bool) -> tuple[list[str], str | None] | None:
    """One page of ``/tags/list``: its new tags and the path of the next page (its ``Link``,
    else, for a registry that never sends one, ``?last=`` after a full page), or ``None`` if
    the page is not a list of names.  A page served twice adds nothing and ends the listing."""
    tags = (doc.get("tags") or []) if isinstance(doc, dict) else None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return None
    new = [t for t in tags if t not in seen]
    if new and link:
        return new, link
    if new and len(tags) >= page and not linked:
        return new, f"/v2/{repo}/tags/list?n={page}&last={quote(new[-1])}"
    return new, None


def manifest_identity(ref: str, digest: str | None, content_type: str,
                      data: bytes) -> tuple[str, str]:
    """The digest and media type of a manifest fetched by ``ref``: the ref if it is a digest,
    else the ``Docker-Content-Digest`` the registry sent, else the bytes' sha256; the
    ``Content-Type`` if it is a manifest type, else the document's ``mediaType``."""
    if ":" in ref:
        digest = ref
    media = content_type.split(";")[0].strip()
    if not is_manifest_type(media):  # "application/json"
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            media = str(orjson.loads(data).get("mediaType") or media)
    return digest or "sha256:" + hashlib.sha256(data).hexdigest(), media


def images_to_date(repository: Repository, rules: RetentionRules, policy: Policy | None = None,
                   *, limit: int = 1 << 20) -> dict[str, tuple[str | None, str | None]]:
    """Every image prune judges (the tagged ones; the untagged too under a lifecycle policy
    with ``keep_untagged``) -> its created annotation, and, when it has none, the digest of
    the config to read for a date (``None``: no config, or one over ``limit`` bytes)."""
    untagged = rules.lifecycle is not None and policy is not None and policy.keep_untagged
    out: dict[str, tuple[str | None, str | None]] = {}
    for e in repository.layout.index.entries:
        body = repository.bodies.get(e.digest)
        if (e.tag is None and not untagged) or body is None or e.digest in out:
            continue
        note = manifest_created(body)
        config = next((d for name, d in parse_manifest(e.digest, body).refs if name == "config"),
                      None)
        usable = note is None and config is not None and config.size <= limit
        out[e.digest] = (note, config.digest if usable and config is not None else None)
    return out


@dataclass(frozen=True, slots=True)
class RepositoryChanges:
    """What applying a plan to a repository as read again asks of the registry: remove the
    ``untags`` (tag, digest) whose manifests stay; delete the ``deletions``' manifests by
    digest, in order, updating just before each the ``fallback`` indexes that list it (to
    drop the referrers in ``gone``); the steps ``skipped``, and the ``blobs`` (configs,
    layers) and their ``size`` that become the registry's garbage."""

    untags: tuple[tuple[str, str], ...]
    deletions: tuple[Deletion, ...]
    fallback: Mapping[str, tuple[FallbackIndex, ...]]
    gone: frozenset[str]
    skipped: tuple[SkippedStep, ...]
    blobs: int
    size: int


def repository_changes(plan: Plan, repository: Repository) -> RepositoryChanges:
    """``plan`` (made on a read of the repository) against ``repository``, read again just
    before applying: what still holds (:func:`~ocigraph.revalidate`), as registry steps.  A
    manifest the read did not find is still deleted by digest (the registry says if it is
    gone); a skipped blob that is no manifest is not reported: the registry deletes none."""
    valid = revalidate(plan, build_graph(repository.layout))
    known = repository.manifests
    skipped = tuple(s for s in valid.skipped if s.what.startswith("tag ") or s.what in known)
    deletions = tuple(d for d in valid.deletions if d.digest in known
                      or any(is_manifest_type(m) for m in d.media_types))
    doomed = {d.digest for d in deletions}
    left = [d for d in valid.deletions if d.digest not in doomed and d.present]
    untags = sorted({(c.tag, c.digest) for c in valid.index_changes
                     if c.tag is not None and c.digest not in doomed})
    fallback: dict[str, tuple[FallbackIndex, ...]] = {}
    seen: set[str] = set()
    for d in deletions:
        fallback[d.digest] = tuple(fb for fb in repository.fallback.values() if fb.tag not in seen
                                   and any(x.digest == d.digest for x in fb.referrers))
        seen.update(fb.tag for fb in fallback[d.digest])
    return RepositoryChanges(tuple(untags), deletions, fallback,
                             frozenset(doomed | repository.missing), skipped, len(left),
                             sum(d.size for d in left))
