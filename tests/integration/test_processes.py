"""Several server processes (``--workers 2``) sharing one set of registrations, over HTTP.

Every answer names the process that served it (``X-Wfserve-Process``); requests go over fresh
connections, so the kernel spreads them over both processes, and each test checks that both
answered. A management call answers only once every process serves the change, so nothing
here waits between a change and the requests that must see it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.server
import json
import os
import shutil
import signal
import threading

import httpx
import pytest

from tests.archives import SAMPLE
from tests.archives import expected_par
from tests.archives import expected_seq
from tests.helpers import WfserveServer
from tests.helpers import wait_for
from tests.local_http import local_server

pytestmark = pytest.mark.integration
PAYLOAD = json.dumps({"input": SAMPLE}).encode()
JSON = {"Content-Type": "application/json"}
PROCESS = "X-Wfserve-Process"
#: fresh-connection requests sent after a change: enough for both processes to answer
ROUNDS = 20


@pytest.fixture(scope="module")
def stores(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("processes")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    return root


@contextlib.contextmanager
def serve(root, *args, auth=False):
    """A two-process server, once both processes serve (the second catches up after the
    first is ready)."""
    with WfserveServer(root, "--workers", "2", "--model-store", str(root / "model_store"),
                       "--workflow-store", str(root / "wf_store"), *args, auth=auth) as srv:
        assert wait_for(lambda: len(answers(lambda: fresh("GET", f"{srv.inference}/ping"),
                                            rounds=8)[1]) == 2, within=60), srv.log()
        yield srv


@pytest.fixture(scope="module")
def server(stores):
    with serve(stores, "--workflows", "seq_wf.war") as srv:
        yield srv


def fresh(method, url, **kwargs):
    """One request on a new connection (module-level httpx opens one per call)."""
    return httpx.request(method, url, timeout=60, **kwargs)


def predict(server, name, headers=None):
    return fresh("POST", f"{server.inference}/wfpredict/{name}", content=PAYLOAD,
                 headers={**JSON, **(headers or {})})


def answers(call, rounds=ROUNDS):
    """``rounds`` answers of ``call()`` and the processes that gave them."""
    got = [call() for _ in range(rounds)]
    return got, {r.headers[PROCESS] for r in got}


def test_both_processes_serve_every_surface(server):
    got, pids = answers(lambda: fresh("GET", f"{server.inference}/ping"))
    assert len(pids) == 2 and all(r.status_code == 200 for r in got)
    got, pids = answers(lambda: predict(server, "seq_wf"))
    assert len(pids) == 2 and all(r.json() == expected_seq() for r in got)
    got, pids = answers(lambda: fresh("GET", f"{server.management}/workflows"))
    assert len(pids) == 2
    assert {json.dumps(r.json()) for r in got} == {json.dumps(
        {"workflows": [{"workflowName": "seq_wf", "workflowUrl": "seq_wf.war"}]})}


def test_a_registration_is_served_everywhere_at_once_and_gone_everywhere_at_once(server):
    for _ in range(3):
        r = fresh("POST", f"{server.management}/workflows", params={"url": "par_wf.war",
                                                                     "workflow_name": "par"})
        assert r.status_code == 200, r.text
        got, pids = answers(lambda: predict(server, "par"))
        assert len(pids) == 2
        assert [r.status_code for r in got] == [200] * ROUNDS  # never a 404
        assert all(r.json() == expected_par() for r in got)
        assert fresh("DELETE", f"{server.management}/workflows/par").status_code == 200
        got, pids = answers(lambda: predict(server, "par"))
        assert len(pids) == 2
        assert [r.status_code for r in got] == [404] * ROUNDS  # never a stale 200


def test_a_url_is_fetched_once_and_served_by_every_process(server, stores):
    downloads = []

    class Store(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(stores / "wf_store"), **kwargs)

        def do_GET(self):
            downloads.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    with local_server(Store) as (base, _):
        r = fresh("POST", f"{server.management}/workflows",
                  params={"url": f"{base}/par_wf.war", "workflow_name": "fetched"})
        assert r.status_code == 200, r.text
        got, pids = answers(lambda: predict(server, "fetched"))
    assert len(pids) == 2 and all(r.json() == expected_par() for r in got)
    assert downloads == ["/par_wf.war"]  # the other process loaded the same download
    assert fresh("DELETE", f"{server.management}/workflows/fetched").status_code == 200


def node_state(server, name, node):
    r = fresh("GET", f"{server.management}/workflows/{name}")
    return r.headers[PROCESS], r.json()[0]["nodes"][node]


def test_scale_is_seen_by_both_processes(server):
    r = fresh("PUT", f"{server.management}/workflows/seq_wf/nodes/m1",
              params={"min_worker": 2, "max_worker": 2, "batch_size": 2})
    assert r.status_code == 200, r.text
    states = [node_state(server, "seq_wf", "m1") for _ in range(ROUNDS)]
    assert len({pid for pid, _ in states}) == 2
    assert {(s["minWorkers"], s["maxWorkers"], s["batchSize"]) for _, s in states} == {(2, 2, 2)}
    assert all(len(s["workers"]) == 2 for _, s in states)  # per process


def versions(server, name):
    r = fresh("GET", f"{server.management}/workflows/{name}/all")
    return r.headers[PROCESS], {v["workflowVersion"]: v["isDefault"] for v in r.json()}


def test_versions_and_the_default_switch_everywhere_at_once(server):
    r = fresh("POST", f"{server.management}/workflows",
              params={"url": "seq_wf.war", "workflow_name": "seq_wf", "version": "2.0"})
    assert r.status_code == 200, r.text
    seen = [versions(server, "seq_wf") for _ in range(ROUNDS)]
    assert len({pid for pid, _ in seen}) == 2
    assert {json.dumps(v) for _, v in seen} == {json.dumps({"1.0": True, "2.0": False})}
    r = fresh("PUT", f"{server.management}/workflows/seq_wf/2.0/set-default")
    assert r.status_code == 200, r.text
    seen = [versions(server, "seq_wf") for _ in range(ROUNDS)]
    assert {json.dumps(v) for _, v in seen} == {json.dumps({"1.0": False, "2.0": True})}
    # an update replaces the default (2.0) by a new load: both serve the new one at once
    r = fresh("PUT", f"{server.management}/workflows/seq_wf",
              params={"url": "seq_wf.war", "version": "3.0"})
    assert r.status_code == 200, r.text
    seen = [versions(server, "seq_wf") for _ in range(ROUNDS)]
    assert {json.dumps(v) for _, v in seen} == {json.dumps({"1.0": False, "3.0": True})}
    got, _ = answers(lambda: predict(server, "seq_wf"))
    assert all(r.json() == expected_seq() for r in got)
    r = fresh("PUT", f"{server.management}/workflows/seq_wf/1.0/set-default")
    assert r.status_code == 200
    assert fresh("DELETE", f"{server.management}/workflows/seq_wf/3.0").status_code == 200
    seen = [versions(server, "seq_wf") for _ in range(ROUNDS)]
    assert {json.dumps(v) for _, v in seen} == {json.dumps({"1.0": True})}


def test_racing_registrations_end_in_one_state(server):
    outcomes = []
    for _ in range(4):
        def register():
            return fresh("POST", f"{server.management}/workflows",
                         params={"url": "par_wf.war", "workflow_name": "race"})

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda _: register(), range(2)))
        outcomes.append(sorted(r.status_code for r in got))
        listed = [fresh("GET", f"{server.management}/workflows/race/all").json()
                  for _ in range(10)]
        assert all(len(v) == 1 for v in listed)  # one version, everywhere
        assert fresh("DELETE", f"{server.management}/workflows/race").status_code == 200
    # one registration won each race; the other was refused with TorchServe's 409
    assert outcomes == [[200, 409]] * 4


def test_racing_scale_calls_leave_every_process_with_the_same_values(server):
    def scale(size):
        return fresh("PUT", f"{server.management}/workflows/seq_wf/nodes/m1",
                     params={"batch_size": size})

    for sizes in ((4, 5), (6, 7)):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            assert [r.status_code for r in pool.map(scale, sizes)] == [200, 200]
        states = [node_state(server, "seq_wf", "m1") for _ in range(ROUNDS)]
        assert len({pid for pid, _ in states}) == 2
        assert len({s["batchSize"] for _, s in states}) == 1  # one of the two, everywhere
        assert states[0][1]["batchSize"] in sizes


def newest_snapshot(server):
    folder = server.workdir / ".wfserve" / "snapshots"  # snapshot_dir's default
    newest = max(folder.glob("snapshot-*.json"))
    return {(w["name"], w["version"]): w for w in json.loads(newest.read_text())["workflows"]}


def test_the_newest_snapshot_holds_what_every_process_serves(server):
    r = fresh("POST", f"{server.management}/workflows",
              params={"url": "par_wf.war", "workflow_name": "kept"})
    assert r.status_code == 200
    r = fresh("PUT", f"{server.management}/workflows/kept/nodes/m1", params={"batch_size": 3})
    assert r.status_code == 200
    snapshot = newest_snapshot(server)
    assert snapshot[("kept", "1.0")]["scale"] == {"m1": {"batch_size": 3}}
    assert fresh("DELETE", f"{server.management}/workflows/kept").status_code == 200
    assert ("kept", "1.0") not in newest_snapshot(server)


def test_a_killed_process_is_replaced_and_catches_up_while_the_other_serves(server):
    got, pids = answers(lambda: predict(server, "seq_wf"))
    victim, survivor = sorted(pids)
    failures_at_survivor: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=60) as client:  # kept-alive connections
            while not stop.is_set():
                try:
                    r = client.post(f"{server.inference}/wfpredict/seq_wf", content=PAYLOAD,
                                    headers=JSON)
                except httpx.HTTPError:
                    continue  # a connection to the killed process
                if r.headers.get(PROCESS) == survivor and r.status_code != 200:
                    failures_at_survivor.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        os.kill(int(victim), signal.SIGKILL)
        assert wait_for(lambda: len(answers(lambda: fresh("GET", f"{server.inference}/ping"),
                                            rounds=8)[1] - {survivor}) > 0, within=60)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures_at_survivor == []
    got, pids = answers(lambda: predict(server, "seq_wf"))
    assert victim not in pids and len(pids) == 2  # the replacement serves, caught up
    assert all(r.status_code == 200 and r.json() == expected_seq() for r in got)
    # and it follows later changes
    r = fresh("PUT", f"{server.management}/workflows/seq_wf/nodes/m2", params={"batch_size": 3})
    assert r.status_code == 200
    states = [node_state(server, "seq_wf", "m2") for _ in range(ROUNDS)]
    assert len({pid for pid, _ in states}) == 2
    assert {s["batchSize"] for _, s in states} == {3}


def test_a_rotated_key_is_every_process_key_at_once(stores, tmp_path):
    root = tmp_path / "auth"
    shutil.copytree(stores, root, ignore=shutil.ignore_patterns("run", "*.log",
                                                                 "key_file.json"))
    with serve(root, "--workflows", "seq_wf.war", auth=True) as srv:
        got, pids = answers(lambda: predict(srv, "seq_wf", srv.bearer("inference")))
        assert len(pids) == 2 and all(r.status_code == 200 for r in got)
        old = srv.bearer("inference")
        r = fresh("POST", f"{srv.management}/token", params={"type": "inference"},
                  headers=srv.bearer("API"))
        assert r.status_code == 200
        new = srv.bearer("inference")
        assert new != old
        got, pids = answers(lambda: predict(srv, "seq_wf", new))
        assert len(pids) == 2 and [r.status_code for r in got] == [200] * ROUNDS
        got, pids = answers(lambda: predict(srv, "seq_wf", old))
        assert len(pids) == 2 and all(r.status_code == 400 for r in got)
