"""The stored graph (io_adapters/store.py): it answers every question a delete asks exactly as
the graph it was built from does, it is used only for the layout it was made from, unchanged,
and a damaged one is ignored.  Through plan_layout and the CLI, a delete planned from it is the
delete planned by reading the layout."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest
from builder import Builder, two_images_and_a_signature
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ocigraph as og
from io_adapters import cache as cache_mod
from io_adapters import planner, store
from io_adapters.cli import cli
from io_adapters.layout import DiskLayout, Junk
from io_adapters.planner import plan_layout
from ocigraph.testing import delete_targets, generated_layouts, policies

FOLDERS = (("", 1, 2, 3), ("sha256", 4, 5, 6))


SETTLE_NS = store.SETTLE_NS


@pytest.fixture(autouse=True)
def _store_small_new_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """These layouts are tiny, and written just before they are read: by default a layout this
    small is never stored, nor one whose folders changed in the last two seconds (tests that
    are about that put the two seconds back)."""
    monkeypatch.setattr(planner, "_MIN_BLOBS", 0)
    monkeypatch.setattr(cache_mod, "_MIN_ENTRIES", 0)
    monkeypatch.setattr(store, "SETTLE_NS", 0)


def _saved(tmp: Path, graph: og.LayoutGraph) -> store.GraphStore:
    whole = og.WholeGraph(graph)
    disk = DiskLayout(root=tmp, layout=None, junk=(Junk("blobs/x", "why"),),  # type: ignore[arg-type]
                      folders=FOLDERS)
    path = store.store_file_for(tmp, tmp / "cache")
    assert path is not None
    path.unlink(missing_ok=True)
    store.save_store(path, disk, graph, {False: whole.facts(False), True: whole.facts(True)})
    held = store.open_store(tmp, tmp / "cache", graph.graph["fingerprint"], FOLDERS, cache=True)
    assert held is not None
    return held


# -- the store answers as the graph does -------------------------------------------------------

@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated_layouts(), st.data())
def test_the_store_answers_every_question_as_the_graph(tmp_path, generated, data):
    graph = og.build_graph(generated.layout())
    whole = og.WholeGraph(graph)
    held = _saved(tmp_path, graph)
    try:
        nodes = list(graph)
        assert held.records(nodes) == whole.records(nodes)
        for n in nodes:
            for some in ((), nodes[:2], nodes):
                for everyone in (True, False):
                    assert held.predecessors(n, some, everyone) == whole.predecessors(n, some, everyone)
        assert held.attributes(nodes) == whole.attributes(nodes)
        for mode in (False, True):
            assert held.live(nodes, mode) == whole.live(nodes, mode)
            assert held.unusable(mode) == whole.unusable(mode)
        positions = range(whole.entry_count)
        assert held.entries(positions) == whole.entries(positions)
        assert held.entry_count == whole.entry_count and held.fingerprint == whole.fingerprint
        for tag in {e.tag for e in graph.graph["index"].entries if e.tag} | {"no-such-tag"}:
            assert held.tagged(tag) == whole.tagged(tag)
        for n in nodes[:5]:
            prefix = n[: data.draw(st.integers(7, len(n)), label="prefix length")]
            assert held.with_prefix(prefix) == whole.with_prefix(prefix)
            assert held.has(n)
        assert not held.has("sha256:" + "f" * 64) or "sha256:" + "f" * 64 in graph
        assert held.junk == (Junk("blobs/x", "why"),)
    finally:
        held.close()


def test_a_store_for_another_index_other_folders_or_other_code_is_not_opened(tmp_path, monkeypatch):
    b = Builder()
    b.entry(b.manifest(layers=[b.blob("a")]), "a")
    graph = b.graph()
    _saved(tmp_path, graph).close()
    fp = graph.graph["fingerprint"]
    assert store.open_store(tmp_path, tmp_path / "cache", fp, FOLDERS, cache=True) is not None
    assert store.open_store(tmp_path, tmp_path / "cache", fp, FOLDERS, cache=False) is None
    other = og.digest_bytes(b"{}")
    assert store.open_store(tmp_path, tmp_path / "cache", other, FOLDERS, cache=True) is None
    moved = (FOLDERS[0], ("sha256", 4, 5, 7))
    assert store.open_store(tmp_path, tmp_path / "cache", fp, moved, cache=True) is None
    monkeypatch.setattr(store, "code_fingerprint", lambda: "other code")
    assert store.open_store(tmp_path, tmp_path / "cache", fp, FOLDERS, cache=True) is None


def _corrupt_row(path: Path, sql: str) -> None:
    con = sqlite3.connect(path)
    con.execute(sql)
    con.commit()
    con.close()


@pytest.mark.parametrize("damage", [
    "UPDATE nodes SET body = CAST(REPLACE(CAST(body AS TEXT), 'true', 'false') AS BLOB)",
    "UPDATE nodes SET crc = crc + 1",
    "DELETE FROM nodes WHERE id = (SELECT max(id) FROM nodes)",
    "UPDATE entries SET body = CAST(REPLACE(CAST(body AS TEXT), '\"a\"', '\"b\"') AS BLOB)",
    "UPDATE meta SET crc = crc + 1",
    "DROP TABLE entries",
])
def test_a_damaged_store_is_never_believed(tmp_path, damage):
    b = Builder()
    layer = b.blob("a")
    img = b.manifest(layers=[layer])
    b.entry(img, "a")
    b.entry(b.manifest(layers=[layer, b.blob("b")]), "b")
    graph = b.graph()
    _saved(tmp_path, graph).close()
    path = store.store_file_for(tmp_path, tmp_path / "cache")
    _corrupt_row(path, damage)
    held = store.open_store(tmp_path, tmp_path / "cache", graph.graph["fingerprint"], FOLDERS, cache=True)
    if held is None:
        return  # the meta row (or the file) is refused at once
    try:
        with pytest.raises(store.StoreDamaged):  # reading every row finds the damage
            held.records(list(graph))
            held.entries(range(held.entry_count))
            held.tagged("a")
            held.tagged("b")
    finally:
        held.close()


@pytest.mark.parametrize("damage", [
    "UPDATE nodes SET body = CAST(REPLACE(CAST(body AS TEXT), 'true', 'false') AS BLOB)",
    "UPDATE nodes SET body = CAST(body AS TEXT)",
    "UPDATE nodes SET body = 7",
    "UPDATE nodes SET crc = crc + 1",
    "DELETE FROM nodes",
    "DELETE FROM entries WHERE pos = 0",
    "UPDATE entries SET tag = 'app:1' WHERE pos = 1",
    "DROP TABLE nodes",
])
@pytest.mark.parametrize("refs", [["app:0"], ["all"], [og.digest_bytes(b"dangling")]], ids=str)
def test_with_a_damaged_store_a_delete_reads_the_layout(layout, damage, refs):
    root, cache_dir, _ = layout
    _corrupt_row(store.store_file_for(root, cache_dir), damage)
    how, got = _outcome(root, refs, ORAS, cache_dir=cache_dir)
    assert got == _outcome(root, refs, ORAS, cache=False)[1]
    # every damage but one is seen by any delete; a tag column rewritten is seen by the
    # lookups of the two tags it mixes up, and by nothing else (nor needs to be)
    assert how == "built" or ("SET tag" in damage and refs != ["app:0"])
    # the plan that read the layout stored it again, whole
    assert _outcome(root, refs, ORAS, cache_dir=cache_dir)[0] == "stored"


def test_a_node_lost_from_the_store_is_never_taken_for_an_unknown_name(layout):
    root, cache_dir, _ = layout
    dangling = og.digest_bytes(b"dangling")  # nobody references it: nothing else notices
    for refs in ([dangling], [dangling[:16]]):
        _corrupt_row(store.store_file_for(root, cache_dir),
                     f"DELETE FROM nodes WHERE digest = '{dangling}'")
        how, got = _outcome(root, refs, ORAS, cache_dir=cache_dir)
        assert (how, got) == ("built", _outcome(root, refs, ORAS, cache=False)[1])
        # the layout knew the name: the store was discarded and stored anew, whole
        assert _outcome(root, refs, ORAS, cache_dir=cache_dir) == ("stored", got)


# -- through plan_layout and the CLI ------------------------------------------------------------

def _write(root: Path, b: Builder) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_bytes(b.index_json())
    for digest, data in b.blobs.items():
        (root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
    return root


def _layout() -> tuple[Builder, dict[str, str]]:
    """The planner tests' small store, with an index listing both images tagged ``all``."""
    b, d = two_images_and_a_signature()
    listing = b.index([d["img"], d["old"]])
    b.entry(listing, "all")
    return b, {"img": d["img"]["digest"], "old": d["old"]["digest"], "sig": d["sig"]["digest"],
               "listing": listing["digest"]}


def _comparable(plan: og.Plan) -> bytes:
    return orjson.dumps({k: v for k, v in plan.to_dict().items() if k != "snapshotTime"})


def _outcome(root: Path, refs: list[str], policy: og.Policy, **kw: object) -> tuple[str, object]:
    try:
        got = plan_layout(root, "delete", refs, policy, **kw)
    except og.OcigraphError as exc:
        return "error", (type(exc).__name__, str(exc))
    return got.how, _comparable(got.plan)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    b, names = _layout()
    root = _write(tmp_path / "layout", b)
    cache_dir = tmp_path / "cache"
    first = plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    assert first.how == "built"
    assert store.store_file_for(root, cache_dir).is_file()
    return root, cache_dir, names


ORAS = og.Policy.preset("oras")
REFS = [["app:1"], ["app:0"], ["all"], ["app:1", "app:0"], ["app:1", "all"]]
POLICIES = [og.Policy(), og.Policy.preset("oras"), og.Policy.preset("spec"),
            og.Policy(cascade_referrers=False), og.Policy(force=True)]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: repr(p.to_dict()))
@pytest.mark.parametrize("refs", REFS, ids=" ".join)
def test_a_stored_delete_is_the_delete_made_by_reading_the_layout(layout, refs, policy):
    root, cache_dir, _ = layout
    how, got = _outcome(root, refs, policy, cache_dir=cache_dir)
    fresh_how, fresh = _outcome(root, refs, policy, cache=False)
    assert got == fresh
    assert (how, fresh_how) in (("stored", "built"), ("error", "error"))


def test_refs_resolve_through_the_store_as_through_the_graph(layout):
    root, cache_dir, names = layout
    short = names["img"][:19]
    for refs in ([short], [names["sig"]], ["nope"], ["sha256:abc"], ["sha256:" + "0" * 64]):
        stored = _outcome(root, refs, og.Policy(), cache_dir=cache_dir)
        fresh = _outcome(root, refs, og.Policy(), cache=False)
        assert stored[1] == fresh[1], refs
        assert stored[0] in ("stored", "error")


@pytest.mark.parametrize("change", ["new blob", "removed blob", "index.json", "junk"])
def test_any_change_to_the_layout_retires_the_store(layout, change):
    root, cache_dir, _ = layout
    sha = root / "blobs" / "sha256"
    if change == "new blob":
        data = b"a new blob"
        (sha / og.digest_bytes(data).split(":")[1]).write_bytes(data)
    elif change == "removed blob":
        os.unlink(sha / og.digest_bytes(b"dangling").split(":")[1])
    elif change == "index.json":
        doc = orjson.loads((root / "index.json").read_bytes())
        doc["manifests"].pop()
        (root / "index.json").write_bytes(orjson.dumps(doc))
    else:
        os.symlink("/etc/passwd", sha / ("0" * 64))
    assert _outcome(root, ["app:0"], ORAS, cache_dir=cache_dir)[0] == "built"
    # the next plan that builds the graph stores the layout as it is now (a plan recalled from
    # the memo builds nothing, so this one asks something new)
    assert plan_layout(root, "gc", [], og.Policy.preset("spec"), cache_dir=cache_dir).how == "built"
    how, got = _outcome(root, ["app:0"], ORAS, cache_dir=cache_dir)
    assert got == _outcome(root, ["app:0"], ORAS, cache=False)[1]
    assert how == "stored"


@pytest.mark.parametrize("mtime", ["now", "set back"])
def test_a_layout_changed_just_before_the_listing_is_not_stored(tmp_path, monkeypatch, mtime):
    monkeypatch.setattr(store, "SETTLE_NS", SETTLE_NS)
    b, _ = _layout()
    root = _write(tmp_path / "layout", b)
    if mtime == "set back":  # as cp -a, rsync -t or tar x leave a folder: its ctime says now
        past = time.time() - 3600
        for folder in (root / "blobs", root / "blobs" / "sha256"):
            os.utime(folder, (past, past))
    plan_layout(root, "gc", [], og.Policy(), cache_dir=tmp_path / "cache")
    assert not store.store_file_for(root, tmp_path / "cache").exists()
    monkeypatch.setattr(store, "SETTLE_NS", 0)  # (as if two seconds had passed)
    plan_layout(root, "gc", [], og.Policy.preset("spec"), cache_dir=tmp_path / "cache")
    assert store.store_file_for(root, tmp_path / "cache").exists()


def test_a_graph_built_from_a_corrupt_manifest_is_not_stored(tmp_path):
    b, names = _layout()
    root = _write(tmp_path / "layout", b)
    path = root / "blobs" / "sha256" / names["sig"].split(":")[1]
    path.write_bytes(path.read_bytes().replace(b"sig", b"SIG"))
    plan_layout(root, "gc", [], og.Policy(), cache_dir=tmp_path / "cache")
    assert not store.store_file_for(root, tmp_path / "cache").exists()


def test_a_damaged_store_file_means_reading_the_layout(layout):
    root, cache_dir, _ = layout
    path = store.store_file_for(root, cache_dir)
    path.write_bytes(b"not a database" * 100)
    assert _outcome(root, ["app:0"], ORAS, cache_dir=cache_dir) == \
        ("built", _outcome(root, ["app:0"], ORAS, cache=False)[1])


def test_delete_through_the_cli_plans_from_the_store_and_applies(layout, monkeypatch):
    root, cache_dir, names = layout
    monkeypatch.setenv("OCIGRAPH_CACHE_DIR", str(cache_dir))
    runner = CliRunner()
    plan_file = root.parent / "plan.json"
    got = runner.invoke(cli, ["plan", "delete", str(root), "app:0", "--policy", "oras",
                                "-o", str(plan_file)])
    assert got.exit_code == 0, got.output
    assert plan_layout(root, "delete", ["app:0"], og.Policy.preset("oras"),
                       cache_dir=cache_dir).how == "stored"
    # an edited plan that adds a live blob is refused, though the store's view never saw it
    doc = orjson.loads(plan_file.read_bytes())
    live_layer = og.digest_bytes(b"a1")
    added = {**doc["deletions"][-1], "digest": live_layer}
    doc["deletions"].append(added)
    doc["bytesFreed"] += added["size"]
    edited = root.parent / "edited.json"
    edited.write_bytes(orjson.dumps(doc))
    refused = runner.invoke(cli, ["apply", str(root), str(edited)])
    assert refused.exit_code != 0 and live_layer in refused.output, refused.output
    assert (root / "blobs" / "sha256" / live_layer.split(":")[1]).exists()
    done = runner.invoke(cli, ["delete", str(root), "app:1", "--yes", "--policy", "oras"])
    assert done.exit_code == 0, done.output
    for gone in (names["img"], names["sig"], og.digest_bytes(b"a1")):
        assert not (root / "blobs" / "sha256" / gone.split(":")[1]).exists()
    assert (root / "blobs" / "sha256" / og.digest_bytes(b"shared").split(":")[1]).exists()
    # the layout changed; once its folders settled, the graph was stored again (by a job the
    # command left for after its answer -- done before returning here, detached from a shell)
    assert _outcome(root, ["all"], ORAS, cache_dir=cache_dir) == \
        ("stored", _outcome(root, ["all"], ORAS, cache=False)[1])


# -- the script: the graph is stored by a detached child -----------------------------------------

def _big_layout(root: Path) -> tuple[Path, list[str]]:
    """A layout just big enough to be stored (2,048 blobs and more): 420 images of a config and
    four layers, one of them shared by all."""
    b = Builder()
    base = b.blob("base")
    tags = []
    for i in range(420):
        img = b.manifest(config=b.blob(f'{{"n":{i}}}', "application/vnd.oci.image.config.v1+json"),
                         layers=[base, *(b.blob(f"{i}-{k}") for k in range(3))])
        tags.append(f"img:{i}")
        b.entry(img, tags[-1])
    return _write(root, b), tags


def _script(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "io_adapters", *(str(a) for a in args)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})


@pytest.mark.parametrize("detach", [True, False], ids=["detached", "OCIGRAPH_NO_DETACH"])
def test_the_script_answers_then_stores_the_graph_in_a_child(tmp_path, detach):
    root, tags = _big_layout(tmp_path / "layout")
    time.sleep(SETTLE_NS / 1e9 + 0.1)  # a child process has the real rule: let the folders settle
    env = {"OCIGRAPH_CACHE_DIR": str(tmp_path / "cache"), "OCIGRAPH_NO_DETACH": "" if detach else "1"}
    gc = _script("gc", root, "--dry-run", "--format", "json", env=env)
    assert gc.returncode == 0 and gc.stderr == ""
    og.Plan.from_json(gc.stdout.encode())  # one plan: the child did not write the answer again
    if detach:
        store.wait_for_writer(root, tmp_path / "cache")
    assert store.store_file_for(root, tmp_path / "cache").is_file()
    for tag in tags[:3]:
        got = _script("plan", "delete", root, tag, "--format", "json", env=env)
        assert got.returncode == 0, got.stderr
        assert plan_layout(root, "delete", [tag], og.Policy(),
                           cache_dir=tmp_path / "cache").how == "stored"
        fresh = plan_layout(root, "delete", [tag], og.Policy(), cache=False).plan
        assert _comparable(og.Plan.from_json(got.stdout.encode())) == _comparable(fresh)
        assert len(fresh.deletions) == 5 and {k.kind for k in fresh.kept} == {"shared"}


def test_a_delete_that_built_the_graph_and_applied_it_stores_the_layout_after(tmp_path, monkeypatch):
    """``delete --yes`` on a layout whose store is stale: the plan builds the graph, the
    storing job is left for after the answer, the apply changes the layout -- and the job,
    seeing that, stores the layout as it is then (not nothing: the job holds the writer's
    lock, which a second job of the same process would wait for in vain)."""
    b, names = _layout()
    root = _write(tmp_path / "layout", b)
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("OCIGRAPH_CACHE_DIR", str(cache_dir))
    plan_layout(root, "gc", [], og.Policy(), cache_dir=cache_dir)
    data = b"pushed since"
    (root / "blobs" / "sha256" / og.digest_bytes(data).split(":")[1]).write_bytes(data)
    done = CliRunner().invoke(cli, ["delete", str(root), "all", "--yes"])
    assert done.exit_code == 0, done.output
    assert "stored" not in done.output
    assert not (root / "blobs" / "sha256" / names["listing"].split(":")[1]).exists()
    assert _outcome(root, ["app:0"], ORAS, cache_dir=cache_dir) == \
        ("stored", _outcome(root, ["app:0"], ORAS, cache=False)[1])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(generated_layouts().filter(lambda g: bool(g.known)), policies(), st.data())
def test_on_any_layout_a_delete_from_the_store_is_the_delete_from_the_layout(tmp_path, g, policy, data):
    """End to end, on disk: store a generated layout (a plan that builds its graph), then
    delete random targets -- tags, digests, short digests -- from the store and by reading
    the layout: the same plan, or the same error."""
    refs = data.draw(delete_targets(g, max_size=2), label="refs")
    if refs and data.draw(st.booleans(), label="shorten the first"):
        refs[0] = refs[0][:19] if refs[0].startswith("sha256:") else refs[0]
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        root = Path(tmp) / "layout"
        for digest, content in g.blobs.items():
            alg, hexd = digest.split(":", 1)
            (root / "blobs" / alg).mkdir(parents=True, exist_ok=True)
            (root / "blobs" / alg / hexd).write_bytes(content)
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
        (root / "index.json").write_bytes(g.index_json)
        cache_dir = Path(tmp) / "cache"
        plan_layout(root, "untag", [], og.Policy(), cache_dir=cache_dir)  # builds, and stores
        stored = _outcome(root, refs, policy, cache_dir=cache_dir)
        fresh = _outcome(root, refs, policy, cache=False)
        event(f"{stored[0]} / {fresh[0]}")
        assert stored[1] == fresh[1]
        if fresh[0] != "error" and store.store_file_for(root, cache_dir).exists():
            assert stored[0] == "stored"
