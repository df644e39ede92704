"""Slow clients must not hold the HTTP threads (a real server, 4 threads, token auth on).

- Unauthenticated requests announcing a large body and dripping it (more of them than
  threads): each gets its 400 at once and its connection is closed without the body being
  read, so ``/ping`` and the management API keep answering while they drip.
- An authenticated sender slower than ``request_min_rate`` (once ``request_read_timeout`` has
  passed), or slower in total than ``request_body_timeout``, is answered 400 and dropped.
- A client reading a large answer slower than ``response_write_timeout`` allows is dropped,
  and the threads it held serve others.

Every client here is on loopback, dripping from a bounded loop that stops by itself; the
tests wait on events and polled conditions with deadlines, never on timings. A hang fails
the test through pytest-timeout (90 s a test).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.archives import build_war
from tests.helpers import WfserveServer
from tests.reliability.procs import server_tracebacks
from wfserve.plugins.api.bounded import WRITE_LATE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
THREADS = 4
READ_TIMEOUT = 2.0
BODY_TIMEOUT = 5.0
MIN_RATE = 2000  # bytes per second
WRITE_TIMEOUT = 3.0
ANSWER_WITHIN_S = 25.0  # a bound on "keeps answering", not a performance figure
BIG_ANSWER = 6_000_000  # bytes: more than loopback's socket buffers hold (~3 MB)
BIG_HANDLER = '''
import json


def _load(v):
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8")
    return json.loads(v) if isinstance(v, str) else v


def pre(data, context):
    if data is None:
        return None
    return [{"size": int(_load(row.get("data") or row.get("body"))["size"])} for row in data]


def post(data, context):
    if data is None:
        return None
    return [{"pad": "x" * int(_load(row.get("body"))["size"])} for row in data]
'''
BIG_SPEC = "models:\n  min-workers: 1\ndag:\n  pre: [post]\n"


def build_big_wf(store: Path, workdir: Path) -> None:
    """``big_wf``: function nodes only; answers ``{"pad": "xxx..."}`` of the asked ``size``."""
    (workdir / "big_handler.py").write_text(BIG_HANDLER)
    (workdir / "big.yaml").write_text(BIG_SPEC)
    build_war(store, "big_wf", spec_file=workdir / "big.yaml",
              handler=workdir / "big_handler.py")


@pytest.fixture(scope="module")
def server(rel_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("slow_clients")
    shutil.copytree(rel_stores / "model_store", root / "model_store")
    shutil.copytree(rel_stores / "wf_store", root / "wf_store")
    build_big_wf(root / "wf_store", root)
    with WfserveServer(root, "--model-store", str(root / "model_store"), "--workflow-store",
                       str(root / "wf_store"), "--workflows", "seq_wf.war", "big_wf.war",
                       "--threads", str(THREADS), "--request-read-timeout", str(READ_TIMEOUT),
                       "--request-body-timeout", str(BODY_TIMEOUT),
                       "--request-min-rate", str(MIN_RATE),
                       "--response-write-timeout", str(WRITE_TIMEOUT),
                       "--no-snapshot", auth=True) as srv:
        yield srv
    assert not server_tracebacks(srv.log())


class Sender:
    """A raw connection that sends a request head, then its body in pieces from a thread
    (``piece`` bytes every ``every`` seconds, at most ``length`` bytes in all), stopping by
    itself when the body is sent, the server closes, or :meth:`stop` is called."""

    def __init__(self, port: int, head: bytes, length: int, piece: int = 1,
                 every: float = 0.5) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN_S)
        self.sock.sendall(head + b"Content-Length: %d\r\n\r\n" % length)
        self.length, self.piece, self.every = length, piece, every
        self.sent = 0
        self.dripping = threading.Event()  # set once the first piece of body is sent
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        try:
            while self.sent < self.length and not self.ended.is_set():
                n = min(self.piece, self.length - self.sent)
                self.sock.sendall(b"x" * n)
                self.sent += n
                self.dripping.set()
                self.ended.wait(self.every)
        except OSError:
            pass  # closed by the server: what these tests want
        finally:
            self.dripping.set()
            self.ended.set()

    def answer(self) -> bytes:
        """Everything the server sends until it closes (or the socket timeout)."""
        chunks = []
        try:
            while chunk := self.sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # a reset after the answer (the client kept sending): still closed
        return b"".join(chunks)

    def stop(self) -> None:
        self.ended.set()
        self.thread.join(timeout=10)
        self.sock.close()


def head_of(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def answered_within(url: str, deadline: float, headers: dict[str, str] | None = None) -> int:
    """Poll ``url`` until it answers or ``deadline`` (monotonic) passes; the last status
    (0: no answer at all)."""
    status = 0
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url, headers=headers,
                               timeout=max(0.1, deadline - time.monotonic())).status_code
            return status
        except httpx.HTTPError:
            time.sleep(0.1)
    return status


def test_unauthenticated_drips_do_not_hold_the_http_threads(server):
    """Four times as many dripping, token-less requests as threads, on both APIs: /ping and
    the management API answer meanwhile; each dripper got its 400 and a closed connection.
    (Besides gunicorn's drain of the body, its graceful close, on its main thread, would
    read each dripper for 2 s, one after the other: the server shuts them first.)"""
    inference = b"POST /wfpredict/seq_wf HTTP/1.1\r\nHost: x\r\n"
    management = b"POST /workflows?url=seq_wf.war HTTP/1.1\r\nHost: x\r\n"
    drippers = [Sender(server.ports["inference"], inference, 100_000)
                for _ in range(2 * THREADS)]
    drippers += [Sender(server.ports["management"], management, 100_000)
                 for _ in range(2 * THREADS)]
    try:
        for d in drippers:
            assert d.dripping.wait(ANSWER_WITHIN_S)
        deadline = time.monotonic() + ANSWER_WITHIN_S
        assert answered_within(f"{server.inference}/ping", deadline) == 200
        assert answered_within(f"{server.management}/workflows", deadline,
                               server.bearer("management")) == 200
        for d in drippers:
            status, headers, body = head_of(d.answer())
            assert status == 400 and json.loads(body)["type"] == "InvalidKeyException"
            assert headers["connection"] == "close"
            assert d.ended.wait(ANSWER_WITHIN_S)
            assert d.sent < d.length  # closed without reading the body
    finally:
        for d in drippers:
            d.stop()
    assert answered_within(f"{server.inference}/ping", time.monotonic() + 10) == 200


def predict_head(server, name: str = "seq_wf") -> bytes:
    return (f"POST /wfpredict/{name} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {server.key('inference')}\r\n").encode()


def test_authenticated_sender_below_the_minimum_rate_is_dropped(server):
    """One byte every 0.25 s: far below the minimum rate; answered 400 and closed, long
    before the body could have been sent (the loop would drip for 25 s)."""
    sender = Sender(server.ports["inference"], predict_head(server), 100, every=0.25)
    try:
        status, headers, body = head_of(sender.answer())
        assert status == 400 and headers["connection"] == "close", body
        assert "BodyTooSlow" in json.loads(body)["message"]
        assert sender.ended.wait(ANSWER_WITHIN_S) and sender.sent < sender.length
    finally:
        sender.stop()
    assert answered_within(f"{server.inference}/ping", time.monotonic() + 10) == 200


def test_authenticated_sender_past_the_body_timeout_is_dropped(server):
    """Well above the minimum rate, but 400 kB at that pace takes longer than the body
    timeout: answered 400 and closed before the body is whole."""
    sender = Sender(server.ports["inference"], predict_head(server), 400_000, piece=3000,
                    every=0.25)
    try:
        status, headers, body = head_of(sender.answer())
        assert status == 400 and headers["connection"] == "close", body
        assert "BodyTimeout" in json.loads(body)["message"]
        assert sender.ended.wait(ANSWER_WITHIN_S) and sender.sent < sender.length
    finally:
        sender.stop()


class SlowReader:
    """A raw connection with a small receive buffer that asks for a large answer, then reads
    it 1 KiB every 0.2 s from a thread (bounded), keeping what it read."""

    def __init__(self, server) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(ANSWER_WITHIN_S)
        self.sock.connect(("127.0.0.1", server.ports["inference"]))
        body = json.dumps({"size": BIG_ANSWER}).encode()
        self.sock.sendall(predict_head(server, "big_wf")
                          + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.data = bytearray()
        self.reading = threading.Event()  # set once the answer has begun to arrive
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for _ in range(300):
                chunk = self.sock.recv(1024)
                self.data += chunk
                self.reading.set()
                if not chunk or self.ended.wait(0.2):
                    break
        except OSError:
            pass
        finally:
            self.reading.set()

    def rest(self) -> bytes:
        """Stop reading slowly; read everything left until the server closes."""
        self.ended.set()
        self.thread.join(timeout=10)
        try:
            while chunk := self.sock.recv(1 << 20):
                self.data += chunk
        except ConnectionResetError:
            pass
        return bytes(self.data)


def dropped_answers(server) -> int:
    return server.log().count(WRITE_LATE)


def test_slow_reader_of_a_large_answer_is_dropped(server):
    """As many slow readers of a 6 MB answer as threads: each HTTP thread blocks writing,
    until the write timeout drops them; then /ping answers again, and each reader finds its
    answer cut short (fewer bytes than its Content-Length, then the end of the stream)."""
    before = dropped_answers(server)
    readers = [SlowReader(server) for _ in range(THREADS)]
    try:
        for r in readers:
            assert r.reading.wait(ANSWER_WITHIN_S) and r.data.startswith(b"HTTP/1.1 200 ")
        deadline = time.monotonic() + ANSWER_WITHIN_S
        assert answered_within(f"{server.inference}/ping", deadline) == 200
        # NOTE: a reader that reads fast before the server has dropped it gets its whole
        # answer in time (rightly so): wait until all are dropped (the server says so)
        while dropped_answers(server) < before + THREADS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dropped_answers(server) == before + THREADS
        for r in readers:
            status, headers, body = head_of(r.rest())
            assert status == 200 and int(headers["content-length"]) > BIG_ANSWER
            assert len(body) < int(headers["content-length"])  # cut short, then closed
    finally:
        for r in readers:
            r.ended.set()
            r.sock.close()
