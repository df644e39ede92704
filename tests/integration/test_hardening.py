"""A real server with token auth on (the default) and small limits, attacked over raw HTTP:
auth, allowed_urls, oversize bodies and headers, malformed multipart, odd names, a slowloris
client; plus what a user sees: Server-Timing, X-Request-ID, JSON log lines, /metrics."""

import json
import shutil
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.archives import SAMPLE
from tests.archives import expected_seq
from tests.helpers import WfserveServer
from tests.helpers import raw_exchange

pytestmark = pytest.mark.integration
PAYLOAD = json.dumps({"input": SAMPLE}).encode()
JSON = {"Content-Type": "application/json"}
INVALID = {"code": 400, "type": "InvalidKeyException", "message": (
    "Token Authorization failed. Token either incorrect, expired, or not provided correctly")}
READ_TIMEOUT = 2


@pytest.fixture(scope="module")
def server(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    with WfserveServer(root, "--model-store", str(root / "model_store"), "--workflow-store",
                       str(root / "wf_store"), "--workflows", "seq_wf.war",
                       "--max-request-size", "20000", "--allowed-urls", "https://example/.*",
                       "--request-read-timeout", str(READ_TIMEOUT), "--log-format", "json",
                       "--threads", "4", auth=True) as srv:
        yield srv


def predict(server, body=PAYLOAD, headers=None, name="seq_wf"):
    return httpx.post(f"{server.inference}/wfpredict/{name}", content=body, timeout=60,
                      headers={**JSON, **server.bearer("inference"), **(headers or {})})


raw = raw_exchange


def test_unauthenticated_or_wrong_key_cannot_register(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, server.bearer("inference")):
        r = httpx.post(f"{server.management}/workflows", params={"url": "seq_wf.war",
                       "workflow_name": "x"}, headers=headers)
        assert (r.status_code, r.json()) == (400, INVALID)
    r = httpx.post(f"{server.inference}/wfpredict/seq_wf", content=PAYLOAD, headers=JSON)
    assert (r.status_code, r.json()) == (400, INVALID)
    assert predict(server).json() == expected_seq()


def test_disallowed_urls_are_refused_even_with_the_key(server, tmp_path):
    war = tmp_path / "evil.war"
    war.write_bytes(b"x")
    for url in (war.as_uri(), "http://127.0.0.1:1/evil.war", "../wf_store/seq_wf.war",
                "/etc/passwd"):
        r = httpx.post(f"{server.management}/workflows", params={"url": url},
                       headers=server.bearer("management"))
        assert r.status_code in (400, 404), (url, r.text)
        assert set(r.json()) == {"code", "type", "message"}


def test_key_file_rotation_over_http(server):
    old = server.bearer("management")
    r = httpx.get(f"{server.management}/token", params={"type": "management"},
                  headers=server.bearer("API"))
    assert r.status_code == 200
    assert httpx.get(f"{server.management}/workflows", headers=old).json() == INVALID
    assert httpx.get(f"{server.management}/workflows",
                     headers=server.bearer("management")).status_code == 200


def test_server_timing_request_id_and_log_lines(server):
    r = predict(server, headers={"X-Request-ID": "trace-42"})
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "trace-42"
    names = [p.split(";")[0].strip() for p in r.headers["Server-Timing"].split(",")]
    assert {"pre", "m1", "m2", "post", "m1-queue", "total"} <= set(names)
    time.sleep(0.2)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    mine = [e for e in lines if e.get("request_id") == "trace-42"]
    assert [e["event"] for e in mine] == ["access"]
    assert mine[0]["workflow"] == "seq_wf" and mine[0]["status"] == 200


def test_metrics_over_http_need_no_token(server):
    predict(server)
    text = httpx.get(f"{server.metrics}/metrics").text
    found = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    assert found["wfserve_workflow_requests_total"].value >= 1
    assert "ts_inference_requests_total" in found and "process_cpu_seconds_total" in found


def test_oversize_body_is_413_without_a_traceback(server):
    r = predict(server, body=b"x" * 30000)
    assert r.status_code == 413 and r.json()["type"] == "RequestEntityTooLargeException"
    chunked = httpx.post(f"{server.inference}/wfpredict/seq_wf", timeout=60,
                         content=iter([b"x" * 10000] * 3), headers=server.bearer("inference"))
    assert chunked.status_code == 413
    small = httpx.post(f"{server.inference}/wfpredict/seq_wf", timeout=60,
                       content=iter([PAYLOAD[:5], PAYLOAD[5:]]),
                       headers={**JSON, **server.bearer("inference")})
    assert small.json() == expected_seq()  # a chunked body within the limit is read whole


def test_malformed_multipart_is_400(server):
    r = predict(server, body=b"--zz\r\nContent-Disposition: form-data\r\n\r\nno end",
                headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 400 and "Traceback" not in r.text
    r = predict(server, body=b"junk", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400


def test_huge_headers_are_refused_before_any_code_runs(server):
    r = httpx.get(f"{server.inference}/ping", headers={"X-Big": "a" * 20000})
    assert r.status_code in (400, 431)
    many = {f"X-H{i}": "v" for i in range(150)}
    assert httpx.get(f"{server.inference}/ping", headers=many).status_code in (400, 431)
    assert httpx.get(f"{server.inference}/ping").status_code == 200


@pytest.mark.parametrize("path", [
    "/wfpredict/%FF%FE", "/wfpredict/..%2F..%2Fetc%2Fpasswd", "/wfpredict/../../etc/passwd",
    "/predictions/%C0%AE%C0%AE__x", "/wfpredict/" + "a" * 4000,
])
def test_odd_names_are_404_json(server, path):
    answer = raw(server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                 f"Authorization: Bearer {server.key('inference')}\r\n"
                 "Connection: close\r\n\r\n{}".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert status in (400, 404), answer[:300]
    assert b"Traceback" not in answer
    if status == 404:
        assert json.loads(body)["type"].endswith("NotFoundException")


def test_management_names_with_traversal_or_bad_utf8(server):
    for name in ("..%2F..%2Fetc", "%FF", "seq_wf%00"):
        r = httpx.get(f"{server.management}/workflows/{name}",
                      headers=server.bearer("management"))
        assert r.status_code == 404 and "Traceback" not in r.text


def test_slowloris_is_dropped_and_others_are_served_meanwhile(server):
    """Stalled half-requests (more than the 4 HTTP threads) are closed after the read timeout
    (plus gunicorn's 2 s graceful-close linger, one connection at a time); others are served."""
    started = time.monotonic()
    stalled = [socket.create_connection(("127.0.0.1", server.ports["inference"]))
               for _ in range(5)]
    try:
        for s in stalled:
            s.sendall(b"POST /wfpredict/seq_wf HTTP/1.1\r\nHost: x\r\nContent-Le")
        time.sleep(0.5)
        assert predict(server).status_code == 200  # served while they stall
        for s in stalled:
            s.settimeout(30)
            assert s.recv(1024) == b""  # closed by the server, no answer
        assert time.monotonic() - started < READ_TIMEOUT + 2 * len(stalled) + 8
    finally:
        for s in stalled:
            s.close()
    assert predict(server).status_code == 200
