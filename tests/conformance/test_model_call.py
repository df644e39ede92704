"""A workflow node called as a TorchServe model, the model views, the registration parameters.

``/predictions/<wf>__<node>`` answers as TorchServe answers any model (``RestJob``,
``ts/service.py``); ``GET /models/<wf>__<node>`` is its ``DescribeModelResponse``; paging and
registration follow its ``ApiUtils``/``WorkflowManager``. Differences are listed, with their
reasons, in README.md ("A node called as a model, model views, registration parameters").

One workflow, ``mc``: a function node ``pre`` and two model nodes (``probe``, version 2.0, and
``configured``, whose model-config.yaml sets workers), all running
``assets/model_call/probe_handler.py``, whose answer each request picks (``{"cmd": ...}``).
The spec sets ``retry-attempts: 3`` and ``timeout-ms: 300``, which a model call ignores; the
server's response timeout is 4 s.
"""

import json
import re

import httpx
import pytest

from tests.archives import ASSETS
from tests.archives import build_mar
from tests.archives import build_war
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
HERE = ASSETS / "model_call"
HANDLER = HERE / "probe_handler.py"
RESPONSE_TIMEOUT = 4


def pretty(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def error(code: int, message: str, type_: str = "InternalServerException") -> dict:
    return {"code": code, "type": type_, "message": message}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("model_call")
    models, wars = root / "model_store", root / "wf_store"
    build_mar(models, "probe", handler=HANDLER, version="2.0")
    build_mar(models, "configured", handler=HANDLER, config_file=HERE / "model-config.yaml")
    build_war(wars, "mc", spec_file=HERE / "probe_workflow.yaml", handler=HANDLER)
    env = {"WFSERVE_DEFAULT_RESPONSE_TIMEOUT": str(RESPONSE_TIMEOUT)}
    with WfserveServer(root, "--model-store", str(models), "--workflow-store", str(wars),
                       env=env) as srv:
        with httpx.Client(base_url=srv.management, timeout=60) as mgmt:
            r = mgmt.post("/workflows", params={"url": "mc.war"})
            assert r.status_code == 200, r.text
        yield srv


def call(inf, path="/predictions/mc__probe", **command):
    return inf.post(path, content=json.dumps(command).encode())


# --- the answer is the handler's ------------------------------------------------------------


def test_the_answer_carries_the_status_type_and_headers_the_handler_set(inf):
    r = call(inf, cmd="respond", status=201, phrase="Made It", content_type="text/csv",
             answer="a,b\n1,2\n",
             headers={"X-Custom": "yes", "Content-Length": "999", "Connection": "close",
                      "Transfer-Encoding": "chunked"})
    assert (r.status_code, r.reason_phrase, r.text) == (201, "Made It", "a,b\n1,2\n")
    assert r.headers["content-type"] == "text/csv"
    assert r.headers["x-custom"] == "yes"
    # the server owns the framing: the handler's Content-Length, Connection and
    # Transfer-Encoding are not sent
    assert r.headers["content-length"] == str(len(r.content))
    assert "transfer-encoding" not in r.headers and r.headers.get("connection") != "close"
    r = call(inf, cmd="respond", status=418)
    assert (r.status_code, r.text) == (418, "done")
    assert "content-type" not in r.headers


def test_without_settings_a_200_with_no_content_type(inf):
    """TorchServe sends no Content-Type unless the handler set one (its step 50)."""
    r = call(inf)
    assert r.status_code == 200
    assert "content-type" not in r.headers
    assert r.text == json.dumps({"inputs": ["body"], "url_path": "", "explain": "False"},
                                indent=2)


def test_headers_torchserve_adds_and_the_query_is_not_an_input(inf):
    r = inf.post("/predictions/mc__probe", params={"extra": "1"}, content=b"{}")
    assert r.json() == {"inputs": ["body"], "url_path": "", "explain": "False"}
    assert call(inf, "/predictions/mc__probe/2.0").json()["url_path"] == ""
    assert call(inf, "/predictions/mc__probe/2.0/a/b").json()["url_path"] == "a/b"
    assert call(inf, "/explanations/mc__probe").json()["explain"] == "True"
    assert call(inf, "/explanations/mc__pre/1.0/x").json() == {
        "inputs": ["body"], "url_path": "x", "explain": "True"}
    assert inf.get("/predictions/mc__probe").json()["inputs"] == ["body"]  # any method


def test_a_version_is_the_model_archives(inf):
    r = call(inf, "/predictions/mc__probe/1.0")
    assert (r.status_code, r.json()) == (404, error(
        404, "Model version: 1.0 does not exist for model: mc__probe",
        "ModelVersionNotFoundException"))
    assert call(inf, "/predictions/mc__pre/1.0").status_code == 200  # a function node: 1.0
    r = call(inf, "/predictions/mc__nope")
    assert (r.status_code, r.json()) == (404, error(404, "Model not found: mc__nope",
                                                    "ModelNotFoundException"))


# --- once, bounded by the response timeout -------------------------------------------------


def test_the_handler_runs_once_without_retries(inf, tmp_path):
    log = tmp_path / "calls.log"
    r = call(inf, cmd="raise", log=str(log))
    assert (r.status_code, r.json()) == (503, error(503, "Prediction failed"))
    assert log.read_text() == "call\n"  # the spec's retry-attempts: 3 do not apply


def test_timeout_ms_does_not_apply(inf):
    r = call(inf, cmd="wait", seconds=1.0)  # past the spec's timeout-ms of 300
    assert r.status_code == 200, r.text


def test_past_the_response_timeout_the_worker_died(inf):
    r = call(inf, "/predictions/mc__pre", cmd="hang")
    assert (r.status_code, r.json()) == (500, error(500, "Worker died."))
    assert call(inf, "/predictions/mc__pre").status_code == 200  # the worker was replaced


# --- failures map as for any TorchServe model ------------------------------------------------


@pytest.mark.parametrize(("command", "status", "message"), [
    ({"cmd": "prediction_exception", "code": 422, "message": "bad input"}, 422, "bad input"),
    ({"cmd": "prediction_exception", "code": 599, "message": "odd"}, 599, "odd"),
    ({"cmd": "raise"}, 503, "Prediction failed"),
    ({"cmd": "memory"}, 507, "Out of resources"),
    ({"cmd": "cuda"}, 507, "Out of resources"),
    ({"cmd": "not_a_list"}, 503, "Invalid model predict output"),
    ({"cmd": "too_few"}, 503, "number of batch response mismatched"),
    ({"cmd": "unencodable"}, 503, "Unsupported model output data type."),
])
@pytest.mark.parametrize("node", ["probe", "pre"])
def test_failures_answer_torchserves_status_and_message(inf, node, command, status, message):
    r = call(inf, f"/predictions/mc__{node}", **command)
    assert (r.status_code, r.json()) == (status, error(status, message))
    assert r.text == pretty(error(status, message))


def test_a_streaming_handler_is_refused_clearly(inf):
    r = call(inf, cmd="stream")
    assert r.status_code == 501
    assert r.json()["type"] == "InternalServerException"
    assert "send_intermediate_predict_response" in r.json()["message"]
    assert "not supported" in r.json()["message"]


# --- the model views -------------------------------------------------------------------------

DESCRIBE_FIELDS = [  # DescribeModelResponse's, in its order; null ones (CPU) omitted
    "modelName", "modelVersion", "modelUrl", "runtime", "minWorkers", "maxWorkers",
    "batchSize", "maxBatchDelay", "responseTimeout", "startupTimeout", "maxRetryTimeoutInSec",
    "clientTimeoutInMills", "parallelType", "parallelLevel", "deviceType",
    "continuousBatching", "useJobTicket", "useVenv", "stateful", "sequenceMaxIdleMSec",
    "sequenceTimeoutMSec", "maxNumSequence", "maxSequenceJobQueueSize", "loadedAtStartup",
    "workers", "jobQueueStatus",
]
START_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_describe_is_torchserves_full_describe(mgmt):
    r = mgmt.get("/models/mc__probe")
    (probe,) = r.json()
    assert list(probe)[:len(DESCRIBE_FIELDS)] == DESCRIBE_FIELDS
    assert set(probe) - set(DESCRIBE_FIELDS) == {"retryAttempts", "timeoutMs"}  # wfserve's
    assert {k: probe[k] for k in DESCRIBE_FIELDS if k not in ("workers",)} == {
        "modelName": "mc__probe", "modelVersion": "2.0", "modelUrl": "probe.mar",
        "runtime": "python", "minWorkers": 2, "maxWorkers": 2, "batchSize": 1,
        "maxBatchDelay": 0, "responseTimeout": RESPONSE_TIMEOUT, "startupTimeout": 120,
        "maxRetryTimeoutInSec": 300, "clientTimeoutInMills": 0, "parallelType": "",
        "parallelLevel": 0, "deviceType": "cpu", "continuousBatching": False,
        "useJobTicket": False, "useVenv": False, "stateful": False, "sequenceMaxIdleMSec": 0,
        "sequenceTimeoutMSec": 0, "maxNumSequence": 0, "maxSequenceJobQueueSize": 0,
        "loadedAtStartup": False,
        "jobQueueStatus": {"remainingCapacity": 100, "pendingRequests": 0}}
    assert len(probe["workers"]) == 2
    for worker in probe["workers"]:
        assert list(worker) == ["id", "startTime", "status", "memoryUsage", "pid", "gpu",
                                "gpuUsage"]
        assert isinstance(worker["id"], str) and START_TIME.fullmatch(worker["startTime"])
        assert (worker["status"], worker["memoryUsage"], worker["gpu"],
                worker["gpuUsage"]) == ("READY", 0, False, "N/A")
        assert isinstance(worker["pid"], int) and worker["pid"] > 0
    assert r.headers["content-type"] == "application/json"


def test_workers_are_reported_as_torchserve_reports_them(mgmt):
    """min = max = max-workers, unless the .mar's model-config.yaml sets them; a function node
    has one; wfserve's own node view keeps the real values."""
    (configured,) = mgmt.get("/models/mc__configured").json()
    assert (configured["minWorkers"], configured["maxWorkers"]) == (1, 3)
    (pre,) = mgmt.get("/models/mc__pre").json()
    assert (pre["minWorkers"], pre["maxWorkers"], pre["modelVersion"]) == (1, 1, "1.0")
    assert "modelUrl" not in pre
    node = mgmt.get("/workflows/mc/nodes/probe").json()
    assert (node["minWorkers"], node["maxWorkers"]) == (1, 2)


def test_describe_customized_and_versions(mgmt):
    (plain,) = mgmt.get("/models/mc__probe").json()
    assert "customizedMetadata" not in plain
    (customized,) = mgmt.get("/models/mc__probe", params={"customized": "true"}).json()
    assert customized["customizedMetadata"] == {"described": True, "rows": [{}]}
    assert list(customized)[len(DESCRIBE_FIELDS)] == "customizedMetadata"
    assert [m["modelVersion"] for m in mgmt.get("/models/mc__probe/2.0").json()] == ["2.0"]
    assert [m["modelVersion"] for m in mgmt.get("/models/mc__probe/all").json()] == ["2.0"]
    r = mgmt.get("/models/mc__probe/1.0")
    assert (r.status_code, r.json()["type"]) == (404, "ModelVersionNotFoundException")


# --- paging ----------------------------------------------------------------------------------


def test_paging_limits_as_torchserve(mgmt):
    models = mgmt.get("/models").json()["models"]
    assert [m["modelName"] for m in models] == ["mc__configured", "mc__probe"]
    assert mgmt.get("/models", params={"limit": 0}).json() == {
        "nextPageToken": "0", "models": []}
    assert mgmt.get("/models", params={"limit": 0, "next_page_token": 2}).json() == {
        "nextPageToken": "2", "models": []}
    assert mgmt.get("/models", params={"limit": 0, "next_page_token": 3}).json() == {
        "models": []}
    assert mgmt.get("/models", params={"limit": -1}).json() == {"models": models}
    assert mgmt.get("/models", params={"limit": 101}).json() == {"models": models}
    assert mgmt.get("/workflows", params={"limit": 0}).json() == {
        "nextPageToken": "0", "workflows": []}
    assert len(mgmt.get("/workflows", params={"limit": -7}).json()["workflows"]) >= 1


# --- registration parameters -----------------------------------------------------------------


def test_an_empty_url_names_the_store_itself(mgmt):
    r = mgmt.post("/workflows?url=")
    assert (r.status_code, r.json()) == (404, error(404, "Workflow not found at: ",
                                                    "WorkflowNotFoundException"))
    r = mgmt.post("/workflows", json={"url": ""})
    assert (r.status_code, r.json()["message"]) == (404, "Workflow not found at: ")
    r = mgmt.post("/workflows?workflow_name=x")
    assert (r.status_code, r.json()["message"]) == (400, "Parameter url is required.")


@pytest.mark.parametrize("how", ["query", "json"])
def test_an_empty_workflow_name_is_ignored(mgmt, how):
    params = {"url": "mc.war", "workflow_name": ""}
    r = (mgmt.post("/workflows?url=mc.war&workflow_name=") if how == "query"
         else mgmt.post("/workflows", json=params))
    # the manifest's name, mc, is used: already registered
    assert (r.status_code, r.json()["message"]) == (409, "Workflow mc is already registered.")


def test_any_name_torchserve_accepts_is_accepted(mgmt, inf):
    name = "my wf é"
    r = mgmt.post("/workflows", params={"url": "mc.war", "workflow_name": name})
    assert (r.status_code, r.json()) == (200, {
        "status": f"Workflow {name} has been registered and scaled successfully."})
    try:
        assert mgmt.get(f"/workflows/{name}").json()[0]["workflowName"] == name  # decoded
        assert call(inf, f"/predictions/{name}__probe").status_code == 200
        (model,) = mgmt.get(f"/models/{name}__probe").json()
        assert model["modelName"] == f"{name}__probe"
    finally:
        r = mgmt.delete(f"/workflows/{name}")
    assert r.json() == {"status": f'Workflow "{name}" unregistered'}


@pytest.mark.parametrize("name", ["a/b", "a\\b", "a..b", "..", ".", "tab\there", "nl\n"])
def test_names_that_could_name_another_file_are_refused(mgmt, name):
    r = mgmt.post("/workflows", params={"url": "mc.war", "workflow_name": name})
    assert (r.status_code, r.json()["type"]) == (400, "BadRequestException")
    assert r.json()["message"].startswith(f"Invalid workflow name: {name!r}: a name must be")
    r = mgmt.post("/workflows", params={"url": "mc.war", "workflow_name": "v", "version": name})
    assert (r.status_code, r.json()["type"]) == (400, "BadRequestException")


# --- the Ray executor ------------------------------------------------------------------------


def test_a_model_call_on_the_ray_executor(tmp_path):
    """The same call semantics when each worker is a Ray actor: the handler's answer meta
    crosses back from the actor, a failure is classified there and runs once, the describe
    names each actor's process."""
    models, wars = tmp_path / "model_store", tmp_path / "wf_store"
    build_mar(models, "probe", handler=HANDLER, version="2.0")
    build_mar(models, "configured", handler=HANDLER, config_file=HERE / "model-config.yaml")
    spec = tmp_path / "one_worker.yaml"
    spec.write_text((HERE / "probe_workflow.yaml").read_text().replace("max-workers: 2",
                                                                       "max-workers: 1"))
    build_war(wars, "mc", spec_file=spec, handler=HANDLER)
    log = tmp_path / "calls.log"
    with WfserveServer(tmp_path, "--model-store", str(models), "--workflow-store", str(wars),
                       "--no-snapshot", "--workflows", "mc.war", "--executor", "ray",
                       "--ray-num-cpus", "2") as srv, httpx.Client(timeout=60) as client:
        r = client.post(f"{srv.inference}/predictions/mc__probe", content=json.dumps(
            {"cmd": "respond", "status": 202, "phrase": "Queued", "headers": {"X-A": "1"}}))
        assert (r.status_code, r.reason_phrase, r.headers["x-a"], r.text) == (
            202, "Queued", "1", "done")
        assert "content-type" not in r.headers
        r = client.post(f"{srv.inference}/predictions/mc__pre",
                        content=json.dumps({"cmd": "raise", "log": str(log)}))
        assert (r.status_code, r.json()) == (503, error(503, "Prediction failed"))
        assert log.read_text() == "call\n"
        r = client.post(f"{srv.inference}/predictions/mc__pre",
                        content=json.dumps({"cmd": "prediction_exception", "code": 409,
                                            "message": "taken"}))
        assert (r.status_code, r.json()) == (409, error(409, "taken"))
        (probe,) = client.get(f"{srv.management}/models/mc__probe").json()
        (worker,) = probe["workers"]
        assert START_TIME.fullmatch(worker["startTime"]) and worker["pid"] > 0
        assert (probe["minWorkers"], probe["maxWorkers"], worker["status"]) == (1, 1, "READY")
