"""The gunicorn worker class: gthread, with bounded reads and kept-alive connections served
on the thread that answered them.

Bounded reads: gunicorn's gthread worker waits a while for a new connection's first bytes,
then reads the rest of the request with a blocking socket and no timeout, so a client that
sends half a request and stalls (slowloris) holds an HTTP thread for ever. Here each client
socket gets a kernel receive timeout (``SO_RCVTIMEO``, which Python's ``setblocking(True)``
leaves alone): a read that waits longer than ``request_read_timeout`` fails and the
connection is closed.

Lingering: after a keep-alive answer, stock gthread hands the connection back to its main
thread's poller, which hands the next request to a pool thread again: two thread wake-ups
per request, each ~50 us on a 2-core VM where the other core sleeps. A client that sends its
next request at once (as a closed-loop client or a pipeline stage does) is served here on the
same thread instead: the thread waits up to ``linger`` seconds (``http_linger_ms``) for the
next bytes, and only while no connection is queued for a thread, so lingering delays another
client by about ``linger`` at most. Slower clients go back to the poller as before.
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import struct
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from plugins.api.rescue import RESCUE_KEY
from plugins.api.rescue import write_answer

#: seconds a thread waits for the next request on the connection it just answered
LINGER_S = 0.001


def bound_reads(sock: socket.socket, seconds: float) -> None:
    """Make every blocking read on ``sock`` fail after ``seconds`` without data."""
    whole = int(seconds)
    micro = int((seconds - whole) * 1_000_000)
    with contextlib.suppress(OSError):  # NOTE: a client already gone is gunicorn's to notice
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", whole, micro))


def readable(sock: socket.socket, seconds: float) -> bool:
    """Whether ``sock`` has bytes (or an end of stream) to read within ``seconds``."""
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(seconds * 1000))
    except (OSError, ValueError):  # NOTE: closed meanwhile; gunicorn's to notice
        return False


class TimedThreadWorker(ThreadWorker):
    """gthread, with :func:`bound_reads` on every connection and lingering keep-alives; the
    WSGI environ carries :data:`~plugins.api.rescue.RESCUE_KEY`, a writer of one answer to
    the request's socket from another thread (:mod:`plugins.api.rescue`)."""

    read_timeout: float = 30.0
    linger: float = LINGER_S

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi

        def with_rescue(environ: dict[str, Any], start_response: Any) -> Any:
            sock = environ.get("gunicorn.socket")
            if (sock is not None and environ.get("wsgi.url_scheme") == "http"
                    and str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1")):
                environ[RESCUE_KEY] = functools.partial(write_answer, sock)  # not TLS, not h2
            return app(environ, start_response)

        self.wsgi = with_rescue

    def enqueue_req(self, conn: Any) -> None:
        if not getattr(conn, "reads_bound", False):
            bound_reads(conn.sock, self.read_timeout)
            conn.reads_bound = True
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        """Serve ``conn``'s requests while the next one arrives within :attr:`linger`."""
        keepalive = super().handle(conn)
        while keepalive is True and self._may_linger() and (
                conn.parser.unreader.buf.getvalue() or readable(conn.sock, self.linger)):
            keepalive = super().handle(conn)
        return keepalive

    def _may_linger(self) -> bool:
        """Only while running and no connection waits for a thread."""
        queued = getattr(self.tpool, "_work_queue", None)  # NOTE: CPython's since 3.7
        return self.alive and self.linger > 0 and queued is not None and queued.empty()


def worker_class(read_timeout: float, linger: float = LINGER_S) -> type[TimedThreadWorker]:
    """A :class:`TimedThreadWorker` bound to ``read_timeout`` and ``linger`` seconds."""
    return type("WfserveWorker", (TimedThreadWorker,),
                {"read_timeout": float(read_timeout), "linger": float(linger)})
