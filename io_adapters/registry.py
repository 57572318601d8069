"""Plan against a live registry: read a repository into the core's :class:`ocigraph.Layout`
and apply an :class:`ocigraph.Plan` back to it -- the same core, a second shell.

Reading.  index.json gets one entry per tag (``org.opencontainers.image.ref.name``) and one
untagged entry per manifest known without a tag: the referrers the Referrers API lists, or a
``sha256-<hex>`` fallback tag index where the registry has no API, and the subjects those tags
name.  Fallback tags are bookkeeping, never entries: a signature is live exactly when its image
is.  The present blobs are the manifests fetched plus every blob their descriptors name, with
the descriptor's size; no blob is downloaded.

Applying.  A registry has no lock and no compare-and-swap, so the rule is: read the repository
again first (a HEAD per tag; manifests come from the client's cache).  If its index is the one
the plan was made from, apply the plan as it is.  Otherwise change a tag only while it names
the digest it named at planning, and delete a manifest only if nothing keeps it in use now (no
tag left after the plan's own tag changes reaches it, as a successor or as a referrer).  What is
left out is reported with its reason.  Tags go first, then manifests by digest in the plan's
order (predecessors first); a fallback index is rewritten without its deleted referrers, or
deleted with the last of them, just before the first of them goes.  Configs and layers are left
to the registry's garbage collection; the result counts what became unreferenced.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urljoin

import orjson
import urllib3

import ocigraph as og

__all__ = [
    "RegistryRef", "parse_reference", "Credentials", "find_credentials", "RegistryClient",
    "FallbackIndex", "RegistrySnapshot", "read_repository", "Skipped", "RegistryApplyResult",
    "apply_plan", "RegistryError", "RegistryRefError", "RegistryUnreachableError",
    "RegistryTLSError", "RegistryAuthError", "RegistryNotFoundError", "DeleteUnsupportedError",
    "RegistryServerError", "RegistryApplyError",
]

ACCEPT = ", ".join(sorted(og.MANIFEST_MEDIA_TYPES))
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest()
#: A digest no manifest has: how a registry answers its DELETE says whether it deletes at all.
PROBE_DIGEST = "sha256:" + hashlib.sha256(b"ocigraph: does this registry delete?").hexdigest()
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
GC_HINT = ("`registry garbage-collect CONFIG` on the registry host reclaims them (blobs another "
           "repository still uses stay)")
_FALLBACK_TAG = re.compile(r"(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})")
_DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"{_PART}(?:/{_PART})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST = re.compile(r"(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?")
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
Progress = Callable[[int, "int | None"], None]
_T = TypeVar("_T")
_R = TypeVar("_R")


# -- errors: one line each, naming the host and the cause -----------------------------------

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


class RegistryRefError(og.RequestError):
    """A ``docker://`` reference that does not parse."""

    def __init__(self, text: str, why: str) -> None:
        self.text = text
        super().__init__(f"not a registry reference {text!r}: {why}")


# -- addressing and credentials ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RegistryRef:
    """``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` as a value.  ``origin`` names the repository:
    a plan may record it, and :func:`apply_plan` then checks it."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str | None:
        """The digest or tag named, if any (a digest wins)."""
        return self.digest or self.tag

    @property
    def origin(self) -> str:
        return f"docker://{self.host}/{self.repository}"

    def __str__(self) -> str:
        return self.origin + (f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else "")


def parse_reference(text: str) -> RegistryRef:
    """Parse ``[docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]``; raises :class:`RegistryRefError`.
    As in containers/image, a first component without ``.`` or ``:`` (nor ``localhost``) is a
    repository on Docker Hub, not a host.

    >>> parse_reference("docker://127.0.0.1:5000/team/app:v1")
    RegistryRef(host='127.0.0.1:5000', repository='team/app', tag='v1', digest=None)
    >>> str(parse_reference("docker://busybox"))
    'docker://docker.io/library/busybox'
    """
    rest = text.removeprefix("docker://")
    head, slash, path = rest.partition("/")
    if not slash or not (any(c in head for c in ".:[") or head == "localhost"):
        head, path = "docker.io", rest
    if not _HOST.fullmatch(head):
        raise RegistryRefError(text, f"bad host {head!r}")
    tag = digest = None
    if "@" in path:
        path, _, raw = path.partition("@")
        try:
            digest = og.parse_digest(raw)
        except og.InvalidDigestError as exc:
            raise RegistryRefError(text, exc.why) from None
    elif ":" in path.rsplit("/", 1)[-1]:
        path, _, tag = path.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise RegistryRefError(text, f"bad tag {tag!r}")
    if head in _DOCKER_HUB and "/" not in path:
        path = "library/" + path
    if not _REPO.fullmatch(path):
        raise RegistryRefError(text, f"bad repository name {path!r}")
    return RegistryRef(head, path, tag, digest)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password for one registry, and where they were found."""

    username: str
    password: str = field(repr=False)
    source: str = "given"


def find_credentials(host: str, *, credentials: str | Credentials | None = None,
                     auth_file: str | os.PathLike[str] | None = None,
                     environ: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for ``host``: ``credentials`` (``USER:PASS``) if given; else its entry in
    ``auth_file`` if given (there only); else in the first of $REGISTRY_AUTH_FILE,
    $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json that has one (``auths`` ->
    ``auth``: base64 of ``user:pass``).  ``None`` if none.  Credential helpers are not asked.
    """
    if isinstance(credentials, str):
        user, sep, password = credentials.partition(":")
        if not sep or not user:
            raise og.RequestError("credentials must be given as USER:PASS")
        return Credentials(user, password, "given")
    if credentials is not None:
        return credentials
    env = os.environ if environ is None else environ
    files = [Path(auth_file)] if auth_file is not None else [
        *([Path(env["REGISTRY_AUTH_FILE"])] if env.get("REGISTRY_AUTH_FILE") else []),
        *([Path(env["XDG_RUNTIME_DIR"], "containers", "auth.json")]
          if env.get("XDG_RUNTIME_DIR") else []),
        Path(env.get("HOME") or Path.home(), ".docker", "config.json")]
    for path in files:
        try:
            doc = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            if auth_file is None:
                continue
            raise og.RequestError(f"auth file {path}: not found") from None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise og.RequestError(f"auth file {path}: {exc}") from None
        auths = doc.get("auths") if isinstance(doc, dict) else None
        for key, entry in (auths if isinstance(auths, dict) else {}).items():
            bare = re.sub(r"^[a-z]+://", "", key).split("/", 1)[0]  # "host", "https://host/v1/"
            if not isinstance(entry, dict) or not (
                    bare == host or (bare in _DOCKER_HUB and host in _DOCKER_HUB)):
                continue
            if entry.get("username") and entry.get("password") and not entry.get("auth"):
                return Credentials(entry["username"], entry["password"], str(path))
            try:
                user, sep, password = base64.b64decode(entry.get("auth") or "").decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                sep = ""
            if not sep:
                raise og.RequestError(f"auth file {path}: the entry for {key} is not base64 of "
                                      "user:pass")
            return Credentials(user, password, str(path))
    return None


def _error_code(data: bytes) -> tuple[str, str]:
    """The first ``errors[]`` code and message of an error body (else its first line)."""
    try:
        err = orjson.loads(data)["errors"][0]
        return str(err.get("code", "")), str(err.get("message", ""))
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return "", data[:80].decode("utf-8", "replace").split("\n", 1)[0].strip()


# -- the HTTP client --------------------------------------------------------------------------

class RegistryClient:
    """HTTP to one registry host: HTTPS first (then plain HTTP, only with ``tls_verify=False``,
    as containers/image does for an insecure registry); Basic or Bearer-token auth when
    challenged; 429/5xx and dropped connections retried with backoff, honouring Retry-After;
    a per-request ``timeout``; ``workers`` requests at a time (:meth:`map`).

    It keeps the manifests it fetched (per repository and digest; content never changes), so
    reading a repository again costs a HEAD per tag.  ``requests`` and ``request_seconds``
    (every request's duration, summed) measure it.  Thread-safe; close it when done.
    """

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
        self._api = "registry-1.docker.io" if host in _DOCKER_HUB else host
        self._base: str | None = None
        self._auth: str | None = None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.tag_delete: bool | None = None  # DELETE /manifests/<tag> works (None: not known)
        self.requests, self.request_seconds = 0, 0.0

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._http.clear()

    def map(self, fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """``[fn(x) for x in items]``, ``workers`` at a time; the first error is raised."""
        if len(items) <= 1 or self.workers <= 1:
            return [fn(x) for x in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ocigraph-registry")
            pool = self._pool
        return list(pool.map(fn, items))

    # -- transport --

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
        """``https://HOST``, or ``http://HOST`` (only with ``tls_verify=False``): the first that
        answers ``GET /v2/``."""
        failure: Exception | None = None
        for scheme in () if self._base else ("https",) if self.tls_verify else ("https", "http"):
            try:
                r = self._send("GET", f"{scheme}://{self._api}/v2/", {})
            except urllib3.exceptions.HTTPError as exc:
                failure = exc
                continue
            if r.status == 404:
                raise RegistryError(self.host, f"no registry API at {scheme}://{self._api}/v2/", 404)
            self._base = f"{scheme}://{self._api}"
        if self._base is None:
            raise self._failure(failure, hint=True)
        return self._base

    def _failure(self, exc: Exception | None, hint: bool = False) -> RegistryError:
        """The error for a request that got no answer."""
        text = str(getattr(exc, "reason", None) or exc).split("new connection: ")[-1]
        why = re.sub(r"^\[SSL: \w+\] |\s*\(_ssl\.c:\d+\)|^\[Errno -?\d+\] ", "", text).strip()
        if isinstance(exc, urllib3.exceptions.NewConnectionError):
            return RegistryUnreachableError(self.host, f"unreachable ({why})")
        if isinstance(exc, urllib3.exceptions.SSLError):
            return RegistryTLSError(self.host, f"TLS failure ({why})" + (
                "; for a registry with a self-signed certificate or plain HTTP, turn TLS "
                "verification off (tls_verify=False)" if hint and self.tls_verify else ""))
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            return RegistryServerError(self.host, f"no answer within {self.timeout:g}s")
        return RegistryServerError(self.host, f"connection failed ({why})")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before retry ``attempt``: Retry-After (seconds or a date) when the answer
        gave one, else exponential backoff; never more than a minute."""
        wait = self.backoff * 2 ** (attempt - 1)
        if retry_after and retry_after.strip().isdigit():
            wait = float(retry_after)
        elif retry_after:
            try:
                wait = parsedate_to_datetime(retry_after).timestamp() - time.time()
            except (TypeError, ValueError):
                pass
        return min(max(wait, 0.0), 60.0)

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, url: str | None = None) -> urllib3.BaseHTTPResponse:
        """A request to ``path`` on the registry (or to ``url``, elsewhere, without the
        registry's authorization), with auth and retries.  Returns the final response, any
        status; raises only when no answer came (unreachable, TLS, timeout)."""
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
        """Answer a 401's challenge: Basic with the credentials, or Bearer with a token the
        realm gives for the challenged service and scope (kept per scope)."""
        if self._auth != sent:
            return  # another thread has authenticated since: just try again
        scheme, _, rest = header.strip().partition(" ")
        params = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', rest))
        creds = self.credentials
        basic = creds and "Basic " + base64.b64encode(
            f"{creds.username}:{creds.password}".encode()).decode()
        if scheme.lower() == "basic":
            if not basic:
                raise self._unauthorized()
            self._auth = basic
            return
        if scheme.lower() != "bearer" or not params.get("realm"):
            raise RegistryAuthError(self.host, f"401 unauthorized (challenge {scheme or 'none'})", 401)
        scope = params.get("scope", "")
        token = self._tokens.get(scope)
        if token is None or sent == f"Bearer {token}":
            query = urlencode({k: params[k] for k in ("service", "scope") if params.get(k)})
            realm = params["realm"] + ("&" if "?" in params["realm"] else "?") + query
            r = self.request("GET", "", url=realm, headers={"Authorization": basic} if basic else None)
            if r.status in (401, 403):
                raise RegistryAuthError(self.host, f"{r.status} from the token service: it "
                                        "refused " + (f"the credentials ({creds.source})"
                                                      if creds else "anonymous access"), r.status)
            try:
                doc = orjson.loads(r.data)
                token = doc.get("token") or doc.get("access_token")
            except (orjson.JSONDecodeError, AttributeError):
                token = None
            if r.status != 200 or not isinstance(token, str):
                raise RegistryServerError(self.host, f"the token service sent no token ({r.status})")
        with self._lock:
            self._tokens[scope] = token
            self._auth = f"Bearer {token}"

    def _unauthorized(self) -> RegistryAuthError:
        creds = self.credentials
        why = ("no credentials given or found in an auth file for this host" if creds is None
               else f"the credentials ({creds.source}) were rejected")
        return RegistryAuthError(self.host, f"401 unauthorized: {why}", 401)

    def fail(self, r: urllib3.BaseHTTPResponse, what: str) -> RegistryError:
        """The error to raise for a response that is not what ``what`` needed."""
        code, message = _error_code(r.data)
        s = r.status
        detail = f" ({s} {code})" if code else f" ({s})"
        if s == 401:
            return self._unauthorized()
        if s == 403:
            return RegistryAuthError(self.host, f"{what}: access denied{detail}", s)
        if s == 404:
            kind = "unknown repository" if code == "NAME_UNKNOWN" else "not found"
            return RegistryNotFoundError(self.host, f"{what}: {kind}{detail}", s)
        if s == 405 or code == "UNSUPPORTED":
            return DeleteUnsupportedError(self.host, f"{what}: the registry refuses it (405 "
                                          "unsupported; distribution needs "
                                          "storage.delete.enabled: true)", s)
        if s in RETRY_STATUSES:
            return RegistryServerError(self.host, f"{what}: HTTP {s} after "
                                       f"{self.retries + 1} attempt(s)", s)
        return RegistryError(self.host, f"{what}: unexpected HTTP {s} {code} {message}".rstrip(), s)

    # -- the distribution API --

    def _json(self, r: urllib3.BaseHTTPResponse, what: str) -> Any:
        try:
            return orjson.loads(r.data)
        except orjson.JSONDecodeError:
            raise RegistryServerError(self.host, f"{what}: the answer is not JSON") from None

    def list_tags(self, repo: str, page: int = 1000) -> list[str]:
        """Every tag of ``repo``, page by page: ``Link: <...>; rel="next"``, else ``?last=``."""
        out: list[str] = []
        seen: set[str] = set()
        path: str | None = f"/v2/{repo}/tags/list?n={page}"
        while path is not None:
            r = self.request("GET", path)
            if r.status != 200:
                raise self.fail(r, f"tags of {repo}")
            doc = self._json(r, f"tags of {repo}")
            tags = (doc.get("tags") if isinstance(doc, dict) else 0) or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise RegistryServerError(self.host, f"tags of {repo}: not a list of names")
            new = [t for t in tags if t not in seen]
            out += new
            seen.update(new)
            link = _NEXT.search(r.headers.get("Link", ""))
            path = (link.group(1) if new and link else f"/v2/{repo}/tags/list?n={page}&last="
                    f"{quote(new[-1])}" if new and len(tags) >= page else None)
        return out

    def get_manifest(self, repo: str, ref: str) -> tuple[str, str, bytes] | None:
        """``(digest, media type, bytes)`` of a manifest by tag or digest; ``None`` if there is
        none.  The digest is Docker-Content-Digest; the core verifies it."""
        hit = self._manifests.get((repo, ref))
        if hit is not None:
            return ref, hit[0], hit[1]
        r = self.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        if r.status == 404 and _error_code(r.data)[0] != "NAME_UNKNOWN":
            return None
        if r.status != 200:
            raise self.fail(r, f"manifest {ref} of {repo}")
        body = r.data
        digest = ref if ":" in ref else (r.headers.get("Docker-Content-Digest")
                                         or "sha256:" + hashlib.sha256(body).hexdigest())
        media = r.headers.get("Content-Type", "").split(";")[0].strip()
        if not og.is_manifest_type(media):  # a registry that says application/json
            try:
                media = str(orjson.loads(body).get("mediaType") or media)
            except (orjson.JSONDecodeError, AttributeError):
                pass
        self._manifests[(repo, digest)] = (media, body)
        return digest, media, body

    def head_manifest(self, repo: str, ref: str) -> str | None:
        """The digest a tag names now; ``None`` if it names nothing."""
        r = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        if r.status == 404:
            return None
        if r.status != 200:
            raise self.fail(r, f"manifest {ref} of {repo}")
        if r.headers.get("Docker-Content-Digest"):
            return str(r.headers["Docker-Content-Digest"])
        got = self.get_manifest(repo, ref)
        return None if got is None else got[0]

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """Push a manifest under a tag (or its digest); returns its digest."""
        r = self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=body,
                         headers={"Content-Type": media_type})
        if r.status not in (200, 201):
            raise self.fail(r, f"push of manifest {ref} to {repo}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """DELETE by digest: ``True`` deleted, ``False`` it was already gone."""
        r = self.request("DELETE", f"/v2/{repo}/manifests/{digest}")
        if r.status in (200, 202):
            self._manifests.pop((repo, digest), None)
            return True
        if r.status == 404 and _error_code(r.data)[0] in ("MANIFEST_UNKNOWN", ""):
            return False
        raise self.fail(r, f"delete of {digest} in {repo}")

    def ensure_blob(self, repo: str, digest: str, data: bytes) -> None:
        """Upload ``data`` unless ``repo`` has it (POST, then PUT the whole blob)."""
        if self.request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200:
            return
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if r.status == 202 and r.headers.get("Location"):
            where = urljoin(self._origin(), r.headers["Location"])
            where += ("&" if "?" in where else "?") + urlencode({"digest": digest})
            r = self.request("PUT", where, body=data,
                             headers={"Content-Type": "application/octet-stream"})
        if r.status not in (201, 204):
            raise self.fail(r, f"upload to {repo}")

    def referrers(self, repo: str, digest: str) -> list[og.Descriptor] | None:
        """What the Referrers API lists for ``digest``; ``None`` where the registry has no
        such API (one that has it never answers 404)."""
        out: list[og.Descriptor] = []
        path: str | None = f"/v2/{repo}/referrers/{digest}"
        while path is not None:
            r = self.request("GET", path, headers={"Accept": og.OCI_INDEX})
            if r.status in (400, 404, 405):
                return None
            if r.status != 200:
                raise self.fail(r, f"referrers of {digest} in {repo}")
            out += _listed(self._json(r, f"referrers of {digest}"))
            link = _NEXT.search(r.headers.get("Link", ""))
            path = link.group(1) if link else None
        return out

    def check_deletes(self, repo: str) -> None:
        """Raise :class:`DeleteUnsupportedError` (or an auth error) unless the registry would
        delete a manifest of ``repo``: a DELETE of a digest no manifest has answers 404."""
        r = self.request("DELETE", f"/v2/{repo}/manifests/{PROBE_DIGEST}")
        if r.status not in (200, 202, 404):
            raise self.fail(r, f"DELETE in {repo}")


def _listed(doc: Any) -> list[og.Descriptor]:
    """The well-formed descriptors of an index document's ``manifests``."""
    out = []
    for obj in (doc.get("manifests") or []) if isinstance(doc, dict) else []:
        try:
            out.append(og.parse_descriptor(obj))
        except (ValueError, og.OcigraphError):
            continue  # a malformed entry in a referrers list names nothing usable
    return out


# -- reading a repository as a layout ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FallbackIndex:
    """A ``sha256-<hex>`` tag: the index (``digest``, ``raw``) listing ``subject``'s referrers."""

    tag: str
    subject: str
    digest: str
    raw: bytes = field(repr=False)
    referrers: tuple[og.Descriptor, ...]


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """A repository as read.  ``layout`` is the core's input (``og.build_graph(layout)``);
    ``tags``: tag -> digest, fallback tags left out; ``fallback``: subject -> its referrers
    index; ``manifests`` fetched; ``missing``: manifests named but absent; ``requests`` and
    ``seconds``: what the read cost."""

    ref: RegistryRef
    layout: og.Layout
    tags: Mapping[str, str]
    fallback: Mapping[str, FallbackIndex]
    manifests: frozenset[str]
    missing: frozenset[str]
    referrers_api: bool
    requests: int
    seconds: float


class _FetchedManifests:
    """The core's :class:`ocigraph.ManifestSource` over the manifests a read fetched."""

    def __init__(self, blobs: Mapping[str, bytes]) -> None:
        self._blobs = blobs

    def read_manifests(self, digests: Sequence[str]) -> dict[str, og.Manifest]:
        return {d: og.parse_manifest(d, self._blobs.get(d)) for d in digests}


def read_repository(ref: RegistryRef | str, *, client: RegistryClient | None = None,
                    progress: Progress | None = None, **options: Any) -> RegistrySnapshot:
    """Read the repository ``ref`` names (a tag or digest in it is not used here).

    ``options`` go to :class:`RegistryClient` when no ``client`` is given.
    ``progress(done, None)`` is called as manifests arrive.  Raises :class:`RegistryError`'s
    subclasses; an unknown repository is :class:`RegistryNotFoundError`.
    """
    ref = ref if isinstance(ref, RegistryRef) else parse_reference(ref)
    own = client is None
    client = client or RegistryClient(ref.host, **options)
    try:
        return _read(client, ref, progress)
    finally:
        if own:
            client.close()


def _read(client: RegistryClient, ref: RegistryRef, progress: Progress | None) -> RegistrySnapshot:
    repo, requests, started = ref.repository, client.requests, time.perf_counter()
    tags = client.list_tags(repo)
    again = any(k[0] == repo for k in client._manifests)
    done = [0]

    def fetch(name: str) -> tuple[str, str, bytes] | None:
        if again and ":" not in name:  # read again: a HEAD, and a GET only if new
            digest = client.head_manifest(repo, name)
            got = None if digest is None else client.get_manifest(repo, digest)
        else:
            got = client.get_manifest(repo, name)
        if progress is not None:
            with client._lock:
                done[0] += 1
            progress(done[0], None)
        return got

    manifests: dict[str, tuple[str, bytes]] = {}
    missing: set[str] = set()
    tagged: dict[str, str] = {}
    fallback: dict[str, FallbackIndex] = {}
    untagged: set[str] = set()  # referrers, and the subjects fallback tags name
    blobs: dict[str, og.BlobInfo] = {}
    pending: dict[str, None] = {}  # manifests to fetch, in order

    def walk(digest: str, media: str, body: bytes) -> None:
        """Keep a manifest; queue the manifests it names and note its blobs -- in the fields
        the core walks for its media type only, so that the graph explains every blob."""
        manifests[digest] = (media, body)
        fields = og.SUCCESSOR_FIELDS.get(media, ())
        for name, desc in og.parse_manifest(digest, body).refs:
            if name in fields and og.is_manifest_type(desc.media_type):
                pending.setdefault(desc.digest)
            elif name in fields:
                blobs.setdefault(desc.digest, og.BlobInfo(desc.size))

    for tag, got in zip(tags, client.map(fetch, tags), strict=True):
        if got is None:
            continue  # deleted since it was listed
        m = _FALLBACK_TAG.fullmatch(tag)
        if m and got[1] == og.OCI_INDEX:
            subject, listed = f"{m[1]}:{m[2]}", tuple(_listed(orjson.loads(got[2])))
            fallback[subject] = FallbackIndex(tag, subject, got[0], got[2], listed)
            for d in (subject, *(x.digest for x in listed)):
                untagged.add(d)
                pending.setdefault(d)
        else:
            tagged[tag] = got[0]
            walk(*got)

    api: bool | None = None
    asked: set[str] = set()
    while True:
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
        if not pending:
            break

    def entry(d: str, tag: str | None) -> dict[str, Any]:
        out = {"mediaType": manifests[d][0], "digest": d, "size": len(manifests[d][1])}
        return out if tag is None else {**out, "annotations": {og.REF_NAME: tag}}

    entries = [entry(d, t) for t, d in sorted(tagged.items())]
    entries += [entry(d, None) for d in sorted(untagged - set(tagged.values())) if d in manifests]
    index = og.parse_index(orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_INDEX,
                                         "manifests": entries}))
    blobs.update((d, og.BlobInfo(len(body))) for d, (_, body) in manifests.items())
    layout = og.Layout(index=index, blobs=blobs, now=time.time(),
                       manifests=_FetchedManifests({d: b for d, (_, b) in manifests.items()}))
    return RegistrySnapshot(ref, layout, tagged, fallback, frozenset(manifests),
                            frozenset(missing), bool(api), client.requests - requests,
                            time.perf_counter() - started)


# -- applying a plan --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Skipped:
    """A step of the plan left out: ``what`` (a digest, or ``tag NAME``) and why."""

    what: str
    reason: str


@dataclass(frozen=True, slots=True)
class RegistryApplyResult:
    """What :func:`apply_plan` did.

    ``deleted``: manifests deleted by digest, in order (their tags went with them).
    ``untagged``: tags removed from manifests that stay.  ``referrer_tags``: fallback indexes,
    ``deleted <tag>`` or ``rewrote <tag>``.  ``skipped``: steps left out, with why.
    ``blobs_unreferenced``, ``bytes_unreferenced``: the manifests deleted and the configs and
    layers only they used, left for the registry's own garbage collection (``gc_hint``).
    """

    origin: str
    deleted: tuple[str, ...] = ()
    untagged: tuple[str, ...] = ()
    referrer_tags: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    blobs_unreferenced: int = 0
    bytes_unreferenced: int = 0
    requests: int = 0
    gc_hint: str = GC_HINT

    def summary(self) -> str:
        line = (f"{self.origin}: {len(self.deleted)} manifest(s) deleted, {len(self.untagged)} "
                f"tag(s) removed, {len(self.skipped)} step(s) skipped; {self.blobs_unreferenced} "
                f"blob(s), {og.format_bytes(self.bytes_unreferenced)} no longer referenced here")
        return line + (f": {self.gc_hint}" if self.blobs_unreferenced else "")


def _in_use(graph: Any, roots: Mapping[str, str]) -> dict[str, str]:
    """Every node the roots keep live (successors, and referrers of what is live, as the core's
    liveness), each with the root that reaches it first."""
    held = {d: why for d, why in sorted(roots.items()) if d in graph}
    queue = deque(held)
    while queue:
        n = queue.popleft()
        for x in [*graph.successors(n), *(p for p in graph.predecessors(n)
                                          if "subject" in graph.edges[p, n]["roles"])]:
            if x not in held:
                held[x] = held[n]
                queue.append(x)
    return held


def apply_plan(ref: RegistryRef | str, plan: og.Plan, *, client: RegistryClient | None = None,
               progress: Progress | None = None, **options: Any) -> RegistryApplyResult:
    """Apply ``plan`` -- made by ``og.plan_*`` on ``og.build_graph`` of
    :func:`read_repository`'s layout -- to the repository ``ref`` names, by the module's
    rules; ``progress(done, total)`` after each step.  Returns what was done; never prints.

    Raises :class:`DeleteUnsupportedError` before changing anything if the registry does not
    delete; :class:`RegistryApplyError` if a step fails part way (its ``result`` lists what
    was done); ``og.RequestError`` if the plan's ``origin`` names another repository.
    """
    ref = ref if isinstance(ref, RegistryRef) else parse_reference(ref)
    if plan.origin is not None and plan.origin != ref.origin:
        raise og.RequestError(f"the plan was made for {plan.origin}, not {ref.origin}")
    own = client is None
    client = client or RegistryClient(ref.host, **options)
    try:
        return _apply(client, ref, plan, progress)
    finally:
        if own:
            client.close()


def _apply(client: RegistryClient, ref: RegistryRef, plan: og.Plan,
           progress: Progress | None) -> RegistryApplyResult:
    repo, first = ref.repository, client.requests
    fresh = _read(client, ref, None)
    planned_tags = sorted({(c.tag, c.digest) for c in plan.index_changes if c.tag is not None})
    skipped: list[Skipped] = []
    for tag, digest in planned_tags:
        if fresh.tags.get(tag) != digest:
            now = fresh.tags.get(tag)
            skipped.append(Skipped(f"tag {tag}", f"moved since planning: now names {now}"
                                   if now else "gone since planning"))
    moved = {s.what[4:] for s in skipped}
    in_use: dict[str, str] = {}
    if fresh.layout.index.fingerprint != plan.index_fingerprint:
        roots = {d: f"tag {t}" for t, d in sorted(fresh.tags.items(), reverse=True)
                 if (t, d) not in planned_tags}
        if plan.policy.keep_untagged:
            roots.update({e.digest: "an untagged entry" for e in fresh.layout.index.entries
                          if e.tag is None and e.digest not in plan.deleted_digests()})
        in_use = _in_use(og.build_graph(fresh.layout), roots)
    to_delete: list[og.Deletion] = []
    blobs = size = 0
    for d in plan.deletions:
        if d.digest in in_use:
            if d.digest in fresh.manifests:
                skipped.append(Skipped(d.digest, f"in use since planning: {in_use[d.digest]} "
                                       "reaches it"))
        elif d.digest in fresh.manifests or any(og.is_manifest_type(m) for m in d.media_types):
            to_delete.append(d)
        elif d.present:
            blobs, size = blobs + 1, size + d.size
    doomed = {d.digest for d in to_delete}
    untags = [(t, d) for t, d in planned_tags if t not in moved and d not in doomed]
    listing: dict[str, list[FallbackIndex]] = {}  # referrer -> the fallback indexes listing it
    for fb in fresh.fallback.values():
        for x in fb.referrers:
            listing.setdefault(x.digest, []).append(fb)
    deleted: list[str] = []
    untagged: list[str] = []
    referrer_tags: list[str] = []
    total, touched = len(untags) + len(to_delete), set()

    def result() -> RegistryApplyResult:
        return RegistryApplyResult(ref.origin, tuple(deleted), tuple(untagged),
                                   tuple(referrer_tags), tuple(skipped), blobs, size,
                                   client.requests - first)

    try:
        if total:
            client.check_deletes(repo)
        for n, (tag, digest) in enumerate(untags, 1):
            why = _untag(client, repo, tag, digest)
            untagged += [tag] if why is None else []
            skipped += [] if why is None else [Skipped(f"tag {tag}", why)]
            if progress is not None:
                progress(n, total)
        for n, d in enumerate(to_delete, len(untags) + 1):
            for fb in listing.get(d.digest, ()):
                if fb.tag not in touched:
                    touched.add(fb.tag)
                    done = _update_fallback(client, repo, fb, doomed | fresh.missing)
                    if done.startswith("left"):
                        skipped.append(Skipped(f"tag {fb.tag}", done))
                    else:
                        referrer_tags.append(done)
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
    """Remove ``tag`` if it still names ``digest``; else say why not.  DELETE of the tag where
    the registry allows it (distribution-spec 1.1); else the tag is pointed at a throw-away
    manifest unique to this call, and that is deleted by digest, which takes the tag with it
    and touches nothing else."""
    now = client.head_manifest(repo, tag)
    if now != digest:
        return f"moved since planning: now names {now}" if now else "gone since planning"
    if client.tag_delete is not False:
        r = client.request("DELETE", f"/v2/{repo}/manifests/{tag}")
        if r.status in (200, 202):
            client.tag_delete = True
            return None
        if r.status not in (400, 404, 405) and _error_code(r.data)[0] != "UNSUPPORTED":
            raise client.fail(r, f"delete of tag {tag} in {repo}")
        client.tag_delete = False  # distribution 2.8 answers 400 DIGEST_INVALID
    client.ensure_blob(repo, EMPTY_DIGEST, EMPTY_BLOB)
    empty = {"mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": len(EMPTY_BLOB)}
    body = orjson.dumps({
        "schemaVersion": 2, "mediaType": og.OCI_MANIFEST, "config": empty, "layers": [empty],
        "annotations": {"org.ocigraph.untag": tag, "org.ocigraph.nonce": os.urandom(8).hex()},
    })
    client.delete_manifest(repo, client.put_manifest(repo, tag, body, og.OCI_MANIFEST))
    return None


def _update_fallback(client: RegistryClient, repo: str, fb: FallbackIndex, gone: set[str]) -> str:
    """Rewrite the fallback index ``fb`` without the referrers in ``gone`` (to be deleted, or
    absent already), or delete it if none would remain.  Says what it did."""
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
