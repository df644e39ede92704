"""Hostile input over real HTTP (hypothesis): random bytes under any content type, huge and
deeply nested JSON, malformed multipart, bad UTF-8 and path tricks in names and URLs, random
calls of every operation the live OpenAPI documents declare, slow and partial requests.

What must hold for every one: an HTTP answer within the configured timeouts (or a close, for
a request that never completes), never a traceback, never a 5xx except a node failure
(``Error executing <node>``, the handler choking on the input) or a 503; an error body is
TorchServe's ``{"code", "type", "message"}``; and the server leaks no thread or descriptor.
Schemathesis is not used: it is not in the project's dependencies, and it would pin its own
hypothesis into the shared test environment; these strategies drive the same OpenAPI
documents directly."""

import json
import shutil
import socket
import string
import time
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.helpers import WfserveServer
from tests.reliability.procs import counts
from tests.reliability.procs import server_tracebacks
from tests.reliability.procs import settle
from tests.reliability.procs import within
from tests.reliability.procs import worker_pid
from tests.reliability.workflows import case
from tests.reliability.workflows import inputs

pytestmark = pytest.mark.integration
MAX_BODY = 1_000_000
READ_TIMEOUT = 2.0
THREADS = 8
ANSWER_WITHIN = 15.0  # seconds: node timeouts are 10 s, a read timeout 2 s
TRIED: dict[str, int] = {}
HYP = hsettings(deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def server(rel_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(rel_stores / "model_store", root / "model_store")
    shutil.copytree(rel_stores / "wf_store", root / "wf_store")
    with WfserveServer(root, "--model-store", str(root / "model_store"), "--workflow-store",
                       str(root / "wf_store"), "--workflows", "seq_wf.war", "par_wf.war",
                       "--max-request-size", str(MAX_BODY), "--request-read-timeout",
                       str(READ_TIMEOUT), "--threads", str(THREADS), "--no-snapshot") as srv:
        srv.worker = worker_pid(srv.process.pid)
        yield srv
    assert not server_tracebacks(srv.log())


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(timeout=ANSWER_WITHIN) as c:
        yield c


def check_answer(status, text, where):
    """The contract for any answer to hostile input."""
    assert "Traceback" not in text, where
    if status == 400 and text.startswith("<html>"):
        return  # gunicorn's HTTP parser refused the request line before any wfserve code ran
    if status >= 400 and status not in (413, 431) and text.strip():
        err = json.loads(text)
        assert set(err) == {"code", "type", "message"} and err["code"] == status, (where, text)
        if status >= 500:
            assert status == 503 or err["message"].startswith("Error executing "), (where, text)
    assert status < 500 or status == 503 or "Error executing " in text, (where, text)


def count(name):
    TRIED[name] = TRIED.get(name, 0) + 1


def nested(depth):
    return "[" * depth + "]" * depth


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids,
                                                                  max_size=5),
    max_leaves=30,
)
bad_utf8 = st.sampled_from([b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                            b"\x80", b'{"input": "\xff"}', b'{"input": [1, 2, "\xc3"]}'])


@st.composite
def multipart(draw):
    boundary = draw(st.text(string.ascii_letters + string.digits + "-'()+_,./:=?", min_size=1,
                            max_size=70))
    parts = draw(st.lists(st.binary(max_size=40), max_size=3))
    closing = draw(st.sampled_from(["--\r\n", "", "\r\n", "--"]))
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; name=\"x\""
                    b"\r\n\r\n" + p + b"\r\n" for p in parts)
    body += (b"--" + boundary.encode() + closing.encode()) if draw(st.booleans()) else b""
    header = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}",
                                   "multipart/form-data", "multipart/form-data; boundary=",
                                   f'multipart/form-data; boundary="{boundary}"']))
    return header, body


bodies = st.one_of(
    st.tuples(st.sampled_from(["application/json", "application/octet-stream", "text/plain",
                               "application/x-www-form-urlencoded", "image/png", "",
                               "application/json; charset=utf-16", "text/plain; charset=bogus"]),
              st.one_of(st.binary(max_size=300), bad_utf8,
                        json_values.map(lambda v: json.dumps(v).encode()),
                        st.integers(1, 3000).map(lambda d: nested(d).encode()),
                        st.lists(st.floats(allow_nan=False), max_size=50).map(
                            lambda v: json.dumps({"input": v}).encode()))),
    multipart(),
)


@hsettings(HYP, max_examples=400)
@given(body=bodies, target=st.sampled_from(["/wfpredict/seq_wf", "/wfpredict/par_wf",
                                            "/predictions/seq_wf__pre", "/wfpredict/seq_wf/1.0"]))
def test_property_any_body_gets_an_answer_never_a_server_error(server, client, body, target):
    content_type, data = body
    headers = {"Content-Type": content_type} if content_type else {}
    started = time.monotonic()
    r = client.post(server.inference + target, content=data, headers=headers)
    assert time.monotonic() - started < ANSWER_WITHIN
    check_answer(r.status_code, r.text, (target, content_type, data[:80]))
    count("bodies")


path_parts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "%00", "%FF%FE", "%C0%AE",
                     "seq_wf%00.war", "a" * 300, "%", "%%", "%zz", "~root", "*", ";", "?x=%ff",
                     "seq_wf/../../", "//", "\\..\\", "seq_wf#frag"]),
    st.binary(max_size=20).map(lambda b: "".join(f"%{x:02X}" for x in b)),
)
METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE", "BREW"]
PREFIXES = ["/wfpredict/", "/predictions/", "/workflows/", "/models/", "/", "/api-description/",
            "/ping/", "/workflows/seq_wf/nodes/"]


def raw(server, port, request, timeout=ANSWER_WITHIN):
    with socket.create_connection(("127.0.0.1", server.ports[port]), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@hsettings(HYP, max_examples=400)
@given(method=st.sampled_from(METHODS), prefix=st.sampled_from(PREFIXES), part=path_parts,
       port=st.sampled_from(["inference", "management"]))
def test_property_path_tricks_and_bad_utf8_in_urls(server, method, prefix, part, port):
    """Raw request lines, sent as bytes: whatever the target, an answer and no 5xx."""
    target = (prefix + part).encode("utf-8", "surrogateescape")
    target = bytes(c for c in target if c > 0x20 and c != 0x7F) or b"/"
    if part.startswith("seq_wf/../") and method == "DELETE":
        return  # never unregister the fixture's workflow by accident
    request = (method.encode() + b" " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
               b"Connection: close\r\n\r\n")
    answer = raw(server, port, request)
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), (target, answer[:200])
    status = int(head.split()[1])
    if method != "HEAD":
        check_answer(status, text.decode("utf-8", "replace"), (method, target))
    count("urls")


def documented(server, surface):
    base = {"inference": server.inference, "management": server.management,
            "metrics": server.metrics}[surface]
    doc = httpx.get(f"{base}/api-description", timeout=10).json()
    return [(surface, path, m) for path, item in doc["paths"].items() for m in item
            if m not in ("head", "options")]


@pytest.fixture(scope="module")
def operations(server):
    return sorted(op for s in ("inference", "management", "metrics")
                  for op in documented(server, s))


@hsettings(HYP, max_examples=300)
@given(data=st.data())
def test_property_documented_operations_over_http(server, client, operations, data):
    """Every operation of the served OpenAPI documents, with random path values, query and
    body (registrations and deletions excluded: they would change the fixture)."""
    surface, path, method = data.draw(st.sampled_from(operations))
    if (surface == "management" and method in ("delete", "post")) or path == "/token":
        return
    text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
    url = path
    for name in ("name", "version", "node"):
        url = url.replace("{" + name + "}", quote(data.draw(
            st.one_of(st.sampled_from(["seq_wf", "1.0", "m1", "nope"]), text)
            .filter(lambda s: s.strip() and s not in (".", ".."))), safe=""))
    params = data.draw(st.dictionaries(st.sampled_from(
        ["min_worker", "max_worker", "batch_size", "max_batch_delay", "limit", "next_page_token",
         "version"]), st.one_of(text, st.integers(-5, 10**12).map(str)), max_size=3))
    if surface == "management" and method == "put":
        params.pop("min_worker", None)  # NOTE: keep the fixture's workers small
        params.pop("max_worker", None)
    base = {"inference": server.inference, "management": server.management,
            "metrics": server.metrics}[surface]
    r = client.request(method.upper(), base + url, params=params,
                       content=data.draw(st.binary(max_size=64)))
    check_answer(r.status_code, r.text, (method, url, params))
    count("openapi")


def test_huge_and_deeply_nested_json(server, client):
    cases = [b"[" * 200_000, nested(100_000).encode(),
             json.dumps({"input": [0.5] * 100_000}).encode(),
             json.dumps({"input": "x" * (MAX_BODY - 100)}).encode(),
             b'{"input": [' + b"1," * 400_000 + b"1]}"]
    for data in cases:
        started = time.monotonic()
        r = client.post(f"{server.inference}/wfpredict/seq_wf", content=data,
                        headers={"Content-Type": "application/json"})
        assert time.monotonic() - started < ANSWER_WITHIN
        check_answer(r.status_code, r.text, data[:40])
        count("huge")
    # over the limit: refused from Content-Length alone, before the body is read (a client
    # still sending the body would then see the connection close)
    answer = raw(server, "inference", b"POST /wfpredict/seq_wf HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n[[[["
                 % (MAX_BODY + 1))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    ok = case("seq_wf", inputs(60, 1)[0])
    assert client.post(server.inference + ok.path, content=ok.body).json() == ok.expected


def grow_http_pool(server, head, ok, n):
    """Hold ``n`` requests at once (headers sent, body not yet), then finish them: gunicorn's
    HTTP thread pool starts threads as it needs them, up to ``--threads``, and keeps them, so
    a baseline taken before it is full would count that growth as a leak."""
    sockets = [socket.create_connection(("127.0.0.1", server.ports["inference"]), timeout=30)
               for _ in range(n)]
    try:
        for s in sockets:
            s.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(ok.body))
        time.sleep(0.5)  # every request is now read by a pool thread, waiting for its body
        for s in sockets:
            s.sendall(ok.body)
        for s in sockets:
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    finally:
        for s in sockets:
            s.close()


def test_slow_and_partial_requests_leak_nothing(server, client):
    """Requests cut off midway (headers, a Content-Length body, a chunked body): dropped, no
    traceback. A body that stalls midway: closed within the read timeout (a stall, per
    ``request_read_timeout``'s contract), others served meanwhile. A body dripped slower
    than nothing but faster than that timeout: served. Then the worker holds the threads and
    descriptors it had before."""
    ok = case("seq_wf", inputs(61, 1)[0])
    assert client.post(server.inference + ok.path, content=ok.body).json() == ok.expected
    head = b"POST /wfpredict/seq_wf HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    grow_http_pool(server, head, ok, THREADS)
    baseline = settle(server.worker, counts(server.worker), seconds=3)
    cut = [head[:20], head, head + b"Content-Length: 1000\r\n\r\n" + ok.body,
           head + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"inp"]
    for i in range(40):
        with socket.create_connection(("127.0.0.1", server.ports["inference"]), timeout=5) as s:
            s.sendall(cut[i % len(cut)])
        count("partial")

    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.ports["inference"]), timeout=30) as s:
        s.sendall(head + b"Content-Length: %d\r\n\r\n" % len(ok.body) + ok.body[:5])
        assert client.post(server.inference + ok.path, content=ok.body).json() == ok.expected
        s.settimeout(READ_TIMEOUT + 10)
        answer = s.recv(1024)  # closed (b"") or a 400, never an answer after a long wait
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert time.monotonic() - started < READ_TIMEOUT + 5
    count("slow")

    with socket.create_connection(("127.0.0.1", server.ports["inference"]), timeout=30) as s:
        s.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(ok.body))
        for i in range(0, len(ok.body), 4):  # bounded: the body, 4 bytes every 0.1 s
            s.sendall(ok.body[i:i + 4])
            time.sleep(0.1)
        answer = b""
        for _ in range(100):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    head_, _, text = answer.partition(b"\r\n\r\n")
    assert head_.startswith(b"HTTP/1.1 200 ") and json.loads(text) == ok.expected
    count("slow")

    after = settle(server.worker, baseline, seconds=15)
    assert within(after, baseline), (after, baseline)
    assert client.post(server.inference + ok.path, content=ok.body).json() == ok.expected
    assert not server_tracebacks(server.log())


def test_zz_report_how_many_inputs_were_tried():
    """Runs last in this module: the hostile inputs sent (for RELIABILITY.md)."""
    print("hostile inputs tried:", json.dumps(TRIED, sort_keys=True))
    assert TRIED.get("bodies", 0) >= 300 and TRIED.get("urls", 0) >= 300


def test_regression_too_deep_json_is_passed_on_raw_not_an_unhandled_500():
    """Found by the property test above: ``[[[[...`` 3000 deep under application/json made
    the JSON decoder raise RecursionError, answered 500 "Internal server error" with a
    traceback in the log. Like any body that does not decode, it now reaches the handler raw,
    as TorchServe passes it on (it was a 400 before the handler contract of issue 15)."""
    from wfserve.plugins.api.decoding import build_row

    deep = nested(100_000).encode()
    row = build_row("application/json", deep, lambda _, b: json.loads(b))
    assert row == {"body": deep} and type(row["body"]) is bytearray
    assert build_row("application/json", nested(10).encode(),
                     lambda _, b: json.loads(b)) == {"body": json.loads(nested(10))}
