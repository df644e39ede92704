"""Metrics, Server-Timing, request-scoped logs, token auth and the OpenAPI document, in process
(falcon.testing) with the real plugins, the threaded executor and official-archiver archives."""

import json
import shutil
import stat
from pathlib import Path

import falcon.testing
import pytest
import structlog
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.archives import ASSETS
from tests.archives import SAMPLE
from tests.archives import build_war
from tests.archives import expected_seq
from wfserve.kernel.core import Kernel
from wfserve.kernel.plugins import BUILTIN
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings
from wfserve.kernel.startup import start
from wfserve.plugins.api.app import create_app
from wfserve.plugins.api.openapi import document
from wfserve.plugins.api.openapi import openapi_path
from wfserve.plugins.api.openapi import responders
from wfserve.plugins.auth.keys import KeyStore
from wfserve.plugins.auth.settings import AuthSettings

BAD = ASSETS / "bad"
PAYLOAD = json.dumps({"input": SAMPLE})
JSON = {"Content-Type": "application/json"}
INVALID = {"code": 400, "type": "InvalidKeyException", "message": (
    "Token Authorization failed. Token either incorrect, expired, or not provided correctly")}
SEQ_NODES = ("pre", "m1", "m2", "post")


class Server:
    """One kernel with its three apps, like a gunicorn worker, without the sockets."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.apps = {s: create_app(kernel, [s]) for s in ("inference", "management", "metrics")}
        self.inf = falcon.testing.TestClient(self.apps["inference"])
        self.mgmt = falcon.testing.TestClient(self.apps["management"])
        self.metrics = falcon.testing.TestClient(self.apps["metrics"])

    def keys(self):
        return json.loads(Path(self.kernel.settings.of(AuthSettings).key_file).read_text())

    def bearer(self, kind):
        return {"Authorization": f"Bearer {self.keys()[kind]['key']}"}

    def samples(self, name, **labels):
        text = self.metrics.simulate_get("/metrics").text
        return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def server(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("observability")
    models, wars = root / "model_store", root / "wf_store"
    shutil.copytree(peer_stores.model_store, models)
    shutil.copytree(peer_stores.workflow_store, wars)
    build_war(wars, "failnode_wf", spec_file=BAD / "failnode_workflow.yaml",
              handler=BAD / "failnode_handler.py")
    settings = Settings(model_store=str(models), workflow_store=str(wars)).with_section(
        AuthSettings(key_file=str(root / "key_file.json")))
    builtin = [m for m in BUILTIN if m not in ("wfserve.plugins.example",
               "wfserve.plugins.snapshot")]
    pm = make_plugin_manager(settings, builtin=builtin,
                             env={"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    kernel = Kernel.create(settings, pm=pm)
    start(kernel)
    srv = Server(kernel)
    for name in ("seq_wf", "failnode_wf"):
        r = srv.mgmt.simulate_post("/workflows", params={"url": f"{name}.war"},
                                   headers=srv.bearer("management"))
        assert r.status_code == 200, r.text
    yield srv
    kernel.hooks.shutdown(kernel)


def predict(srv, name="seq_wf", body=PAYLOAD, **headers):
    return srv.inf.simulate_post(f"/wfpredict/{name}", body=body,
                                 headers={**JSON, **srv.bearer("inference"), **headers})


# --- token auth -------------------------------------------------------------------------------


def test_key_file_has_torchserve_layout_and_is_private(server):
    path = server.kernel.settings.of(AuthSettings).key_file
    keys = server.keys()
    assert set(keys) == {"management", "inference", "API"}
    for kind in ("management", "inference"):
        assert set(keys[kind]) == {"key", "expiration time"}
        assert keys[kind]["expiration time"].endswith("Z")
    assert set(keys["API"]) == {"key"}
    assert stat.S_IMODE(__import__("os").stat(path).st_mode) == 0o600


def test_no_token_wrong_token_or_the_other_surfaces_key_is_refused(server):
    register = {"url": "seq_wf.war", "workflow_name": "intruder"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "nope"},
                    server.bearer("inference"), server.bearer("API")):
        r = server.mgmt.simulate_post("/workflows", params=register, headers=headers)
        assert (r.status_code, r.json) == (400, INVALID)
        r = server.inf.simulate_post("/wfpredict/seq_wf", body=PAYLOAD,
                                     headers={**JSON, **({} if headers ==
                                                         server.bearer("inference") else headers)})
        if headers != server.bearer("inference"):
            assert (r.status_code, r.json) == (400, INVALID)
    r = server.inf.simulate_post("/wfpredict/seq_wf", body=PAYLOAD,
                                 headers={**JSON, **server.bearer("management")})
    assert (r.status_code, r.json) == (400, INVALID)
    assert "intruder" not in server.kernel.registry


def test_open_routes_need_no_token(server):
    assert server.inf.simulate_get("/ping").status_code == 200
    assert server.inf.simulate_options("/").status_code == 200
    assert server.mgmt.simulate_get("/api-description").status_code == 200
    assert server.metrics.simulate_get("/metrics").status_code == 200


def test_token_rotation_with_the_api_key(server):
    old = server.bearer("inference")
    r = server.mgmt.simulate_get("/token", params={"type": "inference"},
                                 headers=server.bearer("management"))
    assert (r.status_code, r.json) == (400, INVALID)
    r = server.mgmt.simulate_get("/token", params={"type": "bogus"}, headers=server.bearer("API"))
    assert (r.status_code, r.json) == (400, INVALID)
    r = server.mgmt.simulate_get("/token", params={"type": "inference"},
                                 headers=server.bearer("API"))
    assert r.status_code == 200
    new = server.bearer("inference")
    assert new != old
    ok = server.inf.simulate_post("/wfpredict/seq_wf", body=PAYLOAD, headers={**JSON, **new})
    assert ok.status_code == 200 and ok.json == expected_seq()
    stale = server.inf.simulate_post("/wfpredict/seq_wf", body=PAYLOAD, headers={**JSON, **old})
    assert (stale.status_code, stale.json) == (400, INVALID)


def test_keys_expire_and_the_api_key_does_not(tmp_path):
    now = [1000.0]
    store = KeyStore(tmp_path / "k.json", expiration_min=1, clock=lambda: now[0])
    keys = {k: store.key(k) for k in ("management", "inference", "API")}
    assert all(store.check(keys[k], k) for k in keys)
    now[0] += 61
    assert not store.check(keys["inference"], "inference")
    assert not store.check(keys["management"], "management")
    assert store.check(keys["API"], "API")
    store.rotate("management")
    assert store.check(store.key("management"), "management")
    assert json.loads((tmp_path / "k.json").read_text())["management"]["key"] == store.key(
        "management")


# --- metrics and Server-Timing ----------------------------------------------------------------


def test_metrics_change_as_expected_after_known_requests(server):
    before = {n: server.samples("wfserve_node_requests_total", workflow="seq_wf", node=n)
              for n in SEQ_NODES}
    reqs = server.samples("wfserve_workflow_requests_total", workflow="seq_wf")
    ts = server.samples("ts_inference_requests_total", model_name="seq_wf__m1")
    hist = server.samples("wfserve_workflow_duration_seconds_count", workflow="seq_wf")
    batches = server.samples("wfserve_node_batch_size_count", workflow="seq_wf", node="m2")
    for _ in range(3):
        assert predict(server).status_code == 200
    assert server.samples("wfserve_workflow_requests_total", workflow="seq_wf") == reqs + 3
    assert server.samples("wfserve_workflow_duration_seconds_count", workflow="seq_wf") == hist + 3
    for node in SEQ_NODES:
        assert server.samples("wfserve_node_requests_total", workflow="seq_wf",
                              node=node) == before[node] + 3
        assert server.samples("wfserve_node_queue_seconds_count", workflow="seq_wf", node=node) > 0
    assert server.samples("wfserve_node_batch_size_count", workflow="seq_wf",
                          node="m2") == batches + 3
    assert server.samples("ts_inference_requests_total", model_name="seq_wf__m1") == ts + 3
    assert server.samples("ts_queue_latency_microseconds", model_name="seq_wf__m1") > 0
    assert server.samples("ts_inference_latency_microseconds", model_name="seq_wf__m1") > 0
    assert server.samples("wfserve_node_workers", workflow="seq_wf", node="m1",
                          status="READY") == 1
    assert server.samples("wfserve_http_requests_total", surface="inference", status="2xx") >= 3


def test_a_failing_node_counts_errors_by_type_and_retries(server):
    errors = server.samples("wfserve_workflow_errors_total", workflow="failnode_wf",
                            type="NodeFailed")
    node_errors = server.samples("wfserve_node_errors_total", workflow="failnode_wf",
                                 node="boom")
    retries = server.samples("wfserve_node_retries_total", workflow="failnode_wf", node="boom")
    r = predict(server, "failnode_wf")
    assert r.status_code == 500 and "Traceback" not in r.text
    assert server.samples("wfserve_workflow_errors_total", workflow="failnode_wf",
                          type="NodeFailed") == errors + 1
    assert server.samples("wfserve_node_errors_total", workflow="failnode_wf",
                          node="boom") == node_errors + 2  # retry-attempts: 1
    assert server.samples("wfserve_node_retries_total", workflow="failnode_wf",
                          node="boom") == retries + 1


def test_server_timing_lists_every_node_of_the_dag(server):
    r = predict(server)
    entries = [part.strip().split(";dur=") for part in r.headers["Server-Timing"].split(",")]
    names = [name for name, _ in entries]
    for node in SEQ_NODES:
        assert node in names and f"{node}-queue" in names
    assert names[-1] == "total"
    assert all(float(ms) >= 0 for _, ms in entries)


# --- logs -------------------------------------------------------------------------------------


@pytest.fixture
def captured():
    cap = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, cap])
    yield cap.entries
    structlog.reset_defaults()


def test_every_log_line_of_a_request_carries_its_id(server, captured):
    r = predict(server, "failnode_wf", **{"X-Request-ID": "req-abc.1"})
    assert r.headers["X-Request-ID"] == "req-abc.1"
    assert r.status_code == 500
    events = [e["event"] for e in captured]
    assert "access" in events and "node attempt failed" in events
    assert all(e.get("request_id") == "req-abc.1" for e in captured), captured
    failed = [e for e in captured if e["event"] == "node attempt failed"]
    assert {(e["workflow"], e["node"]) for e in failed} == {("failnode_wf", "boom")}
    assert sorted(e["attempt"] for e in failed) == [1, 2]
    access = next(e for e in captured if e["event"] == "access")
    assert (access["status"], access["workflow"]) == (500, "failnode_wf")


def test_a_request_id_is_made_when_not_given(server, captured):
    r = server.inf.simulate_get("/ping", headers={"X-Request-ID": "bad id with spaces"})
    made = r.headers["X-Request-ID"]
    assert made != "bad id with spaces" and len(made) == 32
    assert [e["request_id"] for e in captured] == [made]


# --- OpenAPI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("surface", ["inference", "management", "metrics"])
def test_openapi_document_matches_the_routes(server, surface):
    app = server.apps[surface]
    client = falcon.testing.TestClient(app)
    doc = client.simulate_options("/").json
    assert doc == client.simulate_get("/api-description").json
    assert doc["openapi"].startswith("3.")
    expected = {(openapi_path(t), m) for t, route in app.routes.items()
                for m in responders(route)}
    documented = {(p, m) for p, item in doc["paths"].items() for m in item}
    assert documented == expected
    assert {openapi_path(t) for t in app.routes} == set(doc["paths"])
    for item in doc["paths"].values():
        for op in item.values():
            assert op["summary"], op["operationId"]
    assert json.loads(json.dumps(document(app.routes.values()))) == doc | {
        "info": doc["info"] | {"title": "wfserve"}}


def _operations(server):
    return sorted((surface, path, method)
                  for surface, app in server.apps.items()
                  for path, item in document(app.routes.values())["paths"].items()
                  for method in item if method not in ("head", "options"))


@hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_property_any_documented_call_answers_without_a_traceback(server, data):
    """Random documented operations with random path values, query and body: never a 5xx
    unless the workflow itself failed, always TorchServe's error shape on an error."""
    surface, path, method = data.draw(st.sampled_from(_operations(server)))
    text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
    url = path
    for name in ("name", "version", "node"):
        if "{" + name + "}" in url:
            url = url.replace("{" + name + "}",
                              data.draw(st.one_of(st.sampled_from(["seq_wf", "1.0", "m1"]), text)
                                        .filter(lambda s: not set(s) & set("/?#") and s.strip())))
    params = data.draw(st.dictionaries(st.sampled_from(["url", "limit", "type", "min_worker"]),
                                       text, max_size=2))
    if surface == "management" and method in ("post", "put", "delete") and url != "/token":
        params.pop("url", None)  # NOTE: no registrations from random input
        if method == "delete":
            return
    if url == "/token":
        return  # rotating keys would race the other tests
    kind = {"inference": "inference", "management": "management"}.get(surface)
    headers = server.bearer(kind) if kind else {}
    client = {"inference": server.inf, "management": server.mgmt,
              "metrics": server.metrics}[surface]
    r = client.simulate_request(method.upper(), url, params=params, headers=headers,
                                body=data.draw(st.binary(max_size=64)))
    assert "Traceback" not in r.text
    if r.status_code >= 400:
        assert set(r.json) == {"code", "type", "message"} and r.json["code"] == r.status_code
    assert r.status_code < 500 or r.json["type"] in ("InternalServerException",
                                                     "ServiceUnavailableException")
