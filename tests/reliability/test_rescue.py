"""A node that hangs while it runs on the HTTP thread (nodes run there when they can): the
request is still answered by its deadline, from the thread that failed it, on the socket
(``Connection: close``, ``X-Request-ID``, TorchServe's body); when the stuck handler returns,
nothing more is written; the server goes on serving, with no traceback."""

import json
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.reliability.procs import server_tracebacks
from tests.reliability.workflows import CHAOS_TIMEOUT_MS
from tests.reliability.workflows import HANG
from tests.reliability.workflows import body
from tests.reliability.workflows import case
from tests.reliability.workflows import fault
from tests.reliability.workflows import inputs

pytestmark = pytest.mark.integration
HANG_S = 3.0  # chaos_handler.HANG_S
DEADLINE_S = 2 * CHAOS_TIMEOUT_MS / 1000 + 0.9  # two attempts of timeout-ms, and a margin
ANSWER = {"code": 500, "type": "InternalServerException", "message": "Error executing chaos"}


def raw_post(port, path, payload, request_id):
    """One keep-alive request on a raw socket; returns (head, body, seconds, closed_after)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S + 10) as s:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-Request-ID: %s\r\nContent-Length: %d\r\n\r\n%s"
                  % (path.encode(), request_id.encode(), len(payload), payload))
        received = b""
        while b"\r\n\r\n" not in received:
            received += s.recv(65536)
        head, _, rest = received.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(rest) < length:
            rest += s.recv(65536)
        took = time.monotonic() - started
        s.settimeout(HANG_S + 5)
        closed = s.recv(1) == b""  # after the answer: the end of the connection, no 2nd answer
    return head.decode(), rest, took, closed


def errors_counted(srv):
    """``wfserve_workflow_errors_total`` of chaos_wf, all types."""
    text = httpx.get(f"{srv.metrics}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "wfserve_workflow_errors_total"
               and s.labels.get("workflow") == "chaos_wf")


def test_a_hang_on_the_http_thread_is_answered_from_elsewhere_in_time(make_server):
    srv = make_server("--workflows", "chaos_wf.war", "seq_wf.war")
    ok = case("seq_wf", inputs(7, 1)[0])
    assert httpx.post(srv.inference + ok.path, content=ok.body).json() == ok.expected

    errors_before = errors_counted(srv)
    head, answer, took, closed = raw_post(srv.ports["inference"], "/wfpredict/chaos_wf",
                                          body(fault(HANG)), "hung-1")
    # counted when the request settled, while its handler still held the HTTP thread
    assert errors_counted(srv) == errors_before + 1
    assert head.startswith("HTTP/1.1 500 "), head
    assert json.loads(answer) == ANSWER
    assert "X-Request-ID: hung-1" in head and "Connection: close" in head
    assert took < DEADLINE_S, took
    assert closed  # and nothing else came when the stuck handler returned

    time.sleep(HANG_S)  # the stuck handler returns meanwhile
    for x in inputs(8, 5):
        c = case("seq_wf", x)
        assert httpx.post(srv.inference + c.path, content=c.body).json() == c.expected
    c = case("chaos_wf", inputs(9, 1)[0])
    assert httpx.post(srv.inference + c.path, content=c.body, timeout=10).json() == c.expected
    time.sleep(0.5)  # info lines (the access log) are written in batches (log_batch_ms)
    log = srv.log()
    assert "answered while its HTTP thread was held" in log and '"hung-1"' in log
    access = [json.loads(line) for line in log.splitlines()
              if '"access"' in line and '"hung-1"' in line]
    assert [(a["status"], a.get("answered_elsewhere")) for a in access] == [(500, True)]
    assert not server_tracebacks(log)
