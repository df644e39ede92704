"""Map edges (``edges: {"a -> b": {map: true}}``, issue 21): the spec keys."""


import pytest

from wfserve.kernel.errors import SpecError
from wfserve.kernel.spec import parse_spec

# detect -> crop (mapped) -> summary
MAP = """
models:
  crop: {url: crop.mar, batch-size: 8, max-batch-delay: 200}
dag:
  detect: [crop]
  crop: [summary]
edges:
  detect -> crop: {map: true}
"""


# --- the spec -------------------------------------------------------------------------------


def test_map_edges_are_parsed():
    spec = parse_spec(MAP)
    assert spec.maps == frozenset({("detect", "crop")})
    assert spec.conditions == {}


def test_map_false_and_a_torchserve_spec_have_no_map_edges():
    assert parse_spec(MAP.replace("map: true", "map: false")).maps == frozenset()
    assert parse_spec("models: {}\ndag:\n  a: [b]\n").maps == frozenset()


@pytest.mark.parametrize(
    ("dag", "edges", "message"),
    [
        ("  a: [b]\n", "  a -> b: {map: 1}\n", "'map' must be true or false, got 1"),
        ("  a: [b]\n", "  a -> b: {map: true, when: x}\n",
         "'map' and 'when' cannot be combined on one edge"),
        ("  a: [c]\n  b: [c]\n", "  a -> c: {map: true}\n",
         "a map edge's child must have one parent, 'c' has 2 (a, b)"),
    ],
)
def test_a_bad_map_edge_is_a_spec_error_naming_the_edge(dag, edges, message):
    text = "models: {}\ndag:\n" + dag + "edges:\n" + edges
    with pytest.raises(SpecError, match="edges: '") as info:
        parse_spec(text)
    assert message in info.value.message
    assert "keep joins simple" in info.value.message or "true or false" in message
