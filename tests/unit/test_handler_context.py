"""The handler boundary: what TsHandler hands an entry point, what the context shows, what it
copies back (TorchServe's ``ts/service.py``, ``ts/context.py``, ``ts/metrics/``)."""

import uuid

import pytest

from wfserve.kernel.contracts import InputRow
from wfserve.kernel.contracts import ResponseMeta
from wfserve.kernel.contracts import RowMeta
from wfserve.plugins.handlers.context import Context
from wfserve.plugins.handlers.context import handler_request_id
from wfserve.plugins.handlers.context import request_header
from wfserve.plugins.handlers.entry import TsHandler
from wfserve.plugins.handlers.metrics import Dimension
from wfserve.plugins.handlers.metrics import MetricsCache
from wfserve.plugins.handlers.metrics import MetricsCacheKeyError
from wfserve.plugins.handlers.metrics import MetricsCacheTypeError
from wfserve.plugins.handlers.metrics import MetricsCacheValueError
from wfserve.plugins.handlers.metrics import MetricTypes


def context() -> Context:
    return Context("wf__n", "/tmp", None, 2, None, {})


def handler(entry, typed=False) -> TsHandler:
    return TsHandler(entry, context(), "n", typed=typed)


def test_each_call_gets_fresh_bytearrays_so_a_handler_cannot_change_another_calls_input():
    shared = b"abc"
    seen = []

    def entry(data, ctx):
        for row in data:
            seen.append(row["body"])
            row["body"].extend(b"!")  # a handler changing its input in place
        return [bytes(row["body"]) for row in data]

    h = handler(entry)
    rows = [{"body": shared, "s": "text"}, {"body": bytearray(shared), "s": "text"}]
    assert h(rows, [RowMeta("a"), RowMeta("b")]) == [b"abc!", b"abc!"]
    assert h(rows, [RowMeta("a"), RowMeta("b")]) == [b"abc!", b"abc!"]
    assert all(type(v) is bytearray for v in seen) and rows[1]["body"] == b"abc"


def test_typed_rows_keep_their_objects():
    obj = b"raw"
    got = []
    h = handler(lambda data, ctx: got.extend(r["body"] for r in data) or [1], typed=True)
    h([{"body": obj}], [RowMeta("a")])
    assert got[0] is obj


def test_what_the_handler_sets_is_copied_into_the_row_meta():
    def entry(data, ctx):
        ctx.set_response_status(418, "Teapot", 1)
        ctx.set_response_content_type(1, "text/x-tea")
        ctx.set_response_header(1, "X-Brew", "green")
        return ["a", "b"]

    meta = [RowMeta("a"), RowMeta("b")]
    handler(entry)([{"body": b""}, {"body": b""}], meta)
    assert meta[0].response == ResponseMeta()  # left alone: nothing set, nothing copied
    assert meta[1].response == ResponseMeta(418, "Teapot", {"content-type": "text/x-tea",
                                                            "X-Brew": "green"})


def test_a_failing_call_copies_nothing():
    def entry(data, ctx):
        ctx.set_response_status(500, "x", 0)
        raise RuntimeError("no")

    meta = [RowMeta("a")]
    with pytest.raises(RuntimeError):
        handler(entry)([{"body": b""}], meta)
    assert meta[0].response == ResponseMeta()


def test_the_per_request_header_dict():
    root = InputRow({"body": b"x", "f": b"y"}, {"body": "application/json"})
    headers = {"Content-Type": "application/json", "F": "header wins"}
    assert request_header(root, headers) == {
        "body": {"content-type": "application/json"}, "Content-Type": "application/json",
        "F": "header wins"}
    assert request_header({"body": b"x"}, {"X-A": "1"}) == {
        "body": {"content-type": ""}, "X-A": "1"}


def test_header_lookups_ignore_case_after_an_exact_match():
    ctx = context()
    ctx.begin_batch([{"a": 1}], [RowMeta("r", {"X-Custom": "v", "x-custom-2": "w"})])
    assert ctx.get_request_header(0, "x-custom") == "v"
    assert ctx.get_request_header(0, "X-CUSTOM-2") == "w"
    assert ctx.get_request_header(0, "a") == {"content-type": ""}
    assert ctx.get_request_header(0, "nope") is None
    assert ctx.get_sequence_id(0) is None


def test_request_ids_are_dashed_uuids():
    given = uuid.uuid4()
    assert handler_request_id(given.hex) == str(given)
    assert handler_request_id(str(given).upper()) == str(given)
    made = handler_request_id("client-id.7")
    assert str(uuid.UUID(made)) == made and made == handler_request_id("client-id.7")


def test_metrics_cache_has_torchserves_signatures_and_answers():
    cache = MetricsCache("wf__n")
    cache.set_request_ids({0: "r0"})
    assert cache.add_metric("M", 1, "count", 0) is None
    assert cache.add_counter("C", 2) is None
    assert cache.add_time("T", 1.5, unit="s") is None
    assert cache.add_size("S", 3, unit="B") is None
    assert cache.add_percent("P", 50, dimensions=[Dimension("Extra", "x")]) is None
    assert cache.add_error("E", 1) is None
    counter = cache.get_metric("C")
    assert (counter.metric_name, counter.unit, counter.metric_type) == (
        "C", "Count", MetricTypes.COUNTER)
    assert counter.dimension_names == ["ModelName", "Level"]
    assert cache.get_metric("T", MetricTypes.GAUGE).unit == "Seconds"
    assert cache.get_metric("P", MetricTypes.GAUGE).dimension_names == [
        "Extra", "ModelName", "Level"]
    assert cache.get_metric("E").dimension_names == ["Level"]
    assert cache.get_metric("HandlerTime", MetricTypes.GAUGE).unit == "Milliseconds"
    assert sorted(cache.cache_keys()) == [
        "counter:C", "counter:E", "counter:M", "gauge:HandlerTime", "gauge:P",
        "gauge:PredictionTime", "gauge:S", "gauge:T"]
    with pytest.raises(MetricsCacheKeyError):
        cache.get_metric("T")  # a gauge, asked for as a counter
    with pytest.raises(MetricsCacheValueError):
        cache.add_time("T", 1, unit="h")
    with pytest.raises(ValueError, match="size based metric"):
        cache.add_size("S", 1, unit="TB")
    with pytest.raises(MetricsCacheTypeError):
        cache.get_metric("C", "counter")
    made = cache.add_metric_to_cache("New", "ms", ["A"], MetricTypes.HISTOGRAM)
    assert cache.get_metric("New", MetricTypes.HISTOGRAM) is made


def test_a_metric_type_from_another_enum_is_matched_by_value():
    import enum

    class TsMetricTypes(enum.Enum):  # as ts.metrics.metric_type_enum.MetricTypes
        COUNTER = "counter"
        GAUGE = "gauge"

    cache = MetricsCache("wf__n")
    cache.add_metric("G", 1, "ms", metric_type=TsMetricTypes.GAUGE)
    assert cache.get_metric("G", TsMetricTypes.GAUGE).metric_type is MetricTypes.GAUGE
