"""Who answers a request whose nodes ran on its HTTP thread: that thread, unless the request
settled elsewhere while it was still held (then the settling thread, once)."""

import concurrent.futures
import json
import socket
import threading
import time

from kernel.errors import NodeFailed
from plugins.api.rescue import GRACE_S
from plugins.api.rescue import Rescue
from plugins.api.rescue import write_answer


class Writes:
    def __init__(self):
        self.calls = []

    def __call__(self, code, headers, body):
        self.calls.append((code, dict(headers), body))


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
    rescue = Rescue(writes, lambda r: b"x", "id-1")
    rescue.watch(future)
    future.set_result("done")
    assert rescue.returned() and writes.calls == []


def test_settled_elsewhere_while_the_http_thread_is_held_the_settling_thread_answers_once():
    writes, future = Writes(), concurrent.futures.Future()
    rescue = Rescue(writes, lambda r: b"x", "id-2")
    rescue.watch(future)
    settle_elsewhere(future, NodeFailed("Error executing chaos", node="chaos"))
    assert len(writes.calls) == 1
    code, headers, body = writes.calls[0]
    assert code == 500 and headers["X-Request-ID"] == "id-2"
    assert json.loads(body) == {"code": 500, "type": "InternalServerException",
                                "message": "Error executing chaos"}
    assert rescue.returned() is False and len(writes.calls) == 1


def test_a_success_settled_elsewhere_is_rendered():
    writes, future = Writes(), concurrent.futures.Future()
    rescue = Rescue(writes, lambda result: json.dumps(result).encode(), "id-3")
    rescue.watch(future)
    settle_elsewhere(future, {"sum": 1})
    assert writes.calls == [(200, {"Content-Type": "application/json", "X-Request-ID": "id-3"},
                             b'{"sum": 1}')]


def test_an_http_thread_back_within_the_grace_answers_itself():
    writes, future = Writes(), concurrent.futures.Future()
    rescue = Rescue(writes, lambda r: b"x", "id-4")
    rescue.watch(future)
    settling = threading.Thread(target=future.set_result, args=("from a sibling branch",))
    settling.start()
    time.sleep(GRACE_S / 5)  # the callback waits for the HTTP thread meanwhile
    answered = rescue.returned()
    settling.join(5)
    assert answered and writes.calls == []


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
