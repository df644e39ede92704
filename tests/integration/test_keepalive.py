"""Keep-alive connections on the real server, with lingering HTTP threads (a long 200 ms
linger, so a missing guard would show) and without: with a single HTTP thread, a client that
keeps sending on its connection never starves another client, a pipelined pair of requests
gets two answers, and management calls get through."""

import json
import shutil
import socket
import threading
import time

import httpx
import pytest

from tests.archives import SAMPLE
from tests.archives import expected_seq
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
PAYLOAD = json.dumps({"input": SAMPLE}).encode()
LIVENESS_S = 60  # a bound on "never starved", not a performance figure


@pytest.fixture(scope="module", params=["200", "0"], ids=["linger-200ms", "no-linger"])
def server(request, peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("keepalive")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    with WfserveServer(root, "--model-store", str(root / "model_store"), "--workflow-store",
                       str(root / "wf_store"), "--workflows", "seq_wf.war", "--threads", "1",
                       "--http-linger-ms", request.param, "--no-snapshot") as srv:
        yield srv


def test_one_http_thread_serves_several_keep_alive_clients_in_turn(server):
    answers: dict[int, list[object]] = {}

    def client(index):
        with httpx.Client(timeout=LIVENESS_S) as c:  # one kept-alive connection each
            answers[index] = [c.post(f"{server.inference}/wfpredict/seq_wf",
                                     content=PAYLOAD).json() for _ in range(25)]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    with httpx.Client(timeout=LIVENESS_S) as c:
        for _ in range(5):  # another surface, same single thread, meanwhile
            assert c.get(f"{server.management}/workflows").status_code == 200
    for t in threads:
        t.join(LIVENESS_S)
    assert not any(t.is_alive() for t in threads)
    assert answers == {i: [expected_seq()] * 25 for i in range(3)}


def test_pipelined_requests_on_one_connection_each_get_an_answer(server):
    one = (b"POST /wfpredict/seq_wf HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(PAYLOAD), PAYLOAD))
    last = one.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    with socket.create_connection(("127.0.0.1", server.ports["inference"]), timeout=30) as s:
        s.sendall(one + last)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 2
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in received.split(b"HTTP/1.1 ")[1:]]
    assert [json.loads(b) for b in bodies] == [expected_seq()] * 2


def test_a_client_that_keeps_sending_or_idles_on_its_connection_starves_no_one(server):
    """One HTTP thread; client A sends on its kept-alive connection without pause, then holds
    it open, idle: client B, on another connection, is served in both cases."""
    stop_sending, idle, release = threading.Event(), threading.Event(), threading.Event()
    sent = [0]

    def busy_client():
        with httpx.Client(timeout=LIVENESS_S) as c:
            while not stop_sending.is_set() and sent[0] < 100_000:
                assert c.post(f"{server.inference}/wfpredict/seq_wf", content=PAYLOAD
                              ).status_code == 200
                sent[0] += 1
            idle.set()
            release.wait(LIVENESS_S)  # the connection stays open, idle

    a = threading.Thread(target=busy_client)
    a.start()
    try:
        while sent[0] < 20 and a.is_alive():
            time.sleep(0.01)
        with httpx.Client(timeout=LIVENESS_S / 4) as b:
            for _ in range(10):  # while A keeps sending
                answer = b.post(f"{server.inference}/wfpredict/seq_wf", content=PAYLOAD)
                assert answer.json() == expected_seq()
            still_sending = not stop_sending.is_set() and a.is_alive()
            stop_sending.set()
            assert idle.wait(LIVENESS_S)
            for _ in range(3):  # while A idles on its open connection
                answer = b.post(f"{server.inference}/wfpredict/seq_wf", content=PAYLOAD)
                assert answer.json() == expected_seq()
    finally:
        stop_sending.set()
        release.set()
        a.join(LIVENESS_S)
    assert still_sending and sent[0] >= 20 and not a.is_alive()
