"""Plan against a live registry through the OCI Distribution API: the same core, a second
shell.  This module only makes requests; what they carry, the order a repository is read in
and what a plan re-read before applying may still do are the core's (``og.RepositoryReader``,
``og.repository_changes``, ``og.revalidate``).  Applying deletes manifests by digest, never
blobs: configs and layers are left to the registry's own garbage collection.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import networkx as nx
import orjson
import urllib3

import ocigraph as og

__all__ = ["RegistryRef", "parse_reference", "Credentials", "find_credentials", "RegistryClient",
           "RegistrySnapshot", "read_repository", "plan_repository",
           "image_times", "plan_prune_repository", "Skipped", "RegistryApplyResult",
           "apply_plan", "RegistryError", "RegistryUnreachableError", "RegistryTLSError",
           "RegistryAuthError", "RegistryNotFoundError", "DeleteUnsupportedError",
           "RegistryServerError", "RegistryApplyError", "PushTimeUnknownError"]

ACCEPT = ", ".join(sorted(og.MANIFEST_MEDIA_TYPES))
#: A digest no manifest has: how a registry answers its DELETE says whether it deletes at all.
PROBE_DIGEST = "sha256:" + hashlib.sha256(b"ocigraph: does this registry delete?").hexdigest()
GC_HINT = ("`registry garbage-collect CONFIG` on the registry host reclaims them (blobs another "
           "repository still uses stay)")
_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(  # docker://HOST[:PORT]/REPO[:TAG|@DIGEST]
    r"(?:docker://)?(?P<host>(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    rf"(?::\d{{1,5}})?)/(?P<repo>{_PART}(?:/{_PART})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})|@(?P<digest>[^@/]+))?")
Progress = Callable[[int, "int | None"], None]
Skipped = og.SkippedStep  # a step of a plan left out: ``what`` (a digest or ``tag NAME``), why


class RegistryError(og.RequestError):
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

_ERRORS: dict[og.FailureKind, type[RegistryError]] = {
    "auth": RegistryAuthError, "not-found": RegistryNotFoundError,
    "delete-refused": DeleteUnsupportedError, "server": RegistryServerError}


class PushTimeUnknownError(og.RequestError):
    """``prune --age-from push`` on a registry, whose API does not say when an image came."""


class RegistryApplyError(RegistryError):
    """Applying stopped part way; ``result`` lists everything done before, ``cause`` says why."""

    def __init__(self, cause: RegistryError, result: RegistryApplyResult) -> None:
        self.cause, self.result = cause, result
        super().__init__(cause.host, f"{cause.why}; stopped after {len(result.deleted)} "
                         f"manifest(s) deleted and {len(result.untagged)} tag(s) removed (the "
                         "result lists them); plan again to finish", cause.status)


@dataclass(frozen=True, slots=True)
class RegistryRef:
    """``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``; ``origin`` names the repository (a plan may
    record it, and :func:`apply_plan` then checks it)."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def origin(self) -> str:
        return f"docker://{self.host}/{self.repository}"


def parse_reference(text: str) -> RegistryRef:
    """Parse ``[docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]``; a bad one is an ``og.RequestError``.

    >>> parse_reference("docker://127.0.0.1:5000/team/app:v1").repository
    'team/app'
    """
    m = _REFERENCE.fullmatch(text)
    with contextlib.suppress(og.InvalidDigestError):
        if m is not None and m["digest"] is not None:
            og.parse_digest(m["digest"])
        if m is not None:
            return RegistryRef(m["host"], m["repo"], m["tag"], m["digest"])
    raise og.RequestError(f"not a registry reference: {text!r} (expected "
                          "docker://HOST[:PORT]/REPO[:TAG|@DIGEST])")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password for one registry, and where they were found."""

    username: str
    password: str = field(repr=False)
    source: str = "given"


def find_credentials(host: str, *, credentials: str | Credentials | None = None,
                     auth_file: str | os.PathLike[str] | None = None,
                     environ: Mapping[str, str] | None = None) -> Credentials | None:
    """``credentials`` (``USER:PASS``); else ``host``'s ``auths`` -> ``auth`` (base64 of
    ``user:pass``) in ``auth_file`` only if given, else in the first of $REGISTRY_AUTH_FILE,
    $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json that has one; else ``None``."""
    if isinstance(credentials, str):
        user, sep, password = credentials.partition(":")
        if not sep or not user:
            raise og.RequestError("credentials must be given as USER:PASS")
        return Credentials(user, password, "given")
    if credentials is not None:
        return credentials
    env = os.environ if environ is None else environ
    files = [auth_file] if auth_file is not None else [
        env.get("REGISTRY_AUTH_FILE"),
        env.get("XDG_RUNTIME_DIR") and Path(env["XDG_RUNTIME_DIR"], "containers/auth.json"),
        Path(env.get("HOME") or Path.home(), ".docker/config.json")]
    for path in (Path(f) for f in files if f and (auth_file is not None or Path(f).exists())):
        try:
            found = og.auth_config_credentials(orjson.loads(path.read_bytes()), host)
        except (OSError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise og.RequestError(f"auth file {path}: {exc}") from None
        if found is not None:
            return Credentials(*found, str(path))
    return None


def _json(data: bytes) -> Any:
    """Decoded JSON, or ``None``."""
    with contextlib.suppress(orjson.JSONDecodeError):
        return orjson.loads(data)
    return None


class RegistryClient:
    """HTTP to one registry: HTTPS first (also plain HTTP with ``tls_verify=False``, as
    containers/image); Basic or Bearer auth on challenge; 429/5xx and dropped connections
    retried with backoff or as Retry-After says; ``timeout`` per request; ``workers`` at a time;
    manifests fetched by digest kept.  ``requests``, ``request_seconds`` (summed) measure it."""

    def __init__(self, host: str, *, tls_verify: bool = True,
                 credentials: str | Credentials | None = None,
                 auth_file: str | os.PathLike[str] | None = None, timeout: float = 30.0,
                 workers: int = 8, retries: int = 4, backoff: float = 0.5,
                 environ: Mapping[str, str] | None = None) -> None:
        self.host, self.tls_verify = host, tls_verify
        self.credentials = find_credentials(host, credentials=credentials, auth_file=auth_file,
                                            environ=environ)
        self.timeout, self.workers, self.retries, self.backoff = timeout, workers, retries, backoff
        if not tls_verify:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self._http = urllib3.PoolManager(
            num_pools=4, maxsize=workers, retries=False, timeout=urllib3.Timeout(timeout),
            cert_reqs="CERT_REQUIRED" if tls_verify else "CERT_NONE")
        self._base: str | None = None
        self._auth: str | None = None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.requests, self.request_seconds = 0, 0.0

    def close(self) -> None:
        self._http.clear()

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, ``workers`` at a time; the first error is raised."""
        if len(items) <= 1 or self.workers <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(self.workers, len(items))) as pool:
            return list(pool.map(fn, items))

    def _send(self, method: str, url: str, headers: Mapping[str, str],
              body: bytes | None = None) -> urllib3.BaseHTTPResponse:
        start = time.perf_counter()
        try:
            return self._http.request(method, url, headers={"User-Agent": "ocigraph", **headers},
                                      body=body, redirect=False)
        finally:
            with self._lock:
                self.requests += 1
                self.request_seconds += time.perf_counter() - start

    def _origin(self) -> str:
        """``https://HOST``, else (only with ``tls_verify=False``) ``http://HOST``."""
        failure: Exception | None = None
        for scheme in () if self._base else ("https",) if self.tls_verify else ("https", "http"):
            try:
                self._send("GET", f"{scheme}://{self.host}/v2/", {})  # any answer will do
            except urllib3.exceptions.HTTPError as exc:
                failure = exc
                continue
            self._base = f"{scheme}://{self.host}"
            break
        if self._base is None:
            raise self._failure(failure, hint=True)
        return self._base

    def _failure(self, exc: Exception | None, hint: bool = False) -> RegistryError:
        text = str(getattr(exc, "reason", None) or exc).split("new connection: ")[-1]
        why = re.sub(r"^\[SSL: \w+\] |\s*\(_ssl\.c:\d+\)|^\[Errno -?\d+\] ", "", text).strip()
        if isinstance(exc, urllib3.exceptions.NewConnectionError):
            return RegistryUnreachableError(self.host, f"unreachable ({why})")
        if isinstance(exc, urllib3.exceptions.SSLError):
            return RegistryTLSError(self.host, f"TLS failure ({why})" + (
                "; for a registry with a self-signed certificate or plain HTTP, turn TLS "
                "verification off (--tls-verify=false; tls_verify=False in Python)"
                if hint and self.tls_verify else ""))
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            return RegistryServerError(self.host, f"no answer within {self.timeout:g}s")
        return RegistryServerError(self.host, f"connection failed ({why})")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Retry-After if given, else exponential backoff; a minute at most."""
        wait = og.retry_after(retry_after, time.time())
        return min(max(self.backoff * 2 ** (attempt - 1) if wait is None else wait, 0.0), 60.0)

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, url: str | None = None) -> urllib3.BaseHTTPResponse:
        """``path`` on the registry (or ``url`` elsewhere, without its authorization), with auth
        and retries: the final response, any status; raises only if no answer came."""
        origin = "" if url is not None else self._origin()
        target = url or urljoin(origin, path)
        attempt, authed = 0, url is not None
        while True:
            # The registry's authorization goes to the registry only: not to a token service,
            # nor to the storage an upload's Location or a blob's redirect may name.
            sent = self._auth if url is None and target.startswith(origin + "/") else None
            try:
                r = self._send(method, target, {**(headers or {}),
                                                **({"Authorization": sent} if sent else {})}, body)
            except (urllib3.exceptions.SSLError, urllib3.exceptions.NewConnectionError) as exc:
                raise self._failure(exc) from None
            except urllib3.exceptions.HTTPError as exc:  # a timeout, a dropped connection
                if attempt >= self.retries:
                    raise self._failure(exc) from None
                attempt += 1
                time.sleep(self._delay(attempt, None))
                continue
            if r.status == 401 and not authed:
                authed = True
                self._authenticate(r.headers.get("WWW-Authenticate", ""), sent)
            elif r.status in og.RETRY_STATUSES and attempt < self.retries:
                attempt += 1
                time.sleep(self._delay(attempt, r.headers.get("Retry-After")))
            else:
                return r

    def _authenticate(self, header: str, sent: str | None) -> None:
        """Answer a 401: Basic, or Bearer with the realm's token for the challenged scope (kept
        per scope).  Where it cannot, the retry's 401 says why."""
        scheme, params = og.parse_challenge(header)
        creds, realm, scope = self.credentials, params.get("realm"), params.get("scope", "")
        basic = creds and "Basic " + base64.b64encode(
            f"{creds.username}:{creds.password}".encode()).decode()
        if self._auth != sent:
            return  # another thread has authenticated since: just try again
        if scheme == "basic" and basic:
            self._auth = basic
        elif scheme == "bearer" and realm:
            token = self._tokens.get(scope)
            if token is None or sent == f"Bearer {token}":
                query = urlencode({k: params[k] for k in ("service", "scope") if params.get(k)})
                r = self.request("GET", "", url=realm + ("&" if "?" in realm else "?") + query,
                                 headers={"Authorization": basic} if basic else None)
                doc = _json(r.data) if r.status == 200 else None
                token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
                if not isinstance(token, str):
                    return
            with self._lock:
                self._tokens[scope] = token
                self._auth = f"Bearer {token}"

    def fail(self, r: urllib3.BaseHTTPResponse, what: str) -> RegistryError:
        """The error to raise for a response that is not what ``what`` needed."""
        kind, why = og.describe_failure(r.status, r.data, what, attempts=self.retries + 1,
                                        credentials=self.credentials.source if self.credentials else None)
        return _ERRORS.get(kind, RegistryError)(self.host, why, r.status)

    def _expect(self, r: urllib3.BaseHTTPResponse, ok: tuple[int, ...], what: str) -> Any:
        """``r``'s JSON body (``None`` if it is not JSON) if its status is in ``ok``."""
        if r.status not in ok:
            raise self.fail(r, what)
        return _json(r.data)

    def list_tags(self, repo: str, page: int = 1000) -> list[str]:
        """Every tag, by ``Link: <...>; rel="next"`` pages, else (no Link ever) by ``?last=``."""
        out: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list?n={page}"
        linked = False
        while path is not None:
            r = self.request("GET", path)
            link = og.next_link(r.headers.get("Link", ""))
            linked = linked or link is not None
            got = og.next_tags_page(repo, page, self._expect(r, (200,), f"tags of {repo}"),
                                    set(out), link, linked)
            if got is None:
                raise RegistryServerError(self.host, f"tags of {repo}: not a list of names")
            out += got[0]
            path = got[1]
        return out

    def get_manifest(self, repo: str, ref: str) -> tuple[str, str, bytes] | None:
        """``(digest, media type, bytes)`` by tag or digest, ``None`` if none (core verifies)."""
        hit = self._manifests.get((repo, ref))
        if hit is not None:
            return ref, hit[0], hit[1]
        r = self.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        if r.status == 404 and og.error_code(r.data)[0] != "NAME_UNKNOWN":
            return None
        self._expect(r, (200,), f"manifest {ref} of {repo}")
        body = bytes(r.data)
        digest, media = og.manifest_identity(ref, r.headers.get("Docker-Content-Digest"),
                                             r.headers.get("Content-Type", ""), body)
        self._manifests[(repo, digest)] = (media, body)
        return digest, media, body

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        self._expect(self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=body, headers={
            "Content-Type": media_type}), (200, 201), f"push of manifest {ref} to {repo}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """DELETE by digest: ``True`` deleted, ``False`` it was already gone."""
        r = self.request("DELETE", f"/v2/{repo}/manifests/{digest}")
        if r.status == 404 and og.error_code(r.data)[0] in ("MANIFEST_UNKNOWN", ""):
            return False
        self._expect(r, (200, 202), f"delete of {digest} in {repo}")
        self._manifests.pop((repo, digest), None)
        return True

    def get_blob(self, repo: str, digest: str, what: str) -> bytes:
        """A small blob's bytes, verified, following a redirect to storage (without the
        registry's authorization)."""
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}")
        if r.status in (301, 302, 303, 307, 308) and r.headers.get("Location"):
            r = self.request("GET", "", url=urljoin(self._origin(), r.headers["Location"]))
        self._expect(r, (200,), what)
        if og.digest_bytes(r.data, digest.partition(":")[0]) != digest:
            raise RegistryServerError(self.host, f"{what}: content does not match its digest")
        return bytes(r.data)

    def push_blob(self, repo: str, digest: str, data: bytes) -> None:
        """Upload ``data`` to ``repo`` (POST, then PUT the whole blob)."""
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if r.status == 202 and r.headers.get("Location"):
            where = urljoin(self._origin(), r.headers["Location"])
            r = self.request("PUT", where + ("&" if "?" in where else "?") + urlencode(
                {"digest": digest}), body=data, headers={"Content-Type": "application/octet-stream"})
        self._expect(r, (201, 204), f"upload to {repo}")

    def referrers(self, repo: str, digest: str) -> list[og.Descriptor] | None:
        """What the Referrers API lists; ``None`` if the registry has none (it would never 404)."""
        out: list[og.Descriptor] = []
        path: str | None = f"/v2/{repo}/referrers/{digest}"
        while path is not None:
            r = self.request("GET", path, headers={"Accept": og.OCI_INDEX})
            if r.status in (400, 404, 405):
                return None
            self._expect(r, (200,), f"referrers of {digest} in {repo}")
            out += og.index_descriptors(r.data)
            path = og.next_link(r.headers.get("Link", ""))
        return out


@dataclass(frozen=True, slots=True)
class RegistrySnapshot(og.Repository):
    """An ``og.Repository`` read from ``ref`` with ``requests`` requests."""

    ref: RegistryRef
    requests: int


def _client(ref: RegistryRef, client: RegistryClient | None,
            options: Mapping[str, Any]) -> contextlib.AbstractContextManager[RegistryClient]:
    """``client`` (it stays open), else a new one made with ``options`` (closed after)."""
    return (contextlib.nullcontext(client) if client
            else contextlib.closing(RegistryClient(ref.host, **options)))


def read_repository(ref: RegistryRef | str, *, client: RegistryClient | None = None,
                    progress: Progress | None = None, **options: Any) -> RegistrySnapshot:
    """Read the repository ``ref`` names (not its tag or digest); ``progress(done, None)`` as
    manifests arrive.  Raises :class:`RegistryError`'s subclasses."""
    ref = ref if isinstance(ref, RegistryRef) else parse_reference(ref)
    with _client(ref, client, options) as c:
        return _read(c, ref, progress)


def _read(client: RegistryClient, ref: RegistryRef, progress: Progress | None) -> RegistrySnapshot:
    repo, first, done = ref.repository, client.requests, itertools.count(1)
    reader = og.RepositoryReader(client.list_tags(repo))

    def fetch(name: str) -> tuple[str, str, bytes] | None:
        got = client.get_manifest(repo, name)  # by digest: from the cache if fetched before
        if progress is not None:
            progress(next(done), None)  # next(): one C call, atomic under threads
        return got

    while True:
        if batch := reader.to_fetch():
            for name, got in zip(batch, client.map(fetch, batch), strict=True):
                reader.fetched(name, got)
        elif ask := reader.to_ask():
            listed = client.map(lambda d: client.referrers(repo, d), ask)
            for digest, found in zip(ask, listed, strict=True):
                reader.referred(digest, found)
        else:
            read = reader.result(time.time())
            fields = {f.name: getattr(read, f.name) for f in dataclasses.fields(read)}
            return RegistrySnapshot(**fields, ref=ref, requests=client.requests - first)


def plan_repository(ref: RegistryRef | str, operation: str, refs: Sequence[str],
                    policy: og.Policy, *, client: RegistryClient,
                    reporter: og.Reporter | None = None) -> tuple[og.Plan, nx.DiGraph]:
    """Read the repository and plan ``operation`` (delete, gc, remove, untag) of ``refs`` on
    it, as the CLI does on a layout; the plan's origin is the repository.  A ref it does not
    have is a :class:`RegistryNotFoundError` naming host, repository and ref."""
    ref = ref if isinstance(ref, RegistryRef) else parse_reference(ref)
    graph = og.build_graph(_read(client, ref, None).layout, reporter)
    try:
        plan = og.plan_operation(graph, operation, refs, policy, og.WholeGraph(graph), reporter)
    except og.UnknownRefError as exc:
        why = str(exc).split(": not in index.json")[0]  # the layout's wording, not a registry's
        raise RegistryNotFoundError(ref.host, f"{why} in repository {ref.repository!r}") from None
    return dataclasses.replace(plan, origin=ref.origin), graph


def _refuse_push_time(rules: og.RetentionRules, ref: RegistryRef) -> None:
    if rules.age_from == "push":
        raise PushTimeUnknownError(f"{ref.host}: push time is not exposed by the registry API; "
                                   "use --age-from created (the image's own date)")


def image_times(snapshot: RegistrySnapshot, rules: og.RetentionRules, client: RegistryClient,
                *, policy: og.Policy | None = None) -> dict[str, float]:
    """The date of every image prune judges, as ``og.plan_prune``'s ``push_times``: its
    created annotation, else its config's ``created`` (each config read once, ``workers`` at a
    time; never a layer).  An image with neither is left out: it counts as the oldest."""
    _refuse_push_time(rules, snapshot.ref)
    dating = og.images_to_date(snapshot, rules, policy)  # configs over 1 MiB are not read
    repo, configs = snapshot.ref.repository, sorted({c for _, c in dating.values() if c})

    def created(config: str) -> str | None:
        return og.config_created(client.get_blob(repo, config, f"config {config} in {repo}"))

    dates = dict(zip(configs, client.map(created, configs), strict=True))
    times = {d: og.image_time(None, age_from=rules.age_from, annotation=note,
                              config=dates.get(config or "")) for d, (note, config) in dating.items()}
    return {d: t for d, t in times.items() if t is not None}


def plan_prune_repository(ref: RegistryRef | str, rules: og.RetentionRules, now: float, *,
                          client: RegistryClient, policy: og.Policy | None = None,
                          reporter: og.Reporter | None = None) -> tuple[og.Plan, nx.DiGraph]:
    """``ocigraph prune`` on a repository: judge its tags by ``rules`` at ``now``, ageing each
    image by its own date (:func:`image_times`), and plan with ``og.plan_prune``."""
    ref = ref if isinstance(ref, RegistryRef) else parse_reference(ref)
    _refuse_push_time(rules, ref)  # before any request
    snapshot = _read(client, ref, None)
    graph = og.build_graph(snapshot.layout, reporter)
    plan = og.plan_prune(graph, rules, now=now, policy=policy, reporter=reporter,
                         push_times=image_times(snapshot, rules, client, policy=policy))
    return dataclasses.replace(plan, origin=ref.origin), graph


@dataclass(frozen=True, slots=True)
class RegistryApplyResult:
    """What :func:`apply_plan` did: manifests ``deleted`` by digest, in order (tags with them),
    tags ``untagged`` (manifests stay), fallback ``referrer_tags`` deleted or rewritten, steps
    ``skipped`` and why, and what the registry's own GC can reclaim now (``gc_hint``)."""

    origin: str
    deleted: tuple[str, ...] = ()
    untagged: tuple[str, ...] = ()
    referrer_tags: tuple[str, ...] = ()
    skipped: tuple[og.SkippedStep, ...] = ()
    blobs_unreferenced: int = 0
    bytes_unreferenced: int = 0
    requests: int = 0
    gc_hint: str = GC_HINT


def apply_plan(ref: RegistryRef | str, plan: og.Plan, *, client: RegistryClient | None = None,
               progress: Progress | None = None, **options: Any) -> RegistryApplyResult:
    """Apply ``plan`` (made on :func:`read_repository`'s layout) to the repository, as the
    module says; ``progress(done, total)`` after each step.  Raises
    :class:`DeleteUnsupportedError` before any change if the registry does not delete,
    :class:`RegistryApplyError` (``result``: what was done) if a step fails part way."""
    ref = ref if isinstance(ref, RegistryRef) else parse_reference(ref)
    if plan.origin is not None and plan.origin != ref.origin:
        raise og.RequestError(f"the plan was made for {plan.origin}, not {ref.origin}")
    with _client(ref, client, options) as c:
        return _apply(c, ref, plan, progress)


def _apply(client: RegistryClient, ref: RegistryRef, plan: og.Plan,
           progress: Progress | None) -> RegistryApplyResult:
    repo, first = ref.repository, client.requests
    todo = og.repository_changes(plan, _read(client, ref, None))
    deleted, untagged, referrer_tags = list[str](), list[str](), list[str]()
    skipped, blobs, size = list(todo.skipped), todo.blobs, todo.size
    total = len(todo.untags) + len(todo.deletions)

    def result() -> RegistryApplyResult:
        return RegistryApplyResult(ref.origin, tuple(deleted), tuple(untagged),
                                   tuple(referrer_tags), tuple(skipped), blobs, size,
                                   client.requests - first)

    if total:  # before anything changes: a DELETE of a digest no manifest has answers 404
        client._expect(client.request("DELETE", f"/v2/{repo}/manifests/{PROBE_DIGEST}"),
                       (200, 202, 404), f"DELETE in {repo}")
    try:
        for n, (tag, digest) in enumerate(todo.untags, 1):
            why = _untag(client, repo, tag, digest)
            untagged += [tag] if why is None else []
            skipped += [] if why is None else [Skipped(f"tag {tag}", why)]
            if progress is not None:
                progress(n, total)
        for n, d in enumerate(todo.deletions, len(todo.untags) + 1):
            for fb in todo.fallback[d.digest]:  # before the first referrer it lists goes
                done = _update_fallback(client, repo, fb, todo.gone)
                referrer_tags += [] if done.startswith("left") else [done]
                skipped += [Skipped(f"tag {fb.tag}", done)] if done.startswith("left") else []
            if client.delete_manifest(repo, d.digest):
                deleted.append(d.digest)
                blobs, size = blobs + 1, size + d.size
            else:
                skipped.append(Skipped(d.digest, "already gone"))
            if progress is not None:
                progress(n, total)
    except RegistryError as exc:
        raise RegistryApplyError(exc, result()) from exc
    return result()


def _untag(client: RegistryClient, repo: str, tag: str, digest: str) -> str | None:
    """Remove ``tag`` if it still names ``digest`` (else say why not): point it at a throw-away
    manifest and delete that by digest.  Not DELETE of the tag: distribution 2.8 refuses it, and
    a registry that took it for its manifest would delete every tag of the image."""
    now = (client.get_manifest(repo, tag) or (None,))[0]
    if now != digest:
        return f"moved since planning: now names {now}" if now else "gone since planning"
    client.push_blob(repo, str(og.EMPTY_DESCRIPTOR["digest"]), b"{}")
    body = og.throwaway_manifest(os.urandom(8).hex())
    client.delete_manifest(repo, client.put_manifest(repo, tag, body, og.OCI_MANIFEST))
    return None


def _update_fallback(client: RegistryClient, repo: str, fb: og.FallbackIndex,
                     gone: frozenset[str]) -> str:
    """Rewrite ``fb`` without the referrers in ``gone``, or delete it if none remain."""
    if (client.get_manifest(repo, fb.tag) or (None,))[0] != fb.digest:
        return "left as is: the referrers index changed since it was read"
    body = og.without_referrers(fb.raw, gone)
    if body is not None:
        client.put_manifest(repo, fb.tag, body, og.OCI_INDEX)
    client.delete_manifest(repo, fb.digest)  # untagged now if rewritten: it takes nothing else
    return f"rewrote {fb.tag}" if body is not None else f"deleted {fb.tag}"
