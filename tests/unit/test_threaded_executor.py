"""The threaded executor: input shapes, output conversion, batching, retries, timeouts, close."""

import dataclasses
import json
import os
import re
import threading
import time

import pytest
from structlog.testing import capture_logs

from tests.executor_fakes import make_executor
from tests.executor_fakes import per_row
from tests.executor_fakes import request
from wfserve.kernel.contracts import PredictResult
from wfserve.kernel.errors import NodeFailed
from wfserve.kernel.errors import PredictionFailed
from wfserve.kernel.errors import RegistrationFailed
from wfserve.kernel.errors import Timeout
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.settings import Settings
from wfserve.plugins.executors.response import render_response

DIAMOND = """
models:
  m1: {url: m1.mar}
  m2: {url: m2.mar}
dag:
  pre: [m1, m2]
  m1: [post]
  m2: [post]
"""


def build(executors, tmp_path, spec, factories, **kw):
    ex, fakes = make_executor(tmp_path, spec, factories, **kw)
    executors.append(ex)
    return ex, fakes


def recorder(seen, name, fn):
    return per_row(lambda row: (seen.setdefault(name, []).append(row), fn(row))[1])


def test_input_shapes_for_root_single_and_multiple_parents(executors, tmp_path):
    seen = {}
    ex, _ = build(executors, tmp_path, DIAMOND, {
        "pre": recorder(seen, "pre", lambda r: b"P"),
        "m1": recorder(seen, "m1", lambda r: b"A"),
        "m2": recorder(seen, "m2", lambda r: b"B"),
        "post": recorder(seen, "post", lambda r: b"done"),
    })
    row = {"name": b"x", "file": b"y"}
    req = request(b"")
    req.row = row
    result = ex.submit(req).result(5)
    assert seen["pre"] == [row]
    assert seen["m1"] == [{"body": b"P"}] and seen["m2"] == [{"body": b"P"}]
    assert seen["post"] == [{"m1": b"A", "m2": b"B"}]
    assert list(seen["post"][0]) == ["m1", "m2"]  # parent DAG names, in edge order
    assert result.outputs == {"post": b"done"}
    assert {t.node for t in result.timings} == {"pre", "m1", "m2", "post"}


def tensor():
    import torch

    return torch.arange(3.0)


def tensor_bytes():
    import io

    import torch

    buf = io.BytesIO()
    torch.save(torch.arange(3.0), buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: b"raw", lambda: b"raw"),
        (lambda: bytearray(b"raw"), lambda: b"raw"),
        (lambda: "héllo", lambda: "héllo".encode()),
        (lambda: 3, lambda: b"3"),
        (lambda: [1, "x"], lambda: json.dumps([1, "x"], indent=2).encode()),
        (lambda: {"a": 1}, lambda: json.dumps({"a": 1}, indent=2).encode()),
        (tensor, tensor_bytes),
    ],
    ids=["bytes", "bytearray", "str", "int", "list", "dict", "tensor"],
)
def test_compatibility_mode_passes_torchserve_bytes(executors, tmp_path, make, expected):
    seen = {}
    spec = "models:\n  m: {url: m.mar}\ndag:\n  pre: [m]\n"
    ex, _ = build(executors, tmp_path, spec, {
        "pre": per_row(lambda r: make()),
        "m": recorder(seen, "m", lambda r: make()),
    })
    result = ex.submit(request(b"in")).result(10)
    want = expected()
    assert seen["m"][0]["body"] == want
    assert type(seen["m"][0]["body"]) is bytes
    assert result.outputs["m"] == want
    assert render_response(result) == want


@pytest.mark.parametrize(
    "make", [lambda: b"raw", lambda: "s", lambda: 3, lambda: [1], lambda: {"a": 1}, tensor],
    ids=["bytes", "str", "int", "list", "dict", "tensor"],
)
def test_typed_mode_passes_objects_by_reference(executors, tmp_path, make):
    made, seen = [], {}
    spec = ("models:\n  typed: true\n  m: {url: m.mar}\n"
            "dag:\n  pre: [m, n]\n  m: [post]\n  n: [post]\n")
    ex, _ = build(executors, tmp_path, spec, {
        "pre": per_row(lambda r: (made.append(make()), made[-1])[1]),
        "m": recorder(seen, "m", lambda r: r["body"]),
        "n": recorder(seen, "n", lambda r: r["body"]),
        "post": recorder(seen, "post", lambda r: r["m"]),
    })
    result = ex.submit(request(b"in")).result(10)
    assert seen["m"][0]["body"] is made[0]
    assert seen["post"][0]["m"] is made[0] and seen["post"][0]["n"] is made[0]
    assert result.outputs["post"] is made[0]
    from wfserve.plugins.serializers import for_object

    assert render_response(result) == for_object(made[0]).serialize(made[0])


def test_several_leaves_are_merged_as_torchserve_does():
    one = PredictResult({"a": b'{"x": 1}'})
    assert render_response(one) == b'{"x": 1}'
    two = PredictResult({"a": b'{"x": 1}', "b": {"y": [2]}})
    assert render_response(two) == (json.dumps({"a": {"x": 1}, "b": {"y": [2]}}, indent=2)
                                    + "\n").encode()
    with pytest.raises(WfserveError, match="leaf node 'b'") as info:
        render_response(PredictResult({"a": b"{}", "b": b"[1]"}))
    assert info.value.ts_type == "InternalServerException"
    with pytest.raises(WfserveError, match="leaf node 'b'"):
        render_response(PredictResult({"a": b"{}", "b": b"not json"}))


def test_multiple_leaves_come_back_keyed_by_leaf(executors, tmp_path):
    spec = "models:\n  m: {url: m.mar}\ndag:\n  pre: [m, f]\n"
    ex, _ = build(executors, tmp_path, spec, {
        "pre": per_row(lambda r: r["body"]),
        "m": per_row(lambda r: {"m": r["body"].decode()}),
        "f": per_row(lambda r: {"f": 1}),
    })
    result = ex.submit(request(b"q")).result(5)
    assert json.loads(render_response(result)) == {"m": {"m": "q"}, "f": {"f": 1}}


def test_concurrent_requests_are_batched(executors, tmp_path):
    sizes = []
    spec = "models:\n  m: {url: m.mar, batch-size: 4, max-batch-delay: 2000}\ndag:\n  m: []\n"
    ex, _ = build(executors, tmp_path, spec, {"m": per_row(lambda r: r["body"] * 2, sizes)})
    futures = [ex.submit(request(str(i).encode(), f"r{i}")) for i in range(8)]
    results = [f.result(5) for f in futures]
    assert sizes == [4, 4]
    assert [r.outputs["m"] for r in results] == [str(i).encode() * 2 for i in range(8)]


def test_a_lone_request_leaves_after_max_batch_delay(executors, tmp_path):
    sizes = []
    spec = "models:\n  m: {url: m.mar, batch-size: 4, max-batch-delay: 150}\ndag:\n  m: []\n"
    ex, _ = build(executors, tmp_path, spec, {"m": per_row(lambda r: b"ok", sizes)})
    start = time.monotonic()
    assert ex.submit(request(b"x")).result(5).outputs == {"m": b"ok"}
    assert 0.13 <= time.monotonic() - start < 3
    assert sizes == [1]


def flaky(failures):
    calls = []

    def factory(index):
        def handler(batch, meta):
            calls.append(len(batch))
            if len(calls) <= failures:
                raise RuntimeError(f"boom {len(calls)}")
            return [b"ok" for _ in batch]

        return handler

    return factory, calls


def test_retries_until_success(executors, tmp_path):
    factory, calls = flaky(3)
    spec = "models:\n  retry-attempts: 3\n  m: {url: m.mar}\ndag:\n  m: []\n"
    ex, _ = build(executors, tmp_path, spec, {"m": factory})
    with capture_logs() as logs:
        result = ex.submit(request(b"x", "rid-1")).result(5)
    assert result.outputs == {"m": b"ok"} and len(calls) == 4
    failed = [e for e in logs if e["event"] == "node attempt failed"]
    assert [e["attempt"] for e in failed] == [1, 2, 3]
    assert failed[0]["request_id"] == "rid-1" and failed[0]["node"] == "m"
    assert "boom 1" in failed[0]["reason"] and failed[0]["workflow"] == "wf"


def test_the_last_failure_is_node_failed(executors, tmp_path):
    factory, calls = flaky(100)
    spec = "models:\n  retry-attempts: 2\n  m: {url: m.mar}\ndag:\n  m: []\n"
    ex, _ = build(executors, tmp_path, spec, {"m": factory})
    with pytest.raises(NodeFailed) as info:
        ex.submit(request(b"x")).result(5)
    assert info.value.message == "Error executing m"
    assert (info.value.node, info.value.attempts, info.value.workflow) == ("m", 3, "wf")
    assert len(calls) == 3


def test_wrong_output_count_is_a_node_failure(executors, tmp_path):
    spec = "models:\n  m: {url: m.mar}\ndag:\n  m: []\n"
    ex, _ = build(executors, tmp_path, spec, {"m": lambda i: lambda batch, meta: [b"a", b"b"]})
    with capture_logs() as logs, pytest.raises(NodeFailed, match="Error executing m"):
        ex.submit(request(b"x")).result(5)
    assert any("2 outputs for a batch of 1" in e.get("reason", "") for e in logs)
    ex2, _ = build(executors, tmp_path, spec, {"m": lambda i: lambda batch, meta: "nope"})
    with pytest.raises(NodeFailed):
        ex2.submit(request(b"x")).result(5)


def sleeper(release, calls=None):
    def factory(index):
        def handler(batch, meta):
            if calls is not None:
                calls.append(index)
            release.wait(10)
            return [b"late" for _ in batch]

        return handler

    return factory


def test_a_sleeping_handler_fails_within_its_timeouts(executors, tmp_path):
    release, calls = threading.Event(), []
    spec = "models:\n  m: {url: m.mar, timeout-ms: 100, retry-attempts: 2}\ndag:\n  m: []\n"
    ex, _ = build(executors, tmp_path, spec, {"m": sleeper(release, calls)})
    start = time.monotonic()
    with pytest.raises(NodeFailed, match="Error executing m") as info:
        ex.submit(request(b"x")).result(5)
    elapsed = time.monotonic() - start
    release.set()
    assert 0.28 <= elapsed < 0.3 + 1.0
    assert info.value.attempts == 3 and "timed out" in info.value.cause
    # attempt 2 ran on a replacement worker; the 3rd found none (at most max-workers stuck
    # workers are replaced) and timed out in the queue
    assert calls == [0, 1]


def test_stuck_handlers_cost_a_bounded_number_of_threads(executors, tmp_path):
    release = threading.Event()
    spec = ("models:\n  m: {url: m.mar, timeout-ms: 50, retry-attempts: 1, max-workers: 2}\n"
            "dag:\n  m: []\n")
    ex, fakes = build(executors, tmp_path, spec, {"m": sleeper(release)})
    before = threading.active_count()
    futures = [ex.submit(request(b"x", f"r{i}")) for i in range(30)]
    for f in futures:
        with pytest.raises(NodeFailed):
            f.result(10)
    # 2 workers + at most 2 stuck replacements per node: threads stay bounded
    assert threading.active_count() - before <= 8
    assert len(fakes.loaded) <= 4
    release.set()


def test_a_stuck_worker_does_not_starve_the_node(executors, tmp_path):
    release, first = threading.Event(), []

    def factory(index):
        def handler(batch, meta):
            if not first:
                first.append(1)
                release.wait(10)
                return [b"LATE" for _ in batch]  # an abandoned attempt: must never deliver
            return [r["body"] for r in batch]

        return handler

    spec = "models:\n  m: {url: m.mar, timeout-ms: 100, retry-attempts: 1}\ndag:\n  m: []\n"
    ex, _ = build(executors, tmp_path, spec, {"m": factory})
    stuck = ex.submit(request(b"s"))
    time.sleep(0.02)
    others = [ex.submit(request(str(i).encode())) for i in range(5)]
    assert [f.result(5).outputs["m"] for f in others] == [str(i).encode() for i in range(5)]
    assert stuck.result(5).outputs == {"m": b"s"}  # the retry ran on a replacement
    release.set()
    more = [ex.submit(request(str(i).encode())) for i in range(5)]
    assert [f.result(5).outputs["m"] for f in more] == [str(i).encode() for i in range(5)]
    time.sleep(0.05)
    info = ex.describe()
    assert info.nodes["m"].stuck_workers == 0 and info.inflight == 0


def test_a_failed_branch_stops_its_siblings(executors, tmp_path):
    ran, gate = [], threading.Event()

    def slow(index):
        def handler(batch, meta):
            gate.wait(5)
            ran.append("m2")
            return [b"B" for _ in batch]

        return handler

    spec = DIAMOND + "  post: [after]\n"
    spec = spec.replace("m1: {url: m1.mar}", "m1: {url: m1.mar, retry-attempts: 0}")
    ex, _ = build(executors, tmp_path, spec, {
        "pre": per_row(lambda r: b"P"),
        "m1": lambda i: lambda batch, meta: 1 / 0,
        "m2": slow,
        "post": per_row(lambda r: ran.append("post") or b"x"),
        "after": per_row(lambda r: ran.append("after") or b"y"),
    })
    with pytest.raises(NodeFailed, match="Error executing m1"):
        ex.submit(request(b"x")).result(5)
    gate.set()
    time.sleep(0.1)
    assert ran == ["m2"]


def test_full_queue_answers_503_promptly(executors, tmp_path):
    """The bound is job_queue_size queued plus one batch per worker already taken."""
    release = threading.Event()
    spec = "models:\n  m: {url: m.mar}\ndag:\n  m: []\n"
    ex, _ = build(executors, tmp_path, spec, {"m": sleeper(release)},
                  settings=Settings(job_queue_size=2))
    futures = []
    try:
        start = time.monotonic()
        with pytest.raises(Unavailable, match="queue is full"):
            for i in range(10):
                futures.append(ex.submit(request(b"x", f"r{i}")))
                time.sleep(0.02)
        assert time.monotonic() - start < 2
        assert len(futures) == 4  # one running, one taken by the collector, two queued
    finally:
        release.set()
    assert all(f.result(5).outputs == {"m": b"late"} for f in futures)


def test_the_request_deadline_bounds_the_whole_request(executors, tmp_path):
    release = threading.Event()
    spec = "models:\n  m: {url: m.mar}\ndag:\n  m: []\n"
    ex, _ = build(executors, tmp_path, spec, {"m": sleeper(release)})
    start = time.monotonic()
    with pytest.raises(Timeout):
        ex.submit(request(b"x", deadline=time.monotonic() + 0.2)).result(5)
    assert time.monotonic() - start < 1.5
    release.set()


def test_describe_and_scale(executors, tmp_path):
    sizes = []
    spec = "models:\n  m: {url: m.mar, max-workers: 1}\ndag:\n  pre: [m]\n"
    ex, fakes = build(executors, tmp_path, spec, {
        "pre": per_row(lambda r: r["body"]),
        "m": per_row(lambda r: r["body"], sizes),
    })
    info = ex.describe()
    assert (info.workflow, info.engine, info.typed, info.accepting, info.inflight) == (
        "wf", "threaded", False, True, 0)
    m = info.nodes["m"]
    assert (m.kind, m.min_workers, m.max_workers, m.batch_size, m.max_batch_delay,
            m.retry_attempts, m.timeout_ms) == ("model", 1, 1, 1, 50, 1, 10000)
    (worker,) = m.workers
    assert (worker.id, worker.state, worker.status, worker.pid, worker.host) == (
        0, "idle", "READY", os.getpid(), None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", worker.start_time)
    assert m.queued == 0 and m.stuck_workers == 0
    assert ("m", 0, "wf__m") in fakes.loaded
    scaled = ex.scale("m", max_workers=3, batch_size=4, max_batch_delay=20)
    assert scaled == ex.describe().nodes["m"]
    assert len(scaled.workers) == 3 and scaled.batch_size == 4 and scaled.max_batch_delay == 20
    futures = [ex.submit(request(str(i).encode())) for i in range(20)]
    ex.scale("m", max_workers=1, batch_size=1)
    assert [f.result(5).outputs["m"] for f in futures] == [str(i).encode() for i in range(20)]
    assert len(ex.describe().nodes["m"].workers) == 1
    with pytest.raises(WfserveError):
        ex.scale("m", min_workers=3, max_workers=2)


def test_close_finishes_in_flight_then_fails_the_rest(executors, tmp_path):
    gate = threading.Event()
    spec = "models:\n  m: {url: m.mar}\ndag:\n  m: []\n"
    ex, _ = build(executors, tmp_path, spec, {"m": sleeper(gate)})
    before = threading.active_count()
    running = ex.submit(request(b"a"))
    time.sleep(0.05)
    queued = ex.submit(request(b"b"))
    threading.Timer(0.1, gate.set).start()
    ex.close(0.3)
    assert running.result(0).outputs == {"m": b"late"}
    assert queued.done()
    with pytest.raises(Unavailable):
        ex.submit(request(b"c"))
    assert threading.active_count() < before


def test_registration_failure_names_the_nodes_and_starts_nothing(executors, tmp_path):
    def broken(index):
        raise WfserveError("cannot load weights")

    before = threading.active_count()
    ex, _ = make_executor(tmp_path, DIAMOND, {
        "pre": per_row(lambda r: r), "m1": broken, "m2": per_row(lambda r: r),
        "post": per_row(lambda r: r),
    }, start=False)
    ex.workflow.node_archives["m1"] = dataclasses.replace(ex.workflow.node_archives["m1"],
                                                          version="2.5")
    with pytest.raises(RegistrationFailed) as info:
        ex.start()
    assert info.value.message == (  # TorchServe's: a worker that fails to load its handler
        "Workflow wf has failed to register. Failures: [Failed to start workers for model "
        "wf__m1 version: 2.5]"
    )
    assert threading.active_count() == before
    with pytest.raises(Unavailable):
        ex.submit(request(b"x"))


TWO_LEAVES = """
models:
  retry-attempts: 3
  timeout-ms: 50
  m1: {url: m1.mar}
  m2: {url: m2.mar}
dag:
  pre: [m1, m2]
"""


def test_a_node_run_alone_answers_once_whatever_its_place(executors, tmp_path):
    """A model call: the node's own output (a root with children, in a two-leaf DAG), its
    children never run, no retries and no timeout-ms; a failure is TorchServe's answer."""
    ran = []
    release = threading.Event()

    def pre(row):
        ran.append("pre")
        if row["body"] == b"fail":
            raise ValueError("boom")
        if row["body"] == b"slow":
            release.wait(0.5)  # past timeout-ms: 50
        return b"P"

    ex, _ = build(executors, tmp_path, TWO_LEAVES, {
        "pre": per_row(pre), "m1": per_row(lambda r: ran.append("m1") or b"1"),
        "m2": per_row(lambda r: ran.append("m2") or b"2"),
    })
    assert ex.submit_node("pre", request(b"x", deadline=time.monotonic() + 30)).result(5) == b"P"
    assert ex.submit_node("m2", request(b"x", deadline=time.monotonic() + 30)).result(5) == b"2"
    assert ex.submit_node("pre", request(b"slow", deadline=time.monotonic() + 30)).result(5) == (
        b"P")
    ran.clear()
    future = ex.submit_node("pre", request(b"fail", deadline=time.monotonic() + 30))
    with pytest.raises(PredictionFailed) as failed:
        future.result(5)
    assert (failed.value.message, failed.value.http_status, ran) == (
        "Prediction failed", 503, ["pre"])


def test_only_the_chosen_executor_answers(tmp_path):
    ex, _ = make_executor(tmp_path, DIAMOND, {}, start=False)
    from wfserve.plugins.executors.threaded import wfserve_make_executor

    assert wfserve_make_executor(ex.workflow, Settings(executor="ray"), ex.kernel) is None


def test_one_node_can_be_run_alone_and_results_render(executors, tmp_path):
    """What the API's /predictions/<wf>__<node> and /wfpredict call."""
    ex, _ = build(executors, tmp_path, DIAMOND, {
        "pre": per_row(lambda r: b"P"),
        "m1": per_row(lambda r: {"m1": sorted(r)}),
        "m2": per_row(lambda r: b"B"),
        "post": per_row(lambda r: {"post": r["m1"].decode()}),
    })
    assert ex.submit_node("m1", request(b"x")).result(5) == json.dumps(
        {"m1": ["body"]}, indent=2).encode()
    with pytest.raises(WfserveError, match="wf__nope"):
        ex.submit_node("nope", request(b"x"))
    result = ex.submit(request(b"x")).result(5)
    assert json.loads(ex.render(result)) == {"post": json.dumps({"m1": ["body"]}, indent=2)}
