"""Who answers a request whose nodes ran on its HTTP thread: that thread, unless the request
settled elsewhere while it was still held (then a rescuing thread, once, and the HTTP thread
never writes after it)."""

import concurrent.futures
import json
import socket
import threading
import time

from wfserve.kernel.errors import NodeFailed
from wfserve.plugins.api import rescue as rescue_module
from wfserve.plugins.api.rescue import Rescue
from wfserve.plugins.api.rescue import write_answer

LIMIT = 1000


class Writes:
    def __init__(self, seconds=0.0):
        self.calls, self.seconds = [], seconds
        self.started, self.finished = threading.Event(), threading.Event()

    def __call__(self, code, headers, body):
        self.started.set()
        time.sleep(self.seconds)
        self.calls.append((code, dict(headers), body))
        self.finished.set()


def settle_elsewhere(future, outcome):
    def run():
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    t = threading.Thread(target=run)
    t.start()
    t.join(5)


def test_settled_on_the_http_thread_it_answers_itself():
    writes, future = Writes(), concurrent.futures.Future()
    rescue = Rescue(writes, lambda r: b"x", "id-1", LIMIT)
    rescue.watch(future)
    future.set_result("done")
    assert rescue.returned() and writes.calls == []


def test_settled_elsewhere_while_the_http_thread_is_held_a_rescue_answers_once():
    writes, future = Writes(), concurrent.futures.Future()
    rescue = Rescue(writes, lambda r: b"x", "id-2", LIMIT)
    rescue.watch(future)
    settle_elsewhere(future, NodeFailed("Error executing chaos", node="chaos"))
    assert writes.finished.wait(5)  # the HTTP thread is held all along
    code, headers, body = writes.calls[0]
    assert code == 500 and headers["X-Request-ID"] == "id-2"
    assert json.loads(body) == {"code": 500, "type": "InternalServerException",
                                "message": "Error executing chaos"}
    assert rescue.returned() is False and len(writes.calls) == 1 and rescue.code == 500


def test_a_success_settled_elsewhere_is_rendered_and_a_too_large_one_refused():
    writes, future = Writes(), concurrent.futures.Future()
    rescue = Rescue(writes, lambda result: json.dumps(result).encode(), "id-3", LIMIT)
    rescue.watch(future)
    settle_elsewhere(future, {"sum": 1})
    assert writes.finished.wait(5)
    assert writes.calls == [(200, {"Content-Type": "application/json", "X-Request-ID": "id-3"},
                             b'{"sum": 1}')]
    writes, future = Writes(), concurrent.futures.Future()
    Rescue(writes, lambda result: b"x" * (LIMIT + 1), "id-4", LIMIT).watch(future)
    settle_elsewhere(future, {"sum": 1})
    assert writes.finished.wait(5) and writes.calls[0][0] == 500


def test_an_answer_that_cannot_be_built_is_a_500_not_silence():
    def broken(result):
        raise TypeError("not serializable")

    writes, future = Writes(), concurrent.futures.Future()
    Rescue(writes, broken, "id-5", LIMIT).watch(future)
    settle_elsewhere(future, object())
    assert writes.finished.wait(5)
    assert writes.calls[0][0] == 500 and json.loads(writes.calls[0][2])["code"] == 500


def test_an_http_thread_back_within_the_grace_answers_itself(monkeypatch):
    monkeypatch.setattr(rescue_module, "GRACE_S", 5.0)  # a margin for a slow machine
    writes, future = Writes(), concurrent.futures.Future()
    rescue = Rescue(writes, lambda r: b"x", "id-6", LIMIT)
    rescue.watch(future)
    settle_elsewhere(future, "from a sibling branch")
    time.sleep(0.05)  # the rescuing thread waits for the HTTP thread meanwhile
    assert rescue.returned()
    rescuers = [t for t in threading.enumerate() if t.name == "wfserve-rescue"]
    for t in rescuers:
        t.join(10)
    assert writes.calls == [] and not any(t.is_alive() for t in rescuers)


def test_an_http_thread_back_during_the_write_waits_for_it_and_writes_nothing():
    writes, future = Writes(seconds=0.3), concurrent.futures.Future()
    rescue = Rescue(writes, lambda r: b"x", "id-7", LIMIT)
    rescue.watch(future)
    settle_elsewhere(future, NodeFailed("Error executing m1", node="m1"))
    assert writes.started.wait(10)  # past the grace: the rescue is writing (for 0.3 s)
    assert rescue.returned() is False
    assert writes.finished.is_set()  # returned() came back only after the answer was out


def test_write_answer_sends_one_closing_answer_and_shuts_the_socket():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        write_answer(ours, 500, [("Content-Type", "application/json")], b'{"code": 500}')
        received = b""
        while chunk := theirs.recv(4096):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [b"HTTP/1.1 500 Internal Server Error",
                                   b"Content-Type: application/json", b"Content-Length: 13",
                                   b"Connection: close"]
    assert body == b'{"code": 500}'
