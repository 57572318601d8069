"""A Hypothesis state machine: the disk adapter and CLI against the pure model.

Every rule acts twice: on a real temporary layout (files written by a small pusher, then
``read_layout``/``apply_plan`` or the ``ocigraph`` CLI) and on the pure model (index.json bytes
and a ``digest -> bytes`` map, changed only through ``og.simulate``).  After every step:

* the blobs on disk are exactly the model's blobs;
* index.json on disk is byte-for-byte the model's index.json;
* no live blob (reachable from a tagged entry, SEMANTICS §2) is missing, and fsck finds no
  other problem.  Everything here uses the default policy, whose guard exists to keep that
  true.  An *untagged* entry is not a root under that policy: deleting a manifest that only an
  untagged index lists is allowed and leaves that entry dangling until the next gc, so
  "reachable from any index.json entry" is deliberately not the invariant.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import networkx as nx
import orjson
from click.testing import CliRunner
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import ocigraph as og
from io_adapters.apply import apply_plan
from io_adapters.cli import cli
from io_adapters.fsck import fsck
from io_adapters.layout import blob_path, read_layout

CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
EMPTY = "application/vnd.oci.empty.v1+json"
SIG = "application/vnd.example.signature"
TAGS = ("latest", "v1", "v2", "stable", "dev")
LAYER_POOL = tuple(f"layer {i}".encode() for i in range(6))
CONFIG_POOL = tuple(f'{{"config":{i}}}'.encode() for i in range(3))


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": og.digest_bytes(data), "size": len(data)}


def canonical(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


class DiskAndModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ocigraph-stateful-"))
        self.root = self.tmp / "layout"
        (self.root / "blobs" / "sha256").mkdir(parents=True)
        (self.root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
        self.index_json = canonical({"schemaVersion": 2, "mediaType": og.OCI_INDEX, "manifests": []})
        (self.root / "index.json").write_bytes(self.index_json)
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, str] = {}  # digest -> media type, of every manifest ever pushed
        self.runner = CliRunner()

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the pusher: writes the same bytes to disk and to the model ----------------------------

    def write_blob(self, data: bytes) -> str:
        digest = og.digest_bytes(data)
        path = blob_path(self.root, digest)
        tmp = path.with_name(".push-" + path.name)
        tmp.write_bytes(data)
        os.replace(tmp, path)  # as a registry client would: the blob appears whole
        self.blobs[digest] = data
        return digest

    def write_manifest(self, doc: dict[str, Any], media_type: str) -> dict[str, Any]:
        data = canonical(doc)
        self.manifests[self.write_blob(data)] = media_type
        return descriptor(media_type, data)

    def add_entry(self, desc: dict[str, Any], tag: str | None) -> None:
        entry = dict(desc)
        if tag is not None:
            entry["annotations"] = {og.REF_NAME: tag}
        doc = orjson.loads(self.index_json)
        doc["manifests"].append(entry)
        self.index_json = canonical(doc)
        (self.root / "index.json").write_bytes(self.index_json)

    # -- the model --------------------------------------------------------------------------

    def model(self) -> og.Layout:
        return og.layout_from_bytes(self.index_json, self.blobs)

    def model_plan(self, op: str, refs: list[str]) -> og.Plan | og.OcigraphError:
        graph = og.build_graph(self.model())
        try:
            if op == "delete":
                return og.plan_delete(graph, refs)
            if op == "remove":
                return og.plan_remove(graph, refs)
            if op == "untag":
                return og.plan_untag(graph, refs)
            return og.plan_gc(graph)
        except og.OcigraphError as exc:
            return exc

    def model_apply(self, plan: og.Plan) -> None:
        after = og.simulate(self.model(), plan)
        self.index_json = after.index.raw
        self.blobs = {d: self.blobs[d] for d in after.blobs}

    # -- what there is to choose from -------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        return list(orjson.loads(self.index_json)["manifests"])

    def tags(self) -> list[str]:
        return sorted({e["annotations"][og.REF_NAME] for e in self.entries()
                       if og.REF_NAME in e.get("annotations", {})})

    def present_manifests(self, media_type: str | None = None) -> list[str]:
        return sorted(d for d, mt in self.manifests.items()
                      if d in self.blobs and (media_type is None or mt == media_type))

    def has_manifests(self) -> bool:
        return bool(self.present_manifests())

    def has_entries(self) -> bool:
        return bool(self.entries())

    def has_tags(self) -> bool:
        return bool(self.tags())

    # -- rules ------------------------------------------------------------------------------

    @rule(data=st.data())
    def push_image(self, data: st.DataObject) -> None:
        config = data.draw(st.sampled_from(CONFIG_POOL), label="config")
        layers = data.draw(st.lists(st.sampled_from(LAYER_POOL), min_size=1, max_size=3,
                                    unique=True), label="layers")
        tag = data.draw(st.sampled_from((None, *TAGS)), label="tag")
        doc = {"schemaVersion": 2, "mediaType": og.OCI_MANIFEST,
               "config": descriptor(CONFIG, config),
               "layers": [descriptor(LAYER, layer) for layer in layers]}
        for blob in (config, *layers):
            self.write_blob(blob)
        desc = self.write_manifest(doc, og.OCI_MANIFEST)
        self.add_entry(desc, tag)
        note(f"push image {desc['digest'][:19]} tag={tag} layers={len(layers)}")

    @precondition(lambda self: self.present_manifests(og.OCI_MANIFEST))
    @rule(data=st.data())
    def push_index(self, data: st.DataObject) -> None:
        graph = og.build_graph(self.model())
        complete = [d for d in self.present_manifests(og.OCI_MANIFEST)
                    if all(graph.nodes[n]["present"] for n in nx.descendants(graph, d))]
        if not complete:
            return
        children = data.draw(st.lists(st.sampled_from(complete), min_size=1, max_size=2,
                                      unique=True), label="children")
        tag = data.draw(st.sampled_from((None, *TAGS)), label="tag")
        doc = {"schemaVersion": 2, "mediaType": og.OCI_INDEX,
               "manifests": [descriptor(og.OCI_MANIFEST, self.blobs[c]) for c in children]}
        desc = self.write_manifest(doc, og.OCI_INDEX)
        self.add_entry(desc, tag)
        note(f"push index {desc['digest'][:19]} of {[c[:19] for c in children]} tag={tag}")

    def complete_entries(self) -> list[dict[str, Any]]:
        """Entries whose whole closure is present: what a registry or ``oras tag`` accepts (an
        untagged entry may dangle after a delete, and tagging it must not make that live)."""
        graph = og.build_graph(self.model())
        present = graph.nodes(data="present")
        return [e for e in self.entries()
                if all(present[n] for n in nx.descendants(graph, e["digest"]) | {e["digest"]})]

    @precondition(has_entries)
    @rule(data=st.data())
    def tag(self, data: st.DataObject) -> None:
        candidates = self.complete_entries()
        if not candidates:
            return
        entry = data.draw(st.sampled_from(candidates), label="entry")
        tag = data.draw(st.sampled_from(TAGS), label="tag")
        desc = {k: entry[k] for k in ("mediaType", "digest", "size")}
        self.add_entry(desc, tag)
        note(f"tag {entry['digest'][:19]} as {tag}")

    @precondition(has_manifests)
    @rule(data=st.data())
    def attach_referrer(self, data: st.DataObject) -> None:
        subject = data.draw(st.sampled_from(self.present_manifests()), label="subject")
        listed = data.draw(st.booleans(), label="listed untagged in index.json")
        payload = f"signature {len(self.manifests)} of {subject}".encode()
        self.write_blob(b"{}")
        self.write_blob(payload)
        doc = {"schemaVersion": 2, "mediaType": og.OCI_MANIFEST, "artifactType": SIG,
               "config": descriptor(EMPTY, b"{}"), "layers": [descriptor(SIG, payload)],
               "subject": descriptor(self.manifests[subject], self.blobs[subject])}
        desc = self.write_manifest(doc, og.OCI_MANIFEST)
        if listed:
            self.add_entry(dict(desc, artifactType=SIG), None)
        note(f"referrer {desc['digest'][:19]} -> {subject[:19]} listed={listed}")

    @precondition(has_tags)
    @rule(data=st.data())
    def untag_with_the_cli(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(self.tags()), label="tag")
        expected = self.model_plan("untag", [tag])
        result = self.runner.invoke(cli, ["untag", str(self.root), tag])
        note(f"untag {tag}: exit {result.exit_code} {result.stderr.strip()}")
        event(f"untag exit {result.exit_code}")
        if isinstance(expected, og.OcigraphError):
            assert result.exit_code == 1 and "Traceback" not in result.output
            assert str(expected) in result.stderr
            return
        assert result.exit_code == 0, result.output
        self.model_apply(expected)

    @precondition(has_entries)
    @rule(data=st.data())
    def delete_with_the_adapter(self, data: st.DataObject) -> None:
        refs = sorted({e["digest"] for e in self.entries()} | set(self.tags()))
        target = data.draw(st.sampled_from(refs), label="target")
        expected = self.model_plan("delete", [target])
        disk = read_layout(self.root)
        try:
            plan = og.plan_delete(og.build_graph(disk.layout), [target])
        except og.OcigraphError as exc:
            note(f"delete {target[:19]}: refused: {exc}")
            event(f"delete refused: {type(exc).__name__}")
            assert isinstance(expected, og.OcigraphError), f"model planned, disk refused: {exc}"
            assert type(exc) is type(expected) and str(exc) == str(expected)
            return
        assert isinstance(expected, og.Plan), f"disk planned, model refused: {expected}"
        assert self.same_plan(plan, expected)
        report = apply_plan(self.root, plan)
        note(f"delete {target[:19]}: {len(report.deleted)} blobs, {len(plan.index_changes)} entries")
        event(f"delete applied: {min(len(report.deleted), 5)}+ blobs")
        assert set(report.deleted) == {d.digest for d in plan.deletions if d.present}
        self.model_apply(expected)

    @precondition(has_tags)
    @rule(data=st.data())
    def remove_with_the_cli(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(self.tags()), label="tag")
        expected = self.model_plan("remove", [tag])
        result = self.runner.invoke(cli, ["remove", str(self.root), tag, "--yes", "--format", "json"])
        note(f"remove {tag}: exit {result.exit_code}")
        event(f"remove exit {result.exit_code}")
        if isinstance(expected, og.OcigraphError):
            assert result.exit_code == 1 and str(expected) in result.stderr
            return
        assert result.exit_code == 0, result.output
        assert self.same_plan(og.Plan.from_dict(orjson.loads(result.stdout)["plan"]), expected)
        self.model_apply(expected)

    @rule()
    def gc_with_the_cli(self) -> None:
        expected = self.model_plan("gc", [])
        result = self.runner.invoke(cli, ["gc", str(self.root), "--yes", "--format", "json"])
        note(f"gc: exit {result.exit_code}")
        event(f"gc deletes {'nothing' if expected.is_empty else 'something'}")
        assert isinstance(expected, og.Plan), f"model gc refused: {expected}"
        assert result.exit_code == 0, result.output
        doc = orjson.loads(result.stdout)
        assert self.same_plan(og.Plan.from_dict(doc["plan"]), expected)
        assert set(doc["result"]["deleted"]) == {d.digest for d in expected.deletions if d.present}
        self.model_apply(expected)

    @staticmethod
    def same_plan(disk: og.Plan, model: og.Plan) -> bool:
        """Equal but for the snapshot time (the model has no clock)."""
        return (disk.index_fingerprint, disk.deletions, disk.index_changes, disk.kept) == (
            model.index_fingerprint, model.deletions, model.index_changes, model.kept)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def disk_blobs_are_the_models(self) -> None:
        assert set(read_layout(self.root).layout.blobs) == set(self.blobs)

    @invariant()
    def disk_index_is_the_models(self) -> None:
        assert (self.root / "index.json").read_bytes() == self.index_json

    @invariant()
    def nothing_live_is_missing(self) -> None:
        graph = og.build_graph(read_layout(self.root).layout)
        live = og.live_set(graph, og.Policy())
        assert not [n for n in live if not graph.nodes[n]["present"]], "a live blob is missing"
        # fsck finds no corruption; a "missing" blob may only hang below an untagged entry,
        # which the default policy does not protect (SEMANTICS §2-§3: it is not a root)
        problems = [p for p in fsck(self.root, workers=1).problems
                    if p.kind != "missing" or p.where in live]
        assert problems == []
        assert not [n for n in os.listdir(self.root) if n.startswith(".")], "stray temp files"


DiskAndModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("OCIGRAPH_STATEFUL_EXAMPLES", "50")),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_disk_and_model_agree = DiskAndModel.TestCase
