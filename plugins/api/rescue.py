"""Answering a request from another thread when its HTTP thread is stuck in a node.

The inference API lets the executor run a workflow's nodes on the HTTP thread itself
(:mod:`wfserve.plugins.api.inline`): no thread handoff per request. The price is that a handler
that hangs there holds the HTTP thread. The promise stays that every request is answered by
its deadline: the watchdog abandons the attempt and retries it elsewhere or fails the request,
which settles its future on another thread. :class:`Rescue` then starts a short-lived thread
(the settling thread, often the watchdog, must not wait) that gives the HTTP thread
:data:`GRACE_S` to come back (a sibling branch may settle the request a moment before the HTTP
thread returns from its own node) and otherwise writes the answer (status, TorchServe body,
``X-Request-ID``, ``Connection: close``) straight to the client socket, bounded in time, and
shuts the socket. An HTTP thread that comes back while that answer is being written waits for
it to finish, finds the request answered and writes nothing (gunicorn's write to the shut
socket fails quietly and the connection is closed): a client never gets two answers.

The worker class (:mod:`wfserve.plugins.api.worker`) puts :data:`RESCUE_KEY` in the WSGI environ of
plain HTTP/1.x requests: a function that writes one such answer to the request's socket.
Without it (another server, TLS, HTTP/2), the API does not lend the HTTP thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import structlog

from wfserve.kernel.errors import WfserveError
from wfserve.plugins.api.errors import error_body
from wfserve.plugins.api.errors import status_of

log = structlog.get_logger(__name__)

#: the WSGI environ key of the socket writer (set by the wfserve gunicorn worker)
RESCUE_KEY = "wfserve.rescue"
Writer = Callable[[int, list[tuple[str, str]], bytes], None]
INLINE, RETURNED, WRITING, RESCUED = "inline", "returned", "writing", "rescued"
#: seconds the rescuing thread waits for the HTTP thread before answering in its place
GRACE_S = 0.05
#: seconds a rescue answer may take to send before the connection is cut
SEND_TIMEOUT_S = 10.0


def write_answer(sock: socket.socket, code: int, headers: list[tuple[str, str]],
                 body: bytes) -> None:
    """Write one whole HTTP/1.1 answer to ``sock`` (within :data:`SEND_TIMEOUT_S`), then shut
    it down either way: the connection ends."""
    head = [f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase}"]
    head += [f"{name}: {value}" for name, value in headers]
    head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    try:
        with contextlib.suppress(OSError):  # NOTE: a client gone meanwhile needs no answer
            whole = int(SEND_TIMEOUT_S)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", whole, int((SEND_TIMEOUT_S - whole) * 1e6)))
            sock.sendall("\r\n".join(head).encode("latin-1") + body)
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Rescue:
    """One request's watch: who answers, the HTTP thread or a rescuing thread.

    :param write: the environ's writer (:data:`RESCUE_KEY`).
    :param render: the answer body of a successful result (the executor's ``render``).
    :param request_id: echoed as ``X-Request-ID``.
    :param max_size: a larger rendered answer is answered as a 500 instead (as the API does).
    """

    def __init__(self, write: Writer, render: Callable[[Any], bytes], request_id: str,
                 max_size: int) -> None:
        self._write = write
        self._render = render
        self._request_id = request_id
        self._max_size = max_size
        self._changed = threading.Condition(threading.Lock())
        self._state = INLINE
        #: the status answered from another thread (for the access log and metrics)
        self.code: int | None = None
        self._http_thread = threading.get_ident()

    def watch(self, future: concurrent.futures.Future[Any]) -> None:
        """Be told when the request settles, on any thread (call before any node runs on
        the HTTP thread)."""
        future.add_done_callback(self._settled)

    def returned(self) -> bool:
        """Called by the HTTP thread once ``submit`` returns: True if it is to answer, False
        if the request was answered from another thread (waits while that answer is being
        written, so the HTTP thread never writes after it)."""
        with self._changed:
            self._changed.wait_for(lambda: self._state != WRITING)
            if self._state == RESCUED:
                return False
            self._state = RETURNED
            self._changed.notify_all()
            return True

    def _settled(self, future: concurrent.futures.Future[Any]) -> None:
        if threading.get_ident() == self._http_thread:
            return  # settled by the HTTP thread itself: it answers as usual
        with self._changed:
            if self._state != INLINE:
                return
        threading.Thread(target=self._rescue, args=(future,), daemon=True,
                         name="wfserve-rescue").start()

    def _rescue(self, future: concurrent.futures.Future[Any]) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._state != INLINE, GRACE_S)
            if self._state != INLINE:
                return
            self._state = WRITING
        code, body = 500, error_body(500, "InternalServerException", "Request failed")
        try:
            code, body = self._answer(future)
            log.warning("request answered while its HTTP thread was held by a node",
                        request_id=self._request_id, status=code)
            self._write(code, [("Content-Type", "application/json"),
                               ("X-Request-ID", self._request_id)], body)
        except Exception:  # NOTE: the HTTP thread must not wait for ever on a failed rescue
            log.exception("rescue answer failed", request_id=self._request_id)
        finally:
            with self._changed:
                self.code = code
                self._state = RESCUED
                self._changed.notify_all()

    def _answer(self, future: concurrent.futures.Future[Any]) -> tuple[int, bytes]:
        """The status and body for how ``future`` settled; any failure to build it is a 500."""
        try:
            exc = None if future.cancelled() else future.exception()
            if isinstance(exc, WfserveError):
                code = status_of(exc)
                return code, error_body(code, exc.ts_type, exc.message)
            if future.cancelled() or exc is not None:
                raise RuntimeError("request failed")
            body = self._render(future.result())
            if len(body) > self._max_size:
                return 500, error_body(500, "InternalServerException",
                                       f"Response of {len(body)} bytes exceeds "
                                       f"max_response_size ({self._max_size})")
            return 200, body
        except WfserveError as failure:
            code = status_of(failure)
            return code, error_body(code, failure.ts_type, failure.message)
        except Exception:  # NOTE: a client gets TorchServe's 500, never nothing
            return 500, error_body(500, "InternalServerException", "Request failed")
