"""Registries for the tests and the benchmark, on 127.0.0.1 only.

* :func:`start_registry` runs Debian's ``docker-registry`` (distribution 2.8) on a free
  loopback port, its storage in a temporary folder, deletes enabled; optionally with an
  htpasswd file (Basic auth) or a TLS certificate.  :meth:`Registry.stop` ends it.
* :class:`Pusher` pushes content with direct HTTP requests: blobs, manifests, images,
  multi-platform indexes, and referrers with ``subject`` plus the ``sha256-<hex>`` fallback tag
  index the OCI distribution-spec describes for registries without the Referrers API.
* :class:`StubRegistry` is a small HTTP server whose answers a test writes (a 500, a 429, a
  token service, 1,000 tags in pages), recording every request it gets.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import urllib3

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
HAVE_REGISTRY = os.access(REGISTRY_BIN, os.X_OK)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY = b"{}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Registry:
    """A running docker-registry: ``host`` is ``127.0.0.1:PORT``; ``config`` its YAML file."""

    host: str
    root: Path
    config: Path
    process: subprocess.Popen[bytes]
    scheme: str = "http"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")


def start_registry(root: Path, *, htpasswd: Path | None = None,
                   tls: tuple[Path, Path] | None = None, delete: bool = True) -> Registry:
    """Start docker-registry with its storage under ``root``; wait until it answers."""
    port = free_port()
    lines = [
        "version: 0.1",
        "log:", "  level: error", "  accesslog:", "    disabled: true",
        "storage:", "  filesystem:", f"    rootdirectory: {root / 'storage'}",
        "  delete:", f"    enabled: {'true' if delete else 'false'}",
        "http:", f"  addr: 127.0.0.1:{port}",
    ]
    if tls is not None:
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: ocigraph-test", f"    path: {htpasswd}"]
    config = root / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - the child writes it until stopped
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    log.close()
    reg = Registry(f"127.0.0.1:{port}", root, config, proc, "https" if tls else "http")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited ({proc.returncode}):\n{reg.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return reg
        except OSError:
            time.sleep(0.05)
    reg.stop()
    raise RuntimeError(f"docker-registry did not listen on {port}:\n{reg.log()}")


def bcrypt_htpasswd(path: Path, user: str, password: str) -> Path | None:
    """Write an htpasswd file with a bcrypt hash; ``None`` when ``bcrypt`` is not installed."""
    try:
        import bcrypt
    except ImportError:
        return None
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{user}:{hashed}\n")
    return path


def self_signed_certificate(folder: Path) -> tuple[Path, Path] | None:
    """A certificate for 127.0.0.1 made with ``openssl``; ``None`` when it is not installed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Pusher:
    """Push content to a registry by plain HTTP requests (the test's own, not ocigraph's)."""

    def __init__(self, host: str, scheme: str = "http", workers: int = 8,
                 auth: tuple[str, str] | None = None) -> None:
        self.base = f"{scheme}://{host}"
        self.http = urllib3.PoolManager(maxsize=workers, cert_reqs="CERT_NONE", retries=False)
        self.headers = urllib3.make_headers(basic_auth=":".join(auth)) if auth else {}
        self._blobs: set[tuple[str, str]] = set()

    def _call(self, method: str, url: str, ok: tuple[int, ...], **kw: Any) -> Any:
        headers = {**self.headers, **kw.pop("headers", {})}
        r = self.http.request(method, url if "://" in url else self.base + url,
                              headers=headers, **kw)
        assert r.status in ok, f"{method} {url}: {r.status} {r.data[:300]!r}"
        return r

    def blob(self, repo: str, data: bytes, media_type: str = OCI_LAYER) -> dict[str, Any]:
        d = digest_of(data)
        if (repo, d) not in self._blobs:
            r = self._call("POST", f"/v2/{repo}/blobs/uploads/", (202,))
            loc = r.headers["Location"]
            loc = loc if "://" in loc else self.base + loc
            self._call("PUT", f"{loc}{'&' if '?' in loc else '?'}digest={d}", (201,), body=data,
                       headers={"Content-Type": "application/octet-stream"})
            self._blobs.add((repo, d))
        return {"mediaType": media_type, "digest": d, "size": len(data)}

    def manifest(self, repo: str, doc: dict[str, Any], tag: str | None = None) -> dict[str, Any]:
        body = json.dumps(doc, sort_keys=True).encode()
        d = digest_of(body)
        self._call("PUT", f"/v2/{repo}/manifests/{tag or d}", (201,), body=body,
                   headers={"Content-Type": doc["mediaType"]})
        out = {"mediaType": doc["mediaType"], "digest": d, "size": len(body)}
        if doc.get("artifactType"):
            out["artifactType"] = doc["artifactType"]
        return out

    def image(self, repo: str, tag: str | None, name: str, layers: int = 1,
              shared: bytes | None = None) -> dict[str, Any]:
        """An image manifest with its own config and ``layers`` layers (plus ``shared``)."""
        config = self.blob(repo, json.dumps({"name": name}).encode(), OCI_CONFIG)
        parts = [self.blob(repo, f"{name} layer {i}".encode()) for i in range(layers)]
        if shared is not None:
            parts.append(self.blob(repo, shared))
        return self.manifest(repo, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                    "config": config, "layers": parts}, tag)

    def index(self, repo: str, tag: str | None, children: list[dict[str, Any]],
              platforms: list[str] | None = None) -> dict[str, Any]:
        listed = []
        for i, child in enumerate(children):
            entry = dict(child)
            if platforms:
                os_, arch = platforms[i].split("/")
                entry["platform"] = {"os": os_, "architecture": arch}
            listed.append(entry)
        return self.manifest(repo, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                    "manifests": listed}, tag)

    def referrer(self, repo: str, subject: dict[str, Any], artifact_type: str, name: str,
                 fallback: bool = True) -> dict[str, Any]:
        """A referrer of ``subject`` (pushed by digest, untagged) and, with ``fallback``, its
        entry in the subject's ``sha256-<hex>`` tag index."""
        empty = self.blob(repo, EMPTY, "application/vnd.oci.empty.v1+json")
        layer = self.blob(repo, f"{artifact_type} of {name}".encode(), "application/octet-stream")
        subject_desc = {k: subject[k] for k in ("mediaType", "digest", "size")}
        ref = self.manifest(repo, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                   "artifactType": artifact_type, "config": empty,
                                   "layers": [layer], "subject": subject_desc})
        if fallback:
            self.add_to_fallback(repo, subject["digest"], ref)
        return ref

    def retag(self, repo: str, tag: str, new_tag: str) -> None:
        """Give the manifest ``tag`` names a second tag (its bytes PUT again, unchanged)."""
        r = self._call("GET", f"/v2/{repo}/manifests/{tag}", (200,),
                       headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
        self._call("PUT", f"/v2/{repo}/manifests/{new_tag}", (201,), body=r.data,
                   headers={"Content-Type": r.headers["Content-Type"]})

    def fallback_tag(self, subject_digest: str) -> str:
        return subject_digest.replace(":", "-", 1)

    def add_to_fallback(self, repo: str, subject_digest: str, ref: dict[str, Any]) -> None:
        tag = self.fallback_tag(subject_digest)
        r = self.http.request("GET", f"{self.base}/v2/{repo}/manifests/{tag}",
                              headers={**self.headers, "Accept": OCI_INDEX})
        listed = json.loads(r.data)["manifests"] if r.status == 200 else []
        listed.append(ref)
        self.manifest(repo, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}, tag)

    # -- looking --

    def tags(self, repo: str) -> list[str]:
        r = self.http.request("GET", f"{self.base}/v2/{repo}/tags/list", headers=self.headers)
        return sorted(json.loads(r.data).get("tags") or []) if r.status == 200 else []

    def exists(self, repo: str, ref: str) -> bool:
        r = self.http.request("HEAD", f"{self.base}/v2/{repo}/manifests/{ref}", headers={
            **self.headers, "Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
        return r.status == 200

    def resolve(self, repo: str, tag: str) -> str | None:
        r = self.http.request("HEAD", f"{self.base}/v2/{repo}/manifests/{tag}", headers={
            **self.headers, "Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
        return r.headers.get("Docker-Content-Digest") if r.status == 200 else None

    def fallback_listing(self, repo: str, subject_digest: str) -> list[str] | None:
        r = self.http.request("GET", f"{self.base}/v2/{repo}/manifests/"
                              f"{self.fallback_tag(subject_digest)}",
                              headers={**self.headers, "Accept": OCI_INDEX})
        return [m["digest"] for m in json.loads(r.data)["manifests"]] if r.status == 200 else None


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class StubRegistry:
    """An HTTP server on 127.0.0.1 whose ``answer(method, path, headers)`` returns
    ``(status, headers, body)``; ``seen`` lists every request."""

    answer: Callable[[str, str, dict[str, str]], tuple[int, dict[str, str], bytes]]
    seen: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StubRegistry:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                stub.seen.append(Seen(self.command, self.path, headers))
                status, extra, body = stub.answer(self.command, self.path, headers)
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
