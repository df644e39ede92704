"""The security review's registration findings, attacked over HTTP with the management key
(token auth on, a restrictive ``allowed_urls``): encoded store names (1), download names (2),
redirects and proxies (3), devices, FIFOs and folders (8), names with a newline (9), count
limits checked before downloading (10), URL credentials and snapshot permissions (11).

Every URL the server may fetch is served by a recording HTTP server of this test on 127.0.0.1,
so a test can tell that a refused registration downloaded nothing."""

import http.server
import json
import os
import re
import shutil
import stat
import threading
from pathlib import Path

import httpx
import pytest

from tests.archives import SAMPLE
from tests.archives import build_war
from tests.archives import expected_seq
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
SECRET = "s3cret-pass"
MAX_DOWNLOAD = 1_000_000


class Origin(http.server.BaseHTTPRequestHandler):
    """``/redirect?to=URL``: 302; a path holding ``missing``: 404; ``*.mar``: m1's archive;
    any other: the seq war."""

    def do_GET(self):
        self.server.seen.append(self.path)
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "missing" in self.path:
            self.send_error(404)
            return
        body = (self.server.mar if self.path.endswith(".mar") else self.server.war).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_recorder(stores):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    httpd.seen, httpd.war, httpd.mar = [], stores.seq_war, stores.model_store / "m1.mar"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture(scope="module")
def root(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    (root / "allowed" / "big").mkdir(parents=True)
    (root / "allowed" / "sub").mkdir()
    for i in range(3):
        (root / "allowed" / "big" / f"part{i}").write_bytes(b"x" * (MAX_DOWNLOAD // 2))
    os.mkfifo(root / "allowed" / "pipe.war")
    (root / "other").mkdir()
    shutil.copy(peer_stores.seq_war, root / "other" / "probe.war")
    return root


@pytest.fixture(scope="module")
def web(root, peer_stores):
    """The allowed origin, an internal server no rule allows, and a proxy."""
    servers = {k: start_recorder(peer_stores) for k in ("origin", "internal", "proxy")}
    yield {k: (f"http://127.0.0.1:{s.server_address[1]}", s.seen) for k, s in servers.items()}
    for s in servers.values():
        s.shutdown()
        s.server_close()


def server_args(root, web):
    origin = re.escape(web["origin"][0]).replace(r"http://", r"http://([^/@]*@)?")
    return ["--model-store", str(root / "model_store"), "--workflow-store", str(root / "wf_store"),
            "--snapshot-dir", str(root / "snapshots"),
            "--allowed-urls", f"file://{root}/allowed/.*", "file:///dev/zero", f"{origin}/.*",
            "--max-download-size", str(MAX_DOWNLOAD), "--max-versions-per-workflow", "2",
            "--max-workers-per-node", "4", "--max-nodes-per-workflow", "4"]


def proxy_env(web):
    proxy = web["proxy"][0]
    return {"HTTP_PROXY": proxy, "http_proxy": proxy, "HTTPS_PROXY": proxy,
            "ALL_PROXY": proxy, "NO_PROXY": "", "no_proxy": ""}


@pytest.fixture(scope="module")
def server(root, web):
    with WfserveServer(root, *server_args(root, web), env=proxy_env(web), auth=True) as srv:
        yield srv


def register(server, **params):
    return httpx.post(f"{server.management}/workflows", params=params, timeout=60,
                      headers=server.bearer("management"))


def mgmt(server, method, path, **params):
    return httpx.request(method, f"{server.management}{path}", params=params, timeout=60,
                         headers=server.bearer("management"))


def outside_downloads(folder, pattern):
    """Files matching ``pattern`` under ``folder`` but not in a ``.downloads`` folder (the
    escaping name of the test reaches ``folder`` itself, three levels above its download)."""
    return sorted(p.as_posix() for p in folder.rglob(pattern)
                  if ".downloads" not in p.relative_to(folder).parts)


def test_an_encoded_store_name_is_not_decoded_again(server, root):
    encoded = f"%2F{str(root / 'other')[1:].replace('/', '%2F')}%2Fprobe.war"
    r = register(server, url=encoded, workflow_name="probe")
    assert r.status_code == 404, r.text
    assert r.json()["message"] == f"Workflow not found in workflow store: {encoded}"
    assert mgmt(server, "GET", "/workflows/probe").status_code == 404


def test_an_encoded_dot_dot_does_not_leave_an_allowed_file_prefix(server, root):
    for url in (f"file://{root}/allowed/%2e%2e/other/probe.war",
                f"file://{root}/allowed/sub/%2E%2E/%2e%2e/other/probe.war"):
        r = register(server, url=url, workflow_name="probe")
        assert r.status_code == 404, r.text
        assert "does not match any allowed URL" in r.json()["message"]
    assert mgmt(server, "GET", "/workflows/probe").status_code == 404


def test_a_download_is_named_by_the_server_and_stays_in_its_folder(server, root, web):
    origin, seen = web["origin"]
    url = f"{origin}/d/%2e%2e%2f%2e%2e%2f%2e%2e%2fescaped.war"
    r = register(server, url=url, workflow_name="escaped")
    assert r.status_code == 200, r.text
    assert "/d/%2e%2e%2f%2e%2e%2f%2e%2e%2fescaped.war" in seen
    assert outside_downloads(root, "*escaped*") == []
    (folder,) = [p.parent for p in (root / "wf_store" / ".downloads").rglob("*escaped.war")]
    assert mgmt(server, "DELETE", "/workflows/escaped").status_code == 200
    assert not folder.exists()  # the download and its own folder are gone
    assert web["proxy"][1] == []  # HTTP_PROXY in the server's environment was not used


def test_a_redirect_to_a_url_not_allowed_is_not_followed(server, web):
    origin, internal = web["origin"][0], web["internal"]
    r = register(server, url=f"{origin}/redirect?to={internal[0]}/secret.war",
                 workflow_name="redirected")
    assert r.status_code == 400, r.text
    assert "does not match any allowed URL" in r.json()["message"]
    assert internal[1] == []
    assert web["proxy"][1] == []


def test_devices_fifos_and_big_folders_are_refused_at_once(server, root):
    for url, status in (("file:///dev/zero", 400), (f"file://{root}/allowed/pipe.war", 400),
                        (f"file://{root}/allowed/big", 413)):
        r = register(server, url=url, workflow_name="dev")
        assert r.status_code == status, (url, r.text)
    assert not any((root / "wf_store" / ".downloads").glob("*/*"))


@pytest.mark.parametrize("params", [{"workflow_name": "nl\n"}, {"workflow_name": "nl"},
                                    {"workflow_name": "nl", "version": "1.0\n"}])
def test_names_and_versions_are_matched_in_full(server, params):
    if params == {"workflow_name": "nl"}:  # the same name without the newline registers
        assert register(server, url="seq_wf.war", **params).status_code == 200
        assert mgmt(server, "DELETE", "/workflows/nl").status_code == 200
        return
    r = register(server, url="seq_wf.war", **params)
    assert r.status_code == 400, r.text
    listed = mgmt(server, "GET", "/workflows").json()["workflows"]
    assert all("\n" not in w["workflowName"] for w in listed)


def test_counts_and_conflicts_are_checked_before_downloading(server, web):
    origin, seen = web["origin"]
    for version in ("1.0", "2.0"):
        assert register(server, url="seq_wf.war", workflow_name="lim",
                        version=version).status_code == 200
    count = len(seen)
    r = register(server, url=f"{origin}/third.war", workflow_name="lim", version="3.0")
    assert r.status_code == 503 and "limit of 2 versions" in r.json()["message"], r.text
    r = register(server, url=f"{origin}/again.war", workflow_name="lim", version="1.0")
    assert r.status_code == 409, r.text
    assert len(seen) == count  # neither was downloaded
    r = mgmt(server, "PUT", "/workflows/lim/nodes/m1", min_worker=1, max_worker=200)
    assert r.status_code == 400 and "max_workers_per_node" in r.json()["message"], r.text
    assert mgmt(server, "PUT", "/workflows/lim/nodes/m1", max_worker=4).status_code == 200
    assert mgmt(server, "DELETE", "/workflows/lim").status_code == 200


def test_nodes_and_spec_workers_are_bounded_before_models_are_fetched(server, root, web,
                                                                      tmp_path):
    origin, seen = web["origin"]
    many = tmp_path / "many.yaml"
    many.write_text("models:\n" + "".join(f"  n{i}:\n    url: {origin}/n{i}.mar\n"
                                          for i in range(5))
                    + "dag:\n" + "".join(f"  n{i}: [n{i + 1}]\n" for i in range(4)))
    wide = tmp_path / "wide.yaml"
    wide.write_text(f"models:\n  max-workers: 50\n  m1:\n    url: {origin}/m1.mar\n"
                    "dag:\n  pre: [m1]\n")
    store = root / "allowed"
    for spec, limit in ((many, "max_nodes_per_workflow"), (wide, "max_workers_per_node")):
        war = build_war(tmp_path, spec.stem, spec_file=spec)
        shutil.copy(war, store / war.name)
        count = len(seen)
        r = register(server, url=f"file://{store}/{war.name}")
        assert r.status_code == 400 and limit in r.json()["message"], r.text
        assert len(seen) == count


def test_url_credentials_are_redacted_everywhere(server, root, web):
    origin = web["origin"][0]
    with_password = origin.replace("http://", f"http://user:{SECRET}@")
    r = register(server, url=f"{with_password}/cred.war", workflow_name="cred")
    assert r.status_code == 200, r.text
    shown = origin.replace("http://", "http://***@") + "/cred.war"
    assert mgmt(server, "GET", "/workflows/cred").json()[0]["workflowUrl"] == shown
    assert {"workflowName": "cred", "workflowUrl": shown} in mgmt(
        server, "GET", "/workflows").json()["workflows"]
    r = register(server, url=f"{with_password}/missing.war", workflow_name="gone")
    assert r.status_code == 400 and "***@" in r.json()["message"], r.text
    assert SECRET not in r.text
    snapshots = root / "snapshots"
    assert stat.S_IMODE(snapshots.stat().st_mode) == 0o700
    files = list(snapshots.glob("snapshot-*.json"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert all(SECRET not in f.read_text() for f in files)
    assert SECRET not in server.log()
    assert mgmt(server, "DELETE", "/workflows/cred").status_code == 200


def test_model_url_credentials_are_redacted(server, root, web, tmp_path):
    with_password = web["origin"][0].replace("http://", f"http://user:{SECRET}@")
    spec = tmp_path / "credmodel.yaml"
    spec.write_text(f"models:\n  m1:\n    url: {with_password}/m1.mar\n"
                    "dag:\n  pre: [m1]\n  m1: [post]\n")
    war = build_war(tmp_path, "credmodel", spec_file=spec)
    shutil.copy(war, root / "allowed" / war.name)
    r = register(server, url=f"file://{root}/allowed/{war.name}")
    assert r.status_code == 200, r.text
    shown = web["origin"][0].replace("http://", "http://***@") + "/m1.mar"
    assert mgmt(server, "GET", "/models/credmodel__m1").json()[0]["modelUrl"] == shown
    listed = mgmt(server, "GET", "/models").json()["models"]
    assert {"modelName": "credmodel__m1", "modelUrl": shown} in listed
    assert SECRET not in server.log()
    assert all(SECRET not in f.read_text() for f in (root / "snapshots").iterdir())
    assert mgmt(server, "DELETE", "/workflows/credmodel").status_code == 200


def test_restore_reuses_a_redacted_download_and_checks_every_url(root, web, tmp_path):
    """A snapshot is restored through the same checks: a redacted URL reuses its kept
    download or is skipped; an escaping store name in a snapshot is refused."""
    here = tmp_path / "restore"
    shutil.copytree(root / "model_store", here / "model_store")
    shutil.copytree(root / "wf_store", here / "wf_store", ignore=shutil.ignore_patterns(
        ".downloads"))
    (here / "allowed").mkdir()
    args = server_args(here, web)
    with_password = web["origin"][0].replace("http://", f"http://user:{SECRET}@")
    with WfserveServer(here, *args, auth=True) as srv:
        assert register(srv, url=f"{with_password}/cred.war",
                        workflow_name="cred").status_code == 200
    newest = max((here / "snapshots").glob("snapshot-*.json"))
    body = json.loads(newest.read_text())
    escaping = f"%2F{str(root / 'other')[1:].replace('/', '%2F')}%2Fprobe.war"
    body["workflows"].append({"name": "probe", "version": "1.0", "url": escaping,
                              "default": True})
    newest.write_text(json.dumps(body))
    with WfserveServer(here, *args, auth=True) as srv:
        described = mgmt(srv, "GET", "/workflows/cred")
        assert described.status_code == 200, srv.log()
        assert mgmt(srv, "GET", "/workflows/probe").status_code == 404
        r = httpx.post(f"{srv.inference}/wfpredict/cred", json={"input": SAMPLE},
                       headers=srv.bearer("inference"), timeout=60)
        assert r.json() == expected_seq()
    shutil.rmtree(here / "wf_store" / ".downloads")
    with WfserveServer(here, *args, auth=True) as srv:
        assert mgmt(srv, "GET", "/workflows/cred").status_code == 404
        assert "snapshot workflow skipped" in srv.log()
        assert SECRET not in srv.log()
    assert all(SECRET not in Path(f).read_text() for f in (here / "snapshots").iterdir())
