"""TorchServe 0.12.0's recorded HTTP transcript, step by step, against a real wfserve server.

Same workflows as the peer (``seq_wf``, ``par_wf``, the broken ones of ``peer/bad``), built
with the official archivers. Each test names the transcript steps it covers. Where wfserve
deliberately answers differently, the test says so and why.
"""

import json
import shutil
from pathlib import Path

import pytest

from tests.archives import ASSETS
from tests.archives import SAMPLE
from tests.archives import WORKFLOW_HANDLER
from tests.archives import build_war
from tests.archives import expected_par
from tests.archives import expected_seq
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
BAD = ASSETS / "bad"
PAYLOAD = json.dumps({"input": SAMPLE}).encode()
JSON = {"Content-Type": "application/json"}
NOT_FOUND = {"code": 404, "type": "ResourceNotFoundException",
             "message": "Requested resource is not found, please refer to API document."}


def pretty(obj) -> str:
    """TorchServe's status/error bodies: indent 2 plus a newline."""
    return json.dumps(obj, indent=2) + "\n"


@pytest.fixture(scope="module")
def server(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance")
    models, wars = root / "model_store", root / "wf_store"
    shutil.copytree(peer_stores.model_store, models)
    shutil.copytree(peer_stores.workflow_store, wars)
    for name in ("cyc", "selfloop", "twostart", "missingmar", "badyaml"):
        build_war(wars, f"{name}_wf", spec_file=BAD / f"{name}_workflow.yaml",
                  handler=WORKFLOW_HANDLER)
    build_war(wars, "failnode_wf", spec_file=BAD / "failnode_workflow.yaml",
              handler=BAD / "failnode_handler.py")
    (wars / "notazip.war").write_text("not a zip\n")
    with WfserveServer(root, "--model-store", str(models), "--workflow-store", str(wars)) as srv:
        yield srv


def test_steps_01_to_09_register_list_page_describe(mgmt):
    """Steps 1-9; the describe (8) keeps TorchServe's fields exactly and allows wfserve's
    extension fields after them."""
    assert mgmt.get("/workflows").json() == {"workflows": []}  # 1
    for name in ("seq_wf", "par_wf"):  # 2, 3
        r = mgmt.post("/workflows", params={"url": f"{name}.war"})
        assert r.status_code == 200
        assert r.text == pretty(
            {"status": f"Workflow {name} has been registered and scaled successfully."})
        assert r.headers["content-type"] == "application/json"
    both = {"workflows": [{"workflowName": "par_wf", "workflowUrl": "par_wf.war"},
                          {"workflowName": "seq_wf", "workflowUrl": "seq_wf.war"}]}
    assert mgmt.get("/workflows").text == pretty(both)  # 4
    assert mgmt.get("/workflows", params={"limit": 1}).json() == {  # 5
        "nextPageToken": "1", "workflows": both["workflows"][:1]}
    assert mgmt.get("/workflows", params={"limit": 1, "next_page_token": 1}).json() == {  # 6
        "nextPageToken": "2", "workflows": both["workflows"][1:]}
    assert mgmt.get("/workflows", params={"limit": "abc"}).json() == both  # 7
    # 8: TorchServe's fields, values, order and formatting exactly; wfserve appends extension
    # fields after them (workflowVersion, isDefault, live per-node scale and worker states),
    # which a TorchServe client reading its own fields never sees.
    torchserve = {
        "workflowName": "seq_wf", "workflowUrl": "seq_wf.war", "minWorkers": 1, "maxWorkers": 1,
        "batchSize": 1, "maxBatchDelay": 0, "workflowDag": "{pre=[m1], m1=[m2], m2=[post]}"}
    r = mgmt.get("/workflows/seq_wf")
    (described,) = r.json()
    assert list(described.items())[:7] == list(torchserve.items())
    assert set(described) - set(torchserve) == {"workflowVersion", "isDefault", "nodes"}
    assert r.text.startswith(pretty([torchserve]).removesuffix("\n  }\n]\n") + ",\n")
    assert mgmt.get("/workflows/par_wf").json()[0]["workflowDag"] == (  # 9
        "{pre=[m1, m2], m1=[aggregate], m2=[aggregate]}")


@pytest.mark.parametrize(
    ("step", "params", "status", "body"),
    [
        (10, None, 404, {"code": 404, "type": "WorkflowNotFoundException",
                         "message": "Workflow not found: nope_wf"}),
        (11, {"url": "seq_wf.war"}, 409, {"code": 409, "type": "ConflictStatusException",
                                          "message": "Workflow seq_wf is already registered."}),
        (12, {}, 400, {"code": 400, "type": "BadRequestException",
                       "message": "Parameter url is required."}),
        (13, {"url": "nope.war"}, 404, {
            "code": 404, "type": "WorkflowNotFoundException",
            "message": "Workflow not found in workflow store: nope.war"}),
        (14, {"url": "../seq_wf.war"}, 404, {
            "code": 404, "type": "WorkflowNotFoundException",
            "message": "Relative path is not allowed in url: ../seq_wf.war"}),
        (15, {"url": "http://127.0.0.1:9/nope.war"}, 400, {
            "code": 400, "type": "DownloadArchiveException",
            "message": "Failed to download archive from: http://127.0.0.1:9/nope.war"}),
        (17, {"url": "cyc_wf.war"}, 400, {"code": 400, "type": "InvalidDAGException",
                                          "message": "Not a valid DAG"}),
        (18, {"url": "selfloop_wf.war"}, 400, {"code": 400, "type": "InvalidDAGException",
                                               "message": "Self loop exception"}),
        (19, {"url": "twostart_wf.war"}, 400, {
            "code": 400, "type": "InvalidDAGException",
            "message": "DAG should have only one start node"}),
        (21, {"url": "missingmar_wf.war"}, 500, {
            "code": 500, "type": "WorkflowException",
            "message": "Workflow missingmar_wf has failed to register. Failures: [Workflow Node "
                       "missingmar_wf__mx failed to register. Details: Model not found at: "
                       "does_not_exist.mar]"}),
    ],
)
def test_steps_10_to_21_registration_errors(mgmt, step, params, status, body):
    r = mgmt.get("/workflows/nope_wf") if params is None else mgmt.post("/workflows", params=params)
    assert (r.status_code, r.json()) == (status, body), f"step {step}"
    assert r.text == pretty(body)


def test_step_16_not_a_zip(mgmt):
    """Same status and type as TorchServe; the message says what is wrong instead of
    TorchServe's misleading "Workflow name is not defined." (it read an empty manifest)."""
    r = mgmt.post("/workflows", params={"url": "notazip.war"})
    assert r.status_code == 500
    assert r.json()["type"] == "InvalidWorkflowException"
    assert "notazip.war" in r.json()["message"] and "zip" in r.json()["message"]


def test_step_20_bad_yaml(mgmt):
    """Same status, type and leading sentence; wfserve adds the file and the line."""
    r = mgmt.post("/workflows", params={"url": "badyaml_wf.war"})
    assert r.status_code == 500
    assert r.json()["type"] == "InvalidWorkflowException"
    assert r.json()["message"].startswith("Failed to parse yaml.")
    assert "line" in r.json()["message"]


def test_steps_22_to_27_after_failures_and_more_registrations(mgmt):
    assert [w["workflowName"] for w in mgmt.get("/workflows").json()["workflows"]] == [
        "par_wf", "seq_wf"]  # 22: failed registrations left nothing
    for params in ({"url": "failnode_wf.war"}, {"url": "seq_wf.war", "workflow_name": "seq_copy"}):
        assert mgmt.post("/workflows", params=params).status_code == 200  # 23, 24
    # 25: TorchServe failed this JSON-body registration ("Failed to start workers") because a
    # JSON body leaves response_timeout at 0 (a GSON quirk). wfserve registers it.
    r = mgmt.post("/workflows", json={"url": "par_wf.war", "workflow_name": "par_json"})
    assert r.status_code == 200
    r = mgmt.post("/workflows", json={"url": "par_wf.war", "workflow_name": "par_json2",
                                       "response_timeout": 120, "startup_timeout": 120})
    assert r.json() == {"status": "Workflow par_json2 has been registered and scaled "
                                  "successfully."}  # 26
    names = [w["workflowName"] for w in mgmt.get("/workflows").json()["workflows"]]
    assert names == ["failnode_wf", "par_json", "par_json2", "par_wf", "seq_copy", "seq_wf"]
    assert mgmt.delete("/workflows/par_json").status_code == 200


def test_steps_28_to_33_models_and_methods(mgmt):
    models = mgmt.get("/models").json()["models"]  # 28 (no plain models: no model API here)
    assert {"modelName": "seq_wf__m1", "modelUrl": "m1.mar"} in models
    assert all(not m["modelName"].endswith(("__pre", "__post")) for m in models)
    assert [m["modelName"] for m in models] == sorted(m["modelName"] for m in models)
    (pre,) = mgmt.get("/models/seq_wf__pre").json()  # 29
    assert (pre["modelName"], pre["modelVersion"], pre["batchSize"], pre["maxBatchDelay"]) == (
        "seq_wf__pre", "1.0", 1, 0)
    assert "modelUrl" not in pre and pre["workers"][0]["status"] == "READY"
    (m1,) = mgmt.get("/models/seq_wf__m1").json()  # 30
    assert (m1["modelUrl"], m1["minWorkers"], m1["maxWorkers"]) == ("m1.mar", 1, 1)
    assert m1["jobQueueStatus"]["pendingRequests"] == 0
    for path in ("/workflows/seq_wf", "/workflows"):  # 31, 32
        r = mgmt.put(path)
        assert r.status_code == 405
        assert r.json() == {"code": 405, "type": "MethodNotAllowedException",
                            "message": "Requested method is not allowed, please refer to API "
                                       "document."}
    r = mgmt.delete("/workflows/nope_wf")  # 33
    assert (r.status_code, r.json()["message"]) == (404, "Workflow not found: nope_wf")


def test_steps_34_to_43_predictions_in_every_body_form(inf):
    seq, par = json.dumps(expected_seq(), indent=2), json.dumps(expected_par(), indent=2)
    cases = [
        (34, "POST", "seq_wf", JSON, PAYLOAD, seq),
        (35, "POST", "par_wf", JSON, PAYLOAD, par),
        (36, "POST", "seq_copy", JSON, PAYLOAD, seq),
        (38, "POST", "par_json2", JSON, PAYLOAD, par),
        (39, "POST", "seq_wf", {"Content-Type": "text/plain"}, PAYLOAD, seq),
        (40, "POST", "seq_wf", {}, PAYLOAD, seq),
        (41, "POST", "seq_wf", JSON, json.dumps(SAMPLE).encode(), seq),
        (42, "PUT", "seq_wf", {"Content-Type": "application/octet-stream"}, PAYLOAD, seq),
    ]
    for step, method, name, headers, body, expected in cases:
        r = inf.request(method, f"/wfpredict/{name}", headers=headers, content=body)
        assert (r.status_code, r.text) == (200, expected), f"step {step}"
        assert r.headers["content-type"] == "application/json"
    r = inf.post("/wfpredict/seq_wf", files={  # 43
        "data": ("payload.json", PAYLOAD, "application/json")})
    assert (r.status_code, r.text) == (200, seq)
    r = inf.post("/wfpredict/par_json", headers=JSON, content=PAYLOAD)  # 37
    assert (r.status_code, r.json()["message"]) == (404, "Workflow not found: par_json")


def test_steps_44_to_49_prediction_errors(inf):
    error_pre = {"code": 500, "type": "InternalServerException", "message": "Error executing pre"}
    r = inf.post("/wfpredict/seq_wf", headers={"Content-Type": "text/plain"}, content=b"not json")
    assert (r.status_code, r.json()) == (500, error_pre)  # 44
    r = inf.post("/wfpredict/seq_wf", headers=JSON)
    assert (r.status_code, r.json()) == (500, error_pre)  # 45
    r = inf.get("/wfpredict/seq_wf")
    assert (r.status_code, r.json()) == (500, error_pre)  # 46
    r = inf.post("/wfpredict/nope_wf", headers=JSON, content=PAYLOAD)
    assert (r.status_code, r.json()["type"]) == (404, "WorkflowNotFoundException")  # 47
    r = inf.post("/wfpredict", headers=JSON, content=PAYLOAD)
    assert (r.status_code, r.json()) == (404, NOT_FOUND)  # 48
    r = inf.post("/wfpredict/failnode_wf", headers=JSON, content=PAYLOAD)
    assert (r.status_code, r.json()) == (500, {  # 49
        "code": 500, "type": "InternalServerException", "message": "Error executing boom"})


def test_steps_50_to_55_node_predictions_and_surfaces(inf, mgmt):
    r = inf.post("/predictions/seq_wf__m1", headers=JSON, content=PAYLOAD)  # 50
    assert r.status_code == 200
    assert r.text == json.dumps({"output": expected_par()["m1"]}, indent=2)
    assert "content-type" not in r.headers  # the handler set none
    r = inf.post("/predictions/nope", headers=JSON, content=PAYLOAD)  # 53
    assert (r.status_code, r.json()) == (404, {
        "code": 404, "type": "ModelNotFoundException", "message": "Model not found: nope"})
    assert mgmt.post("/wfpredict/seq_wf", headers=JSON, content=PAYLOAD).json() == NOT_FOUND
    assert inf.get("/workflows").json() == NOT_FOUND  # 54, 55


def test_steps_56_to_65_unregister(mgmt, inf):
    for name in ("seq_copy", "par_json2", "failnode_wf"):  # 56, 58, 59
        r = mgmt.delete(f"/workflows/{name}")
        assert r.text == pretty({"status": f'Workflow "{name}" unregistered'})
    missing = {"code": 404, "type": "WorkflowNotFoundException",
               "message": "Workflow not found: seq_copy"}
    assert mgmt.get("/workflows/seq_copy").json() == missing  # 60
    assert inf.post("/wfpredict/seq_copy", headers=JSON, content=PAYLOAD).json() == missing  # 61
    assert mgmt.delete("/workflows/seq_copy").json() == missing  # 62
    assert [w["workflowName"] for w in mgmt.get("/workflows").json()["workflows"]] == [
        "par_wf", "seq_wf"]  # 63
    assert [m["modelName"] for m in mgmt.get("/models").json()["models"]] == [
        "par_wf__m1", "par_wf__m2", "seq_wf__m1", "seq_wf__m2"]  # 64
    assert inf.get("/ping").text == pretty({"status": "Healthy"})  # 65


def test_unregister_deletes_nothing_from_the_local_store(server):
    """Local store archives are kept on unregister, as TorchServe does."""
    assert (Path(server.workdir) / "wf_store" / "seq_wf.war").exists()
