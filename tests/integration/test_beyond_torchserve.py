"""What TorchServe's workflows cannot do, on a real gunicorn server: scale and update a live
workflow under load without a failed request, versions, snapshots that survive a SIGKILLed
worker and a restart, two workflows sharing a .mar name, and registrations that fail midway
leaving nothing behind."""

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.archives import MODEL_HANDLER
from tests.archives import SAMPLE
from tests.archives import build_mar
from tests.archives import build_war
from tests.archives import expected_par
from tests.archives import expected_seq
from tests.archives import run_model
from tests.archives import save_torchscript
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
PAYLOAD = json.dumps({"input": SAMPLE}).encode()
JSON = {"Content-Type": "application/json"}
ONE_MODEL_SPEC = """models:
    max-batch-delay: 0
    m1:
      url: {url}
dag:
  pre: [m1]
  m1: [post]
"""


def expected_one(model: str) -> dict:
    out = [round(v, 6) for v in run_model(model, [SAMPLE])[0]]
    return {"result": out, "sum": round(sum(out), 6)}


@pytest.fixture(scope="module")
def stores(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("beyond")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    return root


def server_args(root: Path, *extra: str) -> list[str]:
    return ["--model-store", str(root / "model_store"), "--workflow-store", str(root / "wf_store"),
            "--snapshot-dir", str(root / "snapshots"), "--disable-token-auth", *extra]


@pytest.fixture(scope="module")
def server(stores):
    with WfserveServer(stores, *server_args(stores)) as srv:
        yield srv


def mgmt(server, method, path, **params):
    return httpx.request(method, f"{server.management}{path}", params=params, timeout=60)


def predict(server, path):
    return httpx.post(f"{server.inference}/wfpredict/{path}", content=PAYLOAD, headers=JSON,
                      timeout=60)


class Load:
    """Background clients posting to one workflow until stopped (bounded in count and time)."""

    def __init__(self, server, path, threads=4, limit=3000):
        self.url = f"{server.inference}/wfpredict/{path}"
        self.limit, self.stop_event, self.lock = limit, threading.Event(), threading.Lock()
        self.results: list[tuple[float, int, object]] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        with httpx.Client(timeout=30) as client:
            while not self.stop_event.is_set() and len(self.results) < self.limit:
                r = client.post(self.url, content=PAYLOAD, headers=JSON)
                body = r.json() if r.headers.get("content-type") == "application/json" else r.text
                with self.lock:
                    self.results.append((time.monotonic(), r.status_code, body))

    def __enter__(self):
        for t in self.threads:
            t.start()
        self.wait_for(10)
        return self

    def wait_for(self, count, seconds=30.0):
        deadline = time.monotonic() + seconds
        start = len(self.results)
        while len(self.results) < start + count and time.monotonic() < deadline:
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)


def test_versions_round_trip(server):
    assert mgmt(server, "POST", "/workflows", url="seq_wf.war", workflow_name="vers").status_code \
        == 200
    r = mgmt(server, "POST", "/workflows", url="par_wf.war", workflow_name="vers", version="2.0")
    assert r.json() == {"status": "Workflow vers has been registered and scaled successfully."}
    r = mgmt(server, "POST", "/workflows", url="par_wf.war", workflow_name="vers", version="2.0")
    assert (r.status_code, r.json()["message"]) == (409, "Workflow vers is already registered.")
    listed = mgmt(server, "GET", "/workflows").json()["workflows"]
    assert [w["workflowName"] for w in listed].count("vers") == 1
    versions = mgmt(server, "GET", "/workflows/vers/all").json()
    assert [(v["workflowVersion"], v["isDefault"], v["workflowUrl"]) for v in versions] == [
        ("1.0", True, "seq_wf.war"), ("2.0", False, "par_wf.war")]
    assert predict(server, "vers").json() == expected_seq()
    assert predict(server, "vers/2.0").json() == expected_par()
    assert predict(server, "vers/1.0").json() == expected_seq()
    r = predict(server, "vers/3.0")
    assert (r.status_code, r.json()["message"]) == (
        404, "Workflow version: 3.0 does not exist for workflow: vers")
    r = mgmt(server, "PUT", "/workflows/vers/2.0/set-default")
    assert r.json() == {
        "status": 'Default version successfully updated for workflow "vers" to "2.0"'}
    assert predict(server, "vers").json() == expected_par()
    assert mgmt(server, "GET", "/workflows/vers").json()[0]["workflowVersion"] == "2.0"
    assert mgmt(server, "GET", "/workflows/vers/1.0").json()[0]["isDefault"] is False
    r = mgmt(server, "DELETE", "/workflows/vers/2.0")
    assert r.status_code == 400 and "default version 2.0" in r.json()["message"]
    r = mgmt(server, "DELETE", "/workflows/vers/1.0")
    assert r.json() == {"status": 'Workflow "vers" version "1.0" unregistered'}
    assert predict(server, "vers/1.0").status_code == 404
    assert predict(server, "vers").json() == expected_par()
    assert mgmt(server, "DELETE", "/workflows/vers").status_code == 200
    assert predict(server, "vers").status_code == 404


def node_state(server, name, node):
    return mgmt(server, "GET", f"/workflows/{name}").json()[0]["nodes"][node]


def test_scale_up_and_down_under_load_fails_no_request(server):
    assert mgmt(server, "POST", "/workflows", url="seq_wf.war", workflow_name="scl").status_code \
        == 200
    for params, status, message in (
        ({"min_worker": "abc"}, 400, "min_worker must be an integer, got 'abc'"),
        ({"min_worker": 3, "max_worker": 2}, 400, "min_worker (3) must not exceed max_worker (2)"),
        ({"batch_size": 0}, 400, "batch_size must be at least 1, got 0"),
        ({}, 400, "Nothing to scale"),
    ):
        r = mgmt(server, "PUT", "/workflows/scl/nodes/m1", **params)
        assert r.status_code == status and r.json()["message"].startswith(message)
    assert mgmt(server, "PUT", "/workflows/scl/nodes/nope", min_worker=2).status_code == 404
    assert mgmt(server, "PUT", "/workflows/nope/nodes/m1", min_worker=2).status_code == 404
    with Load(server, "scl") as load:
        r = mgmt(server, "PUT", "/workflows/scl/nodes/m1", min_worker=3, max_worker=3,
                 batch_size=4, max_batch_delay=5)
        assert r.json() == {"status": "Workflow node scl__m1 scaled: minWorkers 3, maxWorkers 3, "
                                      "batchSize 4, maxBatchDelay 5"}
        live = node_state(server, "scl", "m1")
        assert (live["minWorkers"], live["batchSize"], live["maxBatchDelay"]) == (3, 4, 5)
        assert len(live["workers"]) == 3
        load.wait_for(30)
        assert mgmt(server, "PUT", "/workflows/scl/nodes/m1", min_worker=1, max_worker=1,
                    batch_size=1, max_batch_delay=0).status_code == 200
        load.wait_for(30)
    assert len(load.results) > 60
    assert {(s, json.dumps(b)) for _, s, b in load.results} == {(200, json.dumps(expected_seq()))}
    deadline = time.monotonic() + 10
    while len(node_state(server, "scl", "m1")["workers"]) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node_state(server, "scl", "m1")["maxWorkers"] == 1
    assert len(node_state(server, "scl", "m1")["workers"]) == 1
    assert mgmt(server, "DELETE", "/workflows/scl").status_code == 200


def test_update_under_load_switches_answers_and_fails_no_request(server, stores):
    assert mgmt(server, "POST", "/workflows", url="seq_wf.war", workflow_name="upd").status_code \
        == 200
    build_war(stores / "wf_store", "missing_wf",
              spec_file=Path(__file__).parents[1] / "assets" / "bad" / "missingmar_workflow.yaml")
    with Load(server, "upd") as load:
        r = mgmt(server, "PUT", "/workflows/upd", url="missing_wf.war", version="9.0")
        assert r.status_code == 500 and "failed to register" in r.json()["message"]
        load.wait_for(20)
        r = mgmt(server, "PUT", "/workflows/upd", url="par_wf.war", version="2.0")
        switched = time.monotonic()
        assert r.json() == {"status": "Workflow upd updated to version 2.0"}
        load.wait_for(40)
    seq, par = json.dumps(expected_seq()), json.dumps(expected_par())
    answers = [(t, s, json.dumps(b)) for t, s, b in load.results]
    assert {s for _, s, _ in answers} == {200}
    assert {b for _, _, b in answers} == {seq, par}
    assert all(b == par for t, _, b in answers if t > switched + 0.5)
    assert any(b == seq for t, _, b in answers if t < switched)
    versions = mgmt(server, "GET", "/workflows/upd/all").json()
    assert [(v["workflowVersion"], v["isDefault"]) for v in versions] == [("2.0", True)]
    assert mgmt(server, "PUT", "/workflows/upd").status_code == 405  # TorchServe's call
    assert mgmt(server, "PUT", "/workflows/nope", url="par_wf.war").status_code == 404
    assert mgmt(server, "DELETE", "/workflows/upd").status_code == 200


@pytest.fixture(scope="module")
def shared_name_wars(stores):
    """Two different models both archived as ``m1.mar`` in two folders, each in its own war,
    and a third war using the same URL as the first."""
    build = stores / "shared_build"
    wars = {}
    for folder, model in (("a", "m1"), ("b", "m2")):
        (build / f"{folder}_pt").mkdir(parents=True)
        mar = build_mar(build / folder, "m1", handler=MODEL_HANDLER,
                        serialized_file=save_torchscript(model, build / f"{folder}_pt"))
        spec = build / f"{folder}.yaml"
        spec.write_text(ONE_MODEL_SPEC.format(url=mar.as_uri()))
        wars[folder] = build_war(stores / "wf_store", f"shared_{folder}", spec_file=spec)
    spec = build / "broken.yaml"
    spec.write_text(ONE_MODEL_SPEC.format(url=(build / "a" / "m1.mar").as_uri()).replace(
        "dag:", f"    mx:\n      url: {(build / 'gone.mar').as_uri()}\ndag:").replace(
        "m1: [post]", "m1: [mx]\n  mx: [post]"))
    wars["broken"] = build_war(stores / "wf_store", "shared_broken", spec_file=spec)
    return wars


def downloads(stores):
    return sorted(p.relative_to(stores) for p in stores.rglob(".downloads/*/*"))


def test_two_workflows_with_the_same_mar_name_both_work(server, stores, shared_name_wars):
    before = downloads(stores)
    for name in ("shared_a", "shared_b"):
        assert mgmt(server, "POST", "/workflows", url=f"{name}.war").status_code == 200
    r = mgmt(server, "POST", "/workflows", url="shared_a.war", workflow_name="same_url")
    assert r.status_code == 200
    assert predict(server, "shared_a").json() == expected_one("m1")
    assert predict(server, "shared_b").json() == expected_one("m2")
    assert predict(server, "same_url").json() == expected_one("m1")
    assert len(downloads(stores)) == len(before) + 3
    assert mgmt(server, "DELETE", "/workflows/shared_a").status_code == 200
    assert predict(server, "same_url").json() == expected_one("m1")
    for name in ("shared_b", "same_url"):
        assert mgmt(server, "DELETE", f"/workflows/{name}").status_code == 200
    assert downloads(stores) == before


def test_a_registration_failing_midway_leaves_store_and_registry_as_before(
        server, stores, shared_name_wars):
    listed = mgmt(server, "GET", "/workflows").json()
    before = downloads(stores)
    snapshots = sorted((stores / "snapshots").glob("snapshot-*.json"))
    r = mgmt(server, "POST", "/workflows", url="shared_broken.war")
    assert r.status_code == 500 and "Workflow Node shared_broken__mx failed" in r.json()["message"]
    url = (stores / "wf_store" / "shared_broken.war").as_uri()
    r = mgmt(server, "POST", "/workflows", url=url, workflow_name="broken2")
    assert r.status_code == 500
    assert mgmt(server, "GET", "/workflows").json() == listed
    assert downloads(stores) == before
    assert sorted((stores / "snapshots").glob("snapshot-*.json")) == snapshots
    assert predict(server, "shared_broken").status_code == 404


def worker_pids(master: int) -> set[int]:
    pids = set()
    for children in Path(f"/proc/{master}/task").glob("*/children"):
        pids |= {int(p) for p in children.read_text().split()}
    return pids


def wait_for_workflows(server, names, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got = [w["workflowName"] for w in
                   mgmt(server, "GET", "/workflows").json()["workflows"]]
            if got == names:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"workflows {names} not served; log:\n{server.log()[-3000:]}")


def check_state(server):
    assert predict(server, "keep").json() == expected_par()
    assert predict(server, "keep/1.0").json() == expected_seq()
    assert predict(server, "dl").json() == expected_seq()
    versions = mgmt(server, "GET", "/workflows/keep/all").json()
    assert [(v["workflowVersion"], v["isDefault"]) for v in versions] == [
        ("1.0", False), ("2.0", True)]
    live = versions[1]["nodes"]["m1"]
    assert (live["minWorkers"], live["maxWorkers"], live["batchSize"]) == (2, 2, 3)


def test_snapshot_survives_a_killed_worker_and_a_restart(stores, tmp_path):
    root = tmp_path
    shutil.copytree(stores / "model_store", root / "model_store")
    shutil.copytree(stores / "wf_store", root / "wf_store", ignore=shutil.ignore_patterns(
        ".downloads"))
    srv = WfserveServer(root, *server_args(root)).start()
    try:
        for params in ({"url": "seq_wf.war", "workflow_name": "keep"},
                       {"url": "par_wf.war", "workflow_name": "keep", "version": "2.0"},
                       {"url": (root / "wf_store" / "seq_wf.war").as_uri(),
                        "workflow_name": "dl"}):
            assert mgmt(srv, "POST", "/workflows", **params).status_code == 200
        assert mgmt(srv, "PUT", "/workflows/keep/2.0/set-default").status_code == 200
        assert mgmt(srv, "PUT", "/workflows/keep/nodes/m1", min_worker=2, max_worker=2,
                    batch_size=3).status_code == 200
        check_state(srv)
        fetched = downloads(root)
        (worker,) = worker_pids(srv.process.pid)
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while worker_pids(srv.process.pid) in (set(), {worker}) and time.monotonic() < deadline:
            time.sleep(0.1)
        wait_for_workflows(srv, ["dl", "keep"])
        check_state(srv)
        assert downloads(root) == fetched  # the snapshot reused the downloaded war
    finally:
        srv.stop()
    assert downloads(root) == fetched  # kept at shutdown: the snapshot names them
    newest = max((root / "snapshots").glob("snapshot-*.json"))
    (root / "snapshots" / "snapshot-99999999999999999999.json").write_text('{"format": "wfs')
    with WfserveServer(root, *server_args(root)) as srv:
        wait_for_workflows(srv, ["dl", "keep"])
        check_state(srv)
        assert "corrupt snapshot skipped" in srv.log()
        assert f"{newest.name}" in srv.log()
        assert mgmt(srv, "DELETE", "/workflows/dl").status_code == 200
    assert downloads(root) == []  # unregistered: its download is gone
    with WfserveServer(root, *server_args(root, "--ncs")) as srv:
        assert mgmt(srv, "GET", "/workflows").json() == {"workflows": []}
    with WfserveServer(root, *server_args(root)) as srv:
        wait_for_workflows(srv, ["keep"])
