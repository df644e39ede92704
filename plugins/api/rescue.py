"""Answering a request from another thread when its HTTP thread is stuck in a node.

The inference API lets the executor run a workflow's nodes on the HTTP thread itself
(``PredictRequest.run_here``): no thread handoff per request. The price is that a handler
that hangs there holds the HTTP thread. The promise stays that every request is answered by
its deadline: the watchdog abandons the attempt and retries it elsewhere or fails the request,
which settles its future on another thread; :class:`Rescue` sees that the HTTP thread has not
come back (within :data:`GRACE_S`: a sibling branch may settle the request a moment before the
HTTP thread returns from its own node), and that other thread writes the answer (status,
TorchServe body, ``X-Request-ID``, ``Connection: close``) straight to the client socket,
which it then shuts down. When the stuck handler finally returns, the HTTP thread finds the
request answered and writes nothing (gunicorn's write to the shut socket fails quietly and
the connection is closed).

The worker class (:mod:`plugins.api.worker`) puts :data:`RESCUE_KEY` in the WSGI environ: a
function that writes one such answer to the request's socket. Without it (another server),
the API does not ask for ``run_here``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http
import socket
import threading
from collections.abc import Callable
from typing import Any

import structlog

from kernel.errors import WfserveError
from plugins.api.errors import error_body
from plugins.api.errors import status_of

log = structlog.get_logger(__name__)

#: the WSGI environ key of the socket writer (set by the wfserve gunicorn worker)
RESCUE_KEY = "wfserve.rescue"
Writer = Callable[[int, list[tuple[str, str]], bytes], None]
INLINE, RETURNED, RESCUED = "inline", "returned", "rescued"
#: seconds the settling thread waits for the HTTP thread before answering in its place
GRACE_S = 0.05


def write_answer(sock: socket.socket, code: int, headers: list[tuple[str, str]],
                 body: bytes) -> None:
    """Write one whole HTTP/1.1 answer to ``sock``, then shut it (the connection ends)."""
    head = [f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase}"]
    head += [f"{name}: {value}" for name, value in headers]
    head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    with contextlib.suppress(OSError):  # NOTE: a client gone meanwhile needs no answer
        sock.sendall("\r\n".join(head).encode("latin-1") + body)
        sock.shutdown(socket.SHUT_RDWR)


class Rescue:
    """One request's watch: who answers, the HTTP thread or the thread that settles it.

    :param write: the environ's writer (:data:`RESCUE_KEY`).
    :param render: the answer body of a successful result (the executor's ``render``).
    :param request_id: echoed as ``X-Request-ID``.
    """

    def __init__(self, write: Writer, render: Callable[[Any], bytes], request_id: str) -> None:
        self._write = write
        self._render = render
        self._request_id = request_id
        self._changed = threading.Condition(threading.Lock())
        self._state = INLINE
        #: the status answered from another thread (for the access log and metrics)
        self.code: int | None = None
        self._http_thread = threading.get_ident()

    def watch(self, future: concurrent.futures.Future[Any]) -> None:
        """``PredictRequest.on_future``: be told when the request settles, on any thread."""
        future.add_done_callback(self._settled)

    def returned(self) -> bool:
        """Called by the HTTP thread once ``submit`` returns: True if it is to answer, False
        if the request was answered meanwhile from another thread."""
        with self._changed:
            if self._state == RESCUED:
                return False
            self._state = RETURNED
            self._changed.notify_all()
            return True

    def _settled(self, future: concurrent.futures.Future[Any]) -> None:
        if threading.get_ident() == self._http_thread:
            return  # settled by the HTTP thread itself: it answers as usual
        with self._changed:
            # A sibling branch may settle the request just before the HTTP thread, done with
            # its own node, returns: give it GRACE_S to come back before presuming it stuck.
            self._changed.wait_for(lambda: self._state != INLINE, GRACE_S)
            if self._state != INLINE:
                return
            self._state = RESCUED
            code, body = self._answer(future)
            self.code = code
        log.warning("request answered while its HTTP thread was held by a node",
                    request_id=self._request_id, status=code)
        self._write(code, [("Content-Type", "application/json"),
                           ("X-Request-ID", self._request_id)], body)

    def _answer(self, future: concurrent.futures.Future[Any]) -> tuple[int, bytes]:
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or (exc is not None and not isinstance(exc, WfserveError)):
            return 500, error_body(500, "InternalServerException", "Request failed")
        if isinstance(exc, WfserveError):
            code = status_of(exc)
            return code, error_body(code, exc.ts_type, exc.message)
        try:
            return 200, self._render(future.result())
        except WfserveError as failure:
            code = status_of(failure)
            return code, error_body(code, failure.ts_type, failure.message)
