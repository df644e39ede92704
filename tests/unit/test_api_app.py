"""The API plugin in process (falcon.testing) with fake fetch/archive/executor plugins."""

import concurrent.futures
import io
import json
import socket
import textwrap
from pathlib import Path

import falcon.testing
import pytest

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import ExecutorState
from wfserve.kernel.contracts import NodeState
from wfserve.kernel.contracts import PredictResult
from wfserve.kernel.contracts import WorkerState
from wfserve.kernel.core import Kernel
from wfserve.kernel.errors import NodeFailed
from wfserve.kernel.errors import WorkflowNotFound
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings
from wfserve.plugins.api.app import AddressDispatch
from wfserve.plugins.api.app import bound_address
from wfserve.plugins.api.app import create_app
from wfserve.plugins.api.app import create_wsgi
from wfserve.plugins.api.bounded import Alarm
from wfserve.plugins.api.bounded import BodyTimeout
from wfserve.plugins.api.bounded import BodyTooSlow
from wfserve.plugins.api.bounded import BoundedInput
from wfserve.plugins.api.bounded import Bounds
from wfserve.plugins.api.bounded import Watchdog
from wfserve.plugins.api.settings import ApiSettings
from wfserve.plugins.api.worker import body_length
from wfserve.plugins.api.worker import close_after

SPEC = textwrap.dedent("""
    models:
      max-batch-delay: 0
      m1: {url: m1.mar}
    dag:
      pre: [m1]
      m1: [post]
""")


class FakeExecutor:
    def __init__(self, workflow):
        self.workflow = workflow
        self.requests = []
        self.closed = False

    def start(self):
        pass

    def submit(self, request):
        self.requests.append(request)
        future = concurrent.futures.Future()
        if request.row.get("body") == "fail":
            future.set_exception(NodeFailed("Error executing pre", node="pre"))
        else:
            future.set_result(PredictResult({"post": json.dumps({"echo": repr(request.row)})}))
        return future

    def submit_node(self, node, request):
        # a handler that sets its Content-Type (wsgiref's validator, which Falcon's test
        # client runs, refuses an answer without one; over HTTP it may have none)
        request.response.headers["Content-Type"] = "application/json"
        future = concurrent.futures.Future()
        future.set_result({"node": node, "row": repr(request.row)})
        return future

    def render(self, result):
        (value,) = result.outputs.values()
        return value.encode()

    def describe(self):
        c = self.workflow.spec.nodes["m1"].config
        m1 = NodeState("model", c.min_workers, c.max_workers, c.batch_size, c.max_batch_delay,
                       c.retry_attempts, c.timeout_ms, queued=0,
                       workers=(WorkerState(1, "READY", "idle", start_time=""),))
        return ExecutorState(self.workflow.name, "fake", False, True, 0, {"m1": m1})

    def close(self, timeout=30.0):
        self.closed = True


class Fakes:
    """fetch: names in a folder; open_archive: a folder holding the spec; executor: echo."""

    def __init__(self, store: Path):
        self.store = store
        self.executors = []

    @hookimpl
    def wfserve_fetch(self, url):
        path = self.store / url
        if not path.exists():
            raise WorkflowNotFound(f"Workflow not found in workflow store: {url}")
        return path

    @hookimpl
    def wfserve_open_archive(self, path, workdir):
        if path.suffix == ".mar":
            return Archive("mar", path, path, {}, path.stem, version="2.0")
        return Archive("war", path, path, {}, path.stem, spec_file="spec.yaml")

    @hookimpl
    def wfserve_make_executor(self, workflow):
        executor = FakeExecutor(workflow)
        self.executors.append(executor)
        return executor


@pytest.fixture
def env(tmp_path):
    war = tmp_path / "seq_wf.war"
    war.mkdir()
    (war / "spec.yaml").write_text(SPEC)
    (tmp_path / "m1.mar").mkdir()
    fakes = Fakes(tmp_path)
    settings = Settings(model_store=str(tmp_path), max_request_size=1000)
    pm = make_plugin_manager(settings, builtin=("wfserve.plugins.serializers",
                             "wfserve.plugins.api"),
                             env={"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"},
                             extra=[("fakes", fakes)])
    kernel = Kernel.create(settings, pm=pm)
    management = falcon.testing.TestClient(create_app(kernel, ["management"]))
    inference = falcon.testing.TestClient(create_app(kernel, ["inference"]))
    return kernel, fakes, management, inference


def test_register_list_describe_unregister(env):
    _, fakes, mgmt, _ = env
    r = mgmt.simulate_post("/workflows", params={"url": "seq_wf.war"})
    assert r.status_code == 200
    assert r.json == {"status": "Workflow seq_wf has been registered and scaled successfully."}
    assert r.text.endswith("}\n") and '\n  "status"' in r.text  # TorchServe's pretty JSON
    assert mgmt.simulate_get("/workflows").json == {
        "workflows": [{"workflowName": "seq_wf", "workflowUrl": "seq_wf.war"}]
    }
    (described,) = mgmt.simulate_get("/workflows/seq_wf").json
    assert list(described)[:7] == [  # TorchServe's fields first, unchanged; then extensions
        "workflowName", "workflowUrl", "minWorkers", "maxWorkers", "batchSize",
        "maxBatchDelay", "workflowDag"]
    assert described == {
        "workflowName": "seq_wf", "workflowUrl": "seq_wf.war", "minWorkers": 1,
        "maxWorkers": 1, "batchSize": 1, "maxBatchDelay": 0,
        "workflowDag": "{pre=[m1], m1=[post]}", "workflowVersion": "1.0", "isDefault": True,
        "nodes": {"m1": {"minWorkers": 1, "maxWorkers": 1, "batchSize": 1, "maxBatchDelay": 0,
                         "workers": [{"id": 1, "status": "READY"}], "queued": 0}},
    }
    r = mgmt.simulate_delete("/workflows/seq_wf")
    assert r.json == {"status": 'Workflow "seq_wf" unregistered'}
    assert fakes.executors[0].closed


def test_registration_errors(env):
    _, _, mgmt, _ = env
    r = mgmt.simulate_post("/workflows")
    assert (r.status_code, r.json) == (400, {
        "code": 400, "type": "BadRequestException", "message": "Parameter url is required."})
    r = mgmt.simulate_post("/workflows", params={"url": "nope.war"})
    assert (r.status_code, r.json["type"]) == (404, "WorkflowNotFoundException")
    mgmt.simulate_post("/workflows", params={"url": "seq_wf.war"})
    r = mgmt.simulate_post("/workflows", params={"url": "seq_wf.war"})
    assert (r.status_code, r.json) == (409, {
        "code": 409, "type": "ConflictStatusException",
        "message": "Workflow seq_wf is already registered."})


def test_register_with_json_body_and_workflow_name(env):
    _, _, mgmt, _ = env
    r = mgmt.simulate_post("/workflows", json={"url": "seq_wf.war", "workflow_name": "copy"})
    assert r.status_code == 200, r.text
    assert "copy" in r.json["status"]


def test_unknown_path_and_method_answer_as_torchserve(env):
    _, _, mgmt, inf = env
    r = mgmt.simulate_put("/workflows")
    assert (r.status_code, r.json) == (405, {
        "code": 405, "type": "MethodNotAllowedException",
        "message": "Requested method is not allowed, please refer to API document."})
    for client, path in ((mgmt, "/wfpredict/x"), (inf, "/workflows"), (inf, "/wfpredict")):
        r = client.simulate_post(path)
        assert (r.status_code, r.json["type"]) == (404, "ResourceNotFoundException"), path


def test_predict_decodes_bodies_as_torchserve(env):
    _, fakes, mgmt, inf = env
    mgmt.simulate_post("/workflows", params={"url": "seq_wf.war"})
    executor = fakes.executors[0]
    cases = [
        ({"Content-Type": "application/json"}, b'{"a": 1}', {"body": {"a": 1}}),
        ({"Content-Type": "text/plain"}, b"hi", {"body": "hi"}),
        ({}, b"\x00\x01", {"body": b"\x00\x01"}),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"data=test", {"data": b"test"}),
    ]
    for headers, body, row in cases:
        r = inf.simulate_post("/wfpredict/seq_wf", headers=headers, body=body,
                              params={"ignored": "query"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert executor.requests[-1].row == row
    r = inf.simulate_put("/wfpredict/seq_wf", body=b"x")
    assert r.status_code == 200


def test_predict_errors(env):
    _, _, mgmt, inf = env
    mgmt.simulate_post("/workflows", params={"url": "seq_wf.war"})
    r = inf.simulate_post("/wfpredict/seq_wf", body=b"fail", headers={"Content-Type": "text/plain"})
    assert (r.status_code, r.json) == (500, {
        "code": 500, "type": "InternalServerException", "message": "Error executing pre"})
    r = inf.simulate_post("/wfpredict/nope_wf", body=b"x")
    assert (r.status_code, r.json["message"]) == (404, "Workflow not found: nope_wf")
    r = inf.simulate_post("/wfpredict/seq_wf", body=b"x" * 1001)
    assert (r.status_code, r.json["code"]) == (413, 413)
    r = inf.simulate_post("/wfpredict/seq_wf", body=b"{bad",  # passed on raw, no 400
                          headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json) == (200, {"echo": "{'body': bytearray(b'{bad')}"})


def test_request_id_is_echoed_or_generated(env):
    _, _, _, inf = env
    assert inf.simulate_get("/ping", headers={"X-Request-ID": "abc-1"}).headers[
        "x-request-id"] == "abc-1"
    assert len(inf.simulate_get("/ping").headers["x-request-id"]) == 32


def test_models_views_and_node_predictions(env):
    _, _, mgmt, inf = env
    mgmt.simulate_post("/workflows", params={"url": "seq_wf.war"})
    assert mgmt.simulate_get("/models").json == {
        "models": [{"modelName": "seq_wf__m1", "modelUrl": "m1.mar"}]}
    (model,) = mgmt.simulate_get("/models/seq_wf__m1").json
    assert model["modelName"] == "seq_wf__m1" and model["modelVersion"] == "2.0"
    assert model["workers"] == [{"id": "1", "startTime": "", "status": "READY",
                                 "memoryUsage": 0, "pid": 0, "gpu": False, "gpuUsage": "N/A"}]
    (function,) = mgmt.simulate_get("/models/seq_wf__pre").json
    assert "modelUrl" not in function
    r = mgmt.simulate_get("/models/nope")
    assert (r.status_code, r.json) == (404, {
        "code": 404, "type": "ModelNotFoundException", "message": "Model not found: nope"})
    r = inf.simulate_post("/predictions/seq_wf__m1", body=b"x", params={"q": "1"})
    assert r.status_code == 200
    assert json.loads(r.text)["node"] == "m1"
    assert "'q'" not in json.loads(r.text)["row"]  # query parameters are not inputs


def test_ping(env):
    _, _, _, inf = env
    assert inf.simulate_get("/ping").json == {"status": "Healthy"}


def test_unexpected_exception_is_a_bare_500(env):
    _, fakes, mgmt, inf = env
    mgmt.simulate_post("/workflows", params={"url": "seq_wf.war"})
    fakes.executors[0].submit = lambda request: 1 / 0
    r = inf.simulate_post("/wfpredict/seq_wf", body=b"x")
    assert (r.status_code, r.json["type"]) == (500, "InternalServerException")
    assert "ZeroDivision" not in r.text and "Traceback" not in r.text


def test_made_request_ids_are_uuid4_distinct_and_differ_in_a_forked_child():
    import os
    import uuid

    from wfserve.plugins.api.middleware import new_request_id

    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for made in ids[:200]:
        parsed = uuid.UUID(hex=made)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, made)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a gunicorn worker forked from the master would make
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    assert child != new_request_id() and len(child) == 32


class FakeSocket:
    """The local address an accepted socket reports (``wfserve.socket`` in the environ)."""

    def __init__(self, *name):
        self.name = name

    def getsockname(self):
        return self.name


def app_named(name):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [name.encode()]
    return app


def serve(dispatch, **environ):
    return b"".join(dispatch(environ, lambda status, headers: None))


def test_dispatch_keys_apps_by_local_host_and_port_not_port_alone():
    """Finding 4: inference on 127.0.0.2:P and management on 127.0.0.1:P share P; each
    address gets its own app, a wildcard bind answers for any other host of its port, an
    address with neither gets the fallback (404)."""
    dispatch = AddressDispatch({("127.0.0.2", 80): app_named("inference"),
                                ("127.0.0.1", 80): app_named("management"),
                                ("0.0.0.0", 81): app_named("any4"),
                                ("::", 82): app_named("any6"),
                                ("::1", 83): app_named("v6")}, app_named("fallback"))
    sock = FakeSocket
    assert serve(dispatch, **{"wfserve.socket": sock("127.0.0.2", 80)}) == b"inference"
    assert serve(dispatch, **{"wfserve.socket": sock("127.0.0.1", 80)}) == b"management"
    assert serve(dispatch, **{"wfserve.socket": sock("127.0.0.3", 80)}) == b"fallback"
    assert serve(dispatch, **{"wfserve.socket": sock("10.1.2.3", 81)}) == b"any4"
    assert serve(dispatch, **{"wfserve.socket": sock("::ffff:127.0.0.2", 80, 0, 0)}) \
        == b"inference"
    assert serve(dispatch, **{"wfserve.socket": sock("::ffff:10.0.0.1", 82, 0, 0)}) == b"any6"
    assert serve(dispatch, **{"wfserve.socket": sock("fe80::1%lo", 82, 0, 0)}) == b"any6"
    assert serve(dispatch, **{"wfserve.socket": sock("::1", 83, 0, 0)}) == b"v6"
    assert serve(dispatch, **{"wfserve.socket": sock("127.0.0.1", 83)}) == b"fallback"
    # the socket wins over SERVER_*, which only stand in without one (another WSGI server)
    assert serve(dispatch, SERVER_NAME="127.0.0.1", SERVER_PORT="80",
                 **{"wfserve.socket": sock("127.0.0.2", 80)}) == b"inference"
    assert serve(dispatch, SERVER_NAME="127.0.0.1", SERVER_PORT="80") == b"management"
    assert serve(dispatch) == b"fallback"


def test_bound_addresses_are_normalised_as_the_socket_reports_them():
    assert bound_address("localhost", 8080) == ("127.0.0.1", 8080)
    assert bound_address("0:0::1", 8080) == ("::1", 8080)
    assert bound_address("::", 1) == ("::", 1)


def test_create_wsgi_builds_one_app_per_address(tmp_path):
    settings = Settings(model_store=str(tmp_path), inference_address="http://127.0.0.2:8080",
                        management_address="http://localhost:8080",
                        metrics_address="http://127.0.0.1:8082")
    pm = make_plugin_manager(settings, builtin=("wfserve.plugins.serializers",
                             "wfserve.plugins.api"),
                             env={"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    dispatch = create_wsgi(Kernel.create(settings, pm=pm))
    assert set(dispatch.apps) == {("127.0.0.2", 8080), ("127.0.0.1", 8080),
                                  ("127.0.0.1", 8082)}
    assert dispatch.apps[("127.0.0.2", 8080)].surfaces == ["inference"]
    assert dispatch.apps[("127.0.0.1", 8080)].surfaces == ["management"]
    on = {surface: falcon.testing.TestClient(dispatch.apps[address]) for surface, address in
          (("inference", ("127.0.0.2", 8080)), ("management", ("127.0.0.1", 8080)))}
    assert on["inference"].simulate_get("/workflows").status_code == 404
    assert on["management"].simulate_get("/workflows").status_code == 200


# -- bounded request bodies (plugins/api/bounded.py); over HTTP: tests/reliability/test_slow_clients


@pytest.fixture
def pair():
    """A connected socket pair: (the server's end, the client's end)."""
    server, client = socket.socketpair()
    server.settimeout(10)  # NOTE: a watchdog that never fires fails the test, never hangs it
    yield server, client
    server.close()
    client.close()


def test_bounded_input_reads_whole_bodies_and_knows_when_they_end(pair):
    sock, _ = pair
    lenient = Bounds(body_timeout=60, read_timeout=30, min_rate=0)
    body = BoundedInput(io.BytesIO(b"abc\ndef\nrest"), 12, sock, lenient, Watchdog())
    assert not body.finished
    assert body.readline() == b"abc\n" and list(body) == [b"def\n", b"rest"]
    assert body.finished and body.read() == b""
    chunked = BoundedInput(io.BytesIO(b"x" * 10_000), None, sock, lenient, Watchdog())
    assert chunked.read(4) == b"xxxx" and not chunked.finished
    assert chunked.read() == b"x" * 9_996 and chunked.finished
    empty = BoundedInput(io.BytesIO(b""), 0, sock, lenient, Watchdog())
    assert empty.finished and empty.read() == b"" and empty.readlines() == []


def test_a_body_past_its_deadline_fails_and_shuts_the_socket_for_reading(pair):
    sock, client = pair
    client.sendall(b"queued")
    late = BoundedInput(io.BytesIO(b"data"), 4, sock, Bounds(body_timeout=0.0, min_rate=0),
                        Watchdog())
    with pytest.raises(BodyTimeout):
        late.read()
    assert late.failed and not late.finished
    with pytest.raises(Exception, match="could not be read earlier"):
        late.read()
    assert sock.recv(100) == b"queued" and sock.recv(100) == b""  # shut for reading


def test_the_watchdog_cuts_a_blocked_read_at_the_body_timeout(pair):
    sock, client = pair
    client.sendall(b"12")  # of 100 announced bytes, then nothing more
    stream = sock.makefile("rb", buffering=0)
    watchdog = Watchdog(tick=0.01).start()
    body = BoundedInput(stream, 100, sock, Bounds(body_timeout=0.2, min_rate=0), watchdog)
    with pytest.raises(BodyTimeout):
        while body.read(100):
            pass
    assert watchdog.swap(None) is None  # nothing left armed


def test_the_minimum_rate_applies_once_the_read_timeout_has_passed(pair):
    sock, _ = pair
    stream = sock.makefile("rb", buffering=0)
    slow = BoundedInput(stream, 100, sock, Bounds(body_timeout=60, read_timeout=0.1,
                                                 min_rate=1_000_000), Watchdog(tick=0.01).start())
    with pytest.raises(BodyTooSlow):
        slow.read()


def test_a_read_keeps_an_alarm_already_armed_on_its_thread(pair):
    sock, _ = pair
    watchdog = Watchdog()
    outer = Alarm(float("inf"), sock, socket.SHUT_RDWR, "outer", {})
    watchdog.swap(outer)
    body = BoundedInput(io.BytesIO(b"abc"), 3, sock, Bounds(), watchdog)
    assert body.read() == b"abc"
    assert watchdog.swap(None) is outer
    assert watchdog.fire_expired(float("inf")) == []


def test_bounds_from_settings_take_a_timeout_of_zero_as_none():
    bounds = Bounds.from_settings(Settings().with_section(ApiSettings(
        request_body_timeout=0, response_write_timeout=-1, request_min_rate=0,
        request_read_timeout=5)))
    assert bounds == Bounds(float("inf"), 5.0, 0, float("inf"))
    assert Bounds.from_settings(Settings()) == Bounds(60.0, 30.0, 1024, 30.0)


def test_body_length_and_closing_after_an_early_answer():
    assert body_length({"CONTENT_LENGTH": "12"}) == 12
    assert body_length({}) == 0 and body_length({"CONTENT_LENGTH": "x"}) == 0
    assert body_length({"HTTP_TRANSFER_ENCODING": "gzip, Chunked"}) is None

    class Response:
        closed = False

        def force_close(self):
            self.closed = True

        def start_response(self, status, headers, exc_info=None):
            pass

    resp = Response()
    close_after(resp.start_response)
    assert resp.closed
    close_after(lambda *a: None)  # another server's start_response: nothing to do


def test_http_error_headers_are_copied_whether_a_mapping_or_pairs():
    """Falcon takes an error's headers as a dict or as (name, value) pairs: both reach the
    answer (Content-Type stays TorchServe's JSON)."""
    from wfserve.plugins.api.errors import handle_http_error

    for headers in ({"Retry-After": "3"}, [("Retry-After", "3"), ("Content-Type", "x/y")]):
        resp = falcon.Response()
        error = falcon.HTTPError(falcon.HTTP_503, headers=headers)
        handle_http_error(falcon.testing.create_req(), resp, error, {})
        assert resp.get_header("Retry-After") == "3"
        assert resp.content_type != "x/y"
