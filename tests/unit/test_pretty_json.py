"""The fast indent-2 encoder is byte-identical to json.dumps(obj, indent=2)."""

import json
import math
from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from wfserve.plugins.serializers.pretty_json import dumps_indent2

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.tuples(children, children)
    | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300)
@given(values)
def test_identical_to_json_dumps_indent_2(obj):
    assert dumps_indent2(obj) == json.dumps(obj, indent=2)


@pytest.mark.parametrize("obj", [
    {"output": [0.061645, -0.1, 1e-300, 1e300]},
    [math.nan, math.inf, -math.inf],
    {"é": "ünï", "emoji": "\U0001f600"},
    OrderedDict([("b", 1), ("a", 2)]),  # a dict subclass: json.dumps decides
    {3: "int key", 2.5: "float key", True: "bool key", None: "none key"},
    [[], {}, [[]], {"a": {}}],
])
def test_edge_cases(obj):
    assert dumps_indent2(obj) == json.dumps(obj, indent=2)


@pytest.mark.parametrize("obj", [{"a": {1, 2}}, {(1, 2): "tuple key"}, object()])
def test_unserializable_raises_what_json_raises(obj):
    with pytest.raises(TypeError) as expected:
        json.dumps(obj, indent=2)
    with pytest.raises(TypeError) as got:
        dumps_indent2(obj)
    assert str(got.value) == str(expected.value)
