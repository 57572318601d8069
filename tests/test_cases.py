"""Run every JSON case in tests/cases/ against the pure core.

Each case is a layout plus a sequence of steps.  A step plans one operation on the current
layout and checks the plan; unless the step says ``"apply": false`` (or expects an error), the
plan is then applied with ``og.simulate`` and the next step sees the result.  Step ops:

delete        ``targets`` (ids or ``tag:NAME``) with ``policy``
gc            ``policy``
untag         ``refs`` (tag names, bare or ``tag:NAME``)
remove        ``refs`` with ``policy``
predecessors  ``of`` an id: the graph's predecessors of that digest (none if it is no node)

``policy`` is a preset name or ``{"preset": ..., <Policy field>: value, ...}``; it defaults
to ``default``.  ``expect`` holds either ``deleted`` (the exact set of ids the plan deletes,
present blobs only unless the step sets ``include_absent``) or ``error`` (the class name, or
the name of a base class) with ``mentions`` (ids or ``tag:NAME`` whose digest or name the
message must contain); optionally ``index``, the index.json entries after the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from casefile import Materialized, load_cases, materialize

import ocigraph as og

CASES = load_cases()


def policy_from_case(spec: str | Mapping[str, Any]) -> og.Policy:
    if isinstance(spec, str):
        return og.Policy.preset(spec)
    fields = dict(spec)
    preset = fields.pop("preset", "default")
    return dataclasses.replace(og.Policy.preset(preset), **fields)


def index_state(layout: og.Layout) -> list[tuple[str, str | None]]:
    return [(e.descriptor.digest, e.tag) for e in layout.index.entries]


def expected_index(
    m: Materialized, entries: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str | None]]:
    return [(m.digest(e["ref"]), e.get("tag")) for e in entries]


def readable_index(m: Materialized, state: list[tuple[str, str | None]]) -> list[str]:
    return [m.id_of(d) + (f":{t}" if t is not None else "") for d, t in state]


def plan_step(graph: Any, m: Materialized, step: Mapping[str, Any]) -> og.Plan:
    op = step["op"]
    policy = policy_from_case(step.get("policy", "default"))
    if op == "delete":
        return og.plan_delete(graph, [m.ref(t) for t in step["targets"]], policy)
    if op == "gc":
        return og.plan_gc(graph, policy)
    if op == "untag":
        return og.plan_untag(graph, [m.ref(r, bare_is_tag=True) for r in step["refs"]])
    if op == "remove":
        return og.plan_remove(graph, [m.ref(r) for r in step["refs"]], policy)
    raise AssertionError(f"unknown op {op!r}")  # check_case rejects these before we get here


def check_error(m: Materialized, step: Mapping[str, Any], layout: og.Layout, where: str) -> None:
    expect = step["expect"]
    with pytest.raises(og.OcigraphError) as info:
        plan_step(og.build_graph(layout), m, step)
    err = info.value
    names = [cls.__name__ for cls in type(err).__mro__]
    assert expect["error"] in names, (
        f"{where}: expected {expect['error']}, got {type(err).__name__}: {err}"
    )
    message = str(err)
    for item in expect.get("mentions", []):
        assert m.mention(item) in message, f"{where}: error does not mention {item!r}: {message}"


def run_step(m: Materialized, layout: og.Layout, step: Mapping[str, Any], where: str) -> og.Layout:
    """Check one step; return the layout the next step sees."""
    expect = step["expect"]
    if step["op"] == "predecessors":
        graph = og.build_graph(layout)
        node = m.digest(step["of"])
        got = set(graph.predecessors(node)) if node in graph else set()
        want = m.digests(expect["predecessors"])
        assert got == want, (
            f"{where}: predecessors of {step['of']}: got {m.names(got)}, want {m.names(want)}"
        )
        return layout
    if "error" in expect:
        check_error(m, step, layout, where)
        return layout

    plan = plan_step(og.build_graph(layout), m, step)
    digests = [d.digest for d in plan.deletions]
    assert len(digests) == len(set(digests)), (
        f"{where}: a node is planned twice: {m.names(digests)}"
    )
    include_absent = step.get("include_absent", False)
    got = {d.digest for d in plan.deletions if d.present or include_absent}
    want = m.digests(expect["deleted"])
    assert got == want, (
        f"{where}: deleted {m.names(got)}, want {m.names(want)} "
        f"(extra {m.names(got - want)}, missing {m.names(want - got)})"
    )
    assert og.Plan.from_json(plan.to_json()) == plan, (
        f"{where}: plan does not round-trip through JSON"
    )

    after = og.simulate(layout, plan)
    if "index" in expect:
        state, wanted = index_state(after), expected_index(m, expect["index"])
        assert state == wanted, (
            f"{where}: index.json after the step is {readable_index(m, state)}, "
            f"want {readable_index(m, wanted)}"
        )
    assert after.present_digests() == layout.present_digests() - set(digests), (
        f"{where}: simulate removed other blobs than the plan lists"
    )
    return layout if step.get("apply", True) is False else after


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    m = materialize(case)
    layout = og.layout_from_bytes(m.index_json, m.blobs)
    assert layout.present_digests() == frozenset(m.blobs), (
        "layout_from_bytes lost or invented blobs"
    )

    for i, step in enumerate(case["steps"]):
        where = f"{case['name']} step {i} ({step['op']})"
        layout = run_step(m, layout, step, where)

    final = case.get("final")
    if final is None:
        return
    if "present" in final:
        got, want = layout.present_digests(), m.digests(final["present"])
        assert got == want, (
            f"final present blobs {m.names(got)}, want {m.names(want)} "
            f"(extra {m.names(got - want)}, missing {m.names(want - got)})"
        )
    if "index" in final:
        state, wanted = index_state(layout), expected_index(m, final["index"])
        assert state == wanted, (
            f"final index.json {readable_index(m, state)}, want {readable_index(m, wanted)}"
        )


def test_every_case_file_loads_and_materialises() -> None:
    """The case files themselves are well formed (fails on a bad case, not on a core bug)."""
    for case in CASES:
        m = materialize(case)
        assert set(m.blobs) <= set(m.ids.values())
        assert len(set(m.ids.values())) == len(m.ids)
