"""Map edges (``edges: {"a -> b": {map: true}}``, issue 21): the spec keys, splitting and
gathering in both modes, the item cap, a failing item, and batching of items across requests
(threaded engine, fake handlers)."""

import json
import threading

import pytest

from tests.executor_fakes import make_executor
from tests.executor_fakes import per_row
from tests.executor_fakes import request
from wfserve.kernel.errors import MapFailed
from wfserve.kernel.errors import SpecError
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.settings import Settings
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


# --- the executor core (threaded engine) ------------------------------------------------------


def build(executors, tmp_path, spec, factories, settings=None):
    ex, _ = make_executor(tmp_path, spec, factories, settings=settings)
    executors.append(ex)
    return ex


def crop_row(row):
    item = json.loads(row["body"])
    return json.dumps({"item": item, "twice": item["n"] * 2}).encode()


def test_compatibility_mode_splits_encodes_and_gathers_in_order(executors, tmp_path):
    rows, sizes = [], []
    ex = build(executors, tmp_path, MAP, {
        "detect": per_row(lambda r: r["body"]),
        "crop": per_row(lambda r: (rows.append(r), crop_row(r))[1], sizes),
        "summary": per_row(lambda r: r["body"]),
    })
    items = [{"n": i} for i in range(3)]
    result = ex.submit(request(json.dumps(items).encode())).result(5)
    gathered = json.loads(result.outputs["summary"])
    assert gathered == [{"item": {"n": i}, "twice": 2 * i} for i in range(3)]
    assert all(type(r["body"]) is bytearray for r in rows)
    assert sorted(json.loads(r["body"])["n"] for r in rows) == [0, 1, 2]
    assert sizes == [3]  # the items of one request share a batch
    assert [t.node for t in result.timings] == ["detect", "crop", "summary"]


def test_an_output_that_is_not_json_is_gathered_as_text(executors, tmp_path):
    ex = build(executors, tmp_path, MAP, {
        "detect": per_row(lambda r: b'["a", "b"]'),
        "crop": per_row(lambda r: b"label-" + bytes(r["body"])),
        "summary": per_row(lambda r: r["body"]),
    })
    result = ex.submit(request(b"x")).result(5)
    assert json.loads(result.outputs["summary"]) == ['label-"a"', 'label-"b"']


def test_an_empty_list_gives_an_empty_list(executors, tmp_path):
    calls = []
    ex = build(executors, tmp_path, MAP, {
        "detect": per_row(lambda r: b"[]"),
        "crop": per_row(lambda r: calls.append(r) or b"0"),
        "summary": per_row(lambda r: r["body"]),
    })
    result = ex.submit(request(b"x")).result(5)
    assert result.outputs == {"summary": b"[]"}
    assert calls == []


def test_a_mapped_leaf_is_the_gathered_answer(executors, tmp_path):
    spec = "models: {}\ndag:\n  detect: [crop]\nedges:\n  detect -> crop: {map: true}\n"
    ex = build(executors, tmp_path, spec, {
        "detect": per_row(lambda r: b"[1, 2, 3]"),
        "crop": per_row(lambda r: str(int(r["body"]) * 10).encode()),
    })
    assert ex.submit(request(b"x")).result(5).outputs == {"crop": b"[10, 20, 30]"}


def test_an_output_that_is_not_a_list_fails_the_request(executors, tmp_path):
    ex = build(executors, tmp_path, MAP, {
        "detect": per_row(lambda r: b'{"n": 1}'),
        "crop": per_row(crop_row), "summary": per_row(lambda r: r["body"]),
    })
    with pytest.raises(MapFailed, match="map edge 'detect -> crop'.*not a list") as info:
        ex.submit(request(b"x")).result(5)
    assert info.value.node == "crop"


def test_more_items_than_max_map_items_is_413(executors, tmp_path):
    calls = []
    ex = build(executors, tmp_path, MAP, {
        "detect": per_row(lambda r: r["body"]),
        "crop": per_row(lambda r: calls.append(r) or b"0"),
        "summary": per_row(lambda r: r["body"]),
    }, settings=Settings(max_map_items=2))
    assert ex.submit(request(b"[1, 2]")).result(5).outputs == {"summary": b"[0, 0]"}
    with pytest.raises(TooLarge, match=r"3 items, more than max_map_items \(2\)") as info:
        ex.submit(request(b"[1, 2, 3]")).result(5)
    assert info.value.edge == "detect -> crop"
    assert len(calls) == 2


def test_an_item_failing_after_its_retries_names_node_and_item(executors, tmp_path):
    # batch-size 1: a handler raising fails its whole batch, so only here is one item to blame
    spec = MAP.replace("batch-size: 8", "batch-size: 1, retry-attempts: 2")
    calls = []

    def crop(row):
        calls.append(int(row["body"]))
        if int(row["body"]) == 7:
            raise ValueError("bad crop")
        return b"1"

    ex = build(executors, tmp_path, spec, {
        "detect": per_row(lambda r: r["body"]),
        "crop": lambda index: lambda batch, meta: [crop(r) for r in batch],
        "summary": per_row(lambda r: r["body"]),
    })
    with pytest.raises(MapFailed, match=r"'detect -> crop' \(item 2\): Error executing crop"
                       ) as info:
        ex.submit(request(b"[5, 6, 7, 8]")).result(5)
    assert (info.value.node, info.value.item, info.value.attempts) == ("crop", 2, 3)
    assert "bad crop" in info.value.cause
    assert calls.count(7) == 3


def test_typed_mode_passes_objects(executors, tmp_path):
    spec = MAP.replace("models:\n", "models:\n  typed: true\n")
    ex = build(executors, tmp_path, spec, {
        "detect": per_row(lambda r: [{"n": 1}, {"n": 2}]),
        "crop": per_row(lambda r: r["body"]["n"] + 100),
        "summary": per_row(lambda r: r["body"]),
    })
    assert ex.submit(request(b"x")).result(5).outputs == {"summary": [101, 102]}


def test_typed_mode_splits_a_tensor_and_stacks_the_results(executors, tmp_path):
    import torch

    spec = MAP.replace("models:\n", "models:\n  typed: true\n")
    seen = []
    ex = build(executors, tmp_path, spec, {
        "detect": per_row(lambda r: torch.arange(6.0).reshape(3, 2)),
        "crop": per_row(lambda r: (seen.append(tuple(r["body"].shape)), r["body"] * 2)[1]),
        "summary": per_row(lambda r: r["body"]),
    })
    out = ex.submit(request(b"x")).result(5).outputs["summary"]
    assert torch.equal(out, torch.arange(6.0).reshape(3, 2) * 2)
    assert seen == [(2,)] * 3


def test_a_condition_out_of_a_mapped_node_sees_the_gathered_list(executors, tmp_path):
    spec = ("models: {}\ndag:\n  detect: [crop]\n  crop: [many, few]\nedges:\n"
            "  detect -> crop: {map: true}\n  crop -> many: {when: 'length(@) > `2`'}\n"
            "  crop -> few: {when: 'length(@) <= `2`'}\n")
    ex = build(executors, tmp_path, spec, {
        "detect": per_row(lambda r: r["body"]), "crop": per_row(lambda r: b"1"),
        "many": per_row(lambda r: b"many"), "few": per_row(lambda r: b"few"),
    })
    assert ex.submit(request(b"[1, 2, 3]")).result(5).outputs == {"many": b"many"}
    assert ex.submit(request(b"[1]")).result(5).outputs == {"few": b"few"}


def test_a_model_call_of_a_mapped_node_is_not_mapped(executors, tmp_path):
    ex = build(executors, tmp_path, MAP, {
        "detect": per_row(lambda r: r["body"]), "crop": per_row(lambda r: bytes(r["body"])),
        "summary": per_row(lambda r: r["body"]),
    })
    assert ex.submit_node("crop", request(b"[1, 2]")).result(5) == b"[1, 2]"


def test_32_concurrent_requests_batch_together_and_get_their_own_lists(executors, tmp_path):
    sizes = []
    ex = build(executors, tmp_path, MAP, {
        "detect": per_row(lambda r: r["body"]),
        "crop": per_row(crop_row, sizes),
        "summary": per_row(lambda r: r["body"]),
    })
    answers: dict[int, list] = {}
    errors = []

    def client(k):
        try:
            items = [{"n": k * 10 + i, "req": k} for i in range(3)]
            result = ex.submit(request(json.dumps(items).encode(), f"r{k}")).result(20)
            answers[k] = json.loads(result.outputs["summary"])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    for k in range(32):
        expected = [{"n": k * 10 + i, "req": k} for i in range(3)]
        assert answers[k] == [{"item": e, "twice": e["n"] * 2} for e in expected]
    assert sum(sizes) == 96
    assert max(sizes) > 3  # items of concurrent requests shared a batch
    assert max(sizes) <= 8
