"""A corpus of malformed, broken and hostile layouts, each with what ocigraph must do with it.

Every case starts from the same small valid layout (:func:`write_base`) -- two tagged images
``v1`` and ``v2``, a tagged index ``multi`` listing ``v2``, a signature of ``v1`` (an untagged
index.json entry), one untagged garbage image and one dangling blob -- and breaks it in one
way.  Beside the layout there is an ``outside`` folder (a stand-in for the rest of the disk) that
symlinks may point into; no command may ever change it.

``error``     a substring of the one-line error that ``gc``, ``plan gc``, ``show`` and
              ``delete v1`` must end with (exit 1); ``None`` means the layout is usable and
              those commands succeed (the documented safe behaviour in ``doc``).
``delete``    overrides ``error`` for ``delete v1`` (``""``: succeeds).
``show``      for faults that only stop *planning* (a broken live manifest): ``show`` still
              works, read-only, and marks the node with this word.
``fsck``      a substring fsck must report (exit 1), or ``None``: fsck finds nothing (exit 0).
``check``     extra assertions after a successful ``gc`` (what must still be there).

The tests are in ``tests/test_hostile.py``; docs/guarantees.md lists the safe behaviours.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostile.layoutgen import (
    LAYER,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    LayoutBuilder,
    canonical,
    sha256,
)


@dataclass(frozen=True)
class Base:
    """Digests and descriptors of the base layout."""

    v1: dict[str, Any]
    v2: dict[str, Any]
    multi: dict[str, Any]
    sig: dict[str, Any]
    garbage: dict[str, Any]
    dangling: dict[str, Any]
    v1_layers: tuple[dict[str, Any], ...]
    v1_config: dict[str, Any]

    @property
    def live(self) -> list[str]:
        return [self.v1["digest"], self.v2["digest"], self.multi["digest"], self.sig["digest"]]


def blob_file(root: Path, digest: str) -> Path:
    alg, enc = digest.split(":", 1)
    return root / "blobs" / alg / enc


def build_base() -> tuple[LayoutBuilder, Base]:
    b = LayoutBuilder()
    v1 = b.image("v1")
    v2 = b.image("v2")
    multi = b.index([v2], "multi")
    sig = b.signature("v1", v1)
    garbage = b.image("garbage")
    dangling = b.blob("dangling blob")
    b.entry(v1, "v1")
    b.entry(v2, "v2")
    b.entry(multi, "multi")
    b.entry(sig)
    b.entry(garbage)
    v1_doc = json.loads(b.blobs[v1["digest"]])
    base = Base(v1, v2, multi, sig, garbage, dangling, tuple(v1_doc["layers"]), v1_doc["config"])
    return b, base


def write_base(root: Path) -> Base:
    b, base = build_base()
    b.write(root)
    return base


# --- helpers for the builders ---------------------------------------------------------------------


def index_doc(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "index.json").read_bytes())
    return doc


def write_index(root: Path, doc: Any) -> None:
    (root / "index.json").write_bytes(json.dumps(doc).encode())


def edit_entry(root: Path, position: int, **changes: Any) -> None:
    doc = index_doc(root)
    entry = doc["manifests"][position]
    for k, v in changes.items():
        if v is _DELETE:
            entry.pop(k, None)
        else:
            entry[k] = v
    write_index(root, doc)


_DELETE = object()


def add_blob(root: Path, data: bytes) -> str:
    d = sha256(data)
    blob_file(root, d).write_bytes(data)
    return d


def tag_manifest(root: Path, data: bytes, tag: str = "hostile", digest: str | None = None,
                 media_type: str = OCI_MANIFEST) -> str:
    """Store ``data`` (under ``digest``, default its own) and tag it in index.json."""
    d = digest or sha256(data)
    blob_file(root, d).write_bytes(data)
    doc = index_doc(root)
    doc["manifests"].append({"mediaType": media_type, "digest": d, "size": len(data),
                             "annotations": {REF_NAME: tag}})
    write_index(root, doc)
    return d


def manifest_bytes(config: dict[str, Any], layers: list[Any], **extra: Any) -> bytes:
    return canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                      "layers": layers, **extra})


# --- the cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    name: str
    build: Callable[[Path, Path, Base], None]
    error: str | None
    fsck: str | None
    doc: str
    delete: str | None = None  # None: same as error
    show: str | None = None  # planning fails, but show works and marks the fault with this
    check: Callable[[Path, Path, Base], None] | None = None
    slow: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delete_error(self) -> str | None:
        if self.delete is None:
            return self.error
        return self.delete or None


CASES: list[Hostile] = []


def case(name: str, error: str | None, fsck: str | None, doc: str, **kw: Any
         ) -> Callable[[Callable[[Path, Path, Base], None]], Callable[[Path, Path, Base], None]]:
    def register(fn: Callable[[Path, Path, Base], None]) -> Callable[[Path, Path, Base], None]:
        CASES.append(Hostile(name, fn, error, fsck, doc, **kw))
        return fn
    return register


# oci-layout ---------------------------------------------------------------------------------------

@case("oci_layout_missing", "not an OCI image layout (it has an index.json but no oci-layout file)",
      "not an OCI image layout",
      "Without oci-layout the folder is not known to be a layout: refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "oci-layout").unlink()


@case("oci_layout_not_json", "oci-layout: not valid JSON", "oci-layout",
      "oci-layout must be JSON.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "oci-layout").write_bytes(b"imageLayoutVersion = 1.0.0\n")


@case("oci_layout_wrong_version", "expected 1.x", "expected 1.x",
      "An unknown layout version may mean an unknown blob scheme: refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"2.0.0"}')


@case("oci_layout_is_a_symlink", "oci-layout: is a symlink", "symlink",
      "Files of the layout are never read through symlinks.")
def _(root: Path, outside: Path, base: Base) -> None:
    (outside / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (root / "oci-layout").unlink()
    (root / "oci-layout").symlink_to(outside / "oci-layout")


# index.json ---------------------------------------------------------------------------------------

@case("index_json_missing", "index.json: missing", "index.json: missing", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "index.json").unlink()


@case("index_json_empty", "index.json: not valid JSON", "not valid JSON",
      "An empty index.json (a crashed writer of another tool) is not an empty layout: refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "index.json").write_bytes(b"")


@case("index_json_truncated", "index.json: not valid JSON", "not valid JSON", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    data = (root / "index.json").read_bytes()
    (root / "index.json").write_bytes(data[: len(data) // 2])


@case("index_json_is_an_array", "index.json: not a JSON object", "not a JSON object", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    write_index(root, index_doc(root)["manifests"])


@case("index_json_is_null", "index.json: not a JSON object", "not a JSON object", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "index.json").write_bytes(b"null")


@case("index_json_schema_version_wrong", "schemaVersion is 3, expected 2", "schemaVersion",
      "Refuse an index of another schema.")
def _(root: Path, outside: Path, base: Base) -> None:
    doc = index_doc(root)
    doc["schemaVersion"] = 3
    write_index(root, doc)


@case("index_json_manifests_is_an_object", '"manifests" is not a list', "is not a list",
      "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    doc = index_doc(root)
    doc["manifests"] = {str(i): e for i, e in enumerate(doc["manifests"])}
    write_index(root, doc)


@case("index_json_manifests_is_a_string", '"manifests" is not a list', "is not a list",
      "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    doc = index_doc(root)
    doc["manifests"] = "v1"
    write_index(root, doc)


@case("index_json_entry_not_an_object", "manifests[2]", "manifests[2]",
      "One bad entry makes the whole index unusable: GC cannot know what it would have kept.")
def _(root: Path, outside: Path, base: Base) -> None:
    doc = index_doc(root)
    doc["manifests"][2] = base.multi["digest"]
    write_index(root, doc)


@case("index_json_entry_without_digest", "has no digest", "has no digest", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 1, digest=_DELETE)


@case("index_json_entry_size_is_a_string", "size is missing or not a non-negative integer",
      "size", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, size=str(base.v1["size"]))


@case("index_json_entry_size_negative", "non-negative integer", "size", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, size=-1)


@case("index_json_entry_size_is_a_float", "non-negative integer", "size", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, size=float(base.v1["size"]) + 0.5)


@case("index_json_entry_without_media_type", "mediaType is missing", "mediaType", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, mediaType=_DELETE)


@case("index_json_entry_annotations_not_an_object", "annotations is not an object",
      "annotations", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, annotations=["v1"])


@case("index_json_entry_tag_not_a_string", "is not a string", "is not a string",
      "A tag that is not a string: refuse rather than guess whether the entry is a root.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, annotations={REF_NAME: 1})


@case("index_json_lone_surrogate_in_a_tag", "not valid JSON", "not valid JSON",
      "JSON text must be valid Unicode; an escaped lone surrogate is refused, never printed.")
def _(root: Path, outside: Path, base: Base) -> None:
    data = (root / "index.json").read_bytes().replace(b'"v2"', b'"v2\\ud800"')
    (root / "index.json").write_bytes(data)


@case("index_json_deep_json_nesting", "not valid JSON", "not valid JSON",
      "JSON nested 100,000 deep (in an unknown field): refused by the parser's depth limit "
      "(1024), no RecursionError.")
def _(root: Path, outside: Path, base: Base) -> None:
    data = (root / "index.json").read_bytes().rstrip()
    deep = b'"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    (root / "index.json").write_bytes(data[:-1] + b"," + deep)


@case("index_json_is_a_symlink", "index.json: is a symlink", "symlink",
      "index.json is never read through a symlink (nor replaced through one).")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "index.json").rename(outside / "index.json")
    (root / "index.json").symlink_to(outside / "index.json")


@case("index_json_is_a_directory", "index.json: is not a regular file", "not a regular file",
      "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "index.json").unlink()
    (root / "index.json").mkdir()


@case("index_json_is_a_fifo", "index.json: is not a regular file", "not a regular file",
      "A FIFO planted as index.json is refused without blocking on it.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "index.json").unlink()
    os.mkfifo(root / "index.json")


# digests ------------------------------------------------------------------------------------------

@case("digest_uppercase", "sha256 needs 64 lowercase hex characters", "lowercase hex",
      "Digests are case-sensitive: an uppercase one names no blob.  Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    alg, enc = base.v1["digest"].split(":")
    edit_entry(root, 0, digest=f"{alg}:{enc.upper()}")


@case("digest_wrong_length", "sha256 needs 64 lowercase hex characters", "lowercase hex",
      "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, digest=base.v1["digest"][:-1])


@case("digest_path_traversal", "not of the form algorithm:encoded", "algorithm:encoded",
      "sha256:../../etc/passwd never becomes a path: refuse, and nothing outside is touched.")
def _(root: Path, outside: Path, base: Base) -> None:
    (outside / "passwd").write_bytes(b"root:x:0:0\n")
    edit_entry(root, 3, digest="sha256:../../outside/passwd")


@case("digest_path_traversal_unknown_algorithm", "not of the form algorithm:encoded",
      "algorithm:encoded", "Slashes are outside the digest grammar for every algorithm.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 3, digest="x:/../../outside")


@case("digest_empty", "invalid digest ''", "invalid digest", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, digest="")


@case("digest_a_megabyte_long", "(1000009 characters)", "characters",
      "A one-megabyte digest is refused with a short line (the value is cut, its length shown).")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, digest="sha256:" + "a" * 1_000_000)


@case("digest_not_a_string", "not a string", "not a string", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, digest=12345)


@case("digest_unknown_algorithm_on_a_layer", None, None,
      "A well-formed digest of an algorithm ocigraph does not store (blake3:...) is an opaque "
      "leaf: never read, never deleted, no error.", delete="")
def _(root: Path, outside: Path, base: Base) -> None:
    doc = index_doc(root)
    doc["manifests"].append({"mediaType": LAYER, "digest": "blake3:" + "ab" * 32, "size": 3,
                             "annotations": {REF_NAME: "opaque"}})
    write_index(root, doc)


@case("digest_unknown_algorithm_on_a_tagged_manifest", "digest algorithm not supported",
      None, "A live manifest ocigraph cannot read (its algorithm is not stored under blobs/) "
      "means its successors are unknown: refuse (SEMANTICS §5).", show="BROKEN")
def _(root: Path, outside: Path, base: Base) -> None:
    doc = index_doc(root)
    doc["manifests"].append({"mediaType": OCI_MANIFEST, "digest": "blake3:" + "ab" * 32,
                             "size": 3, "annotations": {REF_NAME: "opaque"}})
    write_index(root, doc)


@case("digest_bad_in_a_live_manifest", "unusable", "broken-manifest",
      "A live manifest with a bad descriptor (sha256:../x as a layer) is unusable: refuse.", show="BROKEN")
def _(root: Path, outside: Path, base: Base) -> None:
    tag_manifest(root, manifest_bytes(base.v1_config, [
        {"mediaType": LAYER, "digest": "sha256:../../outside/x", "size": 1}]))


# manifests ----------------------------------------------------------------------------------------

@case("manifest_bytes_do_not_match_digest", "content does not match its digest",
      "digest-mismatch", "A live manifest whose bytes do not hash to its name: refuse.  Deleting "
      "that manifest itself is allowed: what it referenced stays, as garbage for the next GC.",
      show="BROKEN", delete="")
def _(root: Path, outside: Path, base: Base) -> None:
    path = blob_file(root, base.v1["digest"])
    path.write_bytes(path.read_bytes().replace(b"layer", b"LAYER"))


@case("manifest_mismatch_in_garbage", None, "digest-mismatch",
      "A corrupt manifest that nothing live reaches is garbage like any other: GC deletes it "
      "(its successors need not be known, they are unreachable anyway).",
      check=lambda root, outside, base: _assert_gone(root, base.garbage["digest"]))
def _(root: Path, outside: Path, base: Base) -> None:
    path = blob_file(root, base.garbage["digest"])
    path.write_bytes(b'{"not": "the garbage manifest"}')


@case("manifest_invalid_json", "not valid JSON", "broken-manifest",
      "A live manifest whose content hashes right but is not JSON: refuse.", show="BROKEN")
def _(root: Path, outside: Path, base: Base) -> None:
    tag_manifest(root, b'{"schemaVersion": 2, "layers": [')


@case("manifest_not_an_object", "not a JSON object", "broken-manifest", "Refuse.", show="BROKEN")
def _(root: Path, outside: Path, base: Base) -> None:
    tag_manifest(root, b'["schemaVersion", 2]')


@case("manifest_layers_not_a_list", "layers is not a list", "broken-manifest", "Refuse.", show="BROKEN")
def _(root: Path, outside: Path, base: Base) -> None:
    tag_manifest(root, canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                  "config": base.v1_config, "layers": base.v1_layers[0]}))


@case("manifest_layer_size_is_a_string", "size is missing", "broken-manifest", "Refuse.", show="BROKEN")
def _(root: Path, outside: Path, base: Base) -> None:
    layer = dict(base.v1_layers[0], size="12")
    tag_manifest(root, manifest_bytes(base.v1_config, [layer]))


@case("size_mismatch_on_a_live_manifest", "descriptor size", "size-mismatch",
      "index.json declares a size the manifest does not have (and no descriptor declares the "
      "right one): the descriptor cannot be trusted, refuse.", show="BROKEN")
def _(root: Path, outside: Path, base: Base) -> None:
    data = manifest_bytes(base.v1_config, list(base.v1_layers), annotations={"x": "size"})
    tag_manifest(root, data)
    doc = index_doc(root)
    doc["manifests"][-1]["size"] = len(data) + 1
    write_index(root, doc)


@case("size_mismatch_on_one_of_two_descriptors", None, "size-mismatch",
      "One descriptor of v1 declares a wrong size but another (the signature's subject) the "
      "right one: the manifest verifies by digest, GC goes on; fsck reports the wrong one.",
      delete="")
def _(root: Path, outside: Path, base: Base) -> None:
    edit_entry(root, 0, size=base.v1["size"] + 1)


@case("size_mismatch_on_a_live_layer", None, "size-mismatch",
      "A layer's declared size is wrong: layers are never read, the layer stays live and is "
      "kept; fsck reports it.", delete="")
def _(root: Path, outside: Path, base: Base) -> None:
    layer = dict(base.v1_layers[0], size=base.v1_layers[0]["size"] + 7)
    tag_manifest(root, manifest_bytes(base.v1_config, [layer]))


@case("live_manifest_missing", "blob is missing", "missing",
      "A live manifest is absent: what it referenced cannot be judged, refuse (SEMANTICS §5).", show="MISSING")
def _(root: Path, outside: Path, base: Base) -> None:
    blob_file(root, base.v2["digest"]).unlink()


@case("live_layer_missing", None, "missing",
      "An absent layer is a node with present=False, not an error: GC goes on (nothing to "
      "delete for it); fsck reports it.", delete="")
def _(root: Path, outside: Path, base: Base) -> None:
    blob_file(root, base.v1_layers[1]["digest"]).unlink()


# symlinks and odd files under blobs/ -------------------------------------------------------------

@case("blob_is_a_symlink_outside", None, "junk",
      "A symlink named like a blob (here a garbage layer, pointing outside) is reported and "
      "never followed nor deleted; the target is untouched.",
      check=lambda root, outside, base: _assert_link(root, base.dangling["digest"]))
def _(root: Path, outside: Path, base: Base) -> None:
    path = blob_file(root, base.dangling["digest"])
    path.rename(outside / "dangling")
    path.symlink_to(outside / "dangling")


@case("live_manifest_is_a_symlink", "blob is missing", "junk",
      "A live manifest that is a symlink is not read (ocigraph never follows symlinks): "
      "it is missing as far as GC knows, so refuse.  Deleting v1 itself is fine (what it "
      "referenced stays, as garbage for the next GC).", show="MISSING", delete="")
def _(root: Path, outside: Path, base: Base) -> None:
    path = blob_file(root, base.v1["digest"])
    path.rename(outside / "v1")
    path.symlink_to(outside / "v1")


@case("blobs_sha256_is_a_symlink_outside", "blobs/sha256: is a symlink", "symlink",
      "blobs/sha256 pointing outside the layout: refuse; nothing outside is read or deleted.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "blobs" / "sha256").rename(outside / "sha256")
    (root / "blobs" / "sha256").symlink_to(outside / "sha256")


@case("blobs_is_a_symlink", "blobs: is a symlink", "symlink", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "blobs").rename(outside / "blobs")
    (root / "blobs").symlink_to(outside / "blobs")


@case("blobs_missing", "blobs: missing", "blobs: missing", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "blobs").rename(outside / "blobs")


@case("blobs_is_a_file", "blobs: is not a directory", "not a directory", "Refuse.")
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "blobs").rename(outside / "blobs")
    (root / "blobs").write_bytes(b"")


@case("directory_named_like_a_digest", None, "junk",
      "A directory named like a blob is reported as junk and left alone.",
      check=lambda root, outside, base: _assert_dir(root, "sha256:" + "d" * 64))
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "blobs" / "sha256" / ("d" * 64)).mkdir()
    (root / "blobs" / "sha256" / ("d" * 64) / "file").write_bytes(b"keep me")


@case("fifo_named_like_a_garbage_blob", None, "junk",
      "A FIFO under blobs/ is junk: never opened (no hang), never deleted.",
      check=lambda root, outside, base: _assert_exists(root / "blobs" / "sha256" / ("f" * 64)))
def _(root: Path, outside: Path, base: Base) -> None:
    os.mkfifo(root / "blobs" / "sha256" / ("f" * 64))


@case("junk_names_and_unknown_algorithm_folders", None, "junk",
      "Invalid names, unknown algorithm folders and stray files under blobs/ are reported "
      "and left alone.", check=lambda root, outside, base: _assert_junk_kept(root))
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "blobs" / "sha256" / "README").write_bytes(b"not a blob")
    (root / "blobs" / "sha256" / ("A" * 64)).write_bytes(b"uppercase name")
    (root / "blobs" / "sha256" / ("a" * 63)).write_bytes(b"short name")
    (root / "blobs" / "md5").mkdir()
    (root / "blobs" / "md5" / ("0" * 32)).write_bytes(b"md5 blob")
    (root / "blobs" / "stray-file").write_bytes(b"x")


@case("non_utf8_file_names", None, "junk",
      "File names that are not UTF-8 (under blobs/, blobs/sha256/ and the root) are reported "
      "with \\x escapes and left alone; nothing crashes printing them.",
      check=lambda root, outside, base: _assert_non_utf8_kept(root))
def _(root: Path, outside: Path, base: Base) -> None:
    for parent in (b"blobs/sha256/", b"blobs/", b""):
        name = os.path.join(os.fsencode(root), parent + b"\xff\xfe-bad-\x80name")
        with open(name, "wb") as f:
            f.write(b"junk")


@case("ingest_and_stray_files_at_the_root", None, None,
      "Anything outside blobs/ and index.json (ingest/, notes, lock files of other tools) is "
      "never touched.", delete="",
      check=lambda root, outside, base: _assert_exists(root / "ingest" / "partial"))
def _(root: Path, outside: Path, base: Base) -> None:
    (root / "ingest").mkdir()
    (root / "ingest" / "partial").write_bytes(b"half a layer")
    (root / "README.md").write_bytes(b"hello")


# cycles, self references, deep nesting, size ----------------------------------------------------

def _crafted(data: bytes, salt: str) -> str:
    """A digest that ``data`` does not hash to: what a crafted cycle needs."""
    return "sha256:" + hashlib.sha256(salt.encode()).hexdigest()


@case("crafted_subject_cycle", "content does not match its digest", "digest-mismatch",
      "With real digests a cycle would need a hash collision; a crafted one (two manifests "
      "naming each other as subject) fails verification, so a live one is refused.  The core's "
      "walks are cycle-safe anyway (tests/test_hostile.py checks that without verification).", show="BROKEN")
def _(root: Path, outside: Path, base: Base) -> None:
    a, b = _crafted(b"", "cycle-a"), _crafted(b"", "cycle-b")
    for me, other in ((a, b), (b, a)):
        data = manifest_bytes(base.v1_config, [], subject={"mediaType": OCI_MANIFEST,
                                                           "digest": other, "size": 100})
        blob_file(root, me).write_bytes(data)
    doc = index_doc(root)
    doc["manifests"].append({"mediaType": OCI_MANIFEST, "digest": a, "size": 100,
                             "annotations": {REF_NAME: "cycle"}})
    write_index(root, doc)


@case("crafted_cycle_in_garbage", None, "digest-mismatch",
      "The same crafted cycle, untagged and unreferenced, is plain garbage: deleted.",
      check=lambda root, outside, base: _assert_gone(root, _crafted(b"", "gcycle-a")))
def _(root: Path, outside: Path, base: Base) -> None:
    a, b = _crafted(b"", "gcycle-a"), _crafted(b"", "gcycle-b")
    for me, other in ((a, b), (b, a)):
        data = manifest_bytes(base.v1_config, [], subject={"mediaType": OCI_MANIFEST,
                                                           "digest": other, "size": 100})
        blob_file(root, me).write_bytes(data)


@case("index_that_lists_itself", "content does not match its digest", "digest-mismatch",
      "An index listing its own digest (crafted) fails verification: refuse.", show="BROKEN")
def _(root: Path, outside: Path, base: Base) -> None:
    me = _crafted(b"", "self")
    data = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_INDEX, "digest": me, "size": 100}, base.v1]})
    tag_manifest(root, data, tag="self", digest=me, media_type=OCI_INDEX)


@case("deep_index_nesting", None, None,
      "An index nested 3,000 levels deep (valid digests): every walk is iterative, no "
      "RecursionError; deleting the top cascades through all levels.", slow=True, delete="",
      extra={"depth": 3000})
def _(root: Path, outside: Path, base: Base) -> None:
    child: dict[str, Any] = base.v2
    for level in range(3000):
        data = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child],
                          "annotations": {"level": str(level)}})
        child = {"mediaType": OCI_INDEX, "digest": add_blob(root, data), "size": len(data)}
    doc = index_doc(root)
    doc["manifests"].append(dict(child, annotations={REF_NAME: "deep"}))
    write_index(root, doc)


@case("ambiguous_tag", None, None,
      "The same tag on two digests: both are roots for GC; naming the tag is refused with both "
      "digests listed.", delete="is ambiguous")
def _(root: Path, outside: Path, base: Base) -> None:
    doc = index_doc(root)
    doc["manifests"].append(dict(base.garbage, annotations={REF_NAME: "v1"}))
    write_index(root, doc)


@case("tag_with_control_characters", None, None,
      "A tag with a newline and an ANSI escape: the layout is usable; any error naming it stays "
      "on one line.", delete="")
def _(root: Path, outside: Path, base: Base) -> None:
    doc = index_doc(root)
    doc["manifests"].append(dict(base.garbage, annotations={REF_NAME: "evil\n\x1b[2Jtag"}))
    write_index(root, doc)


# --- checks ---------------------------------------------------------------------------------------


def _assert_gone(root: Path, digest: str) -> None:
    assert not os.path.lexists(blob_file(root, digest)), f"{digest} should have been collected"


def _assert_exists(path: Path) -> None:
    assert os.path.lexists(path), f"{path} should have been left alone"


def _assert_link(root: Path, digest: str) -> None:
    assert blob_file(root, digest).is_symlink(), "the symlink should have been left alone"


def _assert_dir(root: Path, digest: str) -> None:
    assert blob_file(root, digest).is_dir(), "the directory should have been left alone"


def _assert_junk_kept(root: Path) -> None:
    for rel in ("blobs/sha256/README", "blobs/sha256/" + "A" * 64, "blobs/sha256/" + "a" * 63,
                "blobs/md5/" + "0" * 32, "blobs/stray-file"):
        _assert_exists(root / rel)


def _assert_non_utf8_kept(root: Path) -> None:
    for parent in (b"blobs/sha256/", b"blobs/", b""):
        name = os.path.join(os.fsencode(root), parent + b"\xff\xfe-bad-\x80name")
        assert os.path.lexists(name), name


CASE_NAMES = [c.name for c in CASES]
assert len(set(CASE_NAMES)) == len(CASE_NAMES), "duplicate case names"
