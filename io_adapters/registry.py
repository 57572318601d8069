"""The second adapter: an HTTP client for the OCI Distribution API that only makes the requests;
when, with what, and what their answers mean are the core's (``og.RequestTries``,
``og.RegistryAuthorization``, ``og.RepositoryReader``, ``og.RegistryApplying``; docs/design.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import networkx as nx
import urllib3

import ocigraph as og

__all__ = ["find_credentials", "RegistryClient", "read_repository",
           "plan_repository", "image_times", "plan_prune_repository", "apply_plan"]

Progress = Callable[[int, "int | None"], None]
#: urllib3's failures, the first that fits (a refused connection is a ConnectTimeoutError too)
_FAILURES: tuple[tuple[type[Exception], og.ConnectionFailure], ...] = (
    (urllib3.exceptions.NewConnectionError, "unreachable"),
    (urllib3.exceptions.SSLError, "tls"), (urllib3.exceptions.TimeoutError, "timeout"))


def find_credentials(host: str, *, credentials: str | og.Credentials | None = None,
                     auth_file: str | os.PathLike[str] | None = None,
                     environ: Mapping[str, str] | None = None) -> og.Credentials | None:
    """``credentials`` (``USER:PASS``); else ``host``'s ``auths`` -> ``auth`` (base64 of
    ``user:pass``) in ``auth_file`` only if given, else in the first of $REGISTRY_AUTH_FILE,
    $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json that has one; else ``None``."""
    if credentials is not None:
        return og.parse_credentials(credentials) if isinstance(credentials, str) else credentials
    env = os.environ if environ is None else environ
    files = [auth_file] if auth_file is not None else og.auth_files(
        env, env.get("HOME") or str(Path.home()))
    return og.credentials_in(host, [str(Path(f)) for f in files if f], lambda f: (
        Path(f).read_bytes() if auth_file is not None or Path(f).exists() else None))


class RegistryClient:
    """HTTP to one registry: HTTPS first (also plain HTTP with ``tls_verify=False``, as
    containers/image); Basic or Bearer auth on challenge; 429/5xx and dropped connections
    retried with backoff or as Retry-After says; ``timeout`` per request; ``workers`` at a time;
    manifests fetched by digest kept.  ``requests``, ``request_seconds`` (summed) measure it."""

    def __init__(self, host: str, *, tls_verify: bool = True,
                 credentials: str | og.Credentials | None = None,
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
        self._auth = og.RegistryAuthorization(self.credentials)
        self._lock = threading.Lock()
        self._manifests: dict[tuple[str, str], tuple[str, str, bytes]] = {}
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
        if self._base is not None:
            return self._base
        for scheme in ("https",) if self.tls_verify else ("https", "http"):
            try:
                self._send("GET", f"{scheme}://{self.host}/v2/", {})  # any answer will do
                self._base = f"{scheme}://{self.host}"
                return self._base
            except urllib3.exceptions.HTTPError as exc:
                failure = exc
        raise self._failure(failure, hint=True)

    def _failure(self, exc: Exception, hint: bool = False) -> og.RegistryError:
        kind: og.ConnectionFailure = next((k for t, k in _FAILURES if isinstance(exc, t)), "other")
        return og.connection_error(self.host, kind, str(getattr(exc, "reason", None) or exc),
                                   timeout=self.timeout, tls_hint=hint and self.tls_verify)

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, url: str | None = None) -> urllib3.BaseHTTPResponse:
        """``path`` on the registry (or ``url`` elsewhere, without its authorization), with auth
        and retries: the final response, any status; raises only if no answer came."""
        origin = None if url is not None else self._origin()
        target = url or urljoin(origin or "", path)
        tries = og.RequestTries(self.retries, self.backoff, challenged=origin is None)
        while True:
            sent = self._auth.header_for(target, origin)  # the registry's, for the registry only
            try:
                r = self._send(method, target, {**(headers or {}),
                                                **({"Authorization": sent} if sent else {})}, body)
            except urllib3.exceptions.HTTPError as exc:  # no answer: tried again unless fatal
                failure = self._failure(exc)
                if (wait := tries.after_failure(failure)) is None:
                    raise failure from None
            else:
                if tries.challenge(r.status):
                    self._authenticate(r.headers.get("WWW-Authenticate", ""), sent)
                    continue
                wait = tries.after_answer(r.status, r.headers.get("Retry-After"), time.time())
                if wait is None:
                    return r
            time.sleep(wait)

    def _authenticate(self, challenge: str, sent: str | None) -> None:
        """Answer a 401: Basic, or Bearer with the realm's token for the challenged scope
        (``og.RegistryAuthorization``).  Where it cannot, the retry's 401 says why."""
        with self._lock:
            ask = self._auth.challenged(challenge, sent)
        if ask is not None:
            r = self.request("GET", "", url=ask.url, headers=ask.headers)
            with self._lock:
                self._auth.token_answer(ask, r.status, r.data)

    def _expect(self, r: urllib3.BaseHTTPResponse, ok: tuple[int, ...], what: str) -> None:
        """Raise the error ``r`` is for ``what`` unless its status is in ``ok``."""
        if r.status not in ok:
            raise og.response_error(self.host, r.status, r.data, what, attempts=self.retries + 1,
                                    credentials=self.credentials.source if self.credentials else None)

    def list_tags(self, repo: str, page: int = 1000) -> list[str]:
        """Every tag, by ``Link: <...>; rel="next"`` pages, else (no Link ever) by ``?last=``."""
        pages = og.TagPages(self.host, repo, page)
        while pages.path is not None:
            r = self.request("GET", pages.path)
            self._expect(r, (200,), f"tags of {repo}")
            pages.answered(r.data, r.headers.get("Link", ""))
        return pages.tags

    def get_manifest(self, repo: str, ref: str) -> tuple[str, str, bytes] | None:
        """``(digest, media type, bytes)`` by tag or digest, ``None`` if none (core verifies)."""
        if (hit := self._manifests.get((repo, ref))) is not None:
            return hit
        r = self.request("GET", f"/v2/{repo}/manifests/{ref}",
                         headers={"Accept": og.MANIFEST_ACCEPT})
        if og.manifest_gone("GET", r.status, r.data):
            return None
        self._expect(r, (200,), f"manifest {ref} of {repo}")
        body = bytes(r.data)
        digest, media = og.manifest_identity(ref, r.headers.get("Docker-Content-Digest"),
                                             r.headers.get("Content-Type", ""), body)
        self._manifests[(repo, digest)] = (digest, media, body)
        return digest, media, body

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        self._expect(self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=body, headers={
            "Content-Type": media_type}), (200, 201), f"push of manifest {ref} to {repo}")
        return og.digest_bytes(body)

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """DELETE by digest: ``True`` deleted, ``False`` it was already gone."""
        r = self.request("DELETE", f"/v2/{repo}/manifests/{digest}")
        if og.manifest_gone("DELETE", r.status, r.data):
            return False
        self._expect(r, (200, 202), f"delete of {digest} in {repo}")
        self._manifests.pop((repo, digest), None)
        return True

    def get_blob(self, repo: str, digest: str, what: str) -> bytes:
        """A small blob's bytes, verified, following a redirect to storage (without the
        registry's authorization)."""
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}")
        if r.status in og.REDIRECT_STATUSES and r.headers.get("Location"):
            r = self.request("GET", "", url=urljoin(self._origin(), r.headers["Location"]))
        self._expect(r, (200,), what)
        return og.verified_blob(self.host, what, digest, r.data)

    def push_blob(self, repo: str, digest: str, data: bytes) -> None:
        """Upload ``data`` to ``repo`` (POST, then PUT the whole blob)."""
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if r.status == 202 and r.headers.get("Location"):
            r = self.request("PUT", og.upload_url(self._origin(), r.headers["Location"], digest),
                             body=data, headers={"Content-Type": "application/octet-stream"})
        self._expect(r, (201, 204), f"upload to {repo}")

    def referrers(self, repo: str, digest: str) -> list[og.Descriptor] | None:
        """What the Referrers API lists; ``None`` if the registry has none."""
        out: list[og.Descriptor] = []
        path: str | None = f"/v2/{repo}/referrers/{digest}"
        while path is not None:
            r = self.request("GET", path, headers={"Accept": og.OCI_INDEX})
            if r.status in og.NO_REFERRERS_API:
                return None
            self._expect(r, (200,), f"referrers of {digest} in {repo}")
            out += og.index_descriptors(r.data)
            path = og.next_link(r.headers.get("Link", ""))
        return out


def _client(ref: og.RegistryRef, client: RegistryClient | None,
            options: Mapping[str, Any]) -> contextlib.AbstractContextManager[RegistryClient]:
    """``client`` (it stays open), else a new one made with ``options`` (closed after)."""
    return (contextlib.nullcontext(client) if client
            else contextlib.closing(RegistryClient(ref.host, **options)))


def read_repository(ref: og.RegistryRef | str, *, client: RegistryClient | None = None,
                    progress: Progress | None = None, **options: Any) -> og.RegistrySnapshot:
    """Read the repository ``ref`` names (not its tag or digest); ``progress(done, None)`` as
    manifests arrive.  Raises :class:`og.RegistryError`'s subclasses."""
    ref = og.parse_reference(ref)
    with _client(ref, client, options) as c:
        repo, first, done = ref.repository, c.requests, itertools.count(1)
        reader = og.RepositoryReader(c.list_tags(repo))

        def fetch(name: str) -> tuple[str, str, bytes] | None:
            got = c.get_manifest(repo, name)  # by digest: from the cache if fetched before
            if progress is not None:
                progress(next(done), None)  # next(): one C call, atomic under threads
            return got

        while True:
            if batch := reader.to_fetch():
                for name, got in zip(batch, c.map(fetch, batch), strict=True):
                    reader.fetched(name, got)
            elif ask := reader.to_ask():
                listed = c.map(lambda d: c.referrers(repo, d), ask)
                for digest, found in zip(ask, listed, strict=True):
                    reader.referred(digest, found)
            else:
                return og.RegistrySnapshot.of(reader.result(time.time()), ref, c.requests - first)


def plan_repository(ref: og.RegistryRef | str, operation: str, refs: Sequence[str],
                    policy: og.Policy, *, client: RegistryClient,
                    reporter: og.Reporter | None = None) -> tuple[og.Plan, nx.DiGraph]:
    """Read the repository and plan ``operation`` (delete, gc, remove, untag) of ``refs`` on it
    as on a layout (``og.plan_on_repository``: an unknown ref is a ``RegistryNotFoundError``)."""
    ref = og.parse_reference(ref)
    snapshot = read_repository(ref, client=client)
    return og.plan_on_repository(snapshot, ref, operation, refs, policy, reporter)


def image_times(snapshot: og.RegistrySnapshot, rules: og.RetentionRules, client: RegistryClient,
                *, policy: og.Policy | None = None) -> dict[str, float]:
    """The date of every image prune judges, as ``og.plan_prune``'s ``push_times``: its
    created annotation, else its config's ``created`` (each config read once, ``workers`` at a
    time; never a layer).  An image with neither is left out: it counts as the oldest."""
    dating, repo = og.ImageDating(snapshot, rules, policy), snapshot.ref.repository

    def created(config: str) -> str | None:
        return og.config_created(client.get_blob(repo, config, f"config {config} in {repo}"))

    return dating.times(client.map(created, dating.configs))


def plan_prune_repository(ref: og.RegistryRef | str, rules: og.RetentionRules, now: float, *,
                          client: RegistryClient, policy: og.Policy | None = None,
                          reporter: og.Reporter | None = None) -> tuple[og.Plan, nx.DiGraph]:
    """``ocigraph prune`` on a repository: judge its tags by ``rules`` at ``now``, ageing each
    image by its own date (:func:`image_times`), and plan with ``og.plan_prune``."""
    ref = og.parse_reference(ref)
    og.refuse_push_time(rules, ref)  # before any request
    snapshot = read_repository(ref, client=client)
    graph = og.build_graph(snapshot.layout, reporter)
    plan = og.plan_prune(graph, rules, now=now, policy=policy, reporter=reporter,
                         push_times=image_times(snapshot, rules, client, policy=policy))
    return dataclasses.replace(plan, origin=ref.origin), graph


def apply_plan(ref: og.RegistryRef | str, plan: og.Plan, *, client: RegistryClient | None = None,
               progress: Progress | None = None, **options: Any) -> og.RegistryApplyResult:
    """Apply ``plan`` (made on :func:`read_repository`'s layout) to the repository: manifests
    by digest, never blobs; ``progress(done, total)`` after each step.  Raises
    :class:`og.DeleteUnsupportedError` before any change if the registry does not delete,
    :class:`og.RegistryApplyError` (``result``: what was done) if a step fails part way."""
    ref = og.parse_reference(ref)
    og.check_plan_origin(plan, ref)
    with _client(ref, client, options) as c:
        repo, first = ref.repository, c.requests
        run = og.RegistryApplying(ref.origin,
                                  og.repository_changes(plan, read_repository(ref, client=c)))
        if run.total:  # before anything changes: a DELETE of a digest no manifest has answers 404
            c._expect(c.request("DELETE", f"/v2/{repo}/manifests/{og.PROBE_DIGEST}"),
                      og.PROBE_ANSWERS, f"DELETE in {repo}")
        try:
            for step in run.steps:
                if isinstance(step, og.DeleteStep):
                    why = step.skip_reason(c.delete_manifest(repo, step.digest))
                else:  # a tag is changed only while it names what the plan saw
                    now = c.get_manifest(repo, step.tag)
                    if (why := step.skip_reason(now and now[0])) is None:
                        _change_tag(c, repo, step)
                if (done := run.record(step, why)) is not None and progress is not None:
                    progress(*done)
        except og.RegistryError as exc:
            raise og.RegistryApplyError(exc, run.result(c.requests - first)) from exc
        return run.result(c.requests - first)


def _change_tag(client: RegistryClient, repo: str, step: og.UntagStep | og.FallbackStep) -> None:
    """Untag: point the tag at a throw-away manifest and delete that by digest.  Not DELETE of
    the tag: distribution 2.8 refuses it, and a registry that took it for its manifest would
    delete every tag of the image.  A fallback index: rewrite it (if referrers remain), then
    delete the old one by digest (untagged now if rewritten: it takes nothing else)."""
    if isinstance(step, og.UntagStep):
        client.push_blob(repo, str(og.EMPTY_DESCRIPTOR["digest"]), b"{}")
        body = og.throwaway_manifest(os.urandom(8).hex())
        client.delete_manifest(repo, client.put_manifest(repo, step.tag, body, og.OCI_MANIFEST))
        return
    if step.body is not None:
        client.put_manifest(repo, step.tag, step.body, og.OCI_INDEX)
    client.delete_manifest(repo, step.index.digest)
