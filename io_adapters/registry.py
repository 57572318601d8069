"""Plan against a live registry: read a repository into the core's :class:`ocigraph.Layout`
and apply an :class:`ocigraph.Plan` back to it -- the same core, a second shell.

Reading: index.json gets an entry per tag (``org.opencontainers.image.ref.name``) and an
untagged one per manifest known without a tag: the referrers the Referrers API lists, else the
``sha256-<hex>`` fallback tag indexes list, and the subjects those tags name.  Fallback tags are
bookkeeping, never entries: a signature lives exactly as long as its image.  The present blobs
are the manifests fetched and every blob they name, at its descriptor's size (none downloaded).

Applying: a registry has no lock and no compare-and-swap, so the repository is read again first
(a GET per tag; other manifests come from the client's cache).  If its index is the plan's, the
plan is applied as it is; otherwise a tag changes only while it names the digest it named at
planning, and a manifest goes only if the core's liveness, from the tags left after the plan's
own tag changes, does not reach it now.  What is left out is reported with why.  Tags go first,
then manifests by digest in the plan's order (predecessors first); a fallback index is rewritten
without its deleted referrers (or deleted with the last) just before the first of them goes.
Configs and layers are left to the registry's own GC; the result counts what it can reclaim.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urljoin

import orjson
import urllib3

import ocigraph as og

__all__ = ["RegistryRef", "parse_reference", "Credentials", "find_credentials", "RegistryClient",
           "FallbackIndex", "RegistrySnapshot", "read_repository", "Skipped",
           "RegistryApplyResult", "apply_plan", "RegistryError", "RegistryUnreachableError",
           "RegistryTLSError", "RegistryAuthError", "RegistryNotFoundError",
           "DeleteUnsupportedError", "RegistryServerError", "RegistryApplyError"]

ACCEPT = ", ".join(sorted(og.MANIFEST_MEDIA_TYPES))
EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
         "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()}
#: A digest no manifest has: how a registry answers its DELETE says whether it deletes at all.
PROBE_DIGEST = "sha256:" + hashlib.sha256(b"ocigraph: does this registry delete?").hexdigest()
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
GC_HINT = ("`registry garbage-collect CONFIG` on the registry host reclaims them (blobs another "
           "repository still uses stay)")
_FALLBACK_TAG = re.compile(r"(sha256(?=-[0-9a-f]{64}$)|sha512(?=-[0-9a-f]{128}$))-([0-9a-f]+)")
_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(  # docker://HOST[:PORT]/REPO[:TAG|@DIGEST]
    r"(?:docker://)?(?P<host>(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    rf"(?::\d{{1,5}})?)/(?P<repo>{_PART}(?:/{_PART})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})|@(?P<digest>[^@/]+))?")
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
Progress = Callable[[int, "int | None"], None]


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
    """404: an unknown repository, tag or manifest."""

class DeleteUnsupportedError(RegistryError):
    """The registry refuses DELETE (405 or UNSUPPORTED): deleting is switched off there."""

class RegistryServerError(RegistryError):
    """429 or 5xx after every retry, no answer within the timeout, or a malformed answer."""


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
    try:
        if m is not None and m["digest"] is not None:
            og.parse_digest(m["digest"])
    except og.InvalidDigestError:
        m = None
    if m is None:
        raise og.RequestError(f"not a registry reference: {text!r} (expected "
                              "docker://HOST[:PORT]/REPO[:TAG|@DIGEST])")
    return RegistryRef(m["host"], m["repo"], m["tag"], m["digest"])


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
            auths = orjson.loads(path.read_bytes()).get("auths") or {}
        except (OSError, orjson.JSONDecodeError, AttributeError) as exc:
            raise og.RequestError(f"auth file {path}: {exc}") from None
        for key, entry in auths.items() if isinstance(auths, dict) else ():
            if re.sub(r"^[a-z]+://", "", key).split("/", 1)[0] != host:  # "https://host/v1/"
                continue
            with contextlib.suppress(KeyError, TypeError, ValueError, UnicodeDecodeError):
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
                if sep:
                    return Credentials(user, password, str(path))
            raise og.RequestError(f'auth file {path}: the entry for {key} has no "auth" (base64 '
                                  "of user:pass)")
    return None


def _json(data: bytes) -> Any:
    """Decoded JSON, or ``None``."""
    with contextlib.suppress(orjson.JSONDecodeError):
        return orjson.loads(data)
    return None


def _error_code(data: bytes) -> tuple[str, str]:
    """The first ``errors[]`` code and message of an error body (else its first line)."""
    with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
        err = _json(data)["errors"][0]
        return str(err.get("code", "")), str(err.get("message", ""))
    return "", data[:80].decode("utf-8", "replace").split("\n", 1)[0].strip()


class RegistryClient:
    """HTTP to one registry: HTTPS first (plain HTTP too only with ``tls_verify=False``, as
    containers/image); Basic or Bearer auth on challenge; 429/5xx and dropped connections
    retried with backoff, honouring Retry-After; ``timeout`` per request; ``workers`` at a time.
    It keeps the manifests it fetched, so a second read costs a GET per tag.  ``requests`` and
    ``request_seconds`` (their durations, summed) measure it.  Thread-safe; close it."""

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
                "verification off (--tls-verify=false; tls_verify=False in Python)" if hint and self.tls_verify else ""))
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            return RegistryServerError(self.host, f"no answer within {self.timeout:g}s")
        return RegistryServerError(self.host, f"connection failed ({why})")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Retry-After (seconds or a date) if given, else exponential backoff; a minute at most."""
        wait: float = self.backoff * 2 ** (attempt - 1)
        with contextlib.suppress(TypeError, ValueError):
            if retry_after:
                wait = (float(retry_after) if retry_after.strip().isdigit() else
                        parsedate_to_datetime(retry_after).timestamp() - time.time())
        return min(max(wait, 0.0), 60.0)

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, url: str | None = None) -> urllib3.BaseHTTPResponse:
        """``path`` on the registry (or ``url`` elsewhere, without its authorization), with auth
        and retries: the final response, any status; raises only if no answer came."""
        origin = "" if url is not None else self._origin()
        target = url or urljoin(origin, path)
        attempt, authed = 0, url is not None
        while True:
            # The registry's authorization goes to the registry only: not to a token service,
            # nor to the storage an upload's Location may name.
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
            elif r.status in RETRY_STATUSES and attempt < self.retries:
                attempt += 1
                time.sleep(self._delay(attempt, r.headers.get("Retry-After")))
            else:
                return r

    def _authenticate(self, header: str, sent: str | None) -> None:
        """Answer a 401: Basic, or Bearer with the realm's token for the challenged scope (kept
        per scope).  Where it cannot, the retry's 401 says why."""
        scheme, _, rest = header.strip().partition(" ")
        params = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', rest))
        creds, realm, scope = self.credentials, params.get("realm"), params.get("scope", "")
        basic = creds and "Basic " + base64.b64encode(
            f"{creds.username}:{creds.password}".encode()).decode()
        if self._auth != sent:
            return  # another thread has authenticated since: just try again
        if scheme.lower() == "basic" and basic:
            self._auth = basic
        elif scheme.lower() == "bearer" and realm:
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
        (code, message), s, creds = _error_code(r.data), r.status, self.credentials
        detail = f" ({s} {code})" if code else f" ({s})"
        if s == 401:
            return RegistryAuthError(self.host, "401 unauthorized: " + (
                f"the credentials ({creds.source}) were rejected" if creds
                else "no credentials given or found in an auth file for this host"), s)
        if s == 403:
            return RegistryAuthError(self.host, f"{what}: access denied{detail}", s)
        if s == 404:
            kind = "unknown repository" if code == "NAME_UNKNOWN" else "not found"
            return RegistryNotFoundError(self.host, f"{what}: {kind}{detail}", s)
        if s == 405 or code == "UNSUPPORTED":
            return DeleteUnsupportedError(self.host, f"{what}: the registry refuses it (405 "
                                          "unsupported; distribution: storage.delete.enabled)", s)
        if s in RETRY_STATUSES:
            return RegistryServerError(self.host, f"{what}: HTTP {s} after {self.retries + 1} "
                                       "attempt(s)", s)
        return RegistryError(self.host, f"{what}: unexpected HTTP {s} {code} {message}".rstrip(), s)

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
            doc = self._expect(r, (200,), f"tags of {repo}")
            tags = (doc.get("tags") or []) if isinstance(doc, dict) else None
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise RegistryServerError(self.host, f"tags of {repo}: not a list of names")
            known = set(out)  # a page served twice adds nothing
            new = [t for t in tags if t not in known]
            out += new
            link = _NEXT.search(r.headers.get("Link", ""))
            linked = linked or link is not None
            path = (link.group(1) if new and link else f"/v2/{repo}/tags/list?n={page}&last="
                    f"{quote(new[-1])}" if new and len(tags) >= page and not linked else None)
        return out

    def get_manifest(self, repo: str, ref: str) -> tuple[str, str, bytes] | None:
        """``(digest, media type, bytes)`` by tag or digest, ``None`` if none (core verifies)."""
        hit = self._manifests.get((repo, ref))
        if hit is not None:
            return ref, hit[0], hit[1]
        r = self.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        if r.status == 404 and _error_code(r.data)[0] != "NAME_UNKNOWN":
            return None
        doc, body = self._expect(r, (200,), f"manifest {ref} of {repo}"), r.data
        digest = ref if ":" in ref else (r.headers.get("Docker-Content-Digest")
                                         or "sha256:" + hashlib.sha256(body).hexdigest())
        media = r.headers.get("Content-Type", "").split(";")[0].strip()
        if not og.is_manifest_type(media) and isinstance(doc, dict):  # "application/json"
            media = str(doc.get("mediaType") or media)
        self._manifests[(repo, digest)] = (media, body)
        return digest, media, body

    def head_manifest(self, repo: str, ref: str) -> str | None:
        """The digest a tag names now; ``None`` if it names nothing."""
        r = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        if r.status == 404:
            return None
        self._expect(r, (200,), f"manifest {ref} of {repo}")
        got = r.headers.get("Docker-Content-Digest") or self.get_manifest(repo, ref)
        return got[0] if isinstance(got, tuple) else got

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        self._expect(self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=body, headers={
            "Content-Type": media_type}), (200, 201), f"push of manifest {ref} to {repo}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """DELETE by digest: ``True`` deleted, ``False`` it was already gone."""
        r = self.request("DELETE", f"/v2/{repo}/manifests/{digest}")
        if r.status == 404 and _error_code(r.data)[0] in ("MANIFEST_UNKNOWN", ""):
            return False
        self._expect(r, (200, 202), f"delete of {digest} in {repo}")
        self._manifests.pop((repo, digest), None)
        return True

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
            out += _listed(self._expect(r, (200,), f"referrers of {digest} in {repo}"))
            link = _NEXT.search(r.headers.get("Link", ""))
            path = link.group(1) if link else None
        return out


def _listed(doc: Any) -> list[og.Descriptor]:
    """The well-formed descriptors of an index document's ``manifests``."""
    out = []
    for obj in (doc.get("manifests") or []) if isinstance(doc, dict) else []:
        with contextlib.suppress(ValueError, og.OcigraphError):  # a bad entry names nothing
            out.append(og.parse_descriptor(obj))
    return out


@dataclass(frozen=True, slots=True)
class FallbackIndex:
    """A ``sha256-<hex>`` tag: the index (``digest``, ``raw``) listing a subject's referrers."""

    tag: str
    digest: str
    raw: bytes = field(repr=False)
    referrers: tuple[og.Descriptor, ...]


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """A repository as read: the core's ``layout``, ``tags`` (fallback tags left out), subject ->
    ``fallback`` index, the ``manifests`` fetched and those ``missing``, ``requests`` made."""

    ref: RegistryRef
    layout: og.Layout
    tags: Mapping[str, str]
    fallback: Mapping[str, FallbackIndex]
    manifests: frozenset[str]
    missing: frozenset[str]
    referrers_api: bool
    requests: int


def read_repository(ref: RegistryRef | str, *, client: RegistryClient | None = None,
                    progress: Progress | None = None, **options: Any) -> RegistrySnapshot:
    """Read the repository ``ref`` names (not its tag or digest), with ``client`` or a new
    :class:`RegistryClient` made with ``options``; ``progress(done, None)`` as manifests
    arrive.  Raises :class:`RegistryError`'s subclasses."""
    ref = ref if isinstance(ref, RegistryRef) else parse_reference(ref)
    with (contextlib.nullcontext(client) if client  # a client given stays open
          else contextlib.closing(RegistryClient(ref.host, **options))) as c:
        return _read(c, ref, progress)


def _read(client: RegistryClient, ref: RegistryRef, progress: Progress | None) -> RegistrySnapshot:
    repo, requests, done = ref.repository, client.requests, itertools.count(1)
    tags = client.list_tags(repo)

    def fetch(name: str) -> tuple[str, str, bytes] | None:
        got = client.get_manifest(repo, name)  # by digest: from the cache if fetched before
        if progress is not None:
            progress(next(done), None)  # next(): one C call, atomic under threads
        return got

    manifests, tagged = dict[str, tuple[str, bytes]](), dict[str, str]()
    fallback = dict[str, FallbackIndex]()
    blobs, pending = dict[str, og.BlobInfo](), dict[str, None]()  # pending: to fetch, in order
    missing, untagged = set[str](), set[str]()  # untagged: referrers, subjects of fallback tags

    def walk(digest: str, media: str, body: bytes) -> None:
        # Only the fields the core walks for this media type: the graph explains every blob.
        manifests[digest] = (media, body)
        fields = og.SUCCESSOR_FIELDS.get(media, ())
        for name, desc in og.parse_manifest(digest, body).refs:
            if name in fields and og.is_manifest_type(desc.media_type):
                pending.setdefault(desc.digest)
            elif name in fields:
                blobs.setdefault(desc.digest, og.BlobInfo(desc.size))

    for tag, got in zip(tags, client.map(fetch, tags), strict=True):
        m = _FALLBACK_TAG.fullmatch(tag)
        if got is None:
            continue  # deleted since it was listed
        if m and got[1] == og.OCI_INDEX:
            subject, listed = f"{m[1]}:{m[2]}", tuple(_listed(_json(got[2])))
            fallback[subject] = FallbackIndex(tag, got[0], got[2], listed)
            for d in (subject, *(x.digest for x in listed)):
                untagged.add(d)
                pending.setdefault(d)
        else:
            tagged[tag] = got[0]
            walk(*got)
    api: bool | None = None
    asked: set[str] = set()
    while pending or len(asked) < len(manifests):
        batch = [d for d in pending if d not in manifests and d not in missing and og.is_sweepable(d)]
        pending.clear()
        for d, got in zip(batch, client.map(fetch, batch), strict=True):
            if got is None:
                missing.add(d)
            else:
                walk(*got)
        ask = [d for d in manifests if d not in asked]
        asked.update(ask)
        found: list[list[og.Descriptor] | None] = []
        if ask and api is None:  # the first answer says whether there is a Referrers API
            found = [client.referrers(repo, ask[0])]
            api, ask = found[0] is not None, ask[1:]
        if ask and api:
            found += client.map(lambda d: client.referrers(repo, d), ask)
        for x in (x for descs in found for x in descs or ()):
            untagged.add(x.digest)
            if x.digest not in manifests:
                pending.setdefault(x.digest)

    entries = [{"mediaType": manifests[d][0], "digest": d, "size": len(manifests[d][1]),
                **({"annotations": {og.REF_NAME: t}} if t else {})}
               for t, d in [*sorted(tagged.items()), *((None, d) for d in sorted(
                   untagged - set(tagged.values())) if d in manifests)]]
    index = og.parse_index(orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_INDEX,
                                         "manifests": entries}))
    blobs.update((d, og.BlobInfo(len(body))) for d, (_, body) in manifests.items())
    layout = og.Layout(index=index, blobs=blobs, now=time.time(),
                       manifests=og.BytesManifestSource({d: b for d, (_, b) in manifests.items()}))
    return RegistrySnapshot(ref, layout, tagged, fallback, frozenset(manifests),
                            frozenset(missing), bool(api), client.requests - requests)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A step of the plan left out: ``what`` (a digest, or ``tag NAME``) and why."""

    what: str
    reason: str


@dataclass(frozen=True, slots=True)
class RegistryApplyResult:
    """What :func:`apply_plan` did: manifests ``deleted`` by digest, in order (tags with them),
    tags ``untagged`` (manifests stay), fallback ``referrer_tags`` deleted or rewritten, steps
    ``skipped`` and why, and what the registry's own GC can reclaim now (``gc_hint``)."""

    origin: str
    deleted: tuple[str, ...] = ()
    untagged: tuple[str, ...] = ()
    referrer_tags: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    blobs_unreferenced: int = 0
    bytes_unreferenced: int = 0
    requests: int = 0
    gc_hint: str = GC_HINT


def apply_plan(ref: RegistryRef | str, plan: og.Plan, *, client: RegistryClient | None = None,
               progress: Progress | None = None, **options: Any) -> RegistryApplyResult:
    """Apply ``plan`` (``og.plan_*`` of the graph of :func:`read_repository`'s layout) to the
    repository, by the module's rules; ``progress(done, total)`` after each step.  Raises
    :class:`DeleteUnsupportedError` before any change if the registry does not delete,
    :class:`RegistryApplyError` (``result``: what was done) if a step fails part way."""
    ref = ref if isinstance(ref, RegistryRef) else parse_reference(ref)
    if plan.origin is not None and plan.origin != ref.origin:
        raise og.RequestError(f"the plan was made for {plan.origin}, not {ref.origin}")
    with (contextlib.nullcontext(client) if client  # a client given stays open
          else contextlib.closing(RegistryClient(ref.host, **options))) as c:
        return _apply(c, ref, plan, progress)


def _apply(client: RegistryClient, ref: RegistryRef, plan: og.Plan,
           progress: Progress | None) -> RegistryApplyResult:
    repo, first = ref.repository, client.requests
    fresh = _read(client, ref, None)
    planned_tags = sorted({(c.tag, c.digest) for c in plan.index_changes if c.tag is not None})
    skipped = [Skipped(f"tag {t}", f"moved since planning: now names {fresh.tags[t]}"
                       if t in fresh.tags else "gone since planning")
               for t, d in planned_tags if fresh.tags.get(t) != d]
    moved = {s.what[4:] for s in skipped}
    in_use: frozenset[str] = frozenset()
    if fresh.layout.index.fingerprint != plan.index_fingerprint:
        roots = {d for t, d in fresh.tags.items() if (t, d) not in planned_tags}
        if plan.policy.keep_untagged:
            roots |= {e.digest for e in fresh.layout.index.entries
                      if e.tag is None and e.digest not in plan.deleted_digests()}
        in_use = og.live_set(og.build_graph(fresh.layout), root_set=roots)
    names = {d: t for t, d in sorted(fresh.tags.items(), reverse=True) if (t, d) not in planned_tags}
    to_delete: list[og.Deletion] = []
    blobs = size = 0
    for d in plan.deletions:
        if d.digest in in_use:
            if d.digest in fresh.manifests:
                skipped.append(Skipped(d.digest, "in use since planning: " + (
                    f"tag {names[d.digest]} names it" if d.digest in names else "a tag reaches it")))
        elif d.digest in fresh.manifests or any(og.is_manifest_type(m) for m in d.media_types):
            to_delete.append(d)
        elif d.present:
            blobs, size = blobs + 1, size + d.size
    doomed = {d.digest for d in to_delete}
    untags = [(t, d) for t, d in planned_tags if t not in moved and d not in doomed]
    deleted, untagged, referrer_tags = list[str](), list[str](), list[str]()
    total, touched = len(untags) + len(to_delete), set()

    def result() -> RegistryApplyResult:
        return RegistryApplyResult(ref.origin, tuple(deleted), tuple(untagged),
                                   tuple(referrer_tags), tuple(skipped), blobs, size,
                                   client.requests - first)

    if total:  # before anything changes: a DELETE of a digest no manifest has answers 404
        client._expect(client.request("DELETE", f"/v2/{repo}/manifests/{PROBE_DIGEST}"),
                       (200, 202, 404), f"DELETE in {repo}")
    try:
        for n, (tag, digest) in enumerate(untags, 1):
            why = _untag(client, repo, tag, digest)
            untagged += [tag] if why is None else []
            skipped += [] if why is None else [Skipped(f"tag {tag}", why)]
            if progress is not None:
                progress(n, total)
        for n, d in enumerate(to_delete, len(untags) + 1):
            for fb in fresh.fallback.values():  # before the first referrer it lists goes
                if fb.tag not in touched and any(x.digest == d.digest for x in fb.referrers):
                    touched.add(fb.tag)
                    done = _update_fallback(client, repo, fb, doomed | fresh.missing)
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
    now = client.head_manifest(repo, tag)
    if now != digest:
        return f"moved since planning: now names {now}" if now else "gone since planning"
    client.push_blob(repo, str(EMPTY["digest"]), b"{}")
    body = orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_MANIFEST, "config": EMPTY,
                         "layers": [EMPTY], "annotations": {"org.ocigraph.untag": os.urandom(8).hex()}})
    client.delete_manifest(repo, client.put_manifest(repo, tag, body, og.OCI_MANIFEST))
    return None


def _update_fallback(client: RegistryClient, repo: str, fb: FallbackIndex, gone: set[str]) -> str:
    """Rewrite ``fb`` without the referrers in ``gone``, or delete it if none remain."""
    if client.head_manifest(repo, fb.tag) != fb.digest:
        return "left as is: the referrers index changed since it was read"
    doc = orjson.loads(fb.raw)
    keep = [m for m in doc.get("manifests") or []
            if not (isinstance(m, dict) and m.get("digest") in gone)]
    if keep:
        doc["manifests"] = keep
        client.put_manifest(repo, fb.tag, orjson.dumps(doc), og.OCI_INDEX)
    client.delete_manifest(repo, fb.digest)  # untagged now if rewritten: it takes nothing else
    return f"rewrote {fb.tag}" if keep else f"deleted {fb.tag}"
