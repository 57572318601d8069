"""The registry client's decisions, as pure functions of the core: no server, no socket.

What a request carries and when it is tried again, how a 401 is answered, which error a
failure is, how tags are paged, and the steps that apply a plan to a repository.  The adapter
(io_adapters/registry.py) only makes the requests; tests/test_registry.py runs it for real.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from builder import Builder

import ocigraph as og

HOST = "r.example:5000"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


# -- addressing and credentials ----------------------------------------------------------------

def test_a_reference_already_parsed_is_returned_as_is() -> None:
    ref = og.RegistryRef("h:1", "a/b", "v1")
    assert og.parse_reference(ref) is ref
    assert og.parse_reference("h:1/a/b@" + D1) == og.RegistryRef("h:1", "a/b", None, D1)


@pytest.mark.parametrize("text", ["nocolon", ":pw", ""])
def test_credentials_without_a_user_and_a_colon_are_refused(text: str) -> None:
    with pytest.raises(og.RequestError, match=r"^credentials must be given as USER:PASS$"):
        og.parse_credentials(text)


def test_a_password_keeps_its_colons_and_stays_out_of_repr() -> None:
    creds = og.parse_credentials("me:p:w")
    assert (creds.username, creds.password, creds.source) == ("me", "p:w", "given")
    assert "p:w" not in repr(creds)


def test_auth_files_are_looked_for_in_the_order_containers_image_uses() -> None:
    env = {"REGISTRY_AUTH_FILE": "/etc/auth.json", "XDG_RUNTIME_DIR": "/run/user/7/"}
    assert og.auth_files(env, "/home/me") == [
        "/etc/auth.json", "/run/user/7/containers/auth.json", "/home/me/.docker/config.json"]
    assert og.auth_files({"XDG_RUNTIME_DIR": ""}, "/") == ["/.docker/config.json"]


def test_the_first_auth_file_that_names_the_host_gives_the_credentials() -> None:
    other = orjson.dumps({"auths": {"elsewhere:1": {"auth": "eDp5"}}})
    mine = orjson.dumps({"auths": {f"https://{HOST}/v1/": {"auth": "dTpw"}}})
    files = {"a": other, "b": mine, "c": orjson.dumps({"auths": {HOST: {"auth": "eDp5"}}})}
    got = og.credentials_in(HOST, ["absent", "a", "b", "c"], files.get)
    assert got is not None and (got.username, got.password, got.source) == ("u", "p", "b")
    assert og.credentials_in(HOST, ["a"], files.get) is None


@pytest.mark.parametrize(("data", "why"), [
    (b"not json", r"^auth file f\.json: .* line 1 column 1 \(char 0\)$"),
    (b'{"auths": {"r.example:5000": {}}}', r'auth file f\.json: the entry for r\.example:5000 '
                                           r'has no "auth"')])
def test_an_auth_file_that_cannot_be_read_is_one_error_naming_it(data: bytes, why: str) -> None:
    with pytest.raises(og.RequestError, match=why):
        og.credentials_in(HOST, ["f.json"], {"f.json": data}.get)


def test_an_auth_file_the_reader_cannot_open_is_named_too() -> None:
    def read(file: str) -> bytes:
        raise PermissionError(13, "Permission denied", file)

    with pytest.raises(og.RequestError, match=r"^auth file f\.json: \[Errno 13\] Permission denied"):
        og.credentials_in(HOST, ["f.json"], read)


# -- failures ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "reason", "cls", "message"), [
    ("unreachable", "<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a "
     "new connection: [Errno 111] Connection refused", og.RegistryUnreachableError,
     "unreachable (Connection refused)"),
    ("tls", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
     "certificate (_ssl.c:1006)", og.RegistryTLSError,
     "TLS failure (certificate verify failed: self-signed certificate)"),
    ("timeout", "Read timed out.", og.RegistryServerError, "no answer within 2.5s"),
    ("other", "Connection aborted.", og.RegistryServerError, "connection failed (Connection aborted.)"),
])
def test_a_request_no_answer_came_to_is_one_line_of_its_class(
        kind: og.ConnectionFailure, reason: str, cls: type, message: str) -> None:
    error = og.connection_error(HOST, kind, reason, timeout=2.5)
    assert type(error) is cls and str(error) == f"{HOST}: {message}" and error.status is None


def test_only_a_tls_failure_asked_to_says_how_to_turn_verification_off() -> None:
    hinted = og.connection_error(HOST, "tls", "wrong version number", timeout=1, tls_hint=True)
    assert str(hinted).endswith("(--tls-verify=false; tls_verify=False in Python)")
    assert "tls-verify" not in str(og.connection_error(HOST, "tls", "x", timeout=1))
    assert "tls-verify" not in str(og.connection_error(HOST, "unreachable", "x", timeout=1,
                                                       tls_hint=True))


@pytest.mark.parametrize(("status", "body", "cls", "why"), [
    (401, b"", og.RegistryAuthError, "401 unauthorized: the credentials (a.json) were rejected"),
    (404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', og.RegistryNotFoundError,
     "tags of a: unknown repository (404 NAME_UNKNOWN)"),
    (405, b"", og.DeleteUnsupportedError, "tags of a: the registry refuses it (405 unsupported; "
     "distribution: storage.delete.enabled)"),
    (503, b"", og.RegistryServerError, "tags of a: HTTP 503 after 5 attempt(s)"),
    (418, b"teapot", og.RegistryError, "tags of a: unexpected HTTP 418  teapot"),
])
def test_a_response_that_is_not_what_was_needed_is_an_error_of_its_kind(
        status: int, body: bytes, cls: type, why: str) -> None:
    error = og.response_error(HOST, status, body, "tags of a", attempts=5, credentials="a.json")
    assert type(error) is cls and (error.host, error.why, error.status) == (HOST, why, status)


# -- tries -------------------------------------------------------------------------------------

def test_retries_back_off_doubling_to_a_minute_at_most_then_stop() -> None:
    tries = og.RequestTries(retries=9, backoff=4.0)
    waits = [tries.after_answer(503, None, 0.0) for _ in range(10)]
    assert waits == [4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0, 60.0, None]


def test_retry_after_is_honoured_as_seconds_or_a_date_never_below_zero() -> None:
    tries = og.RequestTries(retries=3, backoff=1.0)
    assert tries.after_answer(429, "7", 0.0) == 7.0
    assert tries.after_answer(429, "Thu, 01 Jan 1970 00:01:00 GMT", 50.0) == 10.0
    assert tries.after_answer(429, "Thu, 01 Jan 1970 00:01:00 GMT", 90.0) == 0.0
    assert tries.after_answer(429, "7", 0.0) is None  # three retries spent


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 405, 501])
def test_an_answer_outside_the_retry_statuses_is_final(status: int) -> None:
    assert og.RequestTries(retries=3, backoff=1.0).after_answer(status, "1", 0.0) is None


def test_no_answer_is_tried_again_but_not_when_nothing_answers_or_tls_fails() -> None:
    tries = og.RequestTries(retries=1, backoff=0.25)
    timeout = og.connection_error(HOST, "timeout", "", timeout=1)
    assert tries.after_failure(og.connection_error(HOST, "unreachable", "", timeout=1)) is None
    assert tries.after_failure(og.connection_error(HOST, "tls", "", timeout=1)) is None
    assert tries.after_failure(timeout) == 0.25
    assert tries.after_failure(timeout) is None


def test_a_401_is_answered_once_and_never_for_a_request_elsewhere() -> None:
    tries = og.RequestTries(retries=3, backoff=1.0)
    assert [tries.challenge(s) for s in (200, 401, 401)] == [False, True, False]
    assert not og.RequestTries(retries=3, backoff=1.0, challenged=True).challenge(401)


# -- authorization -----------------------------------------------------------------------------

BEARER = 'Bearer realm="https://auth.example/token?x=1",service="reg",scope="repository:{}:pull"'


def test_basic_is_answered_only_with_credentials() -> None:
    auth = og.RegistryAuthorization(og.Credentials("bob", "pw"))
    assert auth.challenged('Basic realm="reg"', None) is None and auth.header == "Basic Ym9iOnB3"
    anonymous = og.RegistryAuthorization(None)
    assert anonymous.challenged('Basic realm="reg"', None) is None and anonymous.header is None


def test_a_bearer_challenge_asks_the_realm_with_the_basic_credentials() -> None:
    auth = og.RegistryAuthorization(og.Credentials("bob", "pw"))
    ask = auth.challenged(BEARER.format("a"), None)
    assert ask == og.TokenRequest(
        "https://auth.example/token?x=1&service=reg&scope=repository%3Aa%3Apull",
        "repository:a:pull", {"Authorization": "Basic Ym9iOnB3"})
    assert auth.header is None  # nothing to send until the token comes
    auth.token_answer(ask, 200, b'{"access_token": "T1"}')
    assert auth.header == "Bearer T1"


def test_tokens_are_kept_per_scope_and_asked_again_only_once_refused() -> None:
    auth = og.RegistryAuthorization(None)
    ask_a = auth.challenged(BEARER.format("a"), None)
    assert ask_a is not None
    auth.token_answer(ask_a, 200, b'{"token": "A"}')
    ask_b = auth.challenged(BEARER.format("b"), "Bearer A")  # another scope: another token
    assert ask_b is not None and ask_b.scope == "repository:b:pull"
    auth.token_answer(ask_b, 200, b'{"token": "B"}')
    assert auth.challenged(BEARER.format("a"), "Bearer B") is None  # a's token, kept
    assert auth.header == "Bearer A"
    assert auth.challenged(BEARER.format("a"), "Bearer A") == ask_a  # refused: asked again


def test_a_401_answered_since_by_another_request_changes_nothing() -> None:
    auth = og.RegistryAuthorization(og.Credentials("bob", "pw"))
    auth.header = "Bearer NEWER"
    assert auth.challenged('Basic realm="reg"', "Bearer OLDER") is None
    assert auth.header == "Bearer NEWER"


@pytest.mark.parametrize(("status", "body"), [
    (200, b"not json"), (200, b'{"token": 7}'), (200, b"[]"), (403, b'{"token": "T"}')])
def test_a_token_service_that_gives_no_token_leaves_the_header_as_it_was(
        status: int, body: bytes) -> None:
    auth = og.RegistryAuthorization(None)
    ask = auth.challenged(BEARER.format("a"), None)
    assert ask is not None
    auth.token_answer(ask, status, body)
    assert auth.header is None


def test_a_challenge_without_a_realm_or_of_another_scheme_is_not_answered() -> None:
    auth = og.RegistryAuthorization(og.Credentials("bob", "pw"))
    assert auth.challenged('Bearer service="reg"', None) is None
    assert auth.challenged('Digest realm="reg"', None) is None
    assert auth.header is None


def test_the_registry_authorization_goes_to_the_registry_only() -> None:
    auth = og.RegistryAuthorization(None)
    auth.header = "Bearer T"
    assert auth.header_for("https://r:5000/v2/a/tags/list", "https://r:5000") == "Bearer T"
    assert auth.header_for("https://r:50001/v2/", "https://r:5000") is None
    assert auth.header_for("https://storage.example/blob", "https://r:5000") is None
    assert auth.header_for("https://r:5000/v2/", None) is None  # a request made elsewhere


# -- answers -----------------------------------------------------------------------------------

def test_an_upload_puts_to_the_location_with_its_digest() -> None:
    assert og.upload_url("https://r", "/v2/a/blobs/uploads/u", D1) == (
        f"https://r/v2/a/blobs/uploads/u?digest=sha256%3A{'1' * 64}")
    assert og.upload_url("https://r", "https://s3.example/u?sig=x", D1).startswith(
        "https://s3.example/u?sig=x&digest=sha256%3A")


@pytest.mark.parametrize(("method", "status", "code", "gone"), [
    ("GET", 404, "MANIFEST_UNKNOWN", True), ("GET", 404, "", True),
    ("GET", 404, "NAME_UNKNOWN", False), ("GET", 200, "", False),
    ("DELETE", 404, "MANIFEST_UNKNOWN", True), ("DELETE", 404, "", True),
    ("DELETE", 404, "NAME_UNKNOWN", False), ("DELETE", 404, "BLOB_UNKNOWN", False),
    ("DELETE", 202, "", False)])
def test_which_404_says_a_manifest_is_not_there(method: Any, status: int, code: str,
                                                 gone: bool) -> None:
    body = orjson.dumps({"errors": [{"code": code}]}) if code else b""
    assert og.manifest_gone(method, status, body) is gone


def test_a_blob_with_other_bytes_is_refused_naming_what_was_asked() -> None:
    assert og.verified_blob(HOST, "config c", og.digest_bytes(b"{}"), b"{}") == b"{}"
    with pytest.raises(og.RegistryServerError, match=r"^r\.example:5000: config c: content does "
                                                     "not match its digest$"):
        og.verified_blob(HOST, "config c", og.digest_bytes(b"{}"), b"{ }")


def _page(tags: Any) -> bytes:
    return orjson.dumps({"name": "a", "tags": tags})


def test_tag_pages_follow_the_link_and_never_guess_once_a_link_was_seen() -> None:
    pages = og.TagPages(HOST, "a", page=2)
    assert pages.path == "/v2/a/tags/list?n=2"
    pages.answered(_page(["x", "y"]), '</v2/a/tags/list?n=2&last=y>; rel="next"')
    assert pages.path == "/v2/a/tags/list?n=2&last=y"
    pages.answered(_page(["z", "w"]), "")  # a full page, but this registry sends Links
    assert pages.path is None and pages.tags == ["x", "y", "z", "w"]


def test_tag_pages_without_links_ask_after_the_last_tag_until_a_short_page() -> None:
    pages = og.TagPages(HOST, "a", page=2)
    pages.answered(_page(["x", "y"]), "")
    assert pages.path == "/v2/a/tags/list?n=2&last=y"
    pages.answered(_page(["x", "y"]), "")  # served again: nothing new, so the end
    assert pages.path is None and pages.tags == ["x", "y"]


@pytest.mark.parametrize("body", [b"<html>", b'{"tags": "x"}', b'{"tags": [1]}', b"[]"])
def test_a_tag_page_that_is_not_a_list_of_names_is_a_server_error(body: bytes) -> None:
    with pytest.raises(og.RegistryServerError, match=r"tags of a: not a list of names$"):
        og.TagPages(HOST, "a").answered(body, "")


# -- planning ----------------------------------------------------------------------------------

def _repository() -> tuple[og.Repository, dict[str, Any]]:
    """A repository as a reader gives it: tag ``v1`` names an image with a dated config."""
    b = Builder()
    config = b.blob(b'{"created": "2024-01-01T00:00:00Z"}', "application/vnd.oci.image.config.v1+json")
    image = b.manifest(config=config)
    reader = og.RepositoryReader(["v1"])
    assert reader.to_fetch() == ["v1"]
    reader.fetched("v1", (image["digest"], og.OCI_MANIFEST, b.blobs[image["digest"]]))
    assert reader.to_fetch() == [] and reader.to_ask() == [image["digest"]]
    reader.referred(image["digest"], None)
    return reader.result(None), {"image": image, "config": config}


def test_a_snapshot_is_the_repository_with_where_it_came_from() -> None:
    repository, _ = _repository()
    ref = og.parse_reference(f"{HOST}/a")
    snap = og.RegistrySnapshot.of(repository, ref, 4)
    assert (snap.ref, snap.requests, snap.tags, snap.layout) == (
        ref, 4, repository.tags, repository.layout)


def test_planning_on_a_repository_records_its_origin() -> None:
    repository, found = _repository()
    ref = og.parse_reference(f"docker://{HOST}/team/a")
    plan, graph = og.plan_on_repository(repository, ref, "delete", ["v1"], og.Policy())
    assert plan.origin == f"docker://{HOST}/team/a" and found["image"]["digest"] in graph
    assert found["image"]["digest"] in plan.deleted_digests()


@pytest.mark.parametrize(("ref", "kind"), [("nosuch", "tag"), (D1, "digest")])
def test_an_unknown_ref_names_the_host_and_the_repository_not_index_json(ref: str,
                                                                         kind: str) -> None:
    repository, _ = _repository()
    with pytest.raises(og.RegistryNotFoundError) as exc:
        og.plan_on_repository(repository, og.parse_reference(f"{HOST}/team/a"), "delete", [ref],
                              og.Policy())
    assert str(exc.value) == f"{HOST}: unknown {kind} {ref!r} in repository 'team/a'"


def test_push_time_is_refused_and_created_is_not() -> None:
    ref = og.parse_reference(f"{HOST}/a")
    with pytest.raises(og.PushTimeUnknownError, match=r"^r\.example:5000: push time is not "):
        og.refuse_push_time(og.RetentionRules(keep_last=1), ref)
    og.refuse_push_time(og.RetentionRules(keep_last=1, age_from="created"), ref)


def _snapshot(tags: dict[str, bytes]) -> og.RegistrySnapshot:
    """A snapshot of a repository whose ``tags`` name these manifests (no referrers)."""
    reader = og.RepositoryReader(tags)
    for tag in reader.to_fetch():
        reader.fetched(tag, (og.digest_bytes(tags[tag]), og.OCI_MANIFEST, tags[tag]))
    for digest in reader.to_ask():
        reader.referred(digest, None)
    return og.RegistrySnapshot.of(reader.result(None), og.parse_reference(f"{HOST}/a"), 0)


def _image(config: bytes, created: str | None = None) -> bytes:
    return orjson.dumps({
        "schemaVersion": 2, "mediaType": og.OCI_MANIFEST, "layers": [],
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": og.digest_bytes(config), "size": len(config)},
        **({"annotations": {"org.opencontainers.image.created": created}} if created else {})})


def test_images_are_dated_by_their_annotation_else_their_config_read_once() -> None:
    dated, undated = b'{"created": "1970-01-02T00:00:00Z"}', b'{"os": "linux"}'
    tags = {"noted": _image(undated, "1970-01-03T00:00:00Z"), "one": _image(dated),
            "two": _image(dated + b" "), "same": _image(dated, None) + b" ", "none": _image(undated)}
    dating = og.ImageDating(_snapshot(tags), og.RetentionRules(keep_last=1, age_from="created"))
    assert dating.configs == sorted({og.digest_bytes(c) for c in (dated, dated + b" ", undated)})
    said = {og.digest_bytes(dated): "1970-01-02T00:00:00Z",
            og.digest_bytes(dated + b" "): "1970-01-04T00:00:00Z", og.digest_bytes(undated): None}
    times = dating.times([said[c] for c in dating.configs])
    assert times == {og.digest_bytes(tags["noted"]): 2 * 86400.0,
                     og.digest_bytes(tags["one"]): 86400.0, og.digest_bytes(tags["same"]): 86400.0,
                     og.digest_bytes(tags["two"]): 3 * 86400.0}  # "none" has no date: oldest


def test_dating_by_push_time_is_refused_before_anything_is_read() -> None:
    with pytest.raises(og.PushTimeUnknownError):
        og.ImageDating(_snapshot({"v1": _image(b"{}")}), og.RetentionRules(keep_last=1))


def test_a_plan_for_another_repository_is_refused() -> None:
    unbound = og.Plan(operation="gc", targets=(), policy=og.Policy(), index_fingerprint=D1)
    plan = dataclasses.replace(unbound, origin=f"docker://{HOST}/b")
    og.check_plan_origin(plan, og.parse_reference(f"{HOST}/b"))
    og.check_plan_origin(unbound, og.parse_reference(f"{HOST}/a"))  # made from values in memory
    with pytest.raises(og.RequestError, match=rf"^the plan was made for docker://{HOST}/b, not "
                                              rf"docker://{HOST}/a$"):
        og.check_plan_origin(plan, og.parse_reference(f"{HOST}/a"))


# -- applying ----------------------------------------------------------------------------------

def _deletion(digest: str, size: int) -> og.Deletion:
    return og.Deletion(digest, og.Reason("target"), size, True, (og.OCI_MANIFEST,))


def _fallback(tag_of: str, *listed: str) -> og.FallbackIndex:
    raw = orjson.dumps({"schemaVersion": 2, "mediaType": og.OCI_INDEX, "manifests": [
        {"mediaType": og.OCI_MANIFEST, "digest": d, "size": 1} for d in listed]})
    return og.FallbackIndex(og.fallback_tag(tag_of), og.digest_bytes(raw), raw,
                            tuple(og.index_descriptors(raw)))


def _changes() -> og.RepositoryChanges:
    """Untag ``v1``; delete D2 (a referrer of D1, listed with D3 in D1's fallback index), then
    D3 (also listed in D2's own index, which goes whole)."""
    of_d1, of_d2 = _fallback(D1, D2, "sha256:" + "9" * 64), _fallback(D3, D2)
    return og.RepositoryChanges(
        untags=(("v1", D1),), deletions=(_deletion(D2, 10), _deletion(D3, 20)),
        fallback={D2: (of_d1, of_d2), D3: ()}, gone=frozenset({D2, D3}),
        skipped=(og.SkippedStep("sha256:" + "8" * 64, "in use since planning: a tag reaches it"),),
        blobs=1, size=5)


def _changes_steps() -> tuple[og.ApplyStep, ...]:
    return og.RegistryApplying("docker://r/a", _changes()).steps


def test_the_steps_untag_then_update_each_fallback_index_just_before_its_referrer_goes() -> None:
    run = og.RegistryApplying("docker://r/a", _changes())
    assert [type(s).__name__ for s in run.steps] == [
        "UntagStep", "FallbackStep", "FallbackStep", "DeleteStep", "DeleteStep"]
    _, rewrite, drop, *_ = run.steps
    assert isinstance(rewrite, og.FallbackStep) and isinstance(drop, og.FallbackStep)
    assert rewrite.body is not None and [m["digest"] for m in orjson.loads(rewrite.body)[
        "manifests"]] == ["sha256:" + "9" * 64]
    assert drop.body is None  # nothing left to list: the index goes
    assert run.total == 3


def test_every_step_taken_is_reported_with_progress_over_untags_and_deletions() -> None:
    run = og.RegistryApplying("docker://r/a", _changes())
    shown = [run.record(step, None) for step in run.steps]
    assert shown == [(1, 3), None, None, (2, 3), (3, 3)]
    result = run.result(12)
    assert result == og.RegistryApplyResult(
        "docker://r/a", (D2, D3), ("v1",), (f"rewrote {og.fallback_tag(D1)}",
                                            f"deleted {og.fallback_tag(D3)}"),
        _changes().skipped, blobs_unreferenced=3, bytes_unreferenced=35, requests=12)
    assert "registry garbage-collect" in result.gc_hint


def test_a_tag_changed_since_planning_is_skipped_and_says_why() -> None:
    untag, rewrite = _changes_steps()[:2]
    assert isinstance(untag, og.UntagStep) and isinstance(rewrite, og.FallbackStep)
    assert untag.skip_reason(D1) is None
    assert untag.skip_reason(D3) == f"moved since planning: now names {D3}"
    assert untag.skip_reason(None) == "gone since planning"
    assert rewrite.skip_reason(rewrite.index.digest) is None
    assert rewrite.skip_reason(None) == "left as is: the referrers index changed since it was read"


def test_skipped_steps_and_a_stop_part_way_are_in_the_result() -> None:
    run = og.RegistryApplying("docker://r/a", _changes())
    untag, rewrite, drop, first, _ = run.steps
    assert isinstance(first, og.DeleteStep)
    run.record(untag, untag.skip_reason(None))
    run.record(rewrite, rewrite.skip_reason(D3))
    run.record(drop, None)
    assert run.record(first, first.skip_reason(False)) == (2, 3)  # a step skipped still counts
    result = run.result(5)  # as a failure on the last DELETE would leave it
    assert (result.deleted, result.untagged, result.blobs_unreferenced) == ((), (), 1)
    assert result.referrer_tags == (f"deleted {og.fallback_tag(D3)}",)
    assert result.skipped[1:] == (
        og.SkippedStep("tag v1", "gone since planning"),
        og.SkippedStep(f"tag {og.fallback_tag(D1)}",
                       "left as is: the referrers index changed since it was read"),
        og.SkippedStep(D2, "already gone"))
    error = og.RegistryApplyError(og.RegistryServerError(HOST, "delete of x in a: HTTP 500 "
                                                         "after 1 attempt(s)", 500), result)
    assert error.result is result and error.status == 500
    assert str(error) == (f"{HOST}: delete of x in a: HTTP 500 after 1 attempt(s); stopped after "
                          "0 manifest(s) deleted and 0 tag(s) removed (the result lists them); "
                          "plan again to finish")
