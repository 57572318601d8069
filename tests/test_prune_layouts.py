"""``ocigraph prune`` on layouts shaped like the ones people prune: a BuildKit local cache
(``--cache-to type=local``), a mirror written by ``skopeo copy ... oci:mirror:ghcr.io/org/app:1.4``
(many versions per repository), and images made by umoci that carry their own creation dates.

After every prune: ``ocigraph fsck`` exits 0, every blob of every kept image is on disk with the
content its digest names, a gc plans nothing, and the same prune again plans nothing.  The
mirror and umoci layouts are made by Debian's skopeo and umoci (skipped when they are absent).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

import ocigraph as og
from io_adapters.cli import cli

UMOCI = shutil.which("umoci")
SKOPEO = shutil.which("skopeo")
needs_umoci = pytest.mark.skipif(UMOCI is None, reason="umoci is not installed")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")

DAY = 86400
T0 = 1714521600  # 2024-05-01T00:00:00Z
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"
MANIFEST_TYPES = {og.OCI_MANIFEST, og.OCI_INDEX, og.DOCKER_MANIFEST, og.DOCKER_LIST}


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- running and checking ---------------------------------------------------------------------


def ok(*args: str | Path) -> Result:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, (args, r.exit_code, r.output, r.exception)
    return r


def plan_json(*args: str | Path) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(ok(*args, "--dry-run", "--format", "json").stdout)
    return doc


def sh(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


def tool(*args: str | Path) -> str:
    p = sh(*args)
    assert p.returncode == 0, f"{' '.join(map(str, args))}: {p.stderr}"
    return p.stdout


def blob_file(root: Path, digest: str) -> Path:
    alg, encoded = digest.split(":", 1)
    return root / "blobs" / alg / encoded


def index_entries(root: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = orjson.loads((root / "index.json").read_bytes())["manifests"]
    return entries


def ref_names(root: Path) -> list[str | None]:
    return [(e.get("annotations") or {}).get(REF_NAME) for e in index_entries(root)]


def digest_of(root: Path, name: str) -> str:
    return str(next(e["digest"] for e in index_entries(root)
                    if (e.get("annotations") or {}).get(REF_NAME) == name))


def reach(root: Path, digest: str, media_type: str) -> set[str]:
    """The digests an index.json entry keeps: the manifest or index, and what it references
    (an index's children that are not manifests, as in a BuildKit cache index, are leaves)."""
    out = {digest}
    if media_type not in MANIFEST_TYPES:
        return out
    doc = orjson.loads(blob_file(root, digest).read_bytes())
    for child in doc.get("manifests", []):
        out |= reach(root, child["digest"], child.get("mediaType", ""))
    for desc in [doc.get("config"), *doc.get("layers", [])]:
        if desc is not None:
            out.add(desc["digest"])
    return out


def kept_blobs(root: Path) -> set[str]:
    """Every digest index.json's tagged entries keep."""
    out: set[str] = set()
    for e in index_entries(root):
        if (e.get("annotations") or {}).get(REF_NAME) is not None:
            out |= reach(root, e["digest"], e["mediaType"])
    return out


def blobs_on_disk(root: Path) -> set[str]:
    return {f"{p.parent.name}:{p.name}" for p in (root / "blobs").glob("*/*") if p.is_file()}


def assert_intact(root: Path, digests: Iterable[str]) -> None:
    for d in digests:
        path = blob_file(root, d)
        assert path.is_file(), f"{d} is gone"
        assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == d, f"{d} is corrupt"


def assert_pruned_cleanly(root: Path, before: Mapping[str, set[str]], *rules: str) -> None:
    """``before``: the blobs each ref name kept before the prune.  Every name still there keeps
    exactly those, all intact; fsck is happy; gc and the same prune again plan nothing."""
    for name in (n for n in ref_names(root) if n is not None):
        assert_intact(root, before[name])
    assert blobs_on_disk(root) == kept_blobs(root)  # the sweep left no garbage behind
    ok("fsck", root)
    gc = plan_json("gc", root)
    assert gc["deletions"] == [] and gc["indexChanges"] == []
    again = plan_json("prune", root, *rules)
    assert again["deletions"] == [] and again["indexChanges"] == [] and again["targets"] == []


def blobs_by_name(root: Path) -> dict[str, set[str]]:
    return {(e.get("annotations") or {})[REF_NAME]: reach(root, e["digest"], e["mediaType"])
            for e in index_entries(root) if (e.get("annotations") or {}).get(REF_NAME)}


def decisions(plan: Mapping[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {d["tag"]: d for d in plan["retention"]["decisions"]}


# --- (a) a BuildKit local cache ---------------------------------------------------------------


def _targz(name: str, content: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(content), 0
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


class CacheDir:
    """A BuildKit ``type=local`` cache export on disk, written as BuildKit writes one: blobs
    under ``blobs/sha256``, an ``ingest/`` folder, and ``index.json`` naming cache manifests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "ingest").mkdir()
        (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
        self.entries: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str, when: float,
             annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = blob_file(self.root, digest)
        if not path.exists():  # a blob is written once, when first exported
            path.write_bytes(data)
            os.utime(path, (when, when))
        desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if annotations:
            desc["annotations"] = dict(annotations)
        return desc

    def layer(self, name: str, when: float) -> dict[str, Any]:
        data = _targz(name, f"cached result of {name}\n".encode())
        return self.blob(data, GZIP_LAYER, when, {"buildkit/createdat": rfc3339(when)})

    def cache_config(self, layers: Sequence[dict[str, Any]], when: float) -> dict[str, Any]:
        doc = {"layers": [{"blob": d["digest"], "parent": i - 1} for i, d in enumerate(layers)],
               "records": [{"digest": "sha256:" + hashlib.sha256(d["digest"].encode()).hexdigest(),
                            "results": [{"layer": i, "createdAt": rfc3339(when)}]}
                           for i, d in enumerate(layers)]}
        return self.blob(orjson.dumps(doc), CACHE_CONFIG, when)

    def cache_manifest(self, layers: Sequence[dict[str, Any]], when: float) -> dict[str, Any]:
        """``image-manifest=true``: an image manifest whose config is the cache config."""
        doc = {"schemaVersion": 2, "mediaType": og.OCI_MANIFEST,
               "config": self.cache_config(layers, when), "layers": list(layers)}
        return self.blob(orjson.dumps(doc), og.OCI_MANIFEST, when)

    def cache_index(self, layers: Sequence[dict[str, Any]], when: float) -> dict[str, Any]:
        """The older form: an image index listing the cache blobs and the cache config."""
        doc = {"schemaVersion": 2, "mediaType": og.OCI_INDEX,
               "manifests": [*layers, self.cache_config(layers, when)]}
        return self.blob(orjson.dumps(doc), og.OCI_INDEX, when)

    def name(self, desc: Mapping[str, Any], tag: str | None) -> None:
        entry = {k: v for k, v in desc.items() if k != "annotations"}
        if tag is not None:
            entry["annotations"] = {REF_NAME: tag}
        self.entries.append(entry)

    def write_index(self) -> None:
        (self.root / "index.json").write_bytes(
            orjson.dumps({"schemaVersion": 2, "manifests": self.entries}))


def buildkit_cache(root: Path) -> tuple[Path, dict[int, dict[str, Any]]]:
    """Fourteen nightly builds (day 0 to 13 after T0), exported with ``tag=<date>``; the last
    also as ``latest``.  Day 0 is in the older cache-index form; day 5 is listed untagged; the
    exports of days 2 and 9 were replaced by a re-export the same day, so their manifests are
    in no index.json entry (moby/buildkit#1896).  Every build reuses the base layers, the
    dependency layer changes every fourth day, and each build has a layer of its own."""
    c = CacheDir(root)
    base = [c.layer("base-os", T0), c.layer("base-tools", T0)]
    caches = {}
    for day in range(14):
        when = T0 + day * DAY + 3600
        deps = c.layer(f"deps-{day // 4}", T0 + (day // 4) * 4 * DAY + 3600)
        layers = [*base, deps, c.layer(f"app-{day}", when)]
        make = c.cache_index if day == 0 else c.cache_manifest
        if day in (2, 9):
            make([*base, deps, c.layer(f"app-{day}-first-try", when - 600)], when - 600)
        caches[day] = make(layers, when)
        date = rfc3339(when)[:10]
        if day == 5:
            c.name(caches[day], None)
        else:
            c.name(caches[day], date)
    c.name(caches[13], "latest")
    c.write_index()
    return root, caches


def test_a_buildkit_cache_keeps_a_week(tmp_path: Path) -> None:
    root, caches = buildkit_cache(tmp_path / "cache")
    now = rfc3339(T0 + 14 * DAY)
    before = blobs_by_name(root)
    rules = ("--keep-within", "7d", "--now", now)
    plan = plan_json("prune", root, *rules)
    d = decisions(plan)
    kept_days = range(7, 14)  # pushed at T0 + day + 1h: day 7 is 6 days 23 hours old
    expected_kept = {rfc3339(T0 + day * DAY)[:10] for day in kept_days} | {"latest"}
    assert {t for t, x in d.items() if x["verdict"] == "kept"} == expected_kept
    assert {x["rule"] for x in d.values() if x["verdict"] == "kept"} == {"keep-within"}
    assert {t for t, x in d.items() if x["verdict"] == "expired"} == {
        rfc3339(T0 + day * DAY)[:10] for day in (0, 1, 2, 3, 4, 6)}
    assert {x["repository"] for x in d.values()} == {""}  # bare tags: the layout itself

    r = ok("prune", root, *rules, "--yes")
    assert "1 untagged index.json entry is garbage" in r.stdout
    assert ref_names(root) == [*sorted(expected_kept - {"latest"}), "latest"]
    assert (root / "ingest").is_dir()
    gone = {caches[day]["digest"] for day in (0, 1, 2, 3, 4, 5, 6)}
    assert not gone & blobs_on_disk(root)
    # day 4 expired, day 7 stays: the base layers and deps-1 (days 4-7) they share survive
    shared = before[rfc3339(T0 + 4 * DAY)[:10]] & before[rfc3339(T0 + 7 * DAY)[:10]]
    assert len(shared) == 3 and shared <= blobs_on_disk(root)
    assert_pruned_cleanly(root, before, *rules)


def test_a_buildkit_cache_untagged_entry_stays_under_keep_untagged(tmp_path: Path) -> None:
    root, caches = buildkit_cache(tmp_path / "cache")
    now = rfc3339(T0 + 14 * DAY)
    ok("prune", root, "--keep-within", "7d", "--now", now, "--keep-untagged", "--yes")
    assert ref_names(root).count(None) == 1
    kept = next(e for e in index_entries(root) if "annotations" not in e)
    assert kept["digest"] == caches[5]["digest"]
    assert_intact(root, reach(root, kept["digest"], kept["mediaType"]))
    ok("fsck", root)
    gc = plan_json("gc", root, "--keep-untagged")
    assert gc["deletions"] == [] and gc["indexChanges"] == []


def test_a_buildkit_cache_within_a_budget(tmp_path: Path) -> None:
    """``--max-size`` alone, BuildKit's ``maxUsedSpace``: the oldest caches go first."""
    root, _caches = buildkit_cache(tmp_path / "cache")
    now = rfc3339(T0 + 14 * DAY)
    before = blobs_by_name(root)
    newest = {rfc3339(T0 + day * DAY)[:10] for day in (12, 13)} | {"latest"}
    budget = sum(blob_file(root, b).stat().st_size for b in set().union(
        *(before[n] for n in newest)))
    rules = ("--max-size", str(budget), "--now", now)
    plan = plan_json("prune", root, *rules)
    assert plan["retention"]["overBudget"] == 0 and plan["retention"]["liveBytes"] <= budget
    evicted = sorted((x for x in plan["retention"]["decisions"] if x["verdict"] == "expired"),
                     key=lambda x: x["pushTime"])
    assert {x["rule"] for x in evicted} == {"max-size"}
    assert [x["tag"] for x in evicted] == [rfc3339(T0 + day * DAY)[:10]
                                           for day in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11)]
    ok("prune", root, *rules, "--yes")
    assert set(ref_names(root)) == newest
    assert sum(p.stat().st_size for p in (root / "blobs").rglob("*") if p.is_file()) == budget
    assert_pruned_cleanly(root, before, *rules)


# --- (b) a mirror written by skopeo -----------------------------------------------------------

#: (repository, version, source image) in push order; worker:0.9 is the very image app:1.2 is
MIRROR = [
    ("ghcr.io/org/worker", "0.7", "worker-0.7"),
    ("ghcr.io/org/worker", "0.8", "worker-0.8"),
    ("ghcr.io/org/app", "1.2", "app-1.2"),
    ("ghcr.io/org/worker", "0.9", "app-1.2"),
    ("ghcr.io/org/app", "1.3", "app-1.3"),
    ("localhost:5000/tools", "1", "tools-1"),
    ("ghcr.io/org/app", "1.4", "app-1.4"),
    ("docker.io/library/base", "3.19", "base"),
    ("ghcr.io/org/app", "1.10", "app-1.10"),
    ("localhost:5000/tools", "2", "tools-2"),
    ("ghcr.io/org/app", "2.0", "app-2.0"),
    ("ghcr.io/org/app", "latest", "app-2.0"),  # two tags, one image: ranked once
]


@pytest.fixture(scope="module")
def mirror_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Source images made by umoci (a shared base layer and one layer of their own), copied
    by skopeo into one layout under full references, as a registry mirror is kept."""
    if UMOCI is None or SKOPEO is None:
        pytest.skip("umoci and skopeo are needed to make the mirror")
    work = tmp_path_factory.mktemp("mirror")
    src, mirror = work / "src", work / "mirror"
    tool(UMOCI, "init", "--layout", src)
    tool(UMOCI, "new", "--image", f"{src}:base")
    (work / "os-release").write_text("ID=base\n")
    tool(UMOCI, "insert", "--image", f"{src}:base", work / "os-release", "/etc/os-release")
    for source in sorted({s for _, _, s in MIRROR} - {"base"}):
        tool(UMOCI, "config", "--image", f"{src}:base", "--tag", source,
             "--config.label", f"version={source}")
        (work / source).write_text(f"{source}\n")
        tool(UMOCI, "insert", "--image", f"{src}:{source}", work / source, f"/srv/{source}")
    for repository, version, source in MIRROR:
        tool(SKOPEO, "--insecure-policy", "copy", "--quiet", f"oci:{src}:{source}",
             f"oci:{mirror}:{repository}:{version}")
    pushed: dict[str, float] = {}
    for i, (repository, version, _) in enumerate(MIRROR):
        pushed.setdefault(digest_of(mirror, f"{repository}:{version}"), T0 + i * DAY)
    for digest, when in pushed.items():
        os.utime(blob_file(mirror, digest), (when, when))
    return mirror


@pytest.fixture
def mirror(mirror_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    shutil.copytree(mirror_template, root)  # copy2: the mtimes come along
    return root


def skopeo_reads(root: Path, name: str, out: Path) -> bool:
    """Whether skopeo can copy ``name`` out of ``root`` (it reads and checks every blob)."""
    assert SKOPEO is not None
    p = sh(SKOPEO, "--insecure-policy", "copy", "--quiet", f"oci:{root}:{name}",
           f"oci:{out}:{name.rsplit(':', 1)[1]}")
    return p.returncode == 0


@needs_umoci
@needs_skopeo
def test_a_mirror_keeps_the_newest_versions_of_each_repository(mirror: Path,
                                                               tmp_path: Path) -> None:
    assert ref_names(mirror) == [f"{r}:{v}" for r, v, _ in MIRROR]  # as skopeo wrote them
    before = blobs_by_name(mirror)
    now = rfc3339(T0 + 20 * DAY)
    rules = ("--keep-last", "2", "--now", now)
    plan = plan_json("prune", mirror, *rules)
    d = decisions(plan)
    assert {t: (x["repository"], x["rank"]) for t, x in d.items()} == {
        "ghcr.io/org/app:latest": ("ghcr.io/org/app", 1),
        "ghcr.io/org/app:2.0": ("ghcr.io/org/app", 1),
        "ghcr.io/org/app:1.10": ("ghcr.io/org/app", 2),  # pushed after 1.4: ranks by push time
        "ghcr.io/org/app:1.4": ("ghcr.io/org/app", 3),
        "ghcr.io/org/app:1.3": ("ghcr.io/org/app", 4),
        "ghcr.io/org/app:1.2": ("ghcr.io/org/app", 5),
        "ghcr.io/org/worker:0.9": ("ghcr.io/org/worker", 1),
        "ghcr.io/org/worker:0.8": ("ghcr.io/org/worker", 2),
        "ghcr.io/org/worker:0.7": ("ghcr.io/org/worker", 3),
        "localhost:5000/tools:2": ("localhost:5000/tools", 1),
        "localhost:5000/tools:1": ("localhost:5000/tools", 2),
        "docker.io/library/base:3.19": ("docker.io/library/base", 1),
    }
    expired = {"ghcr.io/org/app:1.2", "ghcr.io/org/app:1.3", "ghcr.io/org/app:1.4",
               "ghcr.io/org/worker:0.7"}
    assert set(plan["targets"]) == expired

    ok("prune", mirror, *rules, "--yes")
    kept = [f"{r}:{v}" for r, v, _ in MIRROR if f"{r}:{v}" not in expired]
    assert ref_names(mirror) == kept
    # app:1.2's image lost its tag in app but is worker's newest: it stays, whole
    shared = digest_of(mirror, "ghcr.io/org/worker:0.9")
    assert before["ghcr.io/org/app:1.2"] == before["ghcr.io/org/worker:0.9"]
    assert blob_file(mirror, shared).is_file()
    for name in ("ghcr.io/org/app:1.3", "ghcr.io/org/app:1.4", "ghcr.io/org/worker:0.7"):
        own = before[name] - set().union(*(before[k] for k in kept))
        assert len(own) == 3 and not own & blobs_on_disk(mirror)  # manifest, config, layer
    assert_pruned_cleanly(mirror, before, *rules)
    for i, name in enumerate(kept):
        assert skopeo_reads(mirror, name, tmp_path / f"out{i}"), name
    assert not skopeo_reads(mirror, "ghcr.io/org/app:1.4", tmp_path / "gone")


@needs_umoci
@needs_skopeo
def test_a_mirror_pruned_only_in_one_repository(mirror: Path) -> None:
    before = blobs_by_name(mirror)
    rules = ("--keep-last", "1", "--only", "ghcr.io/org/app:*", "--now", rfc3339(T0 + 20 * DAY))
    plan_file = mirror.parent / "plan.json"
    ok("plan", "prune", mirror, *rules, "-o", plan_file)
    d = decisions(orjson.loads(plan_file.read_bytes()))
    assert {t for t, x in d.items() if x["rule"] == "outside-only"} == {
        f"{r}:{v}" for r, v, _ in MIRROR if r != "ghcr.io/org/app"}
    ok("apply", mirror, plan_file)
    assert ref_names(mirror) == [f"{r}:{v}" for r, v, _ in MIRROR
                                 if r != "ghcr.io/org/app" or v in ("2.0", "latest")]
    assert_pruned_cleanly(mirror, before, *rules)


@needs_umoci
@needs_skopeo
def test_a_saved_plan_is_refused_after_skopeo_pushed_and_a_new_plan_keeps_the_push(
        mirror: Path, tmp_path: Path) -> None:
    assert SKOPEO is not None and UMOCI is not None
    rules = ("--keep-last", "2", "--now", rfc3339(T0 + 20 * DAY))
    plan_file = tmp_path / "plan.json"
    ok("plan", "prune", mirror, *rules, "-o", plan_file)
    # a new version arrives between the plan and its apply
    src = tmp_path / "src"
    tool(UMOCI, "init", "--layout", src)
    tool(UMOCI, "new", "--image", f"{src}:new")
    (tmp_path / "new").write_text("2.1\n")
    tool(UMOCI, "insert", "--image", f"{src}:new", tmp_path / "new", "/srv/new")
    tool(SKOPEO, "--insecure-policy", "copy", "--quiet", f"oci:{src}:new",
         f"oci:{mirror}:ghcr.io/org/app:2.1")

    def files() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in [mirror / "index.json", *(mirror / "blobs").rglob("*")]
                if p.is_file()}

    before = files()
    r = CliRunner().invoke(cli, ["apply", str(mirror), str(plan_file)])
    assert r.exit_code == 1 and "stale plan" in r.stderr, (r.exit_code, r.stderr)
    assert files() == before
    # planned again: the new version (its manifest written just now) is the newest
    plan = plan_json("prune", mirror, *rules)
    d = decisions(plan)
    assert d["ghcr.io/org/app:2.1"]["rank"] == 1 and d["ghcr.io/org/app:2.1"]["verdict"] == "kept"
    assert d["ghcr.io/org/app:2.0"]["rank"] == 2 and d["ghcr.io/org/app:latest"]["rank"] == 2
    assert d["ghcr.io/org/app:1.10"]["verdict"] == "expired"
    ok("plan", "prune", mirror, *rules, "-o", plan_file)
    ok("apply", mirror, plan_file)
    assert [n for n in ref_names(mirror) if n and n.startswith("ghcr.io/org/app:")] == [
        "ghcr.io/org/app:2.0", "ghcr.io/org/app:latest", "ghcr.io/org/app:2.1"]
    ok("fsck", mirror)
    assert_intact(mirror, kept_blobs(mirror))


@needs_umoci
@needs_skopeo
def test_skopeo_copying_an_image_again_makes_it_newly_pushed(mirror: Path) -> None:
    """Push time is when the layout received the manifest (RETENTION §1): skopeo writes the
    manifest blob again when it copies an image the layout holds, so a re-tag counts as a
    push, and the re-tagged image ranks first."""
    assert SKOPEO is not None
    old = digest_of(mirror, "ghcr.io/org/app:1.3")
    was = blob_file(mirror, old).stat().st_mtime
    tool(SKOPEO, "--insecure-policy", "copy", "--quiet", f"oci:{mirror}:ghcr.io/org/app:1.3",
         f"oci:{mirror}:ghcr.io/org/app:stable")
    assert blob_file(mirror, old).stat().st_mtime > was
    d = decisions(plan_json("prune", mirror, "--keep-last", "1", "--now", rfc3339(T0 + 20 * DAY)))
    assert d["ghcr.io/org/app:stable"]["rank"] == d["ghcr.io/org/app:1.3"]["rank"] == 1
    assert d["ghcr.io/org/app:2.0"]["verdict"] == "expired"


@needs_umoci
@needs_skopeo
def test_the_readme_mirror_example(mirror: Path) -> None:
    """README: per repository, keep the three newest and anything tagged v*, under 10 GiB."""
    plan = plan_json("prune", mirror, "--keep-last", "3", "--keep-tag", "v*", "--max-size", "10G",
                     "--now", rfc3339(T0 + 20 * DAY))
    assert set(plan["targets"]) == {"ghcr.io/org/app:1.2", "ghcr.io/org/app:1.3"}
    assert plan["retention"]["overBudget"] == 0
    assert plan["retention"]["liveBytes"] == sum(
        blob_file(mirror, b).stat().st_size for b in blobs_on_disk(mirror)
        if b not in {x["digest"] for x in plan["deletions"]})


# --- (c) images that carry their own dates (umoci) --------------------------------------------

#: tag -> (umoci config options, manifest mtime, the push time --age-from created reads)
DATED = {
    # the manifest annotation wins over the config's date
    "a": (["--manifest.annotation", f"{CREATED}=2024-01-01T00:00:00Z",
           "--created", "2024-06-01T00:00:00Z"], T0 + 9 * DAY, "2024-01-01T00:00:00Z"),
    # no annotation: the config's date
    "b": (["--created", "2024-03-01T00:00:00Z"], T0 + 8 * DAY, "2024-03-01T00:00:00Z"),
    # an annotation that is no date: the config's date
    "c": (["--manifest.annotation", f"{CREATED}=last tuesday",
           "--created", "2024-05-01T00:00:00+02:00"], T0 + 5 * DAY, "2024-04-30T22:00:00Z"),
    # reproducible builds stamp the epoch, meaning "no date": the mtime
    "d": (["--manifest.annotation", f"{CREATED}=1970-01-01T00:00:00Z",
           "--created", "1970-01-01T00:00:00Z"], T0 - 200 * DAY, rfc3339(T0 - 200 * DAY)),
    "e": (["--manifest.annotation", f"{CREATED}=2024-04-01T00:00:00Z"], T0 + 6 * DAY,
          "2024-04-01T00:00:00Z"),
}


@pytest.fixture
def dated(tmp_path: Path) -> Path:
    if UMOCI is None:
        pytest.skip("umoci is not installed")
    root = tmp_path / "dated"
    tool(UMOCI, "init", "--layout", root)
    tool(UMOCI, "new", "--image", f"{root}:base")
    (tmp_path / "base").write_text("base\n")
    tool(UMOCI, "insert", "--image", f"{root}:base", tmp_path / "base", "/etc/base")
    for tag, (options, _, _) in DATED.items():
        (tmp_path / tag).write_text(f"{tag}\n")
        tool(UMOCI, "config", "--image", f"{root}:base", "--tag", tag, "--no-history", *options)
        tool(UMOCI, "insert", "--image", f"{root}:{tag}", tmp_path / tag, f"/srv/{tag}")
        # umoci insert keeps the config's created but writes a new manifest: the options
        # that go into the manifest are set again on the result
        if "--manifest.annotation" in options:
            i = options.index("--manifest.annotation")
            tool(UMOCI, "config", "--image", f"{root}:{tag}", "--no-history", *options[i:i + 2])
    tool(UMOCI, "rm", "--image", f"{root}:base")
    for tag, (_, mtime, _) in DATED.items():
        os.utime(blob_file(root, digest_of(root, tag)), (mtime, mtime))
    return root


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@needs_umoci
def test_umoci_images_pruned_by_their_own_dates(dated: Path) -> None:
    assert UMOCI is not None
    assert sorted(n or "" for n in ref_names(dated)) == sorted(DATED)
    for tag in ("a", "c", "d", "e"):  # the annotations are in the manifests umoci wrote
        manifest = orjson.loads(blob_file(dated, digest_of(dated, tag)).read_bytes())
        assert CREATED in manifest.get("annotations", {}), tag
    before = blobs_by_name(dated)
    now = rfc3339(T0 + 30 * DAY)
    by_push = plan_json("prune", dated, "--keep-last", "2", "--now", now)
    assert sorted(by_push["targets"]) == ["c", "d", "e"]  # a and b have the newest mtimes
    rules = ("--keep-last", "2", "--age-from", "created", "--now", now)
    plan = plan_json("prune", dated, *rules)
    d = decisions(plan)
    assert {t: x["pushTime"] for t, x in d.items()} == {
        t: _ts(created) for t, (_, _, created) in DATED.items()}
    # created, oldest first: d (1970 means no date: the mtime, T0 - 200d), a, b, e, c
    assert {t: x["rank"] for t, x in d.items()} == {"c": 1, "e": 2, "b": 3, "a": 4, "d": 5}
    assert sorted(plan["targets"]) == ["a", "b", "d"]

    ok("prune", dated, *rules, "--yes")
    assert sorted(tool(UMOCI, "ls", "--layout", dated).split()) == ["c", "e"]
    assert_pruned_cleanly(dated, before, *rules)
    for tag in ("c", "e"):
        assert "LAYER" in tool(UMOCI, "stat", "--image", f"{dated}:{tag}")
