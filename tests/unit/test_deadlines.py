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


def counting(calls, name, release=None):
    """A factory of handlers that log ``name`` per row, then wait for ``release`` (if any)."""

    def factory(index):
        def handler(batch, meta):
            calls.extend([name] * len(batch))
            if release is not None:
                release.wait(5)
            return [row["body"] for row in batch]

        return handler

    return factory


def _drops_reach(executor, node, count, within=5.0):
    """Whether ``node``'s deadline drops reach exactly ``count`` within ``within`` seconds."""
    from tests.helpers import wait_for

    wait_for(lambda: executor.describe().nodes[node].deadline_drops >= count, within)
    return executor.describe().nodes[node].deadline_drops == count


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
    assert _drops_reach(ex, "pre", 2)
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
    assert _drops_reach(ex, "pre", 5)  # the watchdog may answer before the batch is taken
    assert calls == []


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


# --- the API: X-Request-Timeout-Ms, deadline-ms, default_response_timeout ---------------------


def _api(tmp_path, spec_head="", api=None, auth=False):
    """An inference app over a fake executor for ``seq_wf`` (the spec with ``spec_head``);
    with ``auth``, the token plugin too (its keys in ``tmp_path / "keys.json"``)."""
    import json

    import falcon.testing

    from tests.unit.test_api_app import SPEC as API_SPEC
    from tests.unit.test_api_app import Fakes
    from wfserve.kernel.core import Kernel
    from wfserve.kernel.plugins import make_plugin_manager
    from wfserve.kernel.settings import Settings
    from wfserve.plugins.api.app import create_app

    war = tmp_path / "seq_wf.war"
    war.mkdir()
    (war / "spec.yaml").write_text(spec_head + API_SPEC)
    (tmp_path / "m1.mar").mkdir()
    fakes = Fakes(tmp_path)
    from wfserve.plugins.auth.settings import AuthSettings

    settings = Settings(model_store=str(tmp_path)).with_section(AuthSettings(
        disable_token_authorization=not auth, key_file=str(tmp_path / "keys.json")))
    if api is not None:
        settings = settings.with_section(api)
    pm = make_plugin_manager(settings, builtin=("wfserve.plugins.serializers",
                             "wfserve.plugins.api", "wfserve.plugins.auth"),
                             env={"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"},
                             extra=[("fakes", fakes)])
    kernel = Kernel.create(settings, pm=pm)
    management = falcon.testing.TestClient(create_app(kernel, ["management"]))
    token = {}
    if auth:
        keys = json.loads((tmp_path / "keys.json").read_text())
        token = {"Authorization": f"Bearer {keys['management']['key']}"}
    r = management.simulate_post("/workflows", params={"url": "seq_wf.war"}, headers=token)
    assert r.status_code == 200, r.text
    return fakes, falcon.testing.TestClient(create_app(kernel, ["inference"]))


def _budget(fakes, inference, path="/wfpredict/seq_wf", **headers):
    """Seconds from just before the call to the deadline the executor got for one request
    with ``headers`` (at least the request's budget, a little more: the call's own time)."""
    import time

    before = time.monotonic()
    r = inference.simulate_post(path, body=b"x", headers=headers)
    assert r.status_code == 200, r.text
    return fakes.executors[0].requests[-1].deadline - before


@pytest.mark.parametrize(
    ("spec_head", "headers", "expected"),
    [
        ("", {}, 120.0),  # default_response_timeout, as TorchServe
        ("deadline-ms: 300\n", {}, 0.3),  # the workflow's default
        ("deadline-ms: 300\n", {"X-Request-Timeout-Ms": "500"}, 0.5),  # the request's own
        ("", {"X-Request-Timeout-Ms": " 250 "}, 0.25),
        ("", {"X-Request-Timeout-Ms": "999999999"}, 120.0),  # capped by the server
    ],
)
def test_the_deadline_a_workflow_request_gets(tmp_path, spec_head, headers, expected):
    fakes, inference = _api(tmp_path, spec_head)
    assert expected <= _budget(fakes, inference, **headers) < expected + 0.5


def test_the_server_maximum_caps_the_header(tmp_path):
    from wfserve.plugins.api.settings import ApiSettings

    fakes, inference = _api(tmp_path, api=ApiSettings(max_request_timeout_ms=2000))
    assert 2.0 <= _budget(fakes, inference, **{"X-Request-Timeout-Ms": "60000"}) < 2.5
    assert 1.0 <= _budget(fakes, inference, **{"X-Request-Timeout-Ms": "1000"}) < 1.5


def test_a_model_call_takes_the_header_but_not_the_workflow_default(tmp_path):
    """``deadline-ms`` is the workflow's: a node called as a TorchServe model keeps
    ``default_response_timeout`` unless the request asks for less."""
    import time

    fakes, inference = _api(tmp_path, "deadline-ms: 300\n")
    executor = fakes.executors[0]
    calls = []
    answer = executor.submit_node  # sets a Content-Type, as wsgiref's validator wants
    executor.submit_node = lambda node, request: calls.append(request) or answer(node, request)
    for headers, expected in (({}, 120.0), ({"X-Request-Timeout-Ms": "700"}, 0.7)):
        before = time.monotonic()
        r = inference.simulate_post("/predictions/seq_wf__m1", body=b"x", headers=headers)
        assert r.status_code == 200, r.text
        assert expected <= calls[-1].deadline - before < expected + 0.5


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "+3", "", "٣"])
@pytest.mark.parametrize("path", ["/wfpredict/seq_wf", "/predictions/seq_wf__m1"])
def test_a_bad_header_is_a_400_in_torchserve_shape(tmp_path, value, path):
    fakes, inference = _api(tmp_path)
    r = inference.simulate_post(path, body=b"x", headers={"X-Request-Timeout-Ms": value})
    assert r.status_code == 400
    assert r.json["code"] == 400
    assert r.json["type"] == "BadRequestException"
    assert r.json["message"].startswith("Invalid X-Request-Timeout-Ms header:")
    assert "positive integer of milliseconds" in r.json["message"]
    assert fakes.executors[0].requests == []


def test_the_header_is_read_after_the_token_check(tmp_path):
    """A request without its key is refused for the key, whatever its header says."""
    fakes, inference = _api(tmp_path, auth=True)
    r = inference.simulate_post("/wfpredict/seq_wf", body=b"x",
                                headers={"X-Request-Timeout-Ms": "soon"})
    assert (r.status_code, r.json["type"]) == (400, "InvalidKeyException")
    assert fakes.executors[0].requests == []
