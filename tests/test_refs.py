"""What a reference names: tags, digests, digest prefixes and bare hex, one set of rules for
graphs and graph sources alike (ocigraph/_refs.py)."""

from __future__ import annotations

import re

import pytest
from builder import CONFIG, Builder
from hypothesis import given, settings
from hypothesis import strategies as st

import ocigraph as og
from ocigraph.testing import GeneratedLayout, generated_layouts


def image(b: Builder, name: str) -> dict:
    return b.manifest(b.blob(f"config of {name}", CONFIG), [b.blob(f"layer of {name}")])


def two_images() -> tuple[Builder, dict, dict]:
    b = Builder()
    one, two = image(b, "one"), image(b, "two")
    b.entry(one, "one")
    b.entry(two, "two")
    return b, one, two


def blobs_named(names: list[str]) -> og.LayoutGraph:
    """A graph whose nodes are unreferenced blobs with these digests (their bytes do not hash
    to them, which nothing checks for a blob no manifest needs)."""
    return og.build_graph(og.layout_from_bytes(b'{"schemaVersion":2,"manifests":[]}',
                                               {n: b"\x1f\x8b" for n in names}))


# -- short digests, as the text output prints them, work in every planner -------------------------


def test_the_planners_accept_the_short_digests_the_text_output_prints():
    b, one, _ = two_images()
    g = b.graph()
    short = og.short_digest(one["digest"])
    assert short == one["digest"][:19]
    assert og.plan_delete(g, [short]) == og.plan_delete(g, [one["digest"]])
    assert og.plan_delete(g, [short]).targets == (one["digest"],)
    assert og.plan_remove(g, [short]) == og.plan_remove(g, [one["digest"]])
    assert og.plan_untag(g, [short]) == og.plan_untag(g, [one["digest"]])
    assert og.plan_untag(g, [short]).targets == (one["digest"],)  # a plan records it whole
    assert og.plan_untag(g, ["one"]).targets == ("one",)
    source = og.WholeGraph(g)
    for ref in (short, one["digest"][7:19], one["digest"], "one"):
        assert og.resolve_ref(g, ref) == og.resolve_in(source, ref) == one["digest"]
    assert og.resolve_refs(g, [short, "one", one["digest"]]) == (one["digest"],)


def test_a_bare_hex_string_is_a_digest_unless_a_tag_has_that_name():
    b, one, two = two_images()
    bare = one["digest"][7:19]
    b.entry(two, one["digest"][7:23])  # a tag that looks like a longer prefix of `one`
    g = b.graph()
    assert og.resolve_ref(g, bare) == one["digest"]
    assert og.resolve_ref(g, one["digest"][7:]) == one["digest"]  # 64 hex: the whole digest
    assert og.resolve_ref(g, one["digest"][7:23]) == two["digest"]  # the tag wins
    assert og.resolve_refs(og.WholeGraph(g), [bare]) == (one["digest"],)
    missing = next(h for h in ("fedcba987654", "0123456789ab") if not any(n[7:].startswith(h) for n in g))
    with pytest.raises(og.UnknownRefError, match="no tag has that name and no sha256 digest"):
        og.resolve_ref(g, missing)


# -- errors say what the ref was read as ------------------------------------------------------------


def test_an_ambiguous_prefix_is_reported_as_a_digest_prefix_with_its_candidates():
    names = [f"sha256:000c{i:x}" + "0" * 59 for i in range(1, 8)]
    g = blobs_named(names)
    for where in (g, og.WholeGraph(g)):
        with pytest.raises(og.AmbiguousRefError) as err:
            og.resolve_refs(where, ["sha256:000c"])
        assert err.value.prefix and err.value.digests == tuple(names)
        message = str(err.value)
        assert message.startswith("digest prefix 'sha256:000c' is ambiguous: sha256:000c1")
        assert "tag" not in message and message.endswith("and 2 more (name more characters)")
        listed = re.findall(r"sha256:[0-9a-f]+", message.split(": ", 1)[1])
        assert len(listed) == 5 and [n for n in names if n.startswith(tuple(listed))] == names[:5]
        assert all(sum(n.startswith(s) for n in names) == 1 for s in listed)  # each tells one apart
    with pytest.raises(og.AmbiguousRefError, match="digest prefix '000c' is ambiguous"):
        og.resolve_ref(g, "000c")  # bare hex: a prefix too


def test_candidates_that_share_more_than_twelve_characters_are_shown_long_enough_to_tell_apart():
    names = ["sha256:" + "ab" * 10 + "1" + "0" * 43, "sha256:" + "ab" * 10 + "2" + "0" * 43]
    with pytest.raises(og.AmbiguousRefError) as err:
        og.resolve_ref(blobs_named(names), "sha256:abab")
    shown = re.findall(r"sha256:[0-9a-f]+", str(err.value).split(": ", 1)[1])
    assert shown == [n[:7 + 21] for n in names]


@pytest.mark.parametrize("ref", ["sha256:abc", "sha256:a", "abc", "e"])
def test_a_prefix_under_four_hex_characters_is_refused_saying_four_are_accepted(ref):
    b, _, _ = two_images()
    with pytest.raises(og.UnknownRefError, match="prefixes of 4 or more hex characters"):
        og.plan_delete(b.graph(), [ref])


def test_a_short_tag_that_looks_like_hex_is_still_a_tag():
    b, one, _ = two_images()
    b.entry(one, "abc")
    assert og.resolve_ref(b.graph(), "abc") == one["digest"]


def test_unknown_refs_say_what_they_were_read_as():
    g = two_images()[0].graph()
    cases = {
        "nope": "unknown tag 'nope'",
        "example.com/app:1.0": "unknown tag 'example.com/app:1.0'",
        "sha256:" + "f" * 64: "unknown digest 'sha256:ffff",
        "sha256:ffff0000": "unknown digest prefix 'sha256:ffff0000': no digest in the layout",
    }
    for ref, start in cases.items():
        with pytest.raises(og.UnknownRefError) as err:
            og.resolve_ref(g, ref)
        assert str(err.value).startswith(start), str(err.value)
    with pytest.raises(og.InvalidDigestError):  # a mistyped digest is not a tag
        og.resolve_ref(g, "sha256:ABCD")


def test_a_tag_on_two_digests_is_still_reported_as_a_tag():
    b, _, two = two_images()
    b.entry(two, "one")
    with pytest.raises(og.AmbiguousRefError, match="tag 'one' is ambiguous") as err:
        og.resolve_ref(b.graph(), "one")
    assert not err.value.prefix


def test_a_view_resolves_only_its_own_digests():
    b, one, _ = two_images()
    g = b.graph()
    view = og.neighbourhood(og.WholeGraph(g), [one["digest"]], og.Policy())
    assert og.resolve_refs(view, [one["digest"]]) == (one["digest"],)
    for ref in ("one", og.short_digest(one["digest"])):
        with pytest.raises(ValueError, match="by digest"):
            og.resolve_refs(view, [ref])


# -- the rules, on generated layouts ----------------------------------------------------------------


@settings(max_examples=200)
@given(generated_layouts(), st.data())
def test_every_prefix_names_its_digest_exactly_when_no_other_digest_starts_with_it(
        g: GeneratedLayout, data: st.DataObject) -> None:
    graph = og.build_graph(g.layout())
    source = og.WholeGraph(graph)
    nodes = sorted(graph)
    if not nodes:
        return
    digest = data.draw(st.sampled_from(nodes))
    alg, _, encoded = digest.partition(":")
    cut = data.draw(st.integers(4, len(encoded)), label="prefix length")
    prefix = f"{alg}:{encoded[:cut]}"
    starting = [n for n in nodes if n.startswith(prefix)]
    bare = [encoded[:cut]] if alg == "sha256" and encoded[:cut] not in g.tags else []
    for ref in [prefix, *bare]:
        for where in (graph, source):
            if len(starting) == 1:
                assert og.resolve_refs(where, [ref]) == (digest,)
            else:
                with pytest.raises(og.AmbiguousRefError) as err:
                    og.resolve_refs(where, [ref])
                assert err.value.prefix and err.value.digests == tuple(starting)
    if cut < len(encoded) and len(starting) == 1:  # the same plan as the whole digest
        refs = [prefix]
        assert og.plan_delete(graph, refs, og.Policy(guard=False)) == \
            og.plan_delete(graph, [digest], og.Policy(guard=False))


def test_resolve_refs_names_each_digest_once_in_first_occurrence_order():
    b, one, two = two_images()
    refs = ["two", og.short_digest(one["digest"]), two["digest"], "one"]
    assert og.resolve_refs(b.graph(), refs) == (two["digest"], one["digest"])
    assert og.plan_delete(b.graph(), refs, og.Policy(guard=False)).targets == (two["digest"],
                                                                                 one["digest"])
