"""A real wfserve (gunicorn) on loopback, driven as users drive it: HTTP, curl-like clients,
the wfserve command line, archives from the official archivers."""

import concurrent.futures
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import httpx
import pytest

from tests.archives import MODEL_HANDLER
from tests.archives import SAMPLE
from tests.archives import SEQ_SPEC
from tests.archives import build_mar
from tests.archives import build_war
from tests.archives import expected_par
from tests.archives import expected_seq
from tests.archives import save_torchscript
from tests.helpers import WfserveServer
from tests.helpers import unused_port

pytestmark = pytest.mark.integration
PAYLOAD = json.dumps({"input": SAMPLE}).encode()
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def stores(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    return root


@pytest.fixture(scope="module")
def server(stores):
    with WfserveServer(stores, "--model-store", str(stores / "model_store"), "--workflow-store",
                       str(stores / "wf_store"), "--workflows", "seq_wf.war",
                       "par=par_wf.war", "--max-request-size", "100000") as srv:
        yield srv


def predict(server, name, body=PAYLOAD, headers=JSON):
    return httpx.post(f"{server.inference}/wfpredict/{name}", content=body, headers=headers,
                      timeout=60)


def test_workflows_registered_at_start_up(server):
    names = [w["workflowName"] for w in
             httpx.get(f"{server.management}/workflows").json()["workflows"]]
    assert names == ["par", "seq_wf"]
    assert predict(server, "seq_wf").json() == expected_seq()
    assert predict(server, "par").json() == expected_par()


def test_concurrent_clients_each_get_their_own_answer(server):
    inputs = [[i / 10, 0.2, -i / 7, 1.0] for i in range(64)]

    def one(x):
        r = predict(server, "seq_wf", json.dumps({"input": x}).encode())
        return r.status_code, r.json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, inputs))
    assert results == [(200, expected_seq(x)) for x in inputs]


def test_register_by_file_url_downloads_into_the_store_and_unregister_removes_it(server, stores):
    url = (stores / "wf_store" / "seq_wf.war").as_uri()
    r = httpx.post(f"{server.management}/workflows",
                   params={"url": url, "workflow_name": "from_file"}, timeout=60)
    assert r.status_code == 200, r.text
    downloads = stores / "wf_store" / ".downloads"
    assert list(downloads.rglob("seq_wf.war"))
    assert predict(server, "from_file").json() == expected_seq()
    assert httpx.delete(f"{server.management}/workflows/from_file").status_code == 200
    assert not list(downloads.rglob("*.war"))


@pytest.fixture
def http_store(stores):
    """A plain HTTP server on 127.0.0.1 serving the workflow store."""
    directory = str(stores / "wf_store")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_register_by_http_url_twice_under_two_names(server, http_store):
    """TorchServe fails the second registration of one public URL (file exists); we don't."""
    for name in ("web1", "web2"):
        r = httpx.post(f"{server.management}/workflows",
                       params={"url": f"{http_store}/par_wf.war", "workflow_name": name},
                       timeout=60)
        assert r.status_code == 200, r.text
        assert predict(server, name).json() == expected_par()
    for name in ("web1", "web2"):
        assert httpx.delete(f"{server.management}/workflows/{name}").status_code == 200


def test_models_in_tgz_and_folder_formats(server, stores, tmp_path):
    """A spec whose models are a tgz .mar and a no-archive folder, as TorchServe resolves them."""
    build = tmp_path / "build"
    build.mkdir()
    build_mar(stores / "model_store", "m1t", handler=MODEL_HANDLER,
              serialized_file=save_torchscript("m1", build), archive_format="tgz")
    build_mar(stores / "model_store", "m2f", handler=MODEL_HANDLER,
              serialized_file=save_torchscript("m2", build), archive_format="no-archive")
    spec = build / "fmt.yaml"
    spec.write_text(SEQ_SPEC.read_text().replace("m1.mar", "m1t.tar.gz").replace("m2.mar", "m2f"))
    build_war(stores / "wf_store", "fmt_wf", spec_file=spec)
    r = httpx.post(f"{server.management}/workflows", params={"url": "fmt_wf.war"}, timeout=60)
    assert r.status_code == 200, r.text
    assert predict(server, "fmt_wf").json() == expected_seq()
    assert httpx.delete(f"{server.management}/workflows/fmt_wf").status_code == 200


def test_limits_and_bad_bodies_over_http(server):
    r = predict(server, "seq_wf", b"x" * 100001, {"Content-Type": "application/octet-stream"})
    assert (r.status_code, r.json()["code"]) == (413, 413)
    r = predict(server, "seq_wf", b"--zz\r\ngarbage", {"Content-Type":
                                                        "multipart/form-data; boundary=zz"})
    assert (r.status_code, r.json()["type"]) == (400, "BadRequestException")
    r = predict(server, "seq_wf", b"{not json", JSON)  # passed on raw, as TorchServe: pre fails
    assert (r.status_code, r.json()["message"]) == (500, "Error executing pre")


def test_metrics_surface_answers_only_metrics(server):
    r = httpx.get(f"{server.metrics}/metrics")
    assert r.status_code == 200 and "text/plain" in r.headers["content-type"]
    assert httpx.get(f"{server.metrics}/ping").status_code == 404


def wfserve(*args, env=None, cwd=None):
    cmd = [sys.executable, "-m", "wfserve.kernel.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_client_commands(server, stores, tmp_path):
    mgmt = ["--url", server.management]
    r = wfserve("register", "seq_wf.war", "--name", "cli_wf", *mgmt)
    assert r.returncode == 0, r.stderr
    assert "cli_wf has been registered" in r.stdout
    r = wfserve("list", *mgmt)
    assert r.returncode == 0 and "cli_wf" in r.stdout
    r = wfserve("describe", "cli_wf", *mgmt)
    assert json.loads(r.stdout)[0]["workflowDag"] == "{pre=[m1], m1=[m2], m2=[post]}"
    payload = tmp_path / "payload.json"
    payload.write_bytes(PAYLOAD)
    r = wfserve("predict", "cli_wf", str(payload), "--content-type", "application/json",
                "--url", server.inference)
    assert (r.returncode, json.loads(r.stdout)) == (0, expected_seq())
    r = wfserve("unregister", "cli_wf", *mgmt)
    assert r.returncode == 0
    r = wfserve("describe", "cli_wf", *mgmt)
    assert r.returncode == 1 and "Workflow not found: cli_wf" in r.stderr
    r = wfserve("list", "--url", f"http://127.0.0.1:{unused_port()}")
    assert r.returncode == 2 and "cannot reach" in r.stderr


def test_serve_in_the_background_with_the_example_then_stop(tmp_path):
    """The README's commands: `wfserve serve` returns once ready, the curl answers, then stop."""
    ports = {s: unused_port() for s in ("INFERENCE", "MANAGEMENT", "METRICS")}
    env = {f"WFSERVE_{s}_ADDRESS": f"http://127.0.0.1:{p}" for s, p in ports.items()}
    env["WFSERVE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        r = wfserve("serve", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr + (tmp_path / ".wfserve" / "wfserve.log").read_text()
        assert "wfserve is serving" in r.stdout
        key = json.loads((tmp_path / "key_file.json").read_text())["inference"]["key"]
        answer = httpx.post(f"http://127.0.0.1:{ports['INFERENCE']}/wfpredict/example",
                            json={"input": [5.1, 3.5, 1.4, 0.2]}, timeout=30,
                            headers={"Authorization": f"Bearer {key}"}).json()
        assert answer["label"] in answer["probabilities"]
        assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3
        assert wfserve("serve", env=env, cwd=tmp_path).returncode == 1  # already running
        r = wfserve("stop", env=env, cwd=tmp_path)
        assert r.returncode == 0 and "stopped" in r.stdout
        assert (tmp_path / ".wfserve" / "model_store" / "example.war").exists()
        # what the server wrote lives under .wfserve/, but TorchServe's key file
        assert sorted(p.name for p in tmp_path.iterdir()) == [".wfserve", "key_file.json"]
    finally:
        wfserve("stop", env=env, cwd=tmp_path)
