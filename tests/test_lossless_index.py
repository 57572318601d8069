"""index.json rewrites keep what ocigraph does not own, exactly.

Applying a plan rewrites index.json through ``og.render_index``.  Everything outside the entries
the plan drops or untags -- vendor fields, numbers no double holds, non-ASCII text, key order,
duplicate keys -- must read back as the same value.  The tests compare documents through a
*lossless* reading: integers as Python ints, every other number by its exact text, objects as
ordered lists of members (duplicates kept), so ``1.5e-400`` and ``0.0`` differ, and so do
``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import ocigraph as og

REF_NAME = "org.opencontainers.image.ref.name"
BIG_INT = "123456789012345678901234567890"
TINY = "1.5e-400"
PAST_UINT64 = "18446744073709551616"


class Number(str):
    """A JSON number that is not an integer, by its text: equal only to the same text."""

    def __eq__(self, other: object) -> bool:
        return type(other) is Number and str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__


class Obj(tuple):  # type: ignore[type-arg]
    """A JSON object: its members in order, duplicates kept; never equal to an array."""


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def lossless(data: bytes | str) -> Any:
    return json.loads(data, parse_int=int, parse_float=Number, parse_constant=refuse_constant,
                      object_pairs_hook=Obj)


def member(obj: Obj, key: str) -> Any:
    """The value of the last member named ``key`` (the one parse_index reads)."""
    values = [v for k, v in obj if k == key]
    assert values, f"no {key!r} in {obj!r}"
    return values[-1]


def without_tag(entry: Obj) -> Obj:
    """What untagging does to an entry: every ``annotations`` object loses its ref.name, and one
    that had it and is left empty goes."""
    out = []
    for k, v in entry:
        if k == "annotations" and isinstance(v, Obj):
            kept = Obj(m for m in v if m[0] != REF_NAME)
            if not kept and len(v):
                continue
            v = kept
        out.append((k, v))
    return Obj(out)


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def change(index: og.Index, position: int, action: str) -> og.IndexChange:
    entry = index.entries[position]
    return og.IndexChange(position, entry.digest, entry.tag, action)  # type: ignore[arg-type]


# -- a hand-written index.json with everything a rewrite could lose ----------------------------

HOSTILE = f"""{{
  "schemaVersion": 2,
  "x-big": {BIG_INT},
  "x-tiny": {TINY},
  "x-uint64": {PAST_UINT64},
  "x-text": "é😀 \\u00e9\\ud83d\\ude00",
  "x-dup": 1, "x-dup": 2, "x-Dup": 3, "x-d\\u0075p": 4,
  "x-nested": {{"deep": [{{"n": -0.000000000000000000000000000001e-5}}, {{}}, [], null]}},
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {{
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "{digest(0)}",
      "size": 7,
      "x-entry-big": {BIG_INT},
      "annotations": {{"org.example.note": "é😀", "{REF_NAME}": "first", "org.example.n": "{TINY}"}}
    }},
    {{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "{digest(1)}", "size": 8,
      "x-entry": {{"u64": {PAST_UINT64}, "tiny": {TINY}, "list": [1.10, 1.1, 11e-1]}},
      "annotations": {{"{REF_NAME}": "second"}}}},
    {{"digest": "{digest(2)}", "size": 9, "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "x-dup": "a", "x-dup": "b"}},
    {{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "{digest(3)}",
      "size": 10, "annotations": {{"{REF_NAME}": "fourth"}}, "x-after": [{BIG_INT}, "ü"]}}
  ],
  "annotations": {{"org.example.layout": "ü", "x": "{BIG_INT}"}},
  "x-last": {TINY}
}}
"""


def test_the_hand_written_index_is_read_as_written() -> None:
    doc = lossless(HOSTILE)
    assert member(doc, "x-big") == int(BIG_INT)
    assert member(doc, "x-tiny") == Number(TINY) and member(doc, "x-tiny") != Number("0.0")
    assert [k for k, _ in doc][5:9] == ["x-dup", "x-dup", "x-Dup", "x-dup"]
    index = og.parse_index(HOSTILE.encode())
    assert [e.tag for e in index.entries] == ["first", "second", None, "fourth"]


@pytest.mark.parametrize("changes", [
    [(0, "drop")],
    [(1, "drop"), (3, "drop")],
    [(0, "untag")],
    [(1, "untag"), (2, "drop")],
    [(3, "untag"), (0, "drop"), (1, "untag")],
    [(0, "drop"), (1, "drop"), (2, "drop"), (3, "drop")],
])
def test_a_rewrite_keeps_every_value_it_does_not_touch(changes: list[tuple[int, str]]) -> None:
    index = og.parse_index(HOSTILE.encode())
    new = og.render_index(index, [change(index, p, a) for p, a in changes])

    before, after = lossless(HOSTILE), lossless(new)
    assert [m for m in after if m[0] != "manifests"] == [m for m in before if m[0] != "manifests"]
    assert [k for k, _ in after] == [k for k, _ in before]
    actions = dict(changes)
    want = [without_tag(e) if actions.get(i) == "untag" else e
            for i, e in enumerate(member(before, "manifests")) if actions.get(i) != "drop"]
    assert member(after, "manifests") == want
    # the three numbers the old rewrite rounded, as written
    text = new.decode()
    assert f'"x-big": {BIG_INT},' in text and f'"x-tiny": {TINY},' in text
    assert f'"x-uint64": {PAST_UINT64},' in text and '"x-text": "é😀 \\u00e9' in text
    reread = og.parse_index(new)
    assert [e.digest for e in reread.entries] == [
        e.digest for e in index.entries if actions.get(e.position) != "drop"]
    assert [e.tag for e in reread.entries] == [
        None if actions.get(e.position) == "untag" else e.tag
        for e in index.entries if actions.get(e.position) != "drop"]


def test_untouched_entries_and_the_rest_keep_their_exact_text() -> None:
    index = og.parse_index(HOSTILE.encode())
    new = og.render_index(index, [change(index, 1, "drop"), change(index, 0, "untag")]).decode()
    starts = [HOSTILE.index(digest(i)) for i in range(4)]
    entry_2 = HOSTILE[HOSTILE.rindex("{", 0, starts[2]):HOSTILE.rindex("}", 0, starts[3]) + 1]
    entry_3 = HOSTILE[HOSTILE.rindex("{", 0, starts[3]):HOSTILE.index("\n  ],")]
    assert entry_2 + ",\n    " + entry_3 + "\n  ]," in new
    assert digest(1) not in new
    assert new.startswith(HOSTILE[:HOSTILE.index('"manifests"')])
    assert new.endswith(HOSTILE[HOSTILE.index("\n  ],"):])
    assert f'"annotations": {{"org.example.note": "é😀", "org.example.n": "{TINY}"}}' in new


def test_an_indented_document_stays_indented_without_a_dangling_comma() -> None:
    entries = [{"mediaType": og.OCI_MANIFEST, "digest": digest(i), "size": i,
                "annotations": {REF_NAME: f"t{i}"}} for i in range(3)]
    raw = orjson.dumps({"schemaVersion": 2, "manifests": entries}, option=orjson.OPT_INDENT_2)
    index = og.parse_index(raw)
    for dropped in range(3):
        new = og.render_index(index, [change(index, dropped, "drop")])
        kept = [e for i, e in enumerate(entries) if i != dropped]
        assert new == orjson.dumps({"schemaVersion": 2, "manifests": kept},
                                   option=orjson.OPT_INDENT_2)
    new = og.render_index(index, [change(index, i, "drop") for i in range(3)])
    assert orjson.loads(new) == {"schemaVersion": 2, "manifests": []}
    new = og.render_index(index, [change(index, 1, "untag")])
    untagged = [*entries[:1], {k: v for k, v in entries[1].items() if k != "annotations"},
                *entries[2:]]
    assert new == orjson.dumps({"schemaVersion": 2, "manifests": untagged},
                               option=orjson.OPT_INDENT_2)


def test_untag_keeps_other_annotations_and_removes_an_emptied_annotations_member() -> None:
    raw = (f'{{"schemaVersion":2,"manifests":['
           f'{{"mediaType":"t","digest":"{digest(0)}","size":1,"annotations":{{"{REF_NAME}":"a"}},"z":0}},'
           f'{{"mediaType":"t","digest":"{digest(1)}","size":1,"annotations":{{"k":"v","{REF_NAME}":"b"}}}},'
           f'{{"mediaType":"t","digest":"{digest(2)}","size":1,"annotations":{{"k":"v","{REF_NAME}":"c","l":"w"}}}}'
           f']}}')
    index = og.parse_index(raw.encode())
    new = og.render_index(index, [change(index, i, "untag") for i in range(3)]).decode()
    assert new == (f'{{"schemaVersion":2,"manifests":['
                   f'{{"mediaType":"t","digest":"{digest(0)}","size":1,"z":0}},'
                   f'{{"mediaType":"t","digest":"{digest(1)}","size":1,"annotations":{{"k":"v"}}}},'
                   f'{{"mediaType":"t","digest":"{digest(2)}","size":1,"annotations":{{"k":"v","l":"w"}}}}'
                   f']}}')


def test_keys_are_matched_by_their_decoded_value_and_the_last_duplicate_counts() -> None:
    # "m\u0061nifests", "\u0064igest" and an escaped ref.name key are the same keys to orjson
    escaped_ref = REF_NAME.replace(".", "\\u002e")
    raw = (f'{{"schemaVersion":2,"manifests":"shadowed","m\\u0061nifests":['
           f'{{"mediaType":"t","\\u0064igest":"{digest(0)}","size":1,'
           f'"annotations":{{"{escaped_ref}":"old"}},'
           f'"annotations":{{"{REF_NAME}":"x","k":"v","{escaped_ref}":"a"}}}},'
           f'{{"mediaType":"t","digest":"{digest(9)}","digest":"{digest(1)}","size":1}}]}}')
    index = og.parse_index(raw.encode())
    assert [(e.digest, e.tag) for e in index.entries] == [(digest(0), "a"), (digest(1), None)]
    new = og.render_index(index, [change(index, 0, "untag")])
    assert og.parse_index(new).entries[0].tag is None
    doc = lossless(new)
    assert doc[1] == ("manifests", "shadowed")
    first = member(doc, "manifests")[0]
    assert [k for k, _ in first] == ["mediaType", "digest", "size", "annotations"]
    assert member(first, "annotations") == Obj([("k", "v")])
    new = og.render_index(index, [change(index, 1, "drop")])
    assert [e.digest for e in og.parse_index(new).entries] == [digest(0)]


def test_a_change_that_does_not_fit_is_refused_and_no_change_returns_the_same_bytes() -> None:
    index = og.parse_index(HOSTILE.encode())
    assert og.render_index(index, []) == HOSTILE.encode()
    for bad in (og.IndexChange(4, digest(0), None, "drop"),
                og.IndexChange(-1, digest(3), None, "drop"),
                og.IndexChange(1, digest(0), "first", "untag")):
        with pytest.raises(og.LayoutError, match="the plan does not fit"):
            og.render_index(index, [bad])


def test_numbers_beyond_a_double_are_read_and_kept_and_what_json_forbids_is_still_refused() -> None:
    raw = (f'{{"schemaVersion":2,"x":1e400,"y":-1E+999,"z":{"9" * 400},"manifests":['
           f'{{"mediaType":"t","digest":"{digest(0)}","size":1,"n":1e400}},'
           f'{{"mediaType":"t","digest":"{digest(1)}","size":1}}]}}').encode()
    index = og.parse_index(raw)
    new = og.render_index(index, [change(index, 1, "drop")])
    assert lossless(new)[1:4] == lossless(raw)[1:4]
    assert b'"n":1e400}' in new
    for refused in (b'{"schemaVersion":2,"x":NaN,"manifests":[]}',
                    b'{"schemaVersion":2,"x":1e400,"s":"\\ud800","manifests":[]}',
                    b'{"schemaVersion":2,"x":1e400,"manifests":[],}'):
        with pytest.raises(og.InvalidIndexError, match="not valid JSON"):
            og.parse_index(refused)
    # a size is an integer orjson can hold, whichever reader read the document
    for size in ("1e400", "18446744073709551616"):
        with pytest.raises(og.InvalidIndexError, match="size"):
            og.parse_index(f'{{"schemaVersion":2,"x":1e400,"manifests":[{{"mediaType":"t",'
                           f'"digest":"{digest(0)}","size":{size}}}]}}'.encode())


def test_annotations_that_are_not_strings_are_still_refused() -> None:
    raw = (f'{{"schemaVersion":2,"manifests":[{{"mediaType":"t","digest":"{digest(0)}",'
           f'"size":1,"annotations":{{"{REF_NAME}":{BIG_INT}}}}}]}}').encode()
    with pytest.raises(og.InvalidIndexError, match=r"manifests\[0\].*annotations.*not a string"):
        og.parse_index(raw)


# -- the property: random documents, random change sets ----------------------------------------

KEYS = st.text(max_size=6) | st.sampled_from(["x-dup", "x-Dup", "é😀", "", REF_NAME])
OWNED_IN_ENTRY = {"mediaType", "digest", "size", "annotations", "platform", "artifactType"}
NUMBERS = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from([BIG_INT, TINY, PAST_UINT64, "1e400", "-1E+999", "-0", "0.0", "1.10",
                     "0.1000000000000000000000000000001", "9007199254740993"]),
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
)
SPACES = st.sampled_from(["", " ", "\n", "\n  ", "\t", "\r\n    "])


@st.composite
def json_string(draw: st.DrawFn, value: st.SearchStrategy[str] | None = None) -> str:
    text = draw(value if value is not None else st.text(max_size=8))
    return json.dumps(text, ensure_ascii=draw(st.booleans()))


def json_object(draw: st.DrawFn, members: list[tuple[str, str]]) -> str:
    """Object text from ``(key, value text)`` pairs, with drawn whitespace around tokens."""
    if not members:
        return "{" + draw(SPACES) + "}"
    parts = [draw(SPACES) + draw(json_string(st.just(k))) + draw(SPACES) + ":" + draw(SPACES) + v
             + draw(SPACES) for k, v in members]
    return "{" + ",".join(parts) + "}"


@st.composite
def json_value(draw: st.DrawFn) -> str:
    leaf = st.one_of(NUMBERS, json_string(), st.sampled_from(["true", "false", "null"]))
    tree = st.recursive(
        leaf.map(lambda text: ("leaf", text)),
        lambda inner: st.lists(inner, max_size=3).map(lambda xs: ("array", xs))
        | st.lists(st.tuples(KEYS, inner), max_size=3).map(lambda ms: ("object", ms)),
        max_leaves=6,
    )

    def text(node: Any) -> str:
        kind, body = node
        if kind == "leaf":
            return str(body)
        if kind == "array":
            return "[" + ",".join(draw(SPACES) + text(x) for x in body) + draw(SPACES) + "]"
        return json_object(draw, [(k, text(v)) for k, v in body])

    return text(draw(tree))


@st.composite
def index_documents(draw: st.DrawFn) -> str:
    entries = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        members = [("mediaType", json.dumps(og.OCI_MANIFEST)),
                   ("digest", json.dumps(digest(draw(st.integers(0, 3))))),
                   ("size", str(draw(st.integers(0, 2**63))))]
        annotations = [(k, draw(json_string())) for k in draw(st.lists(KEYS, max_size=3))]
        tag = draw(st.none() | st.sampled_from(["a", "b", "é😀"]))
        if tag is not None:
            annotations.insert(draw(st.integers(0, len(annotations))), (REF_NAME, json.dumps(tag)))
        if annotations or draw(st.booleans()):
            members.append(("annotations", json_object(draw, annotations)))
        extra = draw(st.lists(st.tuples(KEYS.filter(lambda k: k not in OWNED_IN_ENTRY),
                                        json_value()), max_size=3))
        members = draw(st.permutations(members + extra))
        entries.append(json_object(draw, members))
    top = [("schemaVersion", "2"),
           ("manifests", "[" + ",".join(draw(SPACES) + e for e in entries) + draw(SPACES) + "]")]
    extra = draw(st.lists(st.tuples(KEYS.filter(lambda k: k not in {"schemaVersion", "manifests"}),
                                    json_value()), max_size=4))
    return draw(SPACES) + json_object(draw, draw(st.permutations(top + extra))) + draw(SPACES)


@given(data=st.data())
def test_random_rewrites_keep_every_untouched_value_exactly(data: st.DataObject) -> None:
    raw = data.draw(index_documents(), label="index.json").encode()
    index = og.parse_index(raw)
    actions = {e.position: data.draw(st.sampled_from([None, "drop", "untag"]),
                                     label=f"entry {e.position}") for e in index.entries}
    changes = [change(index, p, a) for p, a in actions.items() if a is not None]
    changes = data.draw(st.permutations(changes), label="order of the changes")
    new = og.render_index(index, changes)
    note(new.decode())

    reread = og.parse_index(new)
    kept = [e for e in index.entries if actions[e.position] != "drop"]
    assert [e.digest for e in reread.entries] == [e.digest for e in kept]
    assert [e.tag for e in reread.entries] == [
        None if actions[e.position] == "untag" else e.tag for e in kept]
    assert [e.descriptor.annotations for e in reread.entries] == [
        tuple(p for p in e.descriptor.annotations if p[0] != REF_NAME)
        if actions[e.position] == "untag" else e.descriptor.annotations for e in kept]

    before, after = lossless(raw), lossless(new)
    assert [m for m in after if m[0] != "manifests"] == [m for m in before if m[0] != "manifests"]
    assert [k for k, _ in after] == [k for k, _ in before]
    want = [without_tag(e) if actions[i] == "untag" else e
            for i, e in enumerate(member(before, "manifests")) if actions[i] != "drop"]
    assert member(after, "manifests") == want
    if not changes:
        assert new == raw


# --- putting entries back (restore after an apply kept its blobs) ----------------------------


@pytest.mark.parametrize("action", ["drop", "untag"])
def test_restoring_entries_puts_back_their_exact_text_and_keeps_the_rest(action: str) -> None:
    before = HOSTILE.encode()
    index = og.parse_index(before)
    changes = [change(index, 0, action)]
    after = og.render_index(index, changes)
    # another tool then rewrote index.json its own way, with a value no double holds
    current = after.replace(b'"schemaVersion"', f'"pushedBy": {BIG_INT}, "schemaVersion"'.encode(), 1)
    restored = og.restore_index_entries(current, before, [(c.position, c.digest, c.action)
                                                           for c in changes])
    assert BIG_INT.encode() in restored
    doc, was = lossless(restored), lossless(before)
    assert member(doc, "pushedBy") == int(BIG_INT)
    entries, old = member(doc, "manifests"), member(was, "manifests")
    assert old[0] in entries and len(entries) == len(old)
    assert og.restore_index_entries(restored, before, [(0, changes[0].digest, action)]) == restored


def test_restoring_a_tag_another_image_now_has_is_refused() -> None:
    d, e = digest(1), digest(2)
    before = json.dumps({"manifests": [{"digest": d, "annotations": {REF_NAME: "v1"}}]}).encode()
    current = json.dumps({"manifests": [{"digest": e, "annotations": {REF_NAME: "v1"}}]}).encode()
    with pytest.raises(ValueError, match=f"tag 'v1' now names {e}, not {d}"):
        og.restore_index_entries(current, before, [(0, d, "drop")])
    with pytest.raises(ValueError, match="not a JSON object"):
        og.restore_index_entries(b"[1, 2]", before, [(0, d, "drop")])


def test_blob_parts_is_the_only_way_a_digest_becomes_a_name() -> None:
    assert og.blob_parts(digest(3)) == ("sha256", digest(3)[7:])
    for bad in ["sha256:../../etc/passwd", "sha256:" + "A" * 64, "blake3:" + "0" * 64, "sha256"]:
        with pytest.raises(og.InvalidDigestError):
            og.blob_parts(bad)
