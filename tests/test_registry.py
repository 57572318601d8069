"""The registry adapter: the core's plans made on a live repository and applied to it.

Most tests run Debian's docker-registry (distribution 2.8: deletes enabled, no Referrers API,
so referrers travel in ``sha256-<hex>`` fallback tag indexes) on 127.0.0.1 and push content to
it with plain HTTP; they are skipped when it is not installed.  Failures a registry rarely
shows on demand (a 500, a 429, a token service, a thousand tags in pages, the Referrers API)
come from small stub servers, also on 127.0.0.1.  No test sends anything anywhere else.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3  # noqa: F401 - named in a warnings filter
from registry_server import (
    HAVE_REGISTRY,
    OCI_INDEX,
    OCI_MANIFEST,
    Pusher,
    Registry,
    StubRegistry,
    bcrypt_htpasswd,
    digest_of,
    free_port,
    self_signed_certificate,
    start_registry,
)

import ocigraph as og
from io_adapters.registry import (
    RegistryClient,
    apply_plan,
    find_credentials,
    image_times,
    plan_prune_repository,
    plan_repository,
    read_repository,
)
from ocigraph import (
    DeleteUnsupportedError,
    PushTimeUnknownError,
    RegistryApplyError,
    RegistryApplyResult,
    RegistryAuthError,
    RegistryNotFoundError,
    RegistryRef,
    RegistryServerError,
    RegistrySnapshot,
    RegistryTLSError,
    RegistryUnreachableError,
    parse_reference,
)
from ocigraph import SkippedStep as Skipped

needs_registry = pytest.mark.skipif(
    not HAVE_REGISTRY, reason="docker-registry is not installed (apt-get install docker-registry)")
SIG, SBOM = "application/vnd.example.signature", "application/vnd.example.sbom"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if not HAVE_REGISTRY:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository of its own for each test, on the shared registry."""
    return "t/" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")


@pytest.fixture
def push(registry: Registry) -> Pusher:
    return Pusher(registry.host)


def read(reg: Registry, repo: str, **options: Any) -> RegistrySnapshot:
    return read_repository(f"docker://{reg.host}/{repo}", tls_verify=False, **options)


def apply(reg: Registry, repo: str, plan: og.Plan) -> RegistryApplyResult:
    return apply_plan(f"docker://{reg.host}/{repo}", plan, tls_verify=False)


def present_manifests(layout: og.Layout) -> set[str]:
    g = og.build_graph(layout)
    return {n for n, a in g.nodes(data=True) if a["present"] and a["status"] in ("ok", "broken")}


# -- addressing and credentials (no network) ---------------------------------------------------

def test_parse_reference_reads_host_port_repository_tag_and_digest() -> None:
    d = "sha256:" + "a" * 64
    assert parse_reference("docker://127.0.0.1:5000/a/b/c:v1.2") == RegistryRef(
        "127.0.0.1:5000", "a/b/c", "v1.2")
    ref = parse_reference(f"docker://registry.example:443/app@{d}")
    assert (ref.host, ref.repository, ref.tag, ref.digest) == ("registry.example:443", "app", None, d)
    assert ref.origin == "docker://registry.example:443/app"
    assert parse_reference("localhost/x").origin == "docker://localhost/x"
    assert parse_reference("[::1]:5000/x:t").host == "[::1]:5000"


@pytest.mark.parametrize("text", ["docker://host", "docker://host/UPPER", "docker://h/a:b@c",
                                  "docker://h/a@sha256:12", "docker://h/a:-bad", "docker://-h/a"])
def test_a_bad_reference_is_one_clear_error(text: str) -> None:
    with pytest.raises(og.RequestError, match=r"^not a registry reference"):
        parse_reference(text)


def _auth_file(path: Path, host: str, user: str, password: str) -> Path:
    import base64
    path.parent.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}, "other:1": {"auth": "eDp5"}}}))
    return path


def test_credentials_come_from_the_first_auth_file_that_names_the_host(tmp_path: Path) -> None:
    host = "127.0.0.1:5000"
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    _auth_file(home / ".docker/config.json", f"https://{host}/v1/", "dockeruser", "p1")
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(xdg)}
    got = find_credentials(host, environ=env)
    assert got is not None and (got.username, got.password) == ("dockeruser", "p1")
    assert got.source.endswith(".docker/config.json") and "p1" not in repr(got)
    _auth_file(xdg / "containers/auth.json", host, "podmanuser", "p2")
    assert find_credentials(host, environ=env).username == "podmanuser"
    explicit = _auth_file(tmp_path / "REGISTRY_AUTH_FILE.json", host, "envuser", "p:3")
    got = find_credentials(host, environ={**env, "REGISTRY_AUTH_FILE": str(explicit)})
    assert (got.username, got.password) == ("envuser", "p:3")
    # an explicit USER:PASS wins; an explicit auth file is the only one read
    assert find_credentials(host, credentials="me:pw", environ=env).password == "pw"
    assert find_credentials("elsewhere:1", auth_file=explicit, environ=env) is None
    assert find_credentials("unknown:1", environ=env) is None
    with pytest.raises(og.RequestError, match=r"absent\.json: .*No such file"):
        find_credentials(host, auth_file=tmp_path / "absent.json", environ=env)
    with pytest.raises(og.RequestError, match="USER:PASS"):
        find_credentials(host, credentials="no-colon")


# -- reading a repository ----------------------------------------------------------------------

@needs_registry
def test_read_repository_gives_the_core_tags_referrers_and_blob_sizes(
        registry: Registry, repo: str, push: Pusher) -> None:
    app = push.image(repo, "v1", "app", layers=2)
    push.manifest(repo, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                         "config": push.blob(repo, b'{"name":"app"}'), "layers": []}, "latest")
    sig = push.referrer(repo, app, SIG, "app")
    calls: list[tuple[int, int | None]] = []
    snap = read(registry, repo, progress=lambda done, total: calls.append((done, total)))
    entries = snap.layout.index.entries
    assert [(e.tag, e.digest) for e in entries] == [
        ("latest", snap.tags["latest"]), ("v1", app["digest"]), (None, sig["digest"])]
    assert push.fallback_tag(app["digest"]) not in snap.tags  # bookkeeping, not a tag
    assert not snap.referrers_api and snap.fallback[app["digest"]].referrers[0].digest == sig["digest"]
    graph = og.build_graph(snap.layout)
    assert og.referrers_of(graph, app["digest"]) == (sig["digest"],)
    manifest = json.loads(push.http.request("GET", f"{push.base}/v2/{repo}/manifests/v1",
                                            headers={"Accept": OCI_MANIFEST}).data)
    for layer in manifest["layers"]:  # sizes from descriptors: no blob was downloaded
        assert snap.layout.blobs[layer["digest"]].size == layer["size"]
    assert graph.nodes[app["digest"]]["status"] == "ok"
    # one call per manifest fetched: three tags (one a fallback tag), then the signature
    assert sorted(done for done, _ in calls) == [1, 2, 3, 4]
    assert all(total is None for _, total in calls)
    assert og.plan_gc(graph).is_empty  # everything is live: tags, and the tag's signature


@needs_registry
def test_an_unknown_repository_is_one_line_naming_the_host(registry: Registry) -> None:
    with pytest.raises(RegistryNotFoundError) as exc:
        read(registry, "no/such-repository")
    assert str(exc.value).startswith(f"{registry.host}: tags of no/such-repository: unknown "
                                     "repository (404 NAME_UNKNOWN)")


# -- applying plans ----------------------------------------------------------------------------

@needs_registry
def test_delete_takes_referrers_of_referrers_and_their_fallback_tags(
        registry: Registry, repo: str, push: Pusher) -> None:
    one = push.image(repo, "1", "one")
    two = push.image(repo, "2", "two")
    sig1 = push.referrer(repo, one, SIG, "one")
    sbom1 = push.referrer(repo, one, SBOM, "one")
    sig_of_sbom = push.referrer(repo, sbom1, SIG, "sbom of one")
    sig2 = push.referrer(repo, two, SIG, "two")
    snap = read(registry, repo)
    plan = og.plan_delete(og.build_graph(snap.layout), ["1"])
    gone = {one["digest"], sig1["digest"], sbom1["digest"], sig_of_sbom["digest"]}
    assert gone <= plan.deleted_digests()
    result = apply(registry, repo, plan)
    assert set(result.deleted) == gone and not result.skipped and not result.untagged
    order = list(result.deleted)
    assert order.index(sig_of_sbom["digest"]) < order.index(sbom1["digest"]) < order.index(one["digest"])
    assert sorted(result.referrer_tags) == sorted(
        f"deleted {push.fallback_tag(d['digest'])}" for d in (one, sbom1))
    assert (result.blobs_unreferenced, result.bytes_unreferenced) == (
        sum(d.present for d in plan.deletions), plan.bytes_freed)
    assert "registry garbage-collect" in result.gc_hint
    for d in gone:
        assert not push.exists(repo, d)
    assert push.tags(repo) == sorted(["2", push.fallback_tag(two["digest"])])
    assert push.fallback_listing(repo, two["digest"]) == [sig2["digest"]]
    after = read(registry, repo)  # the registry now holds what the core's model says it would
    assert after.manifests == present_manifests(og.simulate(snap.layout, plan))
    assert og.plan_gc(og.build_graph(after.layout)).is_empty


@needs_registry
def test_deleting_one_referrer_rewrites_its_fallback_index(
        registry: Registry, repo: str, push: Pusher) -> None:
    app = push.image(repo, "app", "app")
    sig = push.referrer(repo, app, SIG, "app")
    sbom = push.referrer(repo, app, SBOM, "app")
    tag = push.fallback_tag(app["digest"])
    old_index = push.resolve(repo, tag)
    snap = read(registry, repo)
    plan = og.plan_delete(og.build_graph(snap.layout), [sig["digest"]])
    result = apply(registry, repo, plan)
    assert result.deleted == (sig["digest"],) and result.referrer_tags == (f"rewrote {tag}",)
    assert push.fallback_listing(repo, app["digest"]) == [sbom["digest"]]
    assert not push.exists(repo, old_index) and push.exists(repo, app["digest"])
    assert og.referrers_of(og.build_graph(read(registry, repo).layout), app["digest"]) == (
        sbom["digest"],)
    again = apply(registry, repo, plan)  # the same plan twice: nothing left to do, nothing done
    assert again.deleted == () and again.referrer_tags == ()
    assert again.skipped == (Skipped(sig["digest"], "already gone"),)
    assert push.fallback_listing(repo, app["digest"]) == [sbom["digest"]]


@needs_registry
def test_a_multi_platform_index_goes_with_its_children_not_what_others_share(
        registry: Registry, repo: str, push: Pusher) -> None:
    shared = b"a base layer both use"
    amd = push.image(repo, None, "amd64", shared=shared)
    arm = push.image(repo, None, "arm64")
    multi = push.index(repo, "multi", [amd, arm], ["linux/amd64", "linux/arm64"])
    push.image(repo, "other", "other", shared=shared)
    snap = read(registry, repo)
    graph = og.build_graph(snap.layout)
    plan = og.plan_delete(graph, ["multi"])
    assert digest_of(shared) not in plan.deleted_digests()
    steps: list[tuple[int, int | None]] = []
    result = apply_plan(f"docker://{registry.host}/{repo}", plan, tls_verify=False,
                        progress=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert result.deleted == (multi["digest"], amd["digest"], arm["digest"])  # index first
    assert (result.blobs_unreferenced, result.bytes_unreferenced) == (
        sum(d.present for d in plan.deletions), plan.bytes_freed)
    assert push.tags(repo) == ["other"] and not push.exists(repo, amd["digest"])
    with pytest.raises(og.GuardError):  # the core refuses a child a tagged index lists
        og.plan_delete(graph, [arm["digest"]])


@needs_registry
def test_remove_of_one_of_two_tags_untags_only_then_the_last_deletes(
        registry: Registry, repo: str, push: Pusher) -> None:
    image = push.image(repo, "a", "shared")
    push.retag(repo, "a", "b")
    assert push.resolve(repo, "b") == image["digest"]
    plan = og.plan_remove(og.build_graph(read(registry, repo).layout), ["a"])
    assert not plan.deletions
    result = apply(registry, repo, plan)
    assert (result.untagged, result.deleted, result.skipped) == (("a",), (), ())
    assert push.tags(repo) == ["b"] and push.resolve(repo, "b") == image["digest"]
    plan = og.plan_remove(og.build_graph(read(registry, repo).layout), ["b"])
    result = apply(registry, repo, plan)
    assert result.deleted == (image["digest"],) and push.tags(repo) == []


@needs_registry
def test_gc_deletes_untagged_manifests_and_keeps_referrers_of_live_images(
        registry: Registry, repo: str, push: Pusher) -> None:
    old = push.image(repo, "app", "old")
    sig_old = push.referrer(repo, old, SIG, "old")
    new = push.image(repo, "app", "new")  # the tag moves: old is untagged now
    sig_new = push.referrer(repo, new, SIG, "new")
    never_pushed = {"mediaType": OCI_MANIFEST, "digest": digest_of(b"never pushed"), "size": 12}
    dangling = push.referrer(repo, never_pushed, SIG, "nothing")
    snap = read(registry, repo)
    graph = og.build_graph(snap.layout)
    assert og.plan_gc(graph, og.Policy.preset("spec")).is_empty  # untagged entries are roots
    plan = og.Plan.from_json(og.plan_gc(graph).to_json())  # as a saved plan file would be
    doomed = {old["digest"], sig_old["digest"], dangling["digest"]}
    assert {d.digest for d in plan.deletions if og.is_manifest_type(d.media_types[0])} == doomed
    result = apply(registry, repo, plan)
    assert set(result.deleted) == doomed and not result.skipped
    for d in doomed:
        assert not push.exists(repo, d)
    assert push.exists(repo, new["digest"]) and push.exists(repo, sig_new["digest"])
    assert push.tags(repo) == sorted(["app", push.fallback_tag(new["digest"])])
    assert push.fallback_listing(repo, new["digest"]) == [sig_new["digest"]]


@needs_registry
def test_a_stale_plan_skips_a_tag_that_moved_since_planning(
        registry: Registry, repo: str, push: Pusher) -> None:
    image = push.image(repo, "a", "shared")
    push.retag(repo, "a", "b")
    plan = og.plan_remove(og.build_graph(read(registry, repo).layout), ["a"])
    moved = push.image(repo, "a", "pushed after planning")
    result = apply(registry, repo, plan)
    assert result.skipped == (Skipped("tag a", f"moved since planning: now names {moved['digest']}"),)
    assert result.untagged == () and result.deleted == ()
    assert push.resolve(repo, "a") == moved["digest"] and push.resolve(repo, "b") == image["digest"]


@needs_registry
def test_a_stale_plan_keeps_a_manifest_tagged_since_planning(
        registry: Registry, repo: str, push: Pusher) -> None:
    image = push.image(repo, "x", "x")
    sig = push.referrer(repo, image, SIG, "x")
    plan = og.plan_delete(og.build_graph(read(registry, repo).layout), ["x"])
    push.retag(repo, "x", "y")
    result = apply(registry, repo, plan)
    assert Skipped(image["digest"], "in use since planning: tag y names it") in result.skipped
    assert Skipped(sig["digest"], "in use since planning: a tag reaches it") in result.skipped
    assert result.deleted == () and result.untagged == ("x",) and result.bytes_unreferenced == 0
    assert push.tags(repo) == sorted(["y", push.fallback_tag(image["digest"])])
    assert push.exists(repo, image["digest"]) and push.exists(repo, sig["digest"])


def test_a_plan_for_another_repository_is_refused_before_any_request() -> None:
    plan = dataclasses.replace(og.plan_gc(og.build_graph(og.layout_from_bytes(
        b'{"schemaVersion":2,"manifests":[]}', {}))), origin="docker://127.0.0.1:1/other")
    with pytest.raises(og.RequestError, match=r"made for docker://127\.0\.0\.1:1/other, not"):
        apply_plan("docker://127.0.0.1:1/mine", plan)


@needs_registry
def test_a_registry_that_refuses_delete_is_found_out_before_anything_changes(
        tmp_path: Path) -> None:
    reg = start_registry(tmp_path, delete=False)
    try:
        push = Pusher(reg.host)
        image = push.image("r", "a", "shared")
        push.retag("r", "a", "b")
        plan = og.plan_remove(og.build_graph(read(reg, "r").layout), ["a"])
        with pytest.raises(DeleteUnsupportedError) as exc:
            apply(reg, "r", plan)
        assert str(exc.value).startswith(f"{reg.host}: DELETE in r: the registry refuses it (405")
        assert push.tags("r") == ["a", "b"] and push.resolve("r", "a") == image["digest"]
    finally:
        reg.stop()


# -- errors ------------------------------------------------------------------------------------

@needs_registry
def test_401_without_credentials_and_reading_with_them(tmp_path: Path) -> None:
    htpasswd = bcrypt_htpasswd(tmp_path / "htpasswd", "alice", "s3cret")
    if htpasswd is None:
        pytest.skip("the bcrypt package is not installed (needed to write an htpasswd file)")
    reg = start_registry(tmp_path, htpasswd=htpasswd)
    try:
        Pusher(reg.host, auth=("alice", "s3cret")).image("r", "v1", "v1")
        empty_env = {"HOME": str(tmp_path / "nohome")}
        with pytest.raises(RegistryAuthError) as exc:
            read(reg, "r", environ=empty_env)
        assert str(exc.value) == (f"{reg.host}: 401 unauthorized: no credentials given or found "
                                  "in an auth file for this host")
        with pytest.raises(RegistryAuthError, match=r"credentials \(given\) were rejected"):
            read(reg, "r", credentials="alice:wrong", environ=empty_env)
        assert list(read(reg, "r", credentials="alice:s3cret").tags) == ["v1"]
        home = tmp_path / "home"
        _auth_file(home / ".docker/config.json", reg.host, "alice", "s3cret")
        assert list(read(reg, "r", environ={"HOME": str(home)}).tags) == ["v1"]
    finally:
        reg.stop()


def test_a_closed_port_is_unreachable_in_one_line() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(RegistryUnreachableError) as exc:
        read_repository(f"docker://127.0.0.1:{port}/r", tls_verify=False)
    assert re.fullmatch(rf"127\.0\.0\.1:{port}: unreachable \(.*refused.*\)", str(exc.value))


@needs_registry
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_failures_name_the_host_and_tls_verify_false_allows_them(
        registry: Registry, tmp_path: Path, push: Pusher) -> None:
    with pytest.raises(RegistryTLSError, match=rf"^{registry.host}: TLS failure .*tls_verify=False"):
        read_repository(f"docker://{registry.host}/r", tls_verify=True)  # plain HTTP
    cert = self_signed_certificate(tmp_path)
    if cert is None:
        pytest.skip("openssl is not installed (needed for a self-signed certificate)")
    reg = start_registry(tmp_path, tls=cert)
    try:
        Pusher(reg.host, scheme="https").image("r", "v1", "v1")
        with pytest.raises(RegistryTLSError, match=r"certificate verify failed"):
            read_repository(f"docker://{reg.host}/r", environ={})
        assert list(read_repository(f"docker://{reg.host}/r", tls_verify=False).tags) == ["v1"]
    finally:
        reg.stop()


def _v2(answer: Any) -> Any:
    """A stub answer that also says yes to the ``GET /v2/`` probe."""
    def wrapped(method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        return (200, {}, b"{}") if path == "/v2/" else answer(method, path, headers)
    return wrapped


def test_a_500_is_retried_then_reported_with_the_host() -> None:
    with StubRegistry(_v2(lambda m, p, h: (500, {}, b"<html>boom</html>"))) as stub:
        client = RegistryClient(stub.host, tls_verify=False, retries=2, backoff=0.01)
        with pytest.raises(RegistryServerError) as exc:
            read_repository(f"docker://{stub.host}/r", client=client)
    assert str(exc.value) == f"{stub.host}: tags of r: HTTP 500 after 3 attempt(s)"
    assert [s.path for s in stub.seen if s.path != "/v2/"] == ["/v2/r/tags/list?n=1000"] * 3


def test_a_403_names_the_host_what_was_asked_and_the_code() -> None:
    denied = b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'
    with StubRegistry(_v2(lambda m, p, h: (403, {}, denied))) as stub, pytest.raises(
            RegistryAuthError) as exc:
        read_repository(f"docker://{stub.host}/r", tls_verify=False)
    assert str(exc.value) == f"{stub.host}: tags of r: access denied (403 DENIED)"


def test_a_429_waits_as_long_as_retry_after_says() -> None:
    calls: list[float] = []

    def answer(method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 429, {"Retry-After": "1"}, b""
        return 200, {}, b'{"name":"r","tags":["v1"]}'

    with StubRegistry(_v2(answer)) as stub:
        tags = RegistryClient(stub.host, tls_verify=False, backoff=0.0).list_tags("r")
    assert tags == ["v1"] and len(calls) == 2 and calls[1] - calls[0] >= 0.9


@pytest.mark.parametrize("with_link", [True, False])
def test_a_thousand_tags_are_read_page_by_page(with_link: bool) -> None:
    names = [f"t{i:04d}" for i in range(1000)]

    def answer(method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        query = dict(re.findall(r"[?&](\w+)=([^&]*)", path))
        n = min(int(query.get("n", 1000)), 100)  # this registry caps pages at 100
        start = names.index(query["last"]) + 1 if "last" in query else 0
        page = names[start:start + n]
        extra = {}
        if with_link and start + n < len(names):
            extra["Link"] = f'</v2/r/tags/list?n={n}&last={page[-1]}>; rel="next"'
        return 200, extra, json.dumps({"name": "r", "tags": page}).encode()

    with StubRegistry(_v2(answer)) as stub:
        got = RegistryClient(stub.host, tls_verify=False).list_tags("r", page=100)
    assert got == names
    assert len([s for s in stub.seen if "tags/list" in s.path]) == (10 if with_link else 11)


def test_a_bearer_challenge_is_answered_with_a_token_from_the_realm() -> None:
    tokens: list[dict[str, str]] = []

    def answer(method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/token"):
            tokens.append({**dict(re.findall(r"[?&](\w+)=([^&]*)", path)),
                           "authorization": headers.get("authorization", "")})
            return 200, {}, b'{"token": "T0K3N"}'
        if headers.get("authorization") != "Bearer T0K3N":
            realm = f"http://{stub.host}/token"
            return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="stub",'
                                             'scope="repository:r:pull"'}, b""
        return 200, {}, b'{"name":"r","tags":["a","b"]}'

    with StubRegistry(answer) as stub:
        client = RegistryClient(stub.host, tls_verify=False, credentials="bob:pw")
        assert client.list_tags("r") == ["a", "b"] and client.list_tags("r") == ["a", "b"]
    assert len(tokens) == 1 and tokens[0]["service"] == "stub"
    assert tokens[0]["scope"] == "repository%3Ar%3Apull"
    assert tokens[0]["authorization"] == "Basic Ym9iOnB3"  # bob:pw
    assert [s.headers.get("authorization") for s in stub.seen if "tags/list" in s.path][-2:] == [
        "Bearer T0K3N", "Bearer T0K3N"]


def test_a_server_that_never_answers_times_out_in_one_line() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # and say nothing
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(RegistryServerError) as exc:
            read_repository(f"docker://{host}/r", timeout=0.2, retries=1, backoff=0.0)
        assert str(exc.value) == f"{host}: no answer within 0.2s"
    finally:
        stop.set()
        for s in held:
            s.close()
        listener.close()


def _api_registry(failing_deletes_after: int | None = None) -> tuple[Any, str, str, list[str]]:
    """A stub registry with the Referrers API: tag ``v1`` names an image that a signature refers
    to.  DELETEs succeed (and are recorded) until ``failing_deletes_after``, then answer 500."""
    empty = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(b"{}"), "size": 2}
    image = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": empty,
                        "layers": []}).encode()
    image_desc = {"mediaType": OCI_MANIFEST, "digest": digest_of(image), "size": len(image)}
    sig = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIG,
                      "config": empty, "layers": [empty], "subject": image_desc}).encode()
    sig_desc = {"mediaType": OCI_MANIFEST, "digest": digest_of(sig), "size": len(sig),
                "artifactType": SIG}
    manifests = {"v1": image, image_desc["digest"]: image, sig_desc["digest"]: sig}
    deleted: list[str] = []

    def answer(method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        ref = path.rsplit("/", 1)[-1]
        unknown = 404, {}, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}'
        if method == "DELETE":
            if ref not in manifests:
                return unknown
            if failing_deletes_after is not None and len(deleted) >= failing_deletes_after:
                return 500, {}, b"storage is down"
            deleted.append(ref)
            return 202, {}, b""
        if path.startswith("/v2/r/tags/list"):
            return 200, {}, b'{"name":"r","tags":["v1"]}'
        if path.startswith("/v2/r/referrers/"):
            listed = [sig_desc] if ref == image_desc["digest"] else []
            return 200, {"Content-Type": OCI_INDEX}, json.dumps(
                {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}).encode()
        if path.startswith("/v2/r/manifests/") and ref in manifests:
            return 200, {"Content-Type": OCI_MANIFEST,
                         "Docker-Content-Digest": digest_of(manifests[ref])}, manifests[ref]
        return unknown

    return _v2(answer), image_desc["digest"], sig_desc["digest"], deleted


def test_referrers_come_from_the_referrers_api_where_the_registry_has_it() -> None:
    answer, image, sig, _ = _api_registry()
    with StubRegistry(answer) as stub:
        snap = read_repository(f"docker://{stub.host}/r", tls_verify=False)
    assert snap.referrers_api and not snap.fallback
    assert [(e.tag, e.digest) for e in snap.layout.index.entries] == [("v1", image), (None, sig)]
    graph = og.build_graph(snap.layout)
    assert og.referrers_of(graph, image) == (sig,)
    assert og.plan_gc(graph).is_empty


def test_a_failure_part_way_is_raised_with_everything_done_before() -> None:
    answer, image, sig, deleted = _api_registry(failing_deletes_after=1)
    with StubRegistry(answer) as stub:
        client = RegistryClient(stub.host, tls_verify=False, retries=0)
        plan = og.plan_delete(og.build_graph(read_repository(
            f"docker://{stub.host}/r", client=client).layout), ["v1"])
        with pytest.raises(RegistryApplyError) as exc:
            apply_plan(f"docker://{stub.host}/r", plan, client=client)
    assert deleted == [sig] and exc.value.result.deleted == (sig,)  # referrer first, then stop
    assert str(exc.value) == (f"{stub.host}: delete of {image} in r: HTTP 500 after 1 attempt(s); "
                              "stopped after 1 manifest(s) deleted and 0 tag(s) removed (the "
                              "result lists them); plan again to finish")


# -- prune: images aged by their own dates -------------------------------------------------------

UMOCI, SKOPEO = shutil.which("umoci"), shutil.which("skopeo")
DAY = 86400.0
#: tag -> (the config's created, the manifest's created annotation); pushed in this order, so
#: push order (v5 last) and age by date (v5 newest by its annotation, oldest by its config) differ
DATED = {"v1": ("2024-03-01T00:00:00Z", None), "v2": ("2024-01-01T00:00:00Z", None),
         "v3": ("2024-04-01T00:00:00Z", None), "v4": ("2024-02-01T00:00:00Z", None),
         "v5": ("2010-01-01T00:00:00Z", "2024-05-01T00:00:00Z")}


def epoch(text: str) -> float:
    return og.parse_time(text)


def run(*args: str | Path) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (args, done.stderr)


@pytest.fixture(scope="module")
def dated_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout made by umoci: one image per tag of ``DATED``, with its dates."""
    if UMOCI is None or SKOPEO is None:
        pytest.skip("umoci and skopeo are needed to make and push dated images")
    work = tmp_path_factory.mktemp("dated")
    src = work / "src"
    run(UMOCI, "init", "--layout", src)
    run(UMOCI, "new", "--image", f"{src}:base")
    (work / "file").write_text("a file\n")
    run(UMOCI, "insert", "--image", f"{src}:base", work / "file", "/file")
    for tag, (created, annotation) in DATED.items():
        note = ["--manifest.annotation", f"org.opencontainers.image.created={annotation}"]
        run(UMOCI, "config", "--image", f"{src}:base", "--tag", tag, "--created", created,
            *(note if annotation else []))
    return src


def push_dated(registry: Registry, src: Path, repo: str) -> dict[str, str]:
    """``DATED``'s images pushed by skopeo to ``repo``, in order: tag -> digest."""
    for tag in DATED:
        run(SKOPEO, "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
            f"oci:{src}:{tag}", f"docker://{registry.host}/{repo}:{tag}")
    return {tag: Pusher(registry.host).resolve(repo, tag) or "" for tag in DATED}


@pytest.fixture(scope="module")
def dated_repo(registry: Registry, dated_images: Path) -> tuple[str, dict[str, str]]:
    """A repository of the dated images that the tests read only."""
    return "prune/dated", push_dated(registry, dated_images, "prune/dated")


def client_of(reg: Registry | StubRegistry) -> RegistryClient:
    return RegistryClient(reg.host, tls_verify=False)


@needs_registry
def test_image_times_are_the_annotation_else_the_config_created(
        registry: Registry, dated_repo: tuple[str, dict[str, str]]) -> None:
    repo, digests = dated_repo
    client = client_of(registry)
    snap = read_repository(f"docker://{registry.host}/{repo}", client=client)
    before = client.requests
    times = image_times(snap, og.RetentionRules(keep_last=1, age_from="created"), client)
    assert times == {digests[t]: epoch(note or created) for t, (created, note) in DATED.items()}
    assert client.requests - before == 4  # the configs of v1-v4; v5 has its annotation


@needs_registry
def test_prune_keep_last_by_created_dates_picks_and_applies(
        registry: Registry, dated_images: Path, repo: str, push: Pusher) -> None:
    digests = push_dated(registry, dated_images, repo)
    rules = og.RetentionRules(keep_last=2, age_from="created")
    client = client_of(registry)
    plan, graph = plan_prune_repository(f"docker://{registry.host}/{repo}", rules,
                                        epoch("2024-06-01T00:00:00Z"), client=client)
    # newest by their own dates: v5 (annotation), v3; by push order it would be v5, v4
    expired = {d.tag for d in plan.retention.decisions if d.expired}
    assert expired == {"v1", "v2", "v4"}
    assert plan.origin == f"docker://{registry.host}/{repo}" and plan.operation == "prune"
    assert {digests[t] for t in ("v1", "v2", "v4")} <= plan.deleted_digests()
    assert not {digests["v3"], digests["v5"]} & plan.deleted_digests()
    assert og.build_graph(read(registry, repo).layout).graph["fingerprint"] == (
        graph.graph["fingerprint"])
    result = apply_plan(f"docker://{registry.host}/{repo}", plan, client=client)
    assert sorted(result.deleted) == sorted(digests[t] for t in ("v1", "v2", "v4"))
    assert not result.skipped and push.tags(repo) == ["v3", "v5"]
    assert all(push.exists(repo, digests[t]) for t in ("v3", "v5"))


@needs_registry
def test_prune_through_the_command_line_ages_by_created_dates_by_default(
        registry: Registry, dated_images: Path, repo: str, push: Pusher) -> None:
    from click.testing import CliRunner

    from io_adapters.cli import cli

    digests = push_dated(registry, dated_images, repo)
    target = f"docker://{registry.host}/{repo}"
    args = ["prune", target, "--keep-last", "2", "--tls-verify=false", "--now",
            "2024-06-01T00:00:00Z"]
    dry = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.rstrip().endswith("dry run: nothing was changed")
    assert push.tags(repo) == sorted(DATED)  # nothing changed
    done = CliRunner().invoke(cli, [*args, "--yes", "--format", "json"])
    assert done.exit_code == 0, done.output
    # newest by their own dates (the default on a registry): v5 by its annotation, then v3
    assert push.tags(repo) == ["v3", "v5"]
    assert not any(push.exists(repo, digests[t]) for t in ("v1", "v2", "v4"))


@needs_registry
def test_prune_older_than_by_created_dates(registry: Registry,
                                           dated_repo: tuple[str, dict[str, str]]) -> None:
    repo, digests = dated_repo
    rules = og.RetentionRules(keep_within=50 * DAY, age_from="created")
    plan, _ = plan_prune_repository(f"docker://{registry.host}/{repo}", rules,
                                    epoch("2024-04-15T00:00:00Z"), client=client_of(registry))
    # within 50 days of 15 April: v1 (1 March), v3 (1 April), v5 (1 May by its annotation)
    assert {d.tag for d in plan.retention.decisions if d.expired} == {"v2", "v4"}
    assert plan.deleted_digests() & set(digests.values()) == {digests["v2"], digests["v4"]}


def test_prune_by_push_time_is_refused_on_a_registry_before_any_request() -> None:
    client = RegistryClient(f"127.0.0.1:{free_port()}", tls_verify=False)  # nothing there
    with pytest.raises(PushTimeUnknownError) as exc:
        plan_prune_repository(f"docker://{client.host}/r", og.RetentionRules(keep_last=1), 0.0,
                              client=client)
    assert client.requests == 0 and "\n" not in str(exc.value)
    assert "push time is not exposed by the registry API" in str(exc.value)
    assert "--age-from created" in str(exc.value) and isinstance(exc.value, og.RequestError)


@needs_registry
def test_a_config_that_cannot_be_read_is_one_line_naming_the_host(
        registry: Registry, repo: str, push: Pusher) -> None:
    image = push.image(repo, "v1", "v1")
    config = json.loads(push.http.request("GET", f"{push.base}/v2/{repo}/manifests/v1", headers={
        "Accept": OCI_MANIFEST}).data)["config"]["digest"]
    assert push.http.request("DELETE", f"{push.base}/v2/{repo}/blobs/{config}").status == 202
    with pytest.raises(RegistryNotFoundError) as exc:
        plan_prune_repository(f"docker://{registry.host}/{repo}",
                              og.RetentionRules(keep_last=1, age_from="created"), 0.0,
                              client=client_of(registry))
    assert str(exc.value) == (f"{registry.host}: config {config} in {repo}: not found "
                              "(404 BLOB_UNKNOWN)")
    assert push.exists(repo, image["digest"])


def test_a_config_with_other_bytes_is_refused() -> None:
    config = b'{"created": "2024-01-01T00:00:00Z"}'
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config),
        "size": len(config)}, "layers": []}).encode()

    def answer(method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/v2/r/tags/list"):
            return 200, {}, b'{"name":"r","tags":["v1"]}'
        if path.startswith("/v2/r/manifests/"):
            return 200, {"Content-Type": OCI_MANIFEST}, manifest
        if path == f"/v2/r/blobs/{digest_of(config)}":
            return 307, {"Location": "/storage/config"}, b""  # to storage, as S3 would
        if path == "/storage/config":
            assert "authorization" not in headers
            return 200, {}, b'{"created": "1999-01-01T00:00:00Z"}'
        return 404, {}, b""

    with StubRegistry(_v2(answer)) as stub, pytest.raises(RegistryServerError) as exc:
        plan_prune_repository(f"docker://{stub.host}/r",
                              og.RetentionRules(keep_last=1, age_from="created"), 0.0,
                              client=client_of(stub))
    assert str(exc.value) == (f"{stub.host}: config {digest_of(config)} in r: content does not "
                              "match its digest")


# -- unknown names: one line naming host, repository and ref ------------------------------------

@needs_registry
@pytest.mark.parametrize("ref", ["nosuch", "sha256:" + "e" * 64])
def test_an_unknown_tag_or_digest_names_host_repository_and_ref(
        registry: Registry, repo: str, push: Pusher, ref: str) -> None:
    push.image(repo, "v1", "v1")
    with pytest.raises(RegistryNotFoundError) as exc:
        plan_repository(f"docker://{registry.host}/{repo}", "delete", [ref], og.Policy(),
                        client=client_of(registry))
    kind = "digest" if ":" in ref else "tag"
    assert str(exc.value) == f"{registry.host}: unknown {kind} {ref!r} in repository {repo!r}"
    assert push.tags(repo) == ["v1"]


@needs_registry
def test_an_unknown_repository_is_one_line_when_planning(registry: Registry) -> None:
    with pytest.raises(RegistryNotFoundError) as exc:
        plan_repository(f"docker://{registry.host}/no/such", "gc", [], og.Policy(),
                        client=client_of(registry))
    assert str(exc.value) == (f"{registry.host}: tags of no/such: unknown repository "
                              "(404 NAME_UNKNOWN)")


@needs_registry
def test_plan_repository_plans_as_on_a_layout_and_records_the_origin(
        registry: Registry, repo: str, push: Pusher) -> None:
    one, two = push.image(repo, "1", "one"), push.image(repo, "2", "two")
    sig = push.referrer(repo, one, SIG, "one")
    plan, graph = plan_repository(f"docker://{registry.host}/{repo}", "delete", ["1"],
                                  og.Policy(), client=client_of(registry))
    assert plan.origin == f"docker://{registry.host}/{repo}"
    assert {one["digest"], sig["digest"]} <= plan.deleted_digests()
    assert two["digest"] not in plan.deleted_digests() and two["digest"] in graph
