"""Issue 21's deadline budget: the spec's ``deadline-ms``, the request's
``X-Request-Timeout-Ms``, attempts bounded by what is left, late inputs dropped unrun."""

from __future__ import annotations

import pytest

from wfserve.kernel.errors import SpecError
from wfserve.kernel.spec import parse_spec

SPEC = "models: {}\ndag:\n  pre: [post]\n"


def test_a_spec_without_deadline_ms_has_none():
    assert parse_spec(SPEC).deadline_ms is None


def test_deadline_ms_is_kept_on_the_spec():
    assert parse_spec("deadline-ms: 300\n" + SPEC).deadline_ms == 300


@pytest.mark.parametrize("value", ["0", "-5", "'300'", "1.5", "true", "null", "[1]"])
def test_deadline_ms_must_be_a_positive_integer(value):
    with pytest.raises(SpecError) as info:
        parse_spec(f"deadline-ms: {value}\n" + SPEC)
    assert info.value.key == "deadline-ms"
    assert info.value.line == 1
    assert "positive integer" in info.value.message


def _check(tmp_path, text):
    import os
    import subprocess
    import sys

    spec = tmp_path / "wf.yaml"
    spec.write_text(text)
    return subprocess.run([sys.executable, "-m", "wfserve.kernel.cli", "check", str(spec)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))


def test_check_prints_the_deadline(tmp_path):
    result = _check(tmp_path, "deadline-ms: 300\n" + SPEC)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "deadline-ms: 300"


def test_check_refuses_a_bad_deadline(tmp_path):
    result = _check(tmp_path, "deadline-ms: soon\n" + SPEC)
    assert result.returncode == 1
    assert "line 1: 'deadline-ms' must be a positive integer" in result.stderr
    assert "Traceback" not in result.stderr


# --- the executor core: budgets and late inputs -----------------------------------------------

SLOW_THEN_MODEL = """
models:
  m: {url: m.mar}
dag:
  pre: [m]
"""


@pytest.fixture
def executors():
    """Executors built by a test, closed at its end."""
    made = []
    yield made
    for ex in made:
        ex.close(5)


def counting(calls, name, delay=0.0, release=None):
    """A factory of handlers that log ``name`` per row, after ``delay`` or ``release``."""
    import time

    def factory(index):
        def handler(batch, meta):
            calls.extend([name] * len(batch))
            if release is not None:
                release.wait(5)
            time.sleep(delay)
            return [row["body"] for row in batch]

        return handler

    return factory


def test_queued_inputs_past_their_deadline_never_reach_a_handler(executors, tmp_path):
    """A slow first node holds three requests with a short deadline: all three fail with
    ``Timeout``; the two still queued at the first node are dropped (counted), and the second
    node's handler is never called."""
    import threading
    import time

    from tests.executor_fakes import make_executor
    from tests.executor_fakes import request
    from wfserve.kernel.errors import Timeout

    calls: list[str] = []
    release = threading.Event()
    ex, _ = make_executor(tmp_path, SLOW_THEN_MODEL, {
        "pre": counting(calls, "pre", release=release), "m": counting(calls, "m")})
    executors.append(ex)
    deadline = time.monotonic() + 0.2
    futures = [ex.submit(request(b"x", f"r{i}", deadline=deadline)) for i in range(3)]
    for future in futures:
        with pytest.raises(Timeout):
            future.result(5)
    release.set()  # the first node answers only now, past every deadline
    for _ in range(100):
        if ex.describe().nodes["pre"].deadline_drops == 2:
            break
        time.sleep(0.02)
    assert ex.describe().nodes["pre"].deadline_drops == 2
    assert ex.describe().nodes["m"].deadline_drops == 0
    assert calls == ["pre"]
    assert ex.describe().nodes["pre"].queued == 0


def test_an_input_already_late_is_dropped_before_the_watchdog_wakes(executors, tmp_path):
    """A request whose deadline has passed when it is taken is never run, whichever of the
    watchdog and the node's batch comes first."""
    import time

    from tests.executor_fakes import make_executor
    from tests.executor_fakes import request
    from wfserve.kernel.errors import Timeout

    calls: list[str] = []
    ex, _ = make_executor(tmp_path, SLOW_THEN_MODEL, {
        "pre": counting(calls, "pre"), "m": counting(calls, "m")})
    executors.append(ex)
    for i in range(5):
        with pytest.raises(Timeout):
            ex.submit(request(b"x", f"r{i}", deadline=time.monotonic() - 1)).result(5)
    assert calls == []
    assert ex.describe().nodes["pre"].deadline_drops == 5


def test_requests_within_their_deadline_run_as_before(executors, tmp_path):
    import time

    from tests.executor_fakes import make_executor
    from tests.executor_fakes import request

    calls: list[str] = []
    ex, _ = make_executor(tmp_path, SLOW_THEN_MODEL, {
        "pre": counting(calls, "pre"), "m": counting(calls, "m")})
    executors.append(ex)
    for deadline in (None, time.monotonic() + 30):
        assert ex.submit(request(b"x", deadline=deadline)).result(5).outputs == {"m": b"x"}
    assert calls == ["pre", "m", "pre", "m"]
    assert ex.describe().nodes["pre"].deadline_drops == 0


def test_an_attempt_budget_is_the_earlier_of_timeout_ms_and_what_is_left():
    import math
    from types import SimpleNamespace

    from tests.executor_fakes import request
    from wfserve.plugins.executors.core.records import Attempt
    from wfserve.plugins.executors.core.records import Req

    node = SimpleNamespace(timeout=10.0)
    for deadline, expected in ((None, 110.0), (105.0, 105.0), (200.0, 110.0)):
        req = Req(request(b"x", deadline=deadline), {}, 1)
        att = Attempt(req, node, {}, 0, now=100.0)
        assert (att.timer, att.deadline) == (110.0, expected)
    single = Req(request(b"x"), {}, 1, single=True)
    assert Attempt(single, node, {}, 0, now=100.0).deadline == math.inf


def test_the_metrics_count_deadline_drops_per_node():
    from prometheus_client import generate_latest

    from wfserve.kernel.contracts import ExecutorState
    from wfserve.kernel.contracts import NodeState
    from wfserve.plugins.metrics.instruments import Metrics

    def node(drops):
        return NodeState(kind="model", min_workers=1, max_workers=1, batch_size=1,
                         max_batch_delay=0, retry_attempts=1, timeout_ms=1000,
                         deadline_drops=drops)

    state = ExecutorState(workflow="wf", engine="threaded", typed=False, accepting=True,
                          inflight=0, nodes={"pre": node(2), "m": node(0)})
    text = generate_latest(Metrics(lambda: [("wf", state)]).registry).decode()
    assert "# TYPE wfserve_node_deadline_drops_total counter" in text
    assert 'wfserve_node_deadline_drops_total{node="pre",workflow="wf"} 2.0' in text
    assert 'wfserve_node_deadline_drops_total{node="m",workflow="wf"} 0.0' in text
