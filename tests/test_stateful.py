"""A Hypothesis state machine: the ``ocigraph`` command line on a real layout against an
independent model of SEMANTICS.md (tests/semantics_model.py).

Each rule changes a temporary layout -- by writing files as a registry client would (push an
image, an index, a referrer, an index.json entry, a tag), or by running ``ocigraph`` (delete,
remove, untag, gc, plan + apply) -- and asks the model what must happen.  The model shares no
code with ``ocigraph``'s planning, so a wrong GC rule shows up here as well as a shell bug.

After every command the test checks the answer itself: a refusal (unknown or ambiguous ref,
the guard) is exit status 1, one error line naming what is at fault, and an untouched layout;
anything else is exit status 0 with a plan that deletes exactly the model's nodes,
predecessors first, and makes exactly the model's index.json changes.  After every step:

* the blob files on disk are exactly the model's blobs;
* index.json's entries (digest, media type, size, tag, in order) are exactly the model's;
* every blob live in the model (SEMANTICS §2, default policy) is on disk;
* ``ocigraph fsck`` agrees: exit 0 when nothing reachable from index.json is missing; else
  exit 1 naming exactly the missing blobs.  Under the default policy an untagged entry is not a
  root, so deleting what only an untagged index lists is allowed and leaves that entry
  dangling until the next gc (docs/cli.md, fsck) -- the model predicts those blobs.

The test drives the product only through the command line (click's CliRunner on
``io_adapters.cli.cli``); it writes files itself, with its own small pusher.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from semantics_model import (
    OCI_INDEX,
    OCI_MANIFEST,
    Entry,
    LayoutModel,
    Outcome,
    Refused,
)

from io_adapters.cli import cli

CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
EMPTY = "application/vnd.oci.empty.v1+json"
REFERRER_TYPES = {"signature": "application/vnd.example.signature",
                  "sbom": "application/spdx+json"}
TAGS = ("latest", "v1", "v2", "stable", "dev")
UNKNOWN_TAG = "no-such-tag"
LAYER_POOL = tuple(f"layer {i}".encode() for i in range(6))
CONFIG_POOL = tuple(f'{{"config":{i}}}'.encode() for i in range(3))
EMPTY_CONFIG = b"{}"


def descriptor(media_type: str, data: bytes, digest: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def short(name: str) -> str:
    return name[:19] if name.startswith("sha256:") else name


class LayoutMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ocigraph-stateful-"))
        self.root = self.tmp / "layout"
        (self.root / "blobs" / "sha256").mkdir(parents=True)
        (self.root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
        (self.root / "index.json").write_bytes(
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode())
        self.model = LayoutModel()
        self.pushed: list[str] = []  # manifests in the order they were (last) pushed
        # no child left behind to store the graph: the layouts here are small anyway
        self.runner = CliRunner(env={"OCIGRAPH_NO_DETACH": "1"})

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the pusher: what a registry client does, to the disk and to the model ------------------

    def write_file(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(".push-" + path.name)
        tmp.write_bytes(data)
        os.replace(tmp, path)  # the file appears whole

    def write_blob(self, data: bytes) -> str:
        digest = self.model.add_blob(data)
        self.write_file(self.root / "blobs" / "sha256" / digest.removeprefix("sha256:"), data)
        return digest

    def write_manifest(self, doc: dict[str, Any]) -> dict[str, Any]:
        digest, data = self.model.add_manifest(doc)
        self.pushed = [d for d in self.pushed if d != digest] + [digest]
        self.write_file(self.root / "blobs" / "sha256" / digest.removeprefix("sha256:"), data)
        return descriptor(doc["mediaType"], data, digest)

    def write_entry(self, entry: Entry) -> None:
        """Append to index.json on disk (keeping what is there) and to the model."""
        doc = json.loads((self.root / "index.json").read_bytes())
        doc["manifests"].append(entry.as_json())
        self.write_file(self.root / "index.json", json.dumps(doc).encode())
        self.model.add_entry(entry)

    def entry_for(self, digest: str, tag: str | None) -> Entry:
        data = self.model.blobs[digest]
        artifact_type = json.loads(data).get("artifactType")  # oras copies it into the entry
        return Entry(digest, self.model.manifests[digest].media_type, len(data), tag, artifact_type)

    def present_manifests(self) -> list[str]:
        return sorted(d for d in self.model.manifests if d in self.model.blobs)

    def stays_sound_if_tagged(self, digest: str) -> bool:
        """A client tags only what it has whole: every blob the tag would make live is present.
        (Under the default policy a delete may leave an untagged entry dangling; tagging it
        would make a missing blob live, which no registry or ``oras tag`` allows.)"""
        roots = self.model.tagged_roots() | {digest}
        return self.model.live(roots) <= set(self.model.blobs)

    def has_manifests(self) -> bool:
        return bool(self.present_manifests())

    def draw_manifest(self, data: st.DataObject, label: str) -> str:
        """A present manifest, half the time one of the two pushed last: stories such as
        "sign the image, sign the signature, list both in an index" need consecutive steps to
        build on each other, which uniform draws from a growing layout make rare."""
        recent = [d for d in reversed(self.pushed) if d in self.model.blobs][:2]
        if data.draw(st.booleans(), label=f"{label}: one of the last two pushed"):
            return data.draw(st.sampled_from(recent), label=label)
        return data.draw(st.sampled_from(self.present_manifests()), label=label)

    # -- pushing: the pieces ------------------------------------------------------------------

    def push_image_manifest(self, data: st.DataObject) -> str:
        """Config and layers from small shared pools (images share blobs), then the manifest."""
        config = data.draw(st.sampled_from(CONFIG_POOL), label="config")
        layers = data.draw(st.lists(st.sampled_from(LAYER_POOL), min_size=1, max_size=3,
                                    unique=True), label="layers")
        desc = self.write_manifest({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": descriptor(CONFIG, config, self.write_blob(config)),
            "layers": [descriptor(LAYER, layer, self.write_blob(layer)) for layer in layers]})
        note(f"  image {short(desc['digest'])}: {len(layers)} layer(s)")
        return str(desc["digest"])

    def push_index_manifest(self, children: list[str]) -> str:
        desc = self.write_manifest({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [descriptor(self.model.manifests[c].media_type, self.model.blobs[c], c)
                          for c in children]})
        note(f"  index {short(desc['digest'])} of {[short(c) for c in children]}")
        return str(desc["digest"])

    def push_referrer_manifest(self, data: st.DataObject, subject: str) -> str:
        """A signature or SBOM whose subject is any manifest (an image, an index, a referrer)."""
        kind = data.draw(st.sampled_from(sorted(REFERRER_TYPES)), label="kind")
        serial = data.draw(st.integers(0, 1), label="serial")  # 2 distinct, so re-pushes happen
        payload = f"{kind} {serial} of {subject}".encode()
        desc = self.write_manifest({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": REFERRER_TYPES[kind],
            "config": descriptor(EMPTY, EMPTY_CONFIG, self.write_blob(EMPTY_CONFIG)),
            "layers": [descriptor(REFERRER_TYPES[kind], payload, self.write_blob(payload))],
            "subject": descriptor(self.model.manifests[subject].media_type,
                                  self.model.blobs[subject], subject)})
        note(f"  {kind} {short(desc['digest'])} of {short(subject)}")
        return str(desc["digest"])

    def list_in_index(self, data: st.DataObject, digest: str) -> None:
        """Nowhere (a platform manifest, a referrer found through its subject), untagged (as
        oras records every push), or tagged -- unless the tag would make a missing blob live."""
        listed = data.draw(st.sampled_from(("nowhere", "untagged", *TAGS)), label="listed")
        if listed in TAGS and not self.stays_sound_if_tagged(digest):
            listed = "untagged"  # the same content was pushed before and lost a blob since
        if listed != "nowhere":
            self.write_entry(self.entry_for(digest, None if listed == "untagged" else listed))
        note(f"  listed {listed}")

    # -- pushing rules ----------------------------------------------------------------------

    @rule(data=st.data())
    def push_image(self, data: st.DataObject) -> None:
        note("push image")
        self.list_in_index(data, self.push_image_manifest(data))

    @precondition(has_manifests)
    @rule(data=st.data())
    def push_index(self, data: st.DataObject) -> None:
        note("push index")
        count = data.draw(st.integers(1, 2), label="children")
        children = sorted({self.draw_manifest(data, "child") for _ in range(count)})
        self.list_in_index(data, self.push_index_manifest(children))

    @precondition(has_manifests)
    @rule(data=st.data())
    def attach_referrer(self, data: st.DataObject) -> None:
        note("attach referrer")
        self.list_in_index(data, self.push_referrer_manifest(data, self.draw_manifest(data, "subject")))

    @rule(data=st.data())
    def push_signed_multi_platform_image(self, data: st.DataObject) -> None:
        """What a build pipeline pushes in one go: platform images (listed nowhere), referrers
        of them, of the index or of each other, and an index over the images that sometimes
        lists a referrer too (the shapes SEMANTICS §3 and docs/semantics.md discuss)."""
        note("push signed multi-platform image")
        images = sorted({self.push_image_manifest(data)
                         for _ in range(data.draw(st.integers(1, 2), label="platforms"))})
        referrers: list[str] = []
        for _ in range(data.draw(st.integers(0, 2), label="referrers of images")):
            subject = data.draw(st.sampled_from(images + referrers), label="subject")
            referrers.append(self.push_referrer_manifest(data, subject))
        listed = data.draw(st.lists(st.sampled_from(referrers), max_size=1), label="index lists") \
            if referrers else []
        index = self.push_index_manifest(sorted(set(images + listed)))
        for _ in range(data.draw(st.integers(0, 1), label="referrers of the index")):
            self.push_referrer_manifest(data, index)
        self.list_in_index(data, index)

    @precondition(has_manifests)
    @rule(data=st.data())
    def tag(self, data: st.DataObject) -> None:
        """Tag a present manifest (a new tagged entry, as ``oras tag``); a tag already on another
        digest becomes ambiguous, which every later command naming it must refuse."""
        candidates = [d for d in self.present_manifests() if self.stays_sound_if_tagged(d)]
        if not candidates:
            return
        digest = data.draw(st.sampled_from(candidates), label="digest")
        tag = data.draw(st.sampled_from(TAGS), label="tag")
        self.write_entry(self.entry_for(digest, tag))
        note(f"tag {short(digest)} as {tag}")

    @precondition(has_manifests)
    @rule(data=st.data())
    def list_untagged(self, data: st.DataObject) -> None:
        """An untagged index.json entry for a manifest already pushed, as oras records every
        manifest it pushes."""
        digest = self.draw_manifest(data, "digest")
        self.write_entry(self.entry_for(digest, None))
        note(f"list {short(digest)} untagged")

    # -- running ocigraph -------------------------------------------------------------------

    def ocigraph(self, *args: str) -> Result:
        return self.runner.invoke(cli, list(args), catch_exceptions=False)

    def snapshot(self) -> tuple[bytes, frozenset[str]]:
        return ((self.root / "index.json").read_bytes(),
                frozenset(os.listdir(self.root / "blobs" / "sha256")))

    def check_refused(self, result: Result, refused: Refused,
                      before: tuple[bytes, frozenset[str]]) -> None:
        event(f"refused: {refused.kind}")
        assert result.exit_code == 1, (
            f"the model refuses ({refused}) but ocigraph exited {result.exit_code}:\n{result.output}")
        message = result.stderr.strip()
        assert message.startswith("ocigraph: error:") and "\n" not in message, message
        shown = [name for name in refused.names if short(name) in message]
        if refused.kind == "ambiguous":
            assert shown == refused.names, f"{message!r} should list {refused.names}"
        else:
            assert shown, f"{message!r} should name one of {refused.names}"
        assert self.snapshot() == before, "a refused command changed the layout"

    def check_plan(self, plan: dict[str, Any], outcome: Outcome, operation: str,
                   target: str | None) -> None:
        deletions = [d["digest"] for d in plan["deletions"]]
        assert len(deletions) == len(set(deletions)), "a node is planned twice"
        assert set(deletions) == outcome.deleted, (
            f"ocigraph deletes {sorted(map(short, set(deletions) - outcome.deleted))} more and "
            f"{sorted(map(short, outcome.deleted - set(deletions)))} less than the model")
        changes = {(c["position"], c["action"]) for c in plan["indexChanges"]}
        expected = ({(p, "drop") for p in outcome.dropped}
                    | {(p, "untag") for p in outcome.untagged})
        assert changes == expected, f"index.json changes {sorted(changes)} != {sorted(expected)}"
        # predecessors first, so that every blob reachable from index.json exists at any instant
        position = {d: i for i, d in enumerate(deletions)}
        for u, successors in self.model.edges().items():
            for v in successors:
                if u in position and v in position:
                    assert position[u] < position[v], f"{short(v)} deleted before {short(u)}"
        reasons = {d["digest"]: d["reason"] for d in plan["deletions"]}
        if operation == "gc":
            assert set(reasons.values()) <= {"unreachable"}, reasons
        if target is not None and target in reasons and operation == "delete":
            assert reasons[target] == "target"
        sizes = sum(len(self.model.blobs[d]) for d in outcome.deleted if d in self.model.blobs)
        assert plan["bytesFreed"] == sizes

    def check_applied(self, result: Result, outcome: Outcome, operation: str,
                      target: str | None = None) -> None:
        assert result.exit_code == 0, f"exit {result.exit_code}:\n{result.output}"
        report = json.loads(result.stdout)
        self.check_plan(report["plan"], outcome, operation, target)
        assert set(report["result"]["deleted"]) == outcome.deleted & set(self.model.blobs)
        self.model.apply(outcome)
        event(f"{operation}: {min(len(outcome.deleted), 4)}+ deleted, "
              f"{min(len(outcome.dropped) + len(outcome.untagged), 2)}+ entries changed")

    def run_and_check(self, operation: str, ref: str | None, args: list[str]) -> None:
        try:
            outcome = getattr(self.model, operation)(*([] if ref is None else [ref]))
        except Refused as refused:
            before = self.snapshot()
            result = self.ocigraph(*args)
            note(f"{operation} {ref}: exit {result.exit_code} {result.stderr.strip()}")
            self.check_refused(result, refused, before)
            return
        result = self.ocigraph(*args)
        note(f"{operation} {ref}: exit {result.exit_code}; model deletes "
             f"{sorted(map(short, outcome.deleted))}")
        self.check_applied(result, outcome, operation, None if ref is None else self.model.resolve(ref))

    def draw_ref(self, data: st.DataObject, operation: str) -> str:
        """A tag, a digest listed in index.json, a present manifest, any present blob (a layer
        or config, which the guard must hold while a live manifest uses it), a manifest deleted
        before (unknown once nothing references it), or an unknown tag."""
        m = self.model
        kinds = {
            "tag": sorted({e.tag for e in m.entries if e.tag is not None}),
            "listed digest": sorted({e.digest for e in m.entries}),
            "manifest": self.present_manifests(),
            "last pushed": [d for d in self.pushed[-1:] if d in m.blobs],
            "index": [d for d in self.present_manifests() if m.manifests[d].media_type == OCI_INDEX],
            "blob": sorted(m.blobs) if operation == "delete" else [],
            "gone manifest": sorted(set(m.manifests) - set(m.blobs)),
            "unknown tag": [UNKNOWN_TAG],
        }
        kind = data.draw(st.sampled_from([k for k, refs in kinds.items() if refs]), label="kind")
        return data.draw(st.sampled_from(kinds[kind]), label=kind)

    def tags(self) -> list[str]:
        return sorted({e.tag for e in self.model.entries if e.tag is not None} | {UNKNOWN_TAG})

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        ref = self.draw_ref(data, "delete")
        self.run_and_check("delete", ref, ["delete", str(self.root), ref, "--yes",
                                           "--format", "json"])

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        ref = self.draw_ref(data, "remove")
        self.run_and_check("remove", ref, ["remove", str(self.root), ref, "--yes",
                                           "--format", "json"])

    @rule(data=st.data())
    def untag(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(self.tags()), label="tag")
        self.run_and_check("untag", tag, ["untag", str(self.root), tag, "--format", "json"])

    @rule()
    def gc(self) -> None:
        self.run_and_check("gc", None, ["gc", str(self.root), "--yes", "--format", "json"])

    @rule(data=st.data())
    def plan_then_apply(self, data: st.DataObject) -> None:
        """``ocigraph plan OP ... -o plan.json`` then ``ocigraph apply``; sometimes index.json
        changes in between, and apply must refuse the stale plan and change nothing."""
        operation = data.draw(st.sampled_from(("delete", "gc", "remove")), label="operation")
        ref = None if operation == "gc" else self.draw_ref(data, operation)
        plan_file = self.tmp / "plan.json"
        plan_file.unlink(missing_ok=True)
        args = ["plan", operation, str(self.root), *([] if ref is None else [ref]),
                "-o", str(plan_file), "--format", "json"]
        try:
            outcome = getattr(self.model, operation)(*([] if ref is None else [ref]))
        except Refused as refused:
            before = self.snapshot()
            result = self.ocigraph(*args)
            note(f"plan {operation} {ref}: exit {result.exit_code} {result.stderr.strip()}")
            self.check_refused(result, refused, before)
            assert not plan_file.exists(), "a refused plan was written"
            return
        before = self.snapshot()
        result = self.ocigraph(*args)
        note(f"plan {operation} {ref}: exit {result.exit_code}")
        assert result.exit_code == 0, result.output
        assert self.snapshot() == before, "planning changed the layout"
        plan = json.loads(plan_file.read_bytes())
        assert plan == json.loads(result.stdout)
        self.check_plan(plan, outcome, operation, None if ref is None else self.model.resolve(ref))
        if self.has_manifests() and data.draw(st.booleans(), label="index.json changes first"):
            self.list_untagged(data)
            before = self.snapshot()
            result = self.ocigraph("apply", str(self.root), str(plan_file))
            note(f"apply stale plan: exit {result.exit_code} {result.stderr.strip()}")
            event("stale plan")
            assert result.exit_code == 1, result.output
            assert "stale" in result.stderr, result.stderr
            assert self.snapshot() == before, "a stale plan changed the layout"
            return
        result = self.ocigraph("apply", str(self.root), str(plan_file), "--format", "json")
        note(f"apply: exit {result.exit_code}")
        self.check_applied(result, outcome, operation)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def blob_files_are_the_models_blobs(self) -> None:
        on_disk = {"sha256:" + name for name in os.listdir(self.root / "blobs" / "sha256")}
        assert on_disk == set(self.model.blobs), (
            f"on disk only: {sorted(map(short, on_disk - set(self.model.blobs)))}; "
            f"in the model only: {sorted(map(short, set(self.model.blobs) - on_disk))}")
        assert os.listdir(self.root / "blobs") == ["sha256"]
        # nothing left behind by an index.json write; ``.ocigraph/`` is the tool's own folder
        # (its quarantine), which no reader of blobs/ or index.json looks at
        assert set(os.listdir(self.root)) - {".ocigraph"} == {"blobs", "index.json", "oci-layout"}, (
            f"stray files in the layout: {sorted(os.listdir(self.root))}")

    @invariant()
    def index_entries_are_the_models(self) -> None:
        doc = json.loads((self.root / "index.json").read_bytes())
        assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_INDEX
        on_disk = [(e["digest"], e["mediaType"], e["size"],
                    e.get("annotations", {}).get("org.opencontainers.image.ref.name"))
                   for e in doc["manifests"]]
        model = [(e.digest, e.media_type, e.size, e.tag) for e in self.model.entries]
        assert on_disk == model

    @invariant()
    def every_blob_live_in_the_model_is_on_disk(self) -> None:
        on_disk = {"sha256:" + name for name in os.listdir(self.root / "blobs" / "sha256")}
        assert self.model.live() <= on_disk

    @invariant()
    def fsck_finds_exactly_the_dangling_entries(self) -> None:
        missing = self.model.reachable_from_entries() - set(self.model.blobs)
        result = self.ocigraph("fsck", str(self.root), "--format", "json")
        report = json.loads(result.stdout)
        problems = {(p["kind"], p["where"]) for p in report["problems"]}
        assert problems == {("missing", d) for d in missing}, problems
        assert result.exit_code == (1 if missing else 0) and report["ok"] is not bool(missing)
        assert not missing & self.model.live(), "a live blob is missing"
        if missing:
            event("a dangling untagged entry")


LayoutMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("OCIGRAPH_STATEFUL_EXAMPLES", "60")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_cli_agrees_with_the_model = LayoutMachine.TestCase
