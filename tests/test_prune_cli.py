"""``ocigraph prune`` and ``ocigraph plan prune`` on layouts on disk, through click's CliRunner:
the plan's forms (text, JSON, a saved plan applied later), the usage errors (exit 2, one line,
nothing changed), and RETENTION.md §6's examples end to end.

Push times are the manifest blobs' mtimes, set here with ``os.utime``; every plan is made
``--now`` a fixed time, so every figure below is exact.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

import ocigraph as og
from io_adapters import planner, store
from io_adapters.cli import cli
from io_adapters.layout import LayoutDir
from ocigraph import snapshot as snap

DAY = 86400
T0 = 1714521600  # 2024-05-01T00:00:00Z: app:1 is pushed then, app:i (i-1) days later
NOW = "2024-05-09T00:00:00Z"  # T0 + 8 days
NOW_S = T0 + 8 * DAY

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"


# --- a layout on disk, written the way a registry client would --------------------------------


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Image:
    """One image of a test layout: its manifest digest and the digests it references."""

    digest: str
    config: str
    layers: tuple[str, ...]

    @property
    def blobs(self) -> set[str]:
        return {self.digest, self.config, *self.layers}


@dataclass
class Store:
    """A layout being written: blobs, index.json entries, and push times (manifest mtimes)."""

    blobs: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    pushed: dict[str, float] = field(default_factory=dict)

    def blob(self, data: bytes, media_type: str = LAYER) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = (data, media_type)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, name: str, *, pushed: float, shared: Sequence[dict[str, Any]] = (),
              annotations: Mapping[str, str] | None = None,
              config_created: str | None = None) -> Image:
        """A manifest with a config of its own, the ``shared`` layers and a layer of its own."""
        cfg: dict[str, Any] = {"architecture": "amd64", "os": "linux", "image": name}
        if config_created is not None:
            cfg["created"] = config_created
        config = self.blob(orjson.dumps(cfg), CONFIG)
        own = self.blob(f"layer of {name}\n".encode())
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": og.OCI_MANIFEST, "config": config,
                               "layers": [*shared, own]}
        if annotations:
            doc["annotations"] = dict(annotations)
        desc = self.blob(orjson.dumps(doc), og.OCI_MANIFEST)
        self.pushed[desc["digest"]] = pushed
        return Image(desc["digest"], config["digest"], (*(s["digest"] for s in shared), own["digest"]))

    def index(self, name: str, children: Sequence[Image], *, pushed: float) -> Image:
        """An image index listing ``children`` (a multi-platform image)."""
        doc = {"schemaVersion": 2, "mediaType": og.OCI_INDEX, "manifests": [
            {"mediaType": og.OCI_MANIFEST, "digest": c.digest, "size": len(self.blobs[c.digest][0]),
             "annotations": {"of": name}} for c in children]}
        desc = self.blob(orjson.dumps(doc), og.OCI_INDEX)
        self.pushed[desc["digest"]] = pushed
        return Image(desc["digest"], children[0].config, ())

    def tag(self, image: Image, name: str | None) -> None:
        data, media_type = self.blobs[image.digest]
        entry: dict[str, Any] = {"mediaType": media_type, "digest": image.digest, "size": len(data)}
        if name is not None:
            entry["annotations"] = {REF_NAME: name}
        self.entries.append(entry)

    def write(self, root: Path) -> Path:
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
        (root / "index.json").write_bytes(orjson.dumps({"schemaVersion": 2,
                                                        "manifests": self.entries}))
        for digest, (data, _) in self.blobs.items():
            (root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        old = T0 - 30 * DAY  # every other blob is older than every manifest
        for digest in self.blobs:
            when = self.pushed.get(digest, old)
            os.utime(blob_file(root, digest), (when, when))
        return root


def blob_file(root: Path, digest: str) -> Path:
    alg, hexpart = digest.split(":", 1)
    return root / "blobs" / alg / hexpart


APP_TAGS = tuple(f"app:{n}" for n in range(1, 9))


def app_layout(root: Path, names: Sequence[str] = APP_TAGS
               ) -> tuple[Path, dict[str, Image], dict[str, Any]]:
    """One image per name, pushed a day apart from ``T0`` in the order given, each with a
    config, the ``base`` layer every image shares and a layer of its own."""
    s = Store()
    base = s.blob(b"base layer shared by every image\n")
    images = {}
    for i, name in enumerate(names):
        images[name] = s.image(name, pushed=T0 + i * DAY, shared=[base])
        s.tag(images[name], name)
    return s.write(root), images, base


# --- running the command line -----------------------------------------------------------------


def run(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def ok(*args: str | Path) -> Result:
    r = run(*args)
    assert r.exit_code == 0, (args, r.exit_code, r.output, r.exception)
    return r


def one_line_error(r: Result, code: int, *mentions: str) -> str:
    assert r.exit_code == code, (r.exit_code, r.output)
    assert "Traceback" not in r.output and "internal error" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocigraph: error: "), r.stderr
    for m in mentions:
        assert m in lines[0], (m, lines[0])
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    out: dict[str, tuple[bytes | None, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            out[str(p.relative_to(root))] = (data, p.lstat().st_mtime_ns)
    return out


def ref_names(root: Path) -> list[str | None]:
    doc = orjson.loads((root / "index.json").read_bytes())
    return [(e.get("annotations") or {}).get(REF_NAME) for e in doc["manifests"]]


def blob_set(root: Path) -> set[str]:
    return {f"{p.parent.name}:{p.name}" for p in (root / "blobs").glob("*/*") if p.is_file()}


def assert_whole(root: Path, images: Iterable[Image]) -> None:
    """Every blob of these images is on disk with the content its digest names."""
    for img in images:
        for d in img.blobs:
            path = blob_file(root, d)
            assert path.is_file(), f"{d} of {img.digest} is gone"
            assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == d


def assert_settled(root: Path, now: str, *rules: str) -> None:
    """fsck finds nothing; a gc plans nothing; pruning again by the same rules plans nothing."""
    ok("fsck", root)
    gc = orjson.loads(ok("gc", root, "--dry-run", "--format", "json").stdout)
    assert gc["deletions"] == [] and gc["indexChanges"] == []
    again = orjson.loads(ok("prune", root, *rules, "--now", now, "--dry-run", "--format",
                            "json").stdout)
    assert again["deletions"] == [] and again["indexChanges"] == [] and again["targets"] == []
    assert {d["verdict"] for d in again["retention"]["decisions"]} <= {"kept"}


_DECISION = re.compile(r"^\s+(kept|expired)\s+(\S+)\s+(sha256:[0-9a-f]{12})\s+pushed (\S+)"
                       r"(?:\s+rank (\d+))?\s+(\S+)")


def decisions_in_text(text: str) -> dict[str, tuple[str, str, str, int | None, str]]:
    """tag -> (verdict, short digest, pushed, rank, rule), from the lines a text plan ends with."""
    out = {}
    for line in text.splitlines():
        m = _DECISION.match(line)
        if m:
            verdict, tag, short, pushed, rank, rule = m.groups()
            out[tag] = (verdict, short, pushed, None if rank is None else int(rank), rule)
    return out


def decisions_in_json(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["tag"]: d for d in doc["retention"]["decisions"]}


# --- RETENTION §6, end to end on disk ---------------------------------------------------------


def test_keep_last_3_of_8_tags_a_day_apart(tmp_path: Path) -> None:
    root, images, base = app_layout(tmp_path / "L")
    r = ok("prune", root, "--keep-last", "3", "--now", NOW, "--yes")
    assert ref_names(root) == ["app:6", "app:7", "app:8"]
    kept = [images[f"app:{i}"] for i in (6, 7, 8)]
    gone = [images[f"app:{i}"] for i in range(1, 6)]
    assert_whole(root, kept)
    # the layer app:6-app:8 share with the expired images survives; what only those used goes
    assert blob_set(root) == set().union(*(i.blobs for i in kept))
    assert base["digest"] in blob_set(root)
    assert not blob_set(root) & set().union(*(i.blobs - {base["digest"]} for i in gone))
    # the text shown before applying ends with every decision
    seen = decisions_in_text(r.stdout)
    for i in range(1, 9):
        rank = 9 - i
        verdict, rule = ("kept", "keep-last") if i >= 6 else ("expired", "unkept")
        assert seen[f"app:{i}"] == (verdict, images[f"app:{i}"].digest[:19],
                                    rfc3339(T0 + (i - 1) * DAY), rank, rule)
    assert "5 tag(s) expired, 3 kept" in r.stdout
    assert_settled(root, NOW, "--keep-last", "3")


def test_keep_tag_v_keeps_the_oldest_image(tmp_path: Path) -> None:
    names = ["app:v1", *(f"app:{i}" for i in range(2, 9))]  # app:v1 is the oldest
    root, images, _ = app_layout(tmp_path / "L", names)
    plan = orjson.loads(ok("prune", root, "--keep-last", "3", "--keep-tag", "v*", "--now", NOW,
                           "--dry-run", "--format", "json").stdout)
    d = decisions_in_json(plan)
    assert (d["app:v1"]["verdict"], d["app:v1"]["rule"], d["app:v1"]["detail"]) == (
        "kept", "keep-tag", "v*")
    assert d["app:v1"]["rank"] == 8  # the oldest of its repository, kept by its pin
    assert sorted(plan["targets"]) == ["app:2", "app:3", "app:4", "app:5"]
    ok("prune", root, "--keep-last", "3", "--keep-tag", "v*", "--now", NOW, "--yes")
    assert ref_names(root) == ["app:v1", "app:6", "app:7", "app:8"]
    assert_whole(root, [images[n] for n in ("app:v1", "app:6", "app:7", "app:8")])
    assert_settled(root, NOW, "--keep-last", "3", "--keep-tag", "v*")


def test_max_size_0_keeps_only_stable_and_says_by_how_much_the_budget_is_missed(
        tmp_path: Path) -> None:
    names = ["app:1", "app:2", "app:stable", "app:4", "app:5"]
    root, images, _ = app_layout(tmp_path / "L", names)
    rules = ("--max-size", "0", "--keep-tag", "stable")
    plan = orjson.loads(ok("prune", root, *rules, "--now", NOW, "--dry-run", "--format",
                           "json").stdout)
    stable = images["app:stable"]
    stays = sum(blob_file(root, b).stat().st_size for b in stable.blobs)
    assert plan["retention"]["liveBytes"] == stays
    assert plan["retention"]["overBudget"] == stays
    d = decisions_in_json(plan)
    assert d.pop("app:stable")["rule"] == "keep-tag"
    assert {t: x["verdict"] for t, x in d.items()} == dict.fromkeys(d, "expired")
    r = ok("prune", root, *rules, "--now", NOW, "--yes")
    assert f"budget not reached: {stays} bytes over" in r.stdout
    assert ref_names(root) == ["app:stable"]
    assert blob_set(root) == stable.blobs
    assert_settled(root, NOW, *rules)


def test_a_budget_evicts_the_oldest_kept_images_until_the_rest_fit(tmp_path: Path) -> None:
    root, images, _base = app_layout(tmp_path / "L")
    newest = [images[f"app:{i}"] for i in (7, 8)]
    fits = sum(blob_file(root, b).stat().st_size for b in set().union(*(i.blobs for i in newest)))
    rules = ("--keep-last", "5", "--max-size", str(fits))
    r = ok("prune", root, *rules, "--now", NOW, "--dry-run")
    seen = decisions_in_text(r.stdout)
    assert [t for t, x in seen.items() if x[0] == "kept"] == ["app:8", "app:7"]
    # keep-last 5 kept app:4-app:8; the budget took app:4, app:5, app:6, oldest first
    assert {t: x[4] for t, x in seen.items() if x[4] == "max-size"} == dict.fromkeys(
        ["app:6", "app:5", "app:4"], "max-size")
    assert "(was kept by keep-last 5)" in r.stdout and "; budget reached" in r.stdout
    plan = orjson.loads(ok("prune", root, *rules, "--now", NOW, "--dry-run", "--format",
                           "json").stdout)
    evicted = sorted((x for x in plan["retention"]["decisions"] if x["rule"] == "max-size"),
                     key=lambda x: x["pushTime"])
    live = [x["liveBytes"] for x in evicted]
    assert live == sorted(live, reverse=True) and live[-1] > fits >= plan["retention"]["liveBytes"]
    ok("prune", root, *rules, "--now", NOW, "--yes")
    assert ref_names(root) == ["app:7", "app:8"]
    assert sum(p.stat().st_size for p in (root / "blobs").rglob("*") if p.is_file()) == fits
    assert_whole(root, newest)
    assert_settled(root, NOW, *rules)


def test_keep_within_is_inclusive_at_the_boundary(tmp_path: Path) -> None:
    root, _images, _ = app_layout(tmp_path / "L")
    # app:6 was pushed exactly 3 days before NOW
    ok("prune", root, "--keep-within", "3d", "--now", NOW, "--yes")
    assert ref_names(root) == ["app:6", "app:7", "app:8"]
    assert_settled(root, NOW, "--keep-within", "3d")


@pytest.mark.parametrize("now", ["2024-05-09T00:00:00Z", "2024-05-09T02:00:00+02:00",
                                 "2024-05-08T19:00:00.000-05:00", "2024-05-09t00:00:00z"])
def test_now_is_rfc3339_in_any_zone(tmp_path: Path, now: str) -> None:
    root, _, _ = app_layout(tmp_path / "L")
    doc = orjson.loads(ok("plan", "prune", root, "--keep-within", "3d", "--now", now,
                          "--format", "json").stdout)
    assert doc["retention"]["now"] == NOW_S
    assert sorted(doc["targets"]) == [f"app:{i}" for i in range(1, 6)]


# --- the plan's forms -------------------------------------------------------------------------


def test_dry_run_shows_the_decisions_and_changes_nothing(tmp_path: Path) -> None:
    root, _images, _ = app_layout(tmp_path / "L")
    before = snapshot(root)
    r = ok("prune", root, "--keep-last", "3", "--now", NOW, "--dry-run")
    assert snapshot(root) == before
    assert r.stdout.splitlines()[0].startswith("prune plan (policy default): 15 blob(s)")
    assert "retention at 2024-05-09T00:00:00Z (--keep-last 3): 5 tag(s) expired, 3 kept" in r.stdout
    assert r.stdout.rstrip().endswith("dry run: nothing was changed")
    assert len(decisions_in_text(r.stdout)) == 8
    quiet = ok("prune", root, "--keep-last", "3", "--now", NOW, "--dry-run", "-q")
    assert decisions_in_text(quiet.stdout) == {}
    assert "5 tag(s) expired, 3 kept" in quiet.stdout


def test_without_yes_on_a_pipe_prune_refuses_and_changes_nothing(tmp_path: Path) -> None:
    root, _, _ = app_layout(tmp_path / "L")
    before = snapshot(root)
    one_line_error(run("prune", root, "--keep-last", "3", "--now", NOW), 2, "--yes")
    assert snapshot(root) == before


def test_json_plan_has_operation_prune_and_a_retention_block_and_round_trips(
        tmp_path: Path) -> None:
    root, images, _ = app_layout(tmp_path / "L")
    out = ok("prune", root, "--keep-last", "3", "--keep-within", "1d", "--now", NOW,
             "--dry-run", "--format", "json").stdout
    doc = orjson.loads(out)
    assert doc["ocigraphPlan"] == 1 and doc["operation"] == "prune"
    ret = doc["retention"]
    assert ret["now"] == NOW_S
    assert ret["rules"]["keepLast"] == 3 and ret["rules"]["keepWithin"] == DAY
    assert ret["rules"]["ageFrom"] == "push" and ret["rules"]["maxSize"] is None
    d = decisions_in_json(doc)
    assert set(d) == set(images)
    for name, img in images.items():
        assert d[name]["digest"] == img.digest and d[name]["repository"] == "app"
        assert d[name]["pushTime"] == T0 + (int(name.split(":")[1]) - 1) * DAY
    assert sorted(doc["targets"]) == [f"app:{i}" for i in range(1, 6)]
    base = images["app:1"].layers[0]
    assert {x["digest"] for x in doc["deletions"]} == set().union(
        *(images[f"app:{i}"].blobs for i in range(1, 6))) - {base}
    plan = og.Plan.from_json(out.encode())
    assert plan.operation == "prune" and plan.retention is not None
    assert plan.retention.now == NOW_S and plan.retention.rules.keep_last == 3
    assert len(plan.retention.expired()) == 5
    assert orjson.loads(plan.to_json()) == doc
    assert og.Plan.from_json(plan.to_json()) == plan
    # plan prune prints the same plan
    same = orjson.loads(ok("plan", "prune", root, "--keep-last", "3", "--keep-within", "1d",
                           "--now", NOW, "--format", "json").stdout)
    assert {k: v for k, v in same.items() if k != "snapshotTime"} == {
        k: v for k, v in doc.items() if k != "snapshotTime"}


def test_yes_with_json_reports_the_plan_with_its_retention_and_what_was_done(
        tmp_path: Path) -> None:
    root, _images, _ = app_layout(tmp_path / "L")
    doc = orjson.loads(ok("prune", root, "--keep-last", "3", "--now", NOW, "--yes", "--format",
                          "json").stdout)
    assert doc["plan"]["operation"] == "prune"
    assert len(doc["plan"]["retention"]["decisions"]) == 8
    assert sorted(doc["result"]["deleted"]) == sorted(x["digest"] for x in doc["plan"]["deletions"])
    assert not set(doc["result"]["deleted"]) & blob_set(root)


def test_plan_prune_to_a_file_then_apply(tmp_path: Path) -> None:
    root, _images, _ = app_layout(tmp_path / "L")
    twin = tmp_path / "twin"
    shutil.copytree(root, twin)
    plan_file = tmp_path / "plan.json"
    before = snapshot(root)
    r = ok("plan", "prune", root, "--keep-last", "3", "--now", NOW, "-o", plan_file)
    assert snapshot(root) == before  # planning changes nothing
    assert "plan written to" in r.stdout and len(decisions_in_text(r.stdout)) == 8
    saved = og.Plan.from_json(plan_file.read_bytes())
    assert saved.operation == "prune" and saved.retention is not None
    ok("apply", root, plan_file)
    ok("prune", twin, "--keep-last", "3", "--now", NOW, "--yes")
    assert ref_names(root) == ref_names(twin) == ["app:6", "app:7", "app:8"]
    assert blob_set(root) == blob_set(twin)
    assert_settled(root, NOW, "--keep-last", "3")


def test_apply_refuses_a_stale_prune_plan(tmp_path: Path) -> None:
    root, _, _ = app_layout(tmp_path / "L")
    plan_file = tmp_path / "plan.json"
    ok("plan", "prune", root, "--keep-last", "3", "--now", NOW, "-o", plan_file)
    ok("untag", root, "app:8")  # index.json changes after the plan was made
    before = snapshot(root)
    one_line_error(run("apply", root, plan_file), 1, "stale plan")
    assert snapshot(root) == before


def test_apply_refuses_a_prune_plan_edited_to_delete_what_its_rules_keep(tmp_path: Path) -> None:
    root, _images, _ = app_layout(tmp_path / "L")
    plan_file = tmp_path / "plan.json"
    ok("plan", "prune", root, "--keep-last", "3", "--now", NOW, "-o", plan_file)
    doc = orjson.loads(plan_file.read_bytes())
    doc["retention"]["rules"]["keepLast"] = 7  # the saved deletions now go beyond the rules
    plan_file.write_bytes(orjson.dumps(doc))
    before = snapshot(root)
    one_line_error(run("apply", root, plan_file), 1)
    assert snapshot(root) == before


def test_an_ecr_lifecycle_policy_end_to_end(tmp_path: Path) -> None:
    names = ["app:v1", "app:v2", *(f"app:{i}" for i in range(3, 9))]
    root, images, _ = app_layout(tmp_path / "L", names)
    policy = tmp_path / "lifecycle.json"
    policy.write_bytes(orjson.dumps({"rules": [
        {"rulePriority": 1, "description": "one v image",
         "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"],
                       "countType": "imageCountMoreThan", "countNumber": 1},
         "action": {"type": "expire"}},
        {"rulePriority": 2,
         "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days",
                       "countNumber": 3},
         "action": {"type": "expire"}},
    ]}))
    plan_file = tmp_path / "plan.json"
    ok("plan", "prune", root, "--policy-file", policy, "--now", NOW, "-o", plan_file)
    d = decisions_in_json(orjson.loads(plan_file.read_bytes()))
    # rule 1 expires app:v1 and protects app:v2 from rule 2; rule 2 expires what is more than
    # 3 days old (app:6 is exactly 3 days old: kept)
    assert {t for t, x in d.items() if x["verdict"] == "expired"} == {
        "app:v1", "app:3", "app:4", "app:5"}
    assert {x["rule"] for x in d.values()} == {"lifecycle"}
    ok("apply", root, plan_file)
    assert ref_names(root) == ["app:v2", "app:6", "app:7", "app:8"]
    assert_whole(root, [images[n] for n in ("app:v2", "app:6", "app:7", "app:8")])
    assert_settled(root, NOW, "--policy-file", str(policy))


# --- --age-from created -----------------------------------------------------------------------


def test_age_from_created_orders_by_the_images_own_dates(tmp_path: Path) -> None:
    s = Store()
    base = s.blob(b"base\n")
    # pushed (mtime) in the order a, b, c, d; created in the order d, c, a, b
    a = s.image("a", pushed=T0 + 0 * DAY, shared=[base],
                annotations={CREATED: "2024-04-03T00:00:00Z"})
    b = s.image("b", pushed=T0 + 1 * DAY, shared=[base], config_created="2024-04-04T00:00:00Z")
    c = s.image("c", pushed=T0 + 2 * DAY, shared=[base],
                annotations={CREATED: "2024-04-02T00:00:00+00:00"},
                config_created="2024-04-30T00:00:00Z")  # the annotation wins
    d = s.image("d", pushed=T0 + 3 * DAY, shared=[base],
                annotations={CREATED: "yesterday"}, config_created="2024-04-01T12:00:00Z")
    for img, name in ((a, "app:a"), (b, "app:b"), (c, "app:c"), (d, "app:d")):
        s.tag(img, name)
    root = s.write(tmp_path / "L")

    by_push = orjson.loads(ok("prune", root, "--keep-last", "2", "--now", NOW, "--dry-run",
                              "--format", "json").stdout)
    assert sorted(by_push["targets"]) == ["app:a", "app:b"]
    by_created = orjson.loads(ok("prune", root, "--keep-last", "2", "--age-from", "created",
                                 "--now", NOW, "--dry-run", "--format", "json").stdout)
    assert sorted(by_created["targets"]) == ["app:c", "app:d"]
    assert by_created["retention"]["rules"]["ageFrom"] == "created"
    times = {t: x["pushTime"] for t, x in decisions_in_json(by_created).items()}
    assert times == {
        "app:a": datetime(2024, 4, 3, tzinfo=UTC).timestamp(),
        "app:b": datetime(2024, 4, 4, tzinfo=UTC).timestamp(),
        "app:c": datetime(2024, 4, 2, tzinfo=UTC).timestamp(),
        "app:d": datetime(2024, 4, 1, 12, tzinfo=UTC).timestamp(),  # bad annotation: the config
    }
    ranks = {t: x["rank"] for t, x in decisions_in_json(by_created).items()}
    assert ranks == {"app:b": 1, "app:a": 2, "app:c": 3, "app:d": 4}

    plan_file = tmp_path / "plan.json"
    ok("plan", "prune", root, "--keep-last", "2", "--age-from", "created", "--now", NOW,
       "-o", plan_file)
    ok("apply", root, plan_file)  # apply re-plans with the same source of dates
    assert ref_names(root) == ["app:a", "app:b"]
    assert_whole(root, [a, b])
    assert_settled(root, NOW, "--keep-last", "2", "--age-from", "created")


# --- usage errors: exit 2, one line, nothing changed ------------------------------------------


def _policy(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"rules": list(rules)}


_EXPIRE = {"type": "expire"}
_COUNT = {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan",
          "countNumber": 1}

BAD_POLICIES = {
    "two rules with one priority": (_policy(
        {"rulePriority": 1, "selection": _COUNT, "action": _EXPIRE},
        {"rulePriority": 1, "selection": {**_COUNT, "tagPrefixList": ["w"]}, "action": _EXPIRE},
    ), "rules[1]"),
    "any not last": (_policy(
        {"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                                          "countNumber": 1}, "action": _EXPIRE},
        {"rulePriority": 2, "selection": _COUNT, "action": _EXPIRE},
    ), "rules[0]"),
    "no action": (_policy({"rulePriority": 1, "selection": _COUNT}), "rules[0]"),
    "unknown field": (_policy(
        {"rulePriority": 1, "selection": _COUNT, "action": _EXPIRE},
        {"rulePriority": 2, "selection": {**_COUNT, "tagPrefixList": ["w"]}, "action": _EXPIRE,
         "colour": "red"},
    ), "rules[1]"),
    "hours": (_policy(
        {"rulePriority": 5, "selection": {"tagStatus": "any", "countType": "sinceImagePushed",
                                          "countUnit": "hours", "countNumber": 1},
         "action": _EXPIRE},
    ), "rules[0]"),
}


@pytest.mark.parametrize("args,mention", [
    pytest.param([], "no keep rule", id="no-rule"),
    pytest.param(["--only", "app:*"], "no keep rule", id="only-is-no-rule"),
    pytest.param(["--keep-within", "3x"], "--keep-within", id="bad-duration-unit"),
    pytest.param(["--keep-within", "30M"], "--keep-within", id="uppercase-duration"),
    pytest.param(["--keep-within", "-1d"], "--keep-within", id="negative-duration"),
    pytest.param(["--max-size", "10Q"], "--max-size", id="bad-size-unit"),
    pytest.param(["--max-size", "lots"], "--max-size", id="bad-size"),
    pytest.param(["--keep-last", "0"], "--keep-last", id="keep-last-0"),
    pytest.param(["--keep-last", "3", "--now", "2024-05-09T00:00:00"], "--now", id="now-no-zone"),
])
def test_bad_rules_exit_2_with_one_line_and_change_nothing(tmp_path: Path, args: list[str],
                                                           mention: str) -> None:
    root, _, _ = app_layout(tmp_path / "L")
    before = snapshot(root)
    one_line_error(run("prune", root, *args, "--yes"), 2, mention)
    one_line_error(run("plan", "prune", root, *args, "-o", tmp_path / "plan.json"), 2, mention)
    assert snapshot(root) == before
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize("name", sorted(BAD_POLICIES))
def test_an_invalid_lifecycle_policy_names_the_rule_and_changes_nothing(tmp_path: Path,
                                                                        name: str) -> None:
    document, where = BAD_POLICIES[name]
    root, _, _ = app_layout(tmp_path / "L")
    policy = tmp_path / "lifecycle.json"
    policy.write_bytes(orjson.dumps(document))
    before = snapshot(root)
    line = one_line_error(run("prune", root, "--policy-file", policy, "--yes"), 2,
                          "lifecycle policy", where)
    assert "rulePriority" in line
    one_line_error(run("plan", "prune", root, "--policy-file", policy), 2, where)
    assert snapshot(root) == before


def test_a_policy_file_that_is_not_json_or_not_there_is_a_usage_error(tmp_path: Path) -> None:
    root, _, _ = app_layout(tmp_path / "L")
    before = snapshot(root)
    (tmp_path / "p.json").write_text("rules: [expire everything]\n")
    one_line_error(run("prune", root, "--policy-file", tmp_path / "p.json", "--yes"), 2,
                   "not JSON")
    one_line_error(run("prune", root, "--policy-file", tmp_path / "absent.json", "--yes"), 2,
                   "absent.json")
    assert snapshot(root) == before


@pytest.mark.parametrize("flag", [["--keep-last", "2"], ["--keep-within", "1d"],
                                  ["--keep-tag", "v*"]])
def test_a_policy_file_mixed_with_a_keep_flag_is_a_usage_error(tmp_path: Path,
                                                               flag: list[str]) -> None:
    root, _, _ = app_layout(tmp_path / "L")
    policy = tmp_path / "lifecycle.json"
    policy.write_bytes(orjson.dumps(_policy({"rulePriority": 1, "selection": _COUNT,
                                             "action": _EXPIRE})))
    before = snapshot(root)
    one_line_error(run("prune", root, "--policy-file", policy, *flag, "--yes"), 2,
                   "--policy-file", flag[0])
    assert snapshot(root) == before


def test_a_policy_file_combines_with_a_budget_and_only(tmp_path: Path) -> None:
    root, _, _ = app_layout(tmp_path / "L")
    policy = tmp_path / "lifecycle.json"
    policy.write_bytes(orjson.dumps(_policy({"rulePriority": 1, "selection": {
        "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 6},
        "action": _EXPIRE})))
    doc = orjson.loads(ok("prune", root, "--policy-file", policy, "--only", "app:[1-7]",
                          "--max-size", "10G", "--now", NOW, "--dry-run", "--format",
                          "json").stdout)
    d = decisions_in_json(doc)
    assert d["app:8"]["rule"] == "outside-only" and d["app:8"]["verdict"] == "kept"
    assert sorted(doc["targets"]) == ["app:1"]  # seven judged, six kept
    assert doc["retention"]["overBudget"] == 0


# --- the cache follows a prune ----------------------------------------------------------------


def test_a_stored_layout_stays_true_after_a_prune(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """After ``prune --yes`` on a layout whose graph is stored (io_adapters.store), the store
    follows the prune's drops and untags: plans made from it are the plans made by reading."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("OCIGRAPH_CACHE_DIR", str(cache))
    monkeypatch.delenv("OCIGRAPH_NO_CACHE", raising=False)
    monkeypatch.setattr(planner, "_MIN_BLOBS", 0)  # store a small layout, and at once
    monkeypatch.setattr(snap, "SETTLE_NS", 0)
    s = Store()
    base = s.blob(b"base\n")
    imgs = [s.image(f"app:{i}", pushed=T0 + i * DAY, shared=[base]) for i in range(1, 6)]
    for i, img in enumerate(imgs[:4], 1):
        s.tag(img, f"app:{i}")
    s.tag(imgs[3], "app:four")  # an expired image with a second tag, also expired
    s.tag(imgs[1], "app:two-kept")  # an expired tag on an image another tag keeps
    multi = s.index("multi", [imgs[0], imgs[4]], pushed=T0 + 9 * DAY)
    s.tag(multi, "app:multi")  # the newest: it keeps app:1's image live, untagged
    root = s.write(tmp_path / "L")
    ok("plan", "gc", root)
    assert store.store_file_for(root, cache).exists()  # type: ignore[union-attr]

    r = ok("prune", root, "--keep-last", "1", "--keep-tag", "two-kept", "--now", NOW, "--yes",
           "--format", "json")
    changes = {(c["tag"], c["action"]) for c in orjson.loads(r.stdout)["plan"]["indexChanges"]}
    assert ("app:1", "untag") in changes and ("app:2", "drop") in changes
    assert ref_names(root) == [None, "app:two-kept", "app:multi"]
    held = store.open_store(LayoutDir(root), cache)  # the store followed: it is current
    assert held is not None
    held.close()
    assert planner.plan_layout(root, "delete", ["app:two-kept"], og.Policy()).how == "stored"

    def both(*args: str | Path) -> list[Any]:
        """What the command answers from the store, and what it answers reading the layout."""
        out: list[Any] = []
        for no_cache in ("0", "1"):
            monkeypatch.setenv("OCIGRAPH_NO_CACHE", no_cache)
            r = run(*args, "--format", "json")
            if r.exit_code:
                out.append((r.exit_code, r.stderr))
                continue
            doc = orjson.loads(r.stdout)
            doc.pop("snapshotTime", None)
            out.append(doc)
        monkeypatch.delenv("OCIGRAPH_NO_CACHE")
        return out

    for args in (("gc", root, "--dry-run"), ("plan", "delete", root, "app:two-kept"),
                 ("plan", "remove", root, "app:multi"),
                 ("plan", "delete", root, imgs[0].digest),  # the guard: app:multi lists it
                 ("plan", "delete", root, imgs[0].digest, "--force")):
        stored, read = both(*args)
        assert stored == read, args
    gc = both("gc", root, "--dry-run")[0]
    assert gc["deletions"] == [] and gc["indexChanges"] == []
    assert_whole(root, [imgs[0], imgs[1], imgs[4]])
    ok("fsck", root)


# --- untagged entries -------------------------------------------------------------------------


def _untag_first(root: Path, n: int) -> None:
    doc = orjson.loads((root / "index.json").read_bytes())
    for entry in doc["manifests"][:n]:
        del entry["annotations"]
    (root / "index.json").write_bytes(orjson.dumps(doc))


def test_untagged_entries_are_garbage_by_default_and_the_plan_says_so(tmp_path: Path) -> None:
    root, _images, _ = app_layout(tmp_path / "L")
    _untag_first(root, 4)  # app:1-app:4 are untagged entries now
    r = ok("prune", root, "--keep-last", "2", "--now", NOW, "--yes")
    assert "4 untagged index.json entries are garbage under policy default" in r.stdout
    assert ref_names(root) == ["app:7", "app:8"]
    assert_settled(root, NOW, "--keep-last", "2")


def test_an_ecr_untagged_rule_judges_untagged_entries_under_keep_untagged(tmp_path: Path) -> None:
    root, images, _ = app_layout(tmp_path / "L")
    _untag_first(root, 4)
    policy = tmp_path / "lifecycle.json"
    policy.write_bytes(orjson.dumps(_policy({"rulePriority": 1, "selection": {
        "tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
        "action": _EXPIRE})))
    rules = ("--policy-file", str(policy), "--keep-untagged")
    plan_file = tmp_path / "plan.json"
    r = ok("plan", "prune", root, *rules, "--now", NOW, "-o", plan_file)
    shown = [m.groups() for m in map(_DECISION.match, r.stdout.splitlines()) if m]
    assert sorted(g[0] for g in shown if g[1] == "(untagged)") == ["expired"] * 3 + ["kept"]
    doc = orjson.loads(plan_file.read_bytes())
    untagged = {x["digest"]: x for x in doc["retention"]["decisions"] if x["tag"] is None}
    assert set(untagged) == {images[f"app:{i}"].digest for i in range(1, 5)}
    # the newest untagged image stays; the three before it expire (their digests are targets)
    assert untagged.pop(images["app:4"].digest)["verdict"] == "kept"
    assert sorted(doc["targets"]) == sorted(untagged)
    ok("apply", root, plan_file)
    assert ref_names(root) == [None, "app:5", "app:6", "app:7", "app:8"]
    assert_whole(root, [images[f"app:{i}"] for i in range(4, 9)])
    for i in range(1, 4):
        assert not blob_file(root, images[f"app:{i}"].digest).exists()
    ok("fsck", root)
    again = orjson.loads(ok("prune", root, *rules, "--now", NOW, "--dry-run", "--format",
                            "json").stdout)
    assert again["deletions"] == [] and again["indexChanges"] == []


# --- damaged layouts --------------------------------------------------------------------------


def test_an_expired_image_may_be_damaged_a_kept_one_may_not(tmp_path: Path) -> None:
    root, images, _ = app_layout(tmp_path / "L")
    broken = blob_file(root, images["app:1"].digest)  # truncated, its push time unchanged
    broken.write_bytes(broken.read_bytes()[:40])
    os.utime(broken, (T0, T0))
    blob_file(root, images["app:2"].digest).unlink()  # absent: no push time, the oldest
    damaged = tmp_path / "damaged"
    shutil.copytree(root, damaged)

    r = ok("prune", root, "--keep-last", "3", "--now", NOW, "--dry-run")
    seen = decisions_in_text(r.stdout)
    assert seen["app:2"][2:] == ("unknown", 8, "unkept")
    assert seen["app:1"][2:] == (rfc3339(T0), 7, "unkept")
    plan = orjson.loads(ok("prune", root, "--keep-last", "3", "--now", NOW, "--dry-run",
                           "--format", "json").stdout)
    assert decisions_in_json(plan)["app:2"]["pushTime"] is None
    ok("prune", root, "--keep-last", "3", "--now", NOW, "--yes")
    assert ref_names(root) == ["app:6", "app:7", "app:8"]
    assert_whole(root, [images[f"app:{i}"] for i in (6, 7, 8)])
    assert_settled(root, NOW, "--keep-last", "3")

    # kept by --keep-last 8, the damaged manifest stops the plan: nothing can be judged below it
    before = snapshot(damaged)
    one_line_error(run("prune", damaged, "--keep-last", "8", "--now", NOW, "--yes"), 1,
                   images["app:1"].digest)
    assert snapshot(damaged) == before


# --- registries -------------------------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", [("prune", "--yes"), ("plan", "prune")])
def test_prune_on_an_unreachable_registry_is_one_line_naming_the_host(
        command: tuple[str, str]) -> None:
    port = _closed_port()
    verb = [c for c in command if c != "--yes"]
    r = run(*verb, f"docker://127.0.0.1:{port}/app", "--keep-last", "1",
            *(["--yes"] if "--yes" in command else []))
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, (r.exit_code, r.stderr)
    assert f"127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


def test_age_from_push_on_a_registry_says_the_registry_does_not_expose_it() -> None:
    for command in (["prune"], ["plan", "prune"]):
        r = run(*command, f"docker://127.0.0.1:{_closed_port()}/app", "--keep-last", "1",
                "--age-from", "push", *(["--yes"] if command == ["prune"] else []))
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, (r.exit_code, r.stderr)
        assert "push time is not exposed by the registry API" in r.stderr
        assert "--age-from created" in r.stderr and "unreachable" not in r.stderr


def test_age_from_defaults_to_push_on_a_layout(tmp_path: Path) -> None:
    root, _, _ = app_layout(tmp_path / "L")
    plan = orjson.loads(ok("plan", "prune", root, "--keep-last", "1", "--now", NOW,
                           "--format", "json").stdout)
    created = orjson.loads(ok("plan", "prune", root, "--keep-last", "1", "--now", NOW,
                              "--age-from", "created", "--format", "json").stdout)
    assert plan["retention"]["rules"]["ageFrom"] == "push"
    assert created["retention"]["rules"]["ageFrom"] == "created"
