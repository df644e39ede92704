"""The workflow spec YAML: TorchServe's properties, defaults, overrides and every bad case."""

import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wfserve.kernel.errors import InvalidDAG
from wfserve.kernel.errors import SpecError
from wfserve.kernel.spec import PROPERTIES
from wfserve.kernel.spec import NodeConfig
from wfserve.kernel.spec import parse_spec

# The seed's own examples (TorchServe docs/workflows.md and examples/Workflows/README.md).
SEQUENTIAL = """
models:
    min-workers: 1
    max-workers: 4
    batch-size: 3
    max-batch-delay : 5000
    retry-attempts : 3
    timeout-ms : 5000
    m1:
       url : model1.mar #local or public URI
       min-workers: 1   #override the global params
       max-workers: 2
       batch-size: 4

    m2:
       url : model2.mar

    m3:
       url : model3.mar
       batch-size: 3

    m4:
      url : model4.mar

dag:
  pre_processing : [m1]
  m1 : [m2]
  m2 : [m3]
  m3 : [m4]
  m4 : [postprocessing]
"""

PARALLEL = """
models:
    min-workers: 1
    max-workers: 4
    batch-size: 3
    max-batch-delay : 5000
    retry-attempts : 3
    timeout-ms : 5000
    model1:
       url : model1.mar
    model2:
       url : model2.mar

dag:
  pre_processing: [model1, model2]
  model1: [aggregate_func]
  model2: [aggregate_func]
"""


def spec(text):
    return parse_spec(textwrap.dedent(text))


def test_sequential_example_nodes_and_kinds():
    s = parse_spec(SEQUENTIAL)
    assert list(s.nodes) == ["pre_processing", "m1", "m2", "m3", "m4", "postprocessing"]
    assert [n.name for n in s.models] == ["m1", "m2", "m3", "m4"]
    assert s.nodes["pre_processing"].kind == "function"
    assert s.nodes["postprocessing"].kind == "function"
    assert s.nodes["m1"].url == "model1.mar"
    assert s.dag().order == ["pre_processing", "m1", "m2", "m3", "m4", "postprocessing"]


def test_sequential_example_overrides_win_over_globals():
    s = parse_spec(SEQUENTIAL)
    assert s.globals == NodeConfig(1, 4, 3, 5000, 3, 5000)
    assert s.nodes["m1"].config == NodeConfig(1, 2, 4, 5000, 3, 5000)
    assert s.nodes["m2"].config == NodeConfig(1, 4, 3, 5000, 3, 5000)
    assert s.nodes["m3"].config.batch_size == 3


def test_function_nodes_run_one_worker_batch_one_but_keep_retry_and_timeout():
    s = parse_spec(SEQUENTIAL)
    assert s.nodes["pre_processing"].config == NodeConfig(1, 1, 1, 0, 3, 5000)


def test_parallel_example():
    s = parse_spec(PARALLEL)
    dag = s.dag()
    assert dag.root == "pre_processing"
    assert dag.children("pre_processing") == ["model1", "model2"]
    assert dag.parents("aggregate_func") == ["model1", "model2"]
    assert dag.leaves == ["aggregate_func"]
    assert s.dag_string == "{pre_processing=[model1, model2], model1=[aggregate_func], " \
        "model2=[aggregate_func]}"


def test_torchserve_defaults_when_nothing_is_set():
    s = spec("""
        models:
          m1: {url: m1.mar}
        dag:
          pre: [m1]
    """)
    assert s.globals == NodeConfig(1, 1, 1, 50, 1, 10000)
    assert s.nodes["m1"].config.as_properties() == {k: d for k, (d, _) in PROPERTIES.items()}
    assert s.typed is False


@pytest.mark.parametrize("key", list(PROPERTIES))
def test_each_property_global_and_override(key):
    attr = key.replace("-", "_")
    smallest = PROPERTIES[key][1]
    roomy = "" if key == "max-workers" else "max-workers: 20"
    s = spec(f"""
        models:
          {key}: {smallest + 5}
          {roomy}
          a: {{url: a.mar}}
          b: {{url: b.mar, {key}: {smallest + 7}}}
        dag:
          pre: [a, b]
    """)
    assert getattr(s.globals, attr) == smallest + 5
    assert getattr(s.nodes["a"].config, attr) == smallest + 5
    assert getattr(s.nodes["b"].config, attr) == smallest + 7


def test_global_written_after_a_model_still_applies():
    s = spec("""
        models:
          m1: {url: m1.mar}
          batch-size: 8
        dag:
          pre: [m1]
    """)
    assert s.nodes["m1"].config.batch_size == 8


def test_model_only_in_dag_list_is_a_model_node_and_unused_models_are_listed():
    s = spec("""
        models:
          m1: {url: m1.mar}
          spare: {url: spare.mar}
        dag:
          pre: [m1]
    """)
    assert s.nodes["m1"].kind == "model"
    assert s.unused_models == ("spare",)


def test_null_and_blank_children_are_skipped_and_empty_lists_allowed():
    s = spec("""
        models: {}
        dag:
          pre: [a, null, ""]
          a: []
    """)
    assert s.edges == {"pre": ("a",), "a": ()}
    assert s.dag().leaves == ["a"]


def test_typed_extension_flag():
    s = spec("""
        models:
          typed: true
        dag:
          pre: [post]
    """)
    assert s.typed is True


RAY_SPEC = "models:\n  m1:\n    url: m1.mar\n    ray: {num_cpus: 2}\ndag:\n  pre: [m1]\n"


def test_a_plugin_section_is_checked_and_kept():
    sections = {"ray": lambda value: dict(value)}
    s = parse_spec(RAY_SPEC, sections=sections)
    assert s.nodes["m1"].extensions == {"ray": {"num_cpus": 2}}


def test_a_section_no_plugin_owns_is_an_unknown_key():
    with pytest.raises(SpecError, match="model 'm1': unknown key 'ray'"):
        parse_spec(RAY_SPEC)


def test_a_section_check_failing_is_a_spec_error_naming_model_and_key():
    def refuse(value):
        raise ValueError("num_cpus must be a number")

    with pytest.raises(SpecError, match="model 'm1': ray: num_cpus must be a number"):
        parse_spec(RAY_SPEC, sections={"ray": refuse})


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        ("models:\n  batch-size: '4'\ndag:\n  a: [b]\n", "batch-size", 2, "integer"),
        ("models:\n  batch-size: 4.0\ndag:\n  a: [b]\n", "batch-size", 2, "integer"),
        ("models:\n  batch-size: true\ndag:\n  a: [b]\n", "batch-size", 2, "integer"),
        ("models:\n  batch-size: 0\ndag:\n  a: [b]\n", "batch-size", 2, "at least 1"),
        ("models:\n  max-workers: -1\ndag:\n  a: [b]\n", "max-workers", 2, "at least 1"),
        ("models:\n  timeout-ms: 0\ndag:\n  a: [b]\n", "timeout-ms", 2, "at least 1"),
        ("models:\n  retry-attempts: -2\ndag:\n  a: [b]\n", "retry-attempts", 2, "at least 0"),
        ("models:\n  max-batch-delay: -5\ndag:\n  a: [b]\n", "max-batch-delay", 2, "at least 0"),
        ("models:\n  m1:\n    url: m1.mar\n    batchsize: 2\ndag:\n  a: [m1]\n", "batchsize", 4,
         "unknown key"),
        ("models:\n  m1:\n    url: m1.mar\n    timeout-ms: 1s\ndag:\n  a: [m1]\n", "timeout-ms", 4,
         "integer"),
        ("models:\n  m1: m1.mar\ndag:\n  a: [m1]\n", "m1", 2, "mapping"),
        ("models:\n  m1:\n    batch-size: 2\ndag:\n  a: [m1]\n", "m1", 2, "no 'url'"),
        ("models:\n  m1:\n    url: ''\ndag:\n  a: [m1]\n", "url", 3, "non-empty"),
        ("models:\n  typed: yes-please\ndag:\n  a: [b]\n", "typed", 2, "bool"),
        ("models:\n  min-workers: 3\n  max-workers: 2\ndag:\n  a: [b]\n", "min-workers", 2,
         "exceeds"),
        ("models: {}\ndag:\n  a: b\n", "a", 3, "list"),
        ("models: {}\ndag:\n  a: [{x: 1}]\n", "a", 3, "node name"),
        ("models: {}\ndag:\n  'a/b': [c]\n", "a/b", 3, "node name"),
        ("models: []\ndag:\n  a: [b]\n", "models", 1, "mapping"),
    ],
)
def test_bad_values_name_the_key_and_the_line(text, key, line, words):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    err = info.value
    assert err.key == key
    assert err.line == line
    assert words in err.message
    assert f"line {line}" in err.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "mapping"),
        ("- a\n- b\n", "mapping"),
        ("dag:\n  a: [b]\n", "missing 'models:'"),
        ("models: {}\n", "missing 'dag:'"),
    ],
)
def test_missing_sections(text, words):
    with pytest.raises(SpecError, match=words):
        parse_spec(text)


def test_bad_yaml_says_failed_to_parse_with_the_line():
    # The peer's own badyaml_workflow.yaml.
    text = "models:\n    m1:\n      url: m1.mar\ndag: [pre: [m1\n  m1: ]]] {{\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="badyaml.yaml")
    assert info.value.message.startswith("Failed to parse yaml.")
    assert info.value.line is not None
    assert info.value.ts_type == "InvalidWorkflowException"


def test_duplicate_keys_last_one_wins_as_in_snakeyaml():
    s = spec("""
        models:
          batch-size: 2
          batch-size: 5
        dag:
          a: [b]
    """)
    assert s.globals.batch_size == 5


@pytest.mark.parametrize(
    ("dag", "message"),
    [
        ("pre: [m1]\n  m1: [m2]\n  m2: [m1]", "Not a valid DAG"),
        ("pre: [m1]\n  m1: [m1]", "Self loop exception"),
        ("pre: [m1]\n  aggregate: [m1]", "DAG should have only one start node"),
        ("pre: [m1, m1]", "loop exception"),
        ("a: [b]\n  b: [a]", "DAG should have only one start node"),
    ],
)
def test_peer_bad_dags_give_torchserve_messages(dag, message):
    s = parse_spec(f"models:\n  m1: {{url: m1.mar}}\n  m2: {{url: m2.mar}}\ndag:\n  {dag}\n")
    with pytest.raises(InvalidDAG) as info:
        s.dag()
    assert info.value.message == message
    assert info.value.ts_type == "InvalidDAGException"


@given(
    st.dictionaries(
        st.sampled_from(list(PROPERTIES)), st.integers(min_value=1, max_value=10_000), max_size=6
    )
)
def test_any_valid_global_properties_round_trip(props):
    if props.get("min-workers", 1) > props.get("max-workers", 1):
        props["max-workers"] = props["min-workers"]
    lines = "".join(f"  {k}: {v}\n" for k, v in props.items())
    s = parse_spec(f"models:\n{lines}  m: {{url: m.mar}}\ndag:\n  pre: [m]\n")
    expected = {k: props.get(k, d) for k, (d, _) in PROPERTIES.items()}
    assert s.globals.as_properties() == expected
    assert s.nodes["m"].config.as_properties() == expected


def test_an_unknown_top_level_key_is_refused_by_name():
    """TorchServe ignores it; wfserve refuses it, so a spec made for a server with more
    extensions is not run without them."""
    with pytest.raises(SpecError, match=r"line 5: unknown top-level key 'fan-out' \(known: "
                                        r"models, dag, edges, deadline-ms\)"):
        parse_spec("models:\n  m1: {url: m1.mar}\ndag:\n  pre: [m1]\nfan-out: {}\n")
