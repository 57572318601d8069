"""A registry client's decisions, without its requests (as h11: the caller does the I/O): how a
``docker://`` reference and an auth file read, how a 401 is answered and when a request is
tried again, which error a failure is, how a repository's tags are paged, and the steps that
apply a plan to a repository, in order, with what they did.

The rules that keep the client honest: the registry's ``Authorization`` goes to the registry
only (never to a token service, nor to the storage a redirect names); a 401 is answered once
per request; only a dropped connection, 429 and a server's passing trouble are tried again; a
tag is changed only while it still names what the plan saw.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal
from urllib.parse import urlencode, urljoin

import orjson

from ._build import build_graph
from ._digest import digest_bytes, parse_digest
from ._distribution import (
    RETRY_STATUSES,
    FailureKind,
    FallbackIndex,
    Repository,
    RepositoryChanges,
    auth_config_credentials,
    describe_failure,
    error_code,
    images_to_date,
    next_link,
    next_tags_page,
    parse_challenge,
    retry_after,
    without_referrers,
)
from ._errors import InvalidDigestError, RequestError, UnknownRefError
from ._graph import LayoutGraph
from ._mediatypes import MANIFEST_MEDIA_TYPES
from ._model import Reporter
from ._operations import plan_operation
from ._plan import Deletion, Plan
from ._policy import Policy
from ._retention import RetentionRules
from ._revalidate import SkippedStep
from ._rules import image_time
from ._view import WholeGraph

__all__ = ["RegistryError", "RegistryUnreachableError", "RegistryTLSError", "RegistryAuthError",
           "RegistryNotFoundError", "DeleteUnsupportedError", "RegistryServerError",
           "RegistryApplyError", "PushTimeUnknownError", "RegistryRef", "parse_reference",
           "RegistrySnapshot", "Credentials", "parse_credentials", "auth_files",
           "auth_file_credentials", "credentials_in", "MANIFEST_ACCEPT", "REDIRECT_STATUSES",
           "NO_REFERRERS_API", "PROBE_DIGEST", "PROBE_ANSWERS", "GC_HINT", "ConnectionFailure",
           "connection_error", "response_error", "RequestTries", "TokenRequest",
           "answer_challenge", "bearer_token", "RegistryAuthorization", "upload_url",
           "manifest_gone", "verified_blob", "TagPages", "plan_on_repository", "refuse_push_time",
           "ImageDating", "check_plan_origin", "UntagStep", "FallbackStep", "DeleteStep",
           "ApplyStep", "RegistryApplyResult", "RegistryApplying"]

#: The ``Accept`` of a manifest request: every manifest media type the core reads.
MANIFEST_ACCEPT = ", ".join(sorted(MANIFEST_MEDIA_TYPES))
#: The statuses of a redirect (a blob's, to the storage that holds it).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: How a registry without the Referrers API answers it (it would never 404 a digest there).
NO_REFERRERS_API = frozenset({400, 404, 405})
#: A digest no manifest has: how a registry answers its DELETE says whether it deletes at all.
PROBE_DIGEST = digest_bytes(b"ocigraph: does this registry delete?")
#: The answers to the probe's DELETE of a registry that deletes (404: nothing by that digest).
PROBE_ANSWERS = (200, 202, 404)
#: What an applied plan's report says of the blobs it left: the registry's own GC takes them.
GC_HINT = ("`registry garbage-collect CONFIG` on the registry host reclaims them (blobs another "
           "repository still uses stay)")
_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(  # docker://HOST[:PORT]/REPO[:TAG|@DIGEST]
    r"(?:docker://)?(?P<host>(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    rf"(?::\d{{1,5}})?)/(?P<repo>{_PART}(?:/{_PART})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})|@(?P<digest>[^@/]+))?")
_TRANSPORT_NOISE = re.compile(r"^\[SSL: \w+\] |\s*\(_ssl\.c:\d+\)|^\[Errno -?\d+\] ")
_TLS_HINT = ("; for a registry with a self-signed certificate or plain HTTP, turn TLS "
             "verification off (--tls-verify=false; tls_verify=False in Python)")


# -- errors ------------------------------------------------------------------------------------

class RegistryError(RequestError):
    """A registry did not do what was asked: ``host``, ``why``, the HTTP ``status`` if any."""

    def __init__(self, host: str, why: str, status: int | None = None) -> None:
        self.host, self.why, self.status = host, why, status
        super().__init__(f"{host}: {why}")


class RegistryUnreachableError(RegistryError):
    """Nothing answers at the host and port."""

class RegistryTLSError(RegistryError):
    """The TLS handshake failed (an unknown certificate, or a plain-HTTP registry)."""

class RegistryAuthError(RegistryError):
    """401 or 403: no credentials, rejected credentials, or no permission."""

class RegistryNotFoundError(RegistryError):
    """404: an unknown repository, tag, manifest or blob."""

class DeleteUnsupportedError(RegistryError):
    """The registry refuses DELETE (405 or UNSUPPORTED): deleting is switched off there."""

class RegistryServerError(RegistryError):
    """429 or 5xx after every retry, no answer within the timeout, or a malformed answer."""

_ERRORS: dict[FailureKind, type[RegistryError]] = {
    "auth": RegistryAuthError, "not-found": RegistryNotFoundError,
    "delete-refused": DeleteUnsupportedError, "server": RegistryServerError}


class PushTimeUnknownError(RequestError):
    """``prune --age-from push`` on a registry, whose API does not say when an image came."""


class RegistryApplyError(RegistryError):
    """Applying stopped part way; ``result`` lists everything done before, ``cause`` says why."""

    def __init__(self, cause: RegistryError, result: RegistryApplyResult) -> None:
        self.cause, self.result = cause, result
        super().__init__(cause.host, f"{cause.why}; stopped after {len(result.deleted)} "
                         f"manifest(s) deleted and {len(result.untagged)} tag(s) removed (the "
                         "result lists them); plan again to finish", cause.status)


ConnectionFailure = Literal["unreachable", "tls", "timeout", "other"]


def connection_error(host: str, kind: ConnectionFailure, reason: str, *, timeout: float,
                     tls_hint: bool = False) -> RegistryError:
    """The error for a request no answer came to: the ``kind`` of failure and the transport's
    ``reason`` (trimmed of the socket and SSL libraries' noise); ``tls_hint`` adds how to turn
    verification off.  Only a ``timeout`` or an ``other`` failure is worth trying again.

    >>> str(connection_error("r:5000", "unreachable", "<HTTPConnection>: Failed to establish a "
    ...                      "new connection: [Errno 111] Connection refused", timeout=30))
    'r:5000: unreachable (Connection refused)'
    >>> str(connection_error("r:5000", "timeout", "read timed out", timeout=0.5))
    'r:5000: no answer within 0.5s'
    """
    why = _TRANSPORT_NOISE.sub("", reason.split("new connection: ")[-1]).strip()
    if kind == "unreachable":
        return RegistryUnreachableError(host, f"unreachable ({why})")
    if kind == "tls":
        return RegistryTLSError(host, f"TLS failure ({why})" + (_TLS_HINT if tls_hint else ""))
    if kind == "timeout":
        return RegistryServerError(host, f"no answer within {timeout:g}s")
    return RegistryServerError(host, f"connection failed ({why})")


def response_error(host: str, status: int, body: bytes, what: str, *, attempts: int,
                   credentials: str | None) -> RegistryError:
    """The error for a response that is not what ``what`` needed, of the class its
    :func:`~ocigraph.describe_failure` kind names; ``credentials`` says where the credentials
    sent came from, if any.

    >>> err = response_error("r", 403, b'{"errors":[{"code":"DENIED"}]}', "tags of a",
    ...                      attempts=1, credentials=None)
    >>> type(err).__name__, str(err), err.status
    ('RegistryAuthError', 'r: tags of a: access denied (403 DENIED)', 403)
    """
    kind, why = describe_failure(status, body, what, attempts=attempts, credentials=credentials)
    return _ERRORS.get(kind, RegistryError)(host, why, status)


# -- addressing and credentials ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RegistryRef:
    """``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``; ``origin`` names the repository (a plan may
    record it, and applying it then checks it)."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def origin(self) -> str:
        return f"docker://{self.host}/{self.repository}"


def parse_reference(text: str | RegistryRef) -> RegistryRef:
    """Parse ``[docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]`` (a :class:`RegistryRef` is returned
    as is); a bad one is a :class:`~ocigraph.RequestError`.

    >>> parse_reference("docker://127.0.0.1:5000/team/app:v1")
    RegistryRef(host='127.0.0.1:5000', repository='team/app', tag='v1', digest=None)
    """
    if isinstance(text, RegistryRef):
        return text
    m = _REFERENCE.fullmatch(text)
    try:
        if m is not None and m["digest"] is not None:
            parse_digest(m["digest"])
        if m is not None:
            return RegistryRef(m["host"], m["repo"], m["tag"], m["digest"])
    except InvalidDigestError:
        pass
    raise RequestError(f"not a registry reference: {text!r} (expected "
                       "docker://HOST[:PORT]/REPO[:TAG|@DIGEST])")


@dataclass(frozen=True, slots=True)
class RegistrySnapshot(Repository):
    """A :class:`~ocigraph.Repository` read from ``ref`` with ``requests`` requests."""

    ref: RegistryRef
    requests: int

    @classmethod
    def of(cls, repository: Repository, ref: RegistryRef, requests: int) -> RegistrySnapshot:
        """``repository`` (a :class:`~ocigraph.RepositoryReader`'s result), as read from ``ref``."""
        return cls(**{f.name: getattr(repository, f.name) for f in fields(repository)}, ref=ref,
                   requests=requests)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password for one registry, and where they were found."""

    username: str
    password: str = field(repr=False)
    source: str = "given"

    @property
    def basic(self) -> str:
        """The ``Authorization`` of HTTP Basic auth with them.

        >>> Credentials("bob", "pw").basic
        'Basic Ym9iOnB3'
        """
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def parse_credentials(text: str) -> Credentials:
    """``USER:PASS``, as given on the command line (the password may hold colons).

    >>> parse_credentials("me:p:w")
    Credentials(username='me', source='given')
    """
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise RequestError("credentials must be given as USER:PASS")
    return Credentials(user, password, "given")


def auth_files(environ: Mapping[str, str], home: str) -> list[str]:
    """Where to look for credentials, in order, as containers/image does:
    ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
    ``~/.docker/config.json`` (``home`` is ``~``).

    >>> auth_files({"XDG_RUNTIME_DIR": "/run/user/1"}, "/home/me")
    ['/run/user/1/containers/auth.json', '/home/me/.docker/config.json']
    """
    xdg = environ.get("XDG_RUNTIME_DIR")
    found = [environ.get("REGISTRY_AUTH_FILE"), xdg and _join(xdg, "containers/auth.json"),
             _join(home, ".docker/config.json")]
    return [f for f in found if f]


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"  # as pathlib joins: "/" and NAME make "/NAME"


def auth_file_credentials(data: bytes, host: str, source: str) -> Credentials | None:
    """What the auth file ``source`` (its bytes, ``data``) holds for ``host``
    (:func:`~ocigraph.auth_config_credentials`); ``ValueError`` if it cannot be read.

    >>> auth_file_credentials(b'{"auths": {"r:5000": {"auth": "dTpw"}}}', "r:5000", "a.json")
    Credentials(username='u', source='a.json')
    """
    found = auth_config_credentials(orjson.loads(data), host)
    return None if found is None else Credentials(*found, source)


def credentials_in(host: str, files: Sequence[str],
                   read: Callable[[str], bytes | None]) -> Credentials | None:
    """The credentials for ``host`` in the first of the auth ``files`` that names it, else
    ``None`` (as resolvelib's provider, ``read`` does the I/O: ``read(file)`` gives a file's
    bytes, ``None`` if there is no such file).  A file it cannot read, or that holds no JSON or
    a bad entry, is a :class:`~ocigraph.RequestError` naming it.

    >>> files = {"a.json": b'{"auths": {}}', "b.json": b'{"auths": {"r": {"auth": "dTpw"}}}'}
    >>> credentials_in("r", ["none.json", "a.json", "b.json"], files.get)
    Credentials(username='u', source='b.json')
    >>> credentials_in("r", ["x.json"], {"x.json": b"{"}.get)
    Traceback (most recent call last):
    ocigraph._errors.RequestError: auth file x.json: unexpected end of data: line 1 column 2 (char 1)
    """
    for file in files:
        try:
            data = read(file)
            found = None if data is None else auth_file_credentials(data, host, file)
        except (OSError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise RequestError(f"auth file {file}: {exc}") from None
        if found is not None:
            return found
    return None


# -- requests: tries, challenges, answers ------------------------------------------------------

@dataclass(slots=True)
class RequestTries:
    """The tries of one request: a 401 is answered once (never for a request that carries no
    registry authorization: ``challenged`` from the start), a dropped connection and the
    :data:`~ocigraph.RETRY_STATUSES` are tried ``retries`` times more, waiting as
    ``Retry-After`` says, else ``backoff`` doubled each time; a minute at most.

    >>> tries = RequestTries(retries=2, backoff=0.5)
    >>> tries.challenge(401), tries.challenge(401)
    (True, False)
    >>> tries.after_answer(503, None, 0.0), tries.after_answer(429, "3", 0.0), tries.after_answer(503, None, 0.0)
    (0.5, 3.0, None)
    """

    retries: int
    backoff: float
    challenged: bool = False
    attempt: int = 0

    def challenge(self, status: int) -> bool:
        """Whether to answer the challenge of a response with ``status``, and try again."""
        if status != 401 or self.challenged:
            return False
        self.challenged = True
        return True

    def after_answer(self, status: int, wait: str | None, now: float) -> float | None:
        """The seconds to wait before trying again after ``status`` (``Retry-After``: ``wait``,
        at ``now``); ``None``: the response is final."""
        return self._again(wait, now) if status in RETRY_STATUSES else None

    def after_failure(self, error: RegistryError) -> float | None:
        """The seconds to wait before trying again after no answer came (``error``,
        :func:`connection_error`'s); ``None``: raise it.  Nothing answering at all, and TLS,
        are not worth another try."""
        if isinstance(error, RegistryUnreachableError | RegistryTLSError):
            return None
        return self._again(None, 0.0)

    def _again(self, wait: str | None, now: float) -> float | None:
        if self.attempt >= self.retries:
            return None
        self.attempt += 1
        asked = retry_after(wait, now)
        return min(max(self.backoff * 2 ** (self.attempt - 1) if asked is None else asked, 0.0),
                   60.0)


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A Bearer challenge's answer, to fetch: GET ``url`` with ``headers`` (the Basic
    credentials, if any) for a token for ``scope``."""

    url: str
    scope: str
    headers: Mapping[str, str]


def answer_challenge(header: str, credentials: Credentials | None) -> str | TokenRequest | None:
    """What answers a 401's ``WWW-Authenticate`` ``header``: the ``Authorization`` to send
    (Basic, given credentials), the token to request (Bearer, given a realm), else ``None``.

    >>> answer_challenge('Basic realm="r"', Credentials("bob", "pw"))
    'Basic Ym9iOnB3'
    >>> answer_challenge('Bearer realm="https://a/t",service="r",scope="repository:x:pull"', None)
    TokenRequest(url='https://a/t?service=r&scope=repository%3Ax%3Apull', scope='repository:x:pull', headers={})
    """
    scheme, params = parse_challenge(header)
    basic, realm = credentials and credentials.basic, params.get("realm")
    if scheme == "basic" and basic:
        return basic
    if scheme == "bearer" and realm:
        query = urlencode({k: params[k] for k in ("service", "scope") if params.get(k)})
        return TokenRequest(realm + ("&" if "?" in realm else "?") + query,
                            params.get("scope", ""), {"Authorization": basic} if basic else {})
    return None


def bearer_token(status: int, body: bytes) -> str | None:
    """The token a token service answered (``token``, else ``access_token``), if it gave one.

    >>> bearer_token(200, b'{"access_token": "T"}'), bearer_token(401, b'{"token": "T"}')
    ('T', None)
    """
    doc: Any = None
    if status == 200:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    return token if isinstance(token, str) else None


class RegistryAuthorization:
    """The ``Authorization`` a client sends to one registry (:attr:`header`), and how a 401 is
    answered, without making the token request (as h11: the caller does).  A 401 to a request
    that carried ``sent`` goes to :meth:`challenged`, which returns the token request to make,
    if one is needed; :meth:`token_answer` takes its answer.  Tokens are kept per scope, and a
    kept one is asked for again only once the registry has refused it.

    >>> auth = RegistryAuthorization(None)
    >>> ask = auth.challenged('Bearer realm="https://a/t",scope="repository:x:pull"', None)
    >>> auth.token_answer(ask, 200, b'{"token": "T"}')
    >>> auth.header, auth.challenged('Bearer realm="https://a/t",scope="repository:x:pull"', None)
    ('Bearer T', None)
    """

    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials
        self.header: str | None = None
        self._tokens: dict[str, str] = {}

    def header_for(self, url: str, origin: str | None) -> str | None:
        """What to send with a request to ``url``: :attr:`header` only to the registry at
        ``origin`` (``None``: the request is not the registry's), never to a token service, nor
        to the storage an upload's ``Location`` or a blob's redirect names.

        >>> auth = RegistryAuthorization(Credentials("bob", "pw"))
        >>> auth.header = "Basic Ym9iOnB3"
        >>> auth.header_for("https://r/v2/a/tags/list", "https://r")
        'Basic Ym9iOnB3'
        >>> auth.header_for("https://r.evil/x", "https://r"), auth.header_for("https://r/t", None)
        (None, None)
        """
        return self.header if origin is not None and url.startswith(origin + "/") else None

    def challenged(self, challenge: str, sent: str | None) -> TokenRequest | None:
        """Answer the ``WWW-Authenticate`` ``challenge`` of a 401 to a request that carried
        ``sent``: the token request to make, if one is needed.  Where the 401 cannot be
        answered, :attr:`header` stays, and the retry's 401 says why."""
        answer = answer_challenge(challenge, self.credentials)
        if self.header != sent or answer is None:
            return None  # another request has authenticated since (just try again), or none can
        if isinstance(answer, str):
            self.header = answer
            return None
        token = self._tokens.get(answer.scope)
        if token is None or sent == f"Bearer {token}":
            return answer
        self.header = f"Bearer {token}"
        return None

    def token_answer(self, request: TokenRequest, status: int, body: bytes) -> None:
        """The token service's answer (``status``, ``body``) to ``request``."""
        token = bearer_token(status, body)
        if token is not None:
            self._tokens[request.scope] = token
            self.header = f"Bearer {token}"


def upload_url(origin: str, location: str, digest: str) -> str:
    """Where to PUT a blob's bytes: the ``Location`` an upload's POST answered, with its digest.

    >>> upload_url("http://r:5000", "/v2/a/blobs/uploads/u?state=s", "sha256:ab")
    'http://r:5000/v2/a/blobs/uploads/u?state=s&digest=sha256%3Aab'
    """
    where = urljoin(origin, location)
    return where + ("&" if "?" in where else "?") + urlencode({"digest": digest})


def manifest_gone(method: Literal["GET", "DELETE"], status: int, body: bytes) -> bool:
    """Whether a manifest's ``method`` answered with ``status`` and error ``body`` says that the
    manifest is not there: a GET's 404 does unless the repository is unknown; a DELETE's only
    with MANIFEST_UNKNOWN or no code (any other is an error to report).

    >>> manifest_gone("GET", 404, b"")
    True
    >>> manifest_gone("DELETE", 404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
    False
    """
    if status != 404:
        return False
    code = error_code(body)[0]
    return code != "NAME_UNKNOWN" if method == "GET" else code in ("MANIFEST_UNKNOWN", "")


def verified_blob(host: str, what: str, digest: str, data: bytes) -> bytes:
    """``data`` if it is the blob ``digest`` names, else a :class:`RegistryServerError`."""
    if digest_bytes(data, digest.partition(":")[0]) != digest:
        raise RegistryServerError(host, f"{what}: content does not match its digest")
    return bytes(data)


class TagPages:
    """The pages of a repository's ``/tags/list``: request :attr:`path` while it is not ``None``
    and answer each with :meth:`answered`; then :attr:`tags` are all of them.  Pages follow
    ``Link: <...>; rel="next"``, else (for a registry that never sends one) ``?last=``.

    >>> pages = TagPages("r", "a", page=2)
    >>> pages.answered(b'{"tags": ["x", "y"]}', ""); pages.path
    '/v2/a/tags/list?n=2&last=y'
    >>> pages.answered(b'{"tags": ["z"]}', ""); pages.path, pages.tags
    (None, ['x', 'y', 'z'])
    """

    def __init__(self, host: str, repository: str, page: int = 1000) -> None:
        self.host, self.repository, self.page = host, repository, page
        self.path: str | None = f"/v2/{repository}/tags/list?n={page}"
        self.tags: list[str] = []
        self._linked = False

    def answered(self, body: bytes, link: str) -> None:
        """The page (``body``, a 200's) and its ``Link`` header."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        target = next_link(link)
        self._linked = self._linked or target is not None
        got = next_tags_page(self.repository, self.page, doc, set(self.tags), target,
                             self._linked)
        if got is None:
            raise RegistryServerError(self.host, f"tags of {self.repository}: not a list of names")
        self.tags += got[0]
        self.path = got[1]


# -- planning ----------------------------------------------------------------------------------

def plan_on_repository(repository: Repository, ref: RegistryRef, operation: str,
                       refs: Sequence[str], policy: Policy, reporter: Reporter | None = None,
                       ) -> tuple[Plan, LayoutGraph]:
    """``operation`` (delete, gc, remove, untag) of ``refs`` on ``repository`` as read from
    ``ref``, as on a layout, and its graph; the plan's origin is the repository.  A ref it does
    not have is a :class:`RegistryNotFoundError` naming host, repository and ref."""
    graph = build_graph(repository.layout, reporter)
    try:
        plan = plan_operation(graph, operation, refs, policy, WholeGraph(graph), reporter)
    except UnknownRefError as exc:
        why = str(exc).split(": not in index.json")[0]  # the layout's wording, not a registry's
        raise RegistryNotFoundError(ref.host, f"{why} in repository {ref.repository!r}") from None
    return replace(plan, origin=ref.origin), graph


def refuse_push_time(rules: RetentionRules, ref: RegistryRef) -> None:
    """A :class:`PushTimeUnknownError` if ``rules`` age images from their push: a registry's
    API does not say when that was."""
    if rules.age_from == "push":
        raise PushTimeUnknownError(f"{ref.host}: push time is not exposed by the registry API; "
                                   "use --age-from created (the image's own date)")


class ImageDating:
    """The dates of the images prune judges on ``snapshot`` (:func:`~ocigraph.images_to_date`),
    without reading a blob (as h11: the caller does): read the :attr:`configs` (each once, none
    over 1 MiB, never a layer) and give :meth:`times` what each says.  Refuses ``rules`` that
    age images from their push (:func:`refuse_push_time`)."""

    def __init__(self, snapshot: RegistrySnapshot, rules: RetentionRules,
                 policy: Policy | None = None) -> None:
        refuse_push_time(rules, snapshot.ref)
        self._dating = images_to_date(snapshot, rules, policy)
        self._age_from = rules.age_from
        self.configs = sorted({c for _, c in self._dating.values() if c})

    def times(self, created: Sequence[str | None]) -> dict[str, float]:
        """``plan_prune``'s ``push_times``, given the ``created`` each of :attr:`configs` says:
        an image's created annotation, else its config's; an image with neither is left out
        (it counts as the oldest)."""
        dates = dict(zip(self.configs, created, strict=True))
        times = {d: image_time(None, age_from=self._age_from, annotation=note,
                               config=dates.get(config or ""))
                 for d, (note, config) in self._dating.items()}
        return {d: t for d, t in times.items() if t is not None}


# -- applying ----------------------------------------------------------------------------------

def check_plan_origin(plan: Plan, ref: RegistryRef) -> None:
    """A :class:`~ocigraph.RequestError` if ``plan`` records another origin than ``ref``'s."""
    if plan.origin is not None and plan.origin != ref.origin:
        raise RequestError(f"the plan was made for {plan.origin}, not {ref.origin}")


@dataclass(frozen=True, slots=True)
class UntagStep:
    """Remove ``tag``, whose manifest ``digest`` stays, if the tag still names it."""

    tag: str
    digest: str

    def skip_reason(self, now: str | None) -> str | None:
        """Why not, the tag naming ``now`` (``None``: nothing); ``None``: go ahead."""
        if now == self.digest:
            return None
        return f"moved since planning: now names {now}" if now else "gone since planning"


@dataclass(frozen=True, slots=True)
class FallbackStep:
    """Rewrite the fallback ``index`` as ``body`` (without the referrers that go), then delete
    the old one by digest; ``body`` ``None``: none remain, just delete it."""

    index: FallbackIndex
    body: bytes | None = field(repr=False)

    @property
    def tag(self) -> str:
        return self.index.tag

    def skip_reason(self, now: str | None) -> str | None:
        """Why not, the tag naming ``now``; ``None``: go ahead."""
        if now == self.index.digest:
            return None
        return "left as is: the referrers index changed since it was read"


@dataclass(frozen=True, slots=True)
class DeleteStep:
    """DELETE the manifest ``deletion`` names, by digest."""

    deletion: Deletion

    @property
    def digest(self) -> str:
        return self.deletion.digest

    def skip_reason(self, deleted: bool) -> str | None:
        """Why it is skipped, if the DELETE ``deleted`` nothing."""
        return None if deleted else "already gone"


ApplyStep = UntagStep | FallbackStep | DeleteStep


@dataclass(frozen=True, slots=True)
class RegistryApplyResult:
    """What applying a plan to a repository did: manifests ``deleted`` by digest, in order (tags
    with them), tags ``untagged`` (manifests stay), fallback ``referrer_tags`` deleted or
    rewritten, steps ``skipped`` and why, and what the registry's own GC can reclaim now
    (``gc_hint``)."""

    origin: str
    deleted: tuple[str, ...] = ()
    untagged: tuple[str, ...] = ()
    referrer_tags: tuple[str, ...] = ()
    skipped: tuple[SkippedStep, ...] = ()
    blobs_unreferenced: int = 0
    bytes_unreferenced: int = 0
    requests: int = 0
    gc_hint: str = GC_HINT


class RegistryApplying:
    """Applying ``changes`` to the repository ``origin``: the :attr:`steps` to take, in order
    (the untags, then each deletion after the fallback indexes that list it), each answered
    with :meth:`record` once taken or skipped; :meth:`result` says what was done so far.

    >>> run = RegistryApplying("docker://r/a", RepositoryChanges(
    ...     (("v1", "sha256:a"),), (), {}, frozenset(), (), 0, 0))
    >>> [run.record(s, s.skip_reason("sha256:b")) for s in run.steps]
    [(1, 1)]
    >>> run.result(3).skipped
    (SkippedStep(what='tag v1', reason='moved since planning: now names sha256:b'),)
    """

    def __init__(self, origin: str, changes: RepositoryChanges) -> None:
        self.origin = origin
        steps: list[ApplyStep] = [UntagStep(tag, digest) for tag, digest in changes.untags]
        for d in changes.deletions:  # a referrer's fallback index is updated before it goes
            steps += [FallbackStep(fb, without_referrers(fb.raw, changes.gone))
                      for fb in changes.fallback[d.digest]]
            steps.append(DeleteStep(d))
        self.steps: tuple[ApplyStep, ...] = tuple(steps)
        self.total = len(changes.untags) + len(changes.deletions)
        self._done = 0
        self._deleted: list[str] = []
        self._untagged: list[str] = []
        self._referrer_tags: list[str] = []
        self._skipped = list(changes.skipped)
        self._blobs, self._size = changes.blobs, changes.size

    def record(self, step: ApplyStep, skipped: str | None) -> tuple[int, int] | None:
        """``step`` taken, or ``skipped`` for that reason; the progress to show after it
        (untags and deletions done, of :attr:`total`), if the total counts it."""
        what = f"tag {step.tag}" if not isinstance(step, DeleteStep) else step.digest
        if skipped is not None:
            self._skipped.append(SkippedStep(what, skipped))
        elif isinstance(step, UntagStep):
            self._untagged.append(step.tag)
        elif isinstance(step, FallbackStep):
            verb = "rewrote" if step.body is not None else "deleted"
            self._referrer_tags.append(f"{verb} {step.tag}")
        else:
            self._deleted.append(step.digest)
            self._blobs, self._size = self._blobs + 1, self._size + step.deletion.size
        if isinstance(step, FallbackStep):
            return None
        self._done += 1
        return self._done, self.total

    def result(self, requests: int) -> RegistryApplyResult:
        """What was done so far, in ``requests`` requests."""
        return RegistryApplyResult(self.origin, tuple(self._deleted), tuple(self._untagged),
                                   tuple(self._referrer_tags), tuple(self._skipped), self._blobs,
                                   self._size, requests)
