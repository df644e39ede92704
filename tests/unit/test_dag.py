"""DAG validation with TorchServe's outcomes (ens/Dag.java, EnsembleTest)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wfserve.kernel.dag import Dag
from wfserve.kernel.dag import java_map_string
from wfserve.kernel.errors import InvalidDAG

ENSEMBLE_TEST_EDGES = {"a": ["b", "c", "d"], "b": ["e"], "e": ["f"], "c": ["f"], "d": ["f"]}


def test_ensemble_test_dag_topological_order():
    """TorchServe's EnsembleTest.testDAG expects exactly [a, b, c, d, e, f]."""
    assert Dag.from_edges(ENSEMBLE_TEST_EDGES).order == ["a", "b", "c", "d", "e", "f"]


def test_ensemble_test_invalid_dag_cycle_hanging_off_the_root():
    edges = {**ENSEMBLE_TEST_EDGES, "f": ["b"]}
    with pytest.raises(InvalidDAG, match="^Not a valid DAG$"):
        Dag.from_edges(edges)


def test_self_loop():
    with pytest.raises(InvalidDAG, match="^Self loop exception$"):
        Dag.from_edges({"a": ["b"], "b": ["b"]})


def test_same_edge_twice():
    with pytest.raises(InvalidDAG, match="^loop exception$"):
        Dag.from_edges({"a": ["b", "b"]})


@pytest.mark.parametrize(
    "edges",
    [
        {"a": ["c"], "b": ["c"]},  # two roots
        {"a": ["b"], "b": ["a"]},  # pure cycle, no root
        {},  # no node at all
    ],
)
def test_exactly_one_start_node(edges):
    with pytest.raises(InvalidDAG, match="^DAG should have only one start node$"):
        Dag.from_edges(edges)


def test_unknown_node_when_nodes_are_declared():
    with pytest.raises(InvalidDAG, match="Unknown node: z") as info:
        Dag.from_edges({"a": ["z"]}, known={"a", "b"})
    assert info.value.node == "z"


def test_multiple_leaves_are_allowed_in_topological_order():
    dag = Dag.from_edges({"pre": ["resnet", "squeezenet"]})
    assert dag.leaves == ["resnet", "squeezenet"]
    assert dag.root == "pre"


def test_single_node_dag():
    dag = Dag.from_edges({"only": []})
    assert dag.root == "only"
    assert dag.leaves == ["only"]


def test_parents_children_and_membership():
    dag = Dag.from_edges({"pre": ["m1", "m2"], "m1": ["agg"], "m2": ["agg"]})
    assert dag.parents("agg") == ["m1", "m2"]
    assert dag.children("pre") == ["m1", "m2"]
    assert "agg" in dag
    assert "nope" not in dag
    assert len(dag) == 4


def test_java_map_string_matches_the_ground_truth_describe():
    edges = {"pre": ["m1", "m2"], "m1": ["aggregate"], "m2": ["aggregate"]}
    assert java_map_string(edges) == "{pre=[m1, m2], m1=[aggregate], m2=[aggregate]}"


@st.composite
def random_dags(draw):
    """A random DAG: nodes 0..n-1, edges only from lower to higher numbers, all reachable."""
    n = draw(st.integers(min_value=1, max_value=12))
    edges = {f"n{i}": [] for i in range(n)}
    for j in range(1, n):
        parents = draw(st.sets(st.integers(min_value=0, max_value=j - 1), min_size=1))
        for i in sorted(parents):
            edges[f"n{i}"].append(f"n{j}")
    return edges


@given(random_dags())
def test_order_respects_every_edge(edges):
    dag = Dag.from_edges(edges)
    position = {node: i for i, node in enumerate(dag.order)}
    assert sorted(position) == sorted(edges)
    for src, children in edges.items():
        for dst in children:
            assert position[src] < position[dst]
    assert dag.root == "n0"


def _descendants(edges, node):
    seen, stack = set(), [node]
    while stack:
        for child in edges[stack.pop()]:
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


@given(random_dags(), st.data())
def test_any_edge_closing_a_cycle_is_rejected(edges, data):
    dst = data.draw(st.sampled_from(sorted(edges)))
    below = sorted(_descendants(edges, dst))
    src = data.draw(st.sampled_from(below)) if below else dst
    cyclic = {k: list(v) for k, v in edges.items()}
    if dst in cyclic[src]:
        return
    cyclic[src].append(dst)
    with pytest.raises(InvalidDAG):
        Dag.from_edges(cyclic)
