"""Conditional edges (``edges:``, issue 21): the spec keys, the conditions, and the rules the
executor core applies (a node runs if one incoming edge holds; joins; skipped leaves; errors),
including a property test against a sequential reference over random DAGs."""

import itertools
import json
import textwrap
import threading

import jmespath
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from tests.executor_fakes import make_executor
from tests.executor_fakes import per_row
from tests.executor_fakes import request
from wfserve.kernel.conditions import Condition
from wfserve.kernel.conditions import ConditionError
from wfserve.kernel.conditions import truthy
from wfserve.kernel.errors import ConditionFailed
from wfserve.kernel.errors import NoLeafRan
from wfserve.kernel.errors import SpecError
from wfserve.kernel.spec import parse_spec

CLASSIFY = """
models: {}
dag:
  classify: [dog_breed, cat_breed]
edges:
  classify -> dog_breed: {when: "label == 'dog'"}
  classify -> cat_breed: {when: "label == 'cat'"}
"""


# --- the spec -------------------------------------------------------------------------------


def test_edges_are_parsed_and_compiled():
    spec = parse_spec(CLASSIFY)
    assert {e: c.source for e, c in spec.conditions.items()} == {
        ("classify", "dog_breed"): "label == 'dog'",
        ("classify", "cat_breed"): "label == 'cat'",
    }
    assert spec.edges == {"classify": ("dog_breed", "cat_breed")}  # the DAG as written


def test_a_torchserve_spec_has_no_conditions():
    assert parse_spec("models: {}\ndag:\n  a: [b]\n").conditions == {}


def test_an_edge_without_when_is_accepted_and_always_holds():
    spec = parse_spec("models: {}\ndag:\n  a: [b, c]\nedges:\n  a -> b: {}\n  a->c:\n")
    assert spec.conditions == {}


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ("  a -> c: {when: x}\n", "'a -> c' is not an edge of the dag"),
        ("  b -> a: {when: x}\n", "'b -> a' is not an edge of the dag"),
        ("  a b: {when: x}\n", "must be 'parent -> child'"),
        ("  a -> b -> c: {when: x}\n", "must be 'parent -> child'"),
        ("  a -> b: {when: \"label ==\"}\n", "edges: 'a -> b': bad condition 'label =='"),
        ("  a -> b: {when: \"foo[\"}\n", "edges: 'a -> b': bad condition"),
        ("  a -> b: {if: x}\n", "edges: 'a -> b': unknown option 'if' (known: when, map)"),
        ("  a -> b: {when: 3}\n", "'when' must be a non-empty string"),
        ("  a -> b: {when: ''}\n", "'when' must be a non-empty string"),
        ("  a -> b: yes\n", "must map to options"),
        ("  a -> b: {}\n  a->b: {}\n", "line 7: edges: 'a -> b' is given twice"),
    ],
)
def test_a_bad_edges_entry_is_a_spec_error_naming_the_edge(edges, message):
    text = "models: {}\ndag:\n  a: [b]\n  b: [c]\nedges:\n" + edges
    with pytest.raises(SpecError, match="line [67]: edges") as info:
        parse_spec(text)
    assert message in info.value.message


def test_edges_must_be_a_mapping():
    with pytest.raises(SpecError, match="'edges' must be a mapping"):
        parse_spec("models: {}\ndag:\n  a: [b]\nedges: [a]\n")


# --- conditions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), (False, False), ("", False), ([], False), ({}, False),
     (0, True), (0.0, True), (True, True), ("x", True), ([0], True), ({"a": None}, True)],
)
def test_truth_is_jmespaths(value, expected):
    assert truthy(value) is expected


def test_a_condition_over_bytes_and_over_objects():
    condition = Condition.compile("label == 'dog'")
    assert condition.holds(b'{"label": "dog"}', typed=False)
    assert not condition.holds(b'{"label": "cat"}', typed=False)
    assert condition.holds({"label": "dog"}, typed=True)
    assert not condition.holds({"other": 1}, typed=True)
    assert Condition.compile("score").holds({"score": 0}, typed=True)  # 0 is true


@pytest.mark.parametrize(
    ("output", "typed", "message"),
    [
        (b"not json", False, "not JSON"),
        (b"\xff\xfe", False, "not JSON"),
        ({"label": "dog"}, False, "not JSON (a dict)"),
        (b'{"label": "dog"}', True, "not JSON data (a bytes)"),
        ({1: "a"}, True, "a int key"),
        ({"a": {1, 2}}, True, "not JSON data (a set)"),
    ],
)
def test_an_output_that_is_not_json_is_a_condition_error(output, typed, message):
    with pytest.raises(ConditionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Condition.compile("label == 'dog'").holds(output, typed)


def test_a_function_given_a_wrong_type_is_a_condition_error():
    with pytest.raises(ConditionError, match="JMESPathTypeError"):
        Condition.compile("length(n) > `1`").holds({"n": 3}, typed=True)


# --- the executor core (threaded engine) ------------------------------------------------------


def build(executors, tmp_path, spec, factories):
    ex, _ = make_executor(tmp_path, spec, factories)
    executors.append(ex)
    return ex


def recorder(seen, name, fn):
    return per_row(lambda row: (seen.setdefault(name, []).append(row), fn(row))[1])


def classify_handlers(seen):
    return {
        "classify": recorder(seen, "classify", lambda r: r["body"]),
        "dog_breed": recorder(seen, "dog_breed", lambda r: b"a dog"),
        "cat_breed": recorder(seen, "cat_breed", lambda r: b"a cat"),
    }


def test_only_the_branch_whose_condition_holds_runs(executors, tmp_path):
    seen = {}
    ex = build(executors, tmp_path, CLASSIFY, classify_handlers(seen))
    result = ex.submit(request(b'{"label": "cat"}')).result(5)
    assert result.outputs == {"cat_breed": b"a cat"}
    assert seen["cat_breed"] == [{"body": b'{"label": "cat"}'}]
    assert "dog_breed" not in seen
    assert [t.node for t in result.timings] == ["classify", "cat_breed"]


def test_no_leaf_ran_fails_the_request(executors, tmp_path):
    seen = {}
    ex = build(executors, tmp_path, CLASSIFY, classify_handlers(seen))
    with pytest.raises(NoLeafRan, match="no leaf node ran") as info:
        ex.submit(request(b'{"label": "bird"}')).result(5)
    assert info.value.skipped == ["dog_breed", "cat_breed"]
    assert set(seen) == {"classify"}


def test_an_evaluation_error_fails_the_request_naming_the_edge(executors, tmp_path):
    seen = {}
    ex = build(executors, tmp_path, CLASSIFY, classify_handlers(seen))
    with pytest.raises(ConditionFailed, match="edge 'classify -> dog_breed'") as info:
        ex.submit(request(b"plain text")).result(5)
    assert info.value.edge == "classify -> dog_breed"
    assert "not JSON" in info.value.message
    assert set(seen) == {"classify"}


def test_a_tensor_in_typed_mode_is_an_evaluation_error(executors, tmp_path):
    import torch

    spec = CLASSIFY.replace("models: {}", "models:\n  typed: true")
    ex = build(executors, tmp_path, spec, {
        "classify": per_row(lambda r: torch.zeros(2)),
        "dog_breed": per_row(lambda r: "dog"), "cat_breed": per_row(lambda r: "cat"),
    })
    with pytest.raises(ConditionFailed, match=r"not JSON data \(a Tensor\)"):
        ex.submit(request(b"x")).result(5)


def test_typed_mode_sees_the_object(executors, tmp_path):
    spec = CLASSIFY.replace("models: {}", "models:\n  typed: true")
    ex = build(executors, tmp_path, spec, {
        "classify": per_row(lambda r: {"label": r["body"].decode()}),
        "dog_breed": per_row(lambda r: r["body"]), "cat_breed": per_row(lambda r: "cat"),
    })
    assert ex.submit(request(b"dog")).result(5).outputs == {"dog_breed": {"label": "dog"}}


JOIN = """
models: {}
dag:
  pre: [left, right]
  left: [post]
  right: [post]
edges:
  pre -> left: {when: "l"}
  pre -> right: {when: "r"}
"""


@pytest.mark.parametrize(
    ("body", "row"),
    [
        (b'{"l": 1, "r": 1}', {"left": b"L", "right": b"R"}),
        (b'{"l": 1}', {"body": b"L"}),  # a join left with one parent gets "body"
        (b'{"r": 1}', {"body": b"R"}),
    ],
)
def test_a_join_gets_the_parents_that_ran(executors, tmp_path, body, row):
    seen = {}
    ex = build(executors, tmp_path, JOIN, {
        "pre": per_row(lambda r: r["body"]),
        "left": per_row(lambda r: b"L"), "right": per_row(lambda r: b"R"),
        "post": recorder(seen, "post", lambda r: b"done"),
    })
    assert ex.submit(request(body)).result(5).outputs == {"post": b"done"}
    assert seen["post"] == [row]
    assert list(seen["post"][0]) == list(row)


def test_a_skipped_node_skips_what_only_it_feeds(executors, tmp_path):
    spec = """
    models: {}
    dag:
      a: [b, d]
      b: [c]
      c: [e]
      d: [e, f]
    edges:
      a -> b: {when: "`false`"}
    """
    seen = {}
    names = "abcdef"
    ex = build(executors, tmp_path, spec,
               {n: recorder(seen, n, lambda r, n=n: json.dumps(n).encode()) for n in names})
    result = ex.submit(request(b"{}")).result(5)
    assert set(seen) == {"a", "d", "e", "f"}
    assert seen["e"] == [{"body": b'"d"'}]  # e's other parent, c, was skipped
    assert result.outputs == {"e": b'"e"', "f": b'"f"'}


def test_a_model_call_of_a_conditional_parent_evaluates_nothing(executors, tmp_path):
    spec = CLASSIFY.replace("models: {}", "models:\n  classify: {url: c.mar}")
    ex = build(executors, tmp_path, spec, classify_handlers({}))
    assert ex.submit_node("classify", request(b"not json")).result(5) == b"not json"


# --- a property: the executor agrees with a sequential reference ------------------------------

CONDITIONS = [None, None, "v == `0`", "v > `1`", "`true`", "`false`", "v", "odd",
              "contains(`[1, 2]`, v)", "length(@) == `3`"]


def reference_truthy(value):
    """JMESPath's truth, written out: false, null, "", [] and {} are false (0 is true)."""
    return not (value is None or value is False or value in ("", [], {}))


def node_output(name, row):
    """What each node computes: a small function of every value it received."""
    total = sum(json.loads(v)["v"] for v in row.values()) if "body" not in row or \
        row["body"].startswith(b"{") else int(row["body"])
    v = (total + int(name[1:]) + len(row)) % 4
    return json.dumps({"v": v, "odd": v % 2 == 1, "name": name}).encode()


def reference(order, parents, conditions, body):
    """Run the DAG one node at a time: the rows each node got, and the leaf outputs."""
    rows, outputs = {}, {}
    for node in order:
        if not parents[node]:
            row = {"body": body}
        else:
            delivered = {}
            for p in parents[node]:
                expr = conditions.get((p, node))
                if p in outputs and (expr is None or reference_truthy(
                        jmespath.search(expr, json.loads(outputs[p])))):
                    delivered[p] = outputs[p]
            if not delivered:
                continue
            row = {"body": next(iter(delivered.values()))} if len(delivered) == 1 else delivered
        rows[node] = row
        outputs[node] = node_output(node, row)
    return rows, outputs


@st.composite
def dags(draw):
    """A rooted DAG ``n0..nk`` (every node after n0 has parents before it) with conditions."""
    size = draw(st.integers(2, 7))
    names = [f"n{i}" for i in range(size)]
    parents = {"n0": []}
    for i in range(1, size):
        parents[names[i]] = sorted(draw(st.sets(st.sampled_from(names[:i]), min_size=1)),
                                   key=names.index)
    conditions = {}
    for child, ps in parents.items():
        for p in ps:
            expr = draw(st.sampled_from(CONDITIONS))
            if expr is not None:
                conditions[(p, child)] = expr
    return names, parents, conditions


def spec_text(names, parents, conditions):
    children = {n: [c for c in names if n in parents[c]] for n in names}
    lines = ["models: {}", "dag:"]
    lines += [f"  {n}: [{', '.join(cs)}]" for n, cs in children.items()]
    if conditions:
        lines.append("edges:")
        lines += [f"  {p} -> {c}: {{when: {json.dumps(e)}}}" for (p, c), e in conditions.items()]
    return "\n".join(lines) + "\n"


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(dag=dags(), bodies=st.lists(st.integers(0, 9), min_size=1, max_size=4))
def test_the_executor_agrees_with_a_sequential_reference(tmp_path, dag, bodies):
    names, parents, conditions = dag
    seen = {}
    lock = threading.Lock()

    def handler(name):
        def fn(row):
            with lock:
                seen.setdefault(row.get("_id") or name, []).append(dict(row))
            return node_output(name, row)
        return per_row(fn)

    ex, _ = make_executor(tmp_path, textwrap.dedent(spec_text(names, parents, conditions)),
                          {n: handler(n) for n in names})
    try:
        order = ex.dag.order
        leaves = ex.dag.leaves
        for body in bodies:
            seen.clear()
            raw = str(body).encode()
            rows, outputs = reference(order, parents, conditions, raw)
            expected = {leaf: outputs[leaf] for leaf in leaves if leaf in outputs}
            future = ex.submit(request(raw))
            if not expected:
                with pytest.raises(NoLeafRan):
                    future.result(10)
            else:
                result = future.result(10)
                assert result.outputs == expected
                assert list(result.outputs) == list(expected)
                assert sorted(t.node for t in result.timings) == sorted(rows)
            assert {n: r[0] for n, r in seen.items()} == rows
            assert all(len(r) == 1 for r in seen.values())
    finally:
        ex.close(5)


def test_a_long_skipped_chain_is_settled(executors, tmp_path):
    """Skipping 1500 nodes in a row settles them all (no recursion limit), and the other
    branch answers."""
    chain = [f"c{i}" for i in range(1500)]
    lines = ["models: {}", "dag:", f"  a: [{chain[0]}, z]"]
    lines += [f"  {p}: [{c}]" for p, c in itertools.pairwise(chain)]
    lines += ["edges:", f"  a -> {chain[0]}: {{when: \"`false`\"}}"]
    handlers = {n: per_row(lambda r: b"{}") for n in ["a", "z", *chain]}
    ex = build(executors, tmp_path, "\n".join(lines) + "\n", handlers)
    assert ex.submit(request(b"{}")).result(30).outputs == {"z": b"{}"}
