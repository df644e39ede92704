"""The gunicorn worker class: gthread, with bounded reads and kept-alive connections served
on the thread that answered them. The one module that knows gunicorn's internals.

Supported: gunicorn 27.x (``pyproject.toml`` pins ``>=27.0,<28``; CI runs the suite on the
newest and ``tests/integration/test_gunicorn_versions.py`` reruns the HTTP tests on 27.0.0).
gunicorn documents no per-connection read timeout, TLS per listener or early close, so this
module relies on, and only this module: gthread's ``enqueue_req``/``handle`` (bool or a defer
marker), ``TConn.cfg``/``.sock``/``.server``/``.parser.unreader.buf``, the config's
``is_ssl``/``ssl_context`` as ``TConn.init`` uses them, and ``Response.force_close`` reached
through ``start_response``. 24.x-26.x serve pipelined and kept-alive connections differently
and fail the keep-alive tests with this worker.

Bounded reads: gunicorn's gthread worker waits a while for a new connection's first bytes,
then reads the rest of the request with a blocking socket and no timeout, so a client that
sends half a request and stalls (slowloris) holds an HTTP thread for ever. Here each plain
HTTP listener gets a kernel receive timeout (``SO_RCVTIMEO``), which every connection it
accepts inherits (Linux copies it at ``accept``; Python's ``setblocking(True)`` leaves it
alone): a read that waits longer than ``request_read_timeout`` fails and the connection is
closed.

Bounded bodies and answers (:mod:`wfserve.plugins.api.bounded`): ``wsgi.input`` is wrapped in a
:class:`~wfserve.plugins.api.bounded.BoundedInput` (total body time, minimum average rate) and the
answer's write is bounded by ``response_write_timeout``, both enforced by one watchdog thread
that shuts a late connection's socket down.

Closing instead of draining: an answer started before the request body was read to its end
(a refused token, a 404, a 413 from Content-Length, a body read past its bounds) closes the
connection: gunicorn then sends ``Connection: close`` and does not drain the rest of the body
before the next request (its drain asks the socket for 1 KiB at a time and waits for all of
it, so a client dripping a byte a second held the thread for as long as it dripped; an app's
own ``Connection`` header is dropped by gunicorn, so ``resp.force_close()`` is what counts).
After that answer the socket is shut both ways on the HTTP thread, so gunicorn's graceful
close (on its main thread, reading for up to 2 s) finds nothing left to wait for.

TLS per address: gunicorn's TLS settings apply to every bind, but each wfserve address has
its own scheme (inference may be ``https://`` while management stays plain HTTP on loopback).
So gunicorn's own TLS stays off, and a connection accepted on a listener whose address is in
``tls`` gets a :class:`TlsConfig`, gunicorn's config with ``is_ssl`` true and wfserve's
context (:mod:`wfserve.plugins.api.tls`): gunicorn then wraps that socket, sets ``wsgi.url_scheme``
to ``https`` and serves it as usual. The wrapped socket is a :class:`TimedTLSSocket`: with
TLS a kernel receive timeout would make ``ssl`` retry the read for ever, so the handshake and
every read use a socket timeout of ``read_timeout`` instead. Body and answer bounds apply to
TLS connections too; the rescue writer is for plain HTTP only.

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
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from wfserve.plugins.api.app import SOCKET_KEY
from wfserve.plugins.api.bounded import BoundedInput
from wfserve.plugins.api.bounded import Bounds
from wfserve.plugins.api.bounded import Watchdog
from wfserve.plugins.api.bounded import context_of
from wfserve.plugins.api.bounded import shut
from wfserve.plugins.api.bounded import write_alarm
from wfserve.plugins.api.rescue import RESCUE_KEY
from wfserve.plugins.api.rescue import write_answer

#: seconds a thread waits for the next request on the connection it just answered
LINGER_S = 0.001


def bound_reads(sock: Any, seconds: float) -> None:
    """Make every blocking read on ``sock`` (or on the connections a listening ``sock``
    accepts) fail after ``seconds`` without data."""
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


def body_length(environ: dict[str, Any]) -> int | None:
    """The request body's length: Content-Length, 0 without one, None when chunked."""
    coding = environ.get("HTTP_TRANSFER_ENCODING")
    if coding and "chunked" in coding.lower():
        return None
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def close_after(start_response: Callable[..., Any]) -> None:
    """Have gunicorn close the connection after this answer (``Connection: close``), without
    draining the request body first. NOTE: gunicorn's ``Response.force_close``, reached
    through the bound ``start_response`` it passes; an app's Connection header is ignored."""
    force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
    if force_close is not None:
        force_close()


def drop(sock: socket.socket) -> None:
    """End the connection after its answer: shut both ways (FIN after the answer; the rest
    of an unread body is not waited for)."""
    shut(sock, socket.SHUT_RDWR)


class TlsConfig:
    """gunicorn's config as the connections of one TLS listener see it: ``is_ssl`` is true
    and the SSL context is ``context``; everything else is gunicorn's config."""

    is_ssl = True

    def __init__(self, cfg: Any, context: ssl.SSLContext) -> None:
        self._cfg = cfg
        self._context = context

    def ssl_context(self, conf: Any, default_factory: Callable[[], ssl.SSLContext]
                    ) -> ssl.SSLContext:
        """gunicorn's ``ssl_context`` hook: wfserve's context, not one from gunicorn's TLS
        settings."""
        return self._context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cfg, name)


class TimedTLSSocket(ssl.SSLSocket):
    """A server-side TLS socket whose handshake and blocking reads wait at most
    :attr:`read_timeout` seconds (``setblocking(True)`` sets that timeout)."""

    read_timeout: float = 30.0

    def setblocking(self, flag: bool) -> None:
        self.settimeout(self.read_timeout if flag else 0.0)

    def do_handshake(self, block: bool = False) -> None:
        if self.gettimeout() is None:
            self.settimeout(self.read_timeout)
        super().do_handshake(block)


def timed_tls(context: ssl.SSLContext, read_timeout: float) -> ssl.SSLContext:
    """``context``, wrapping sockets as :class:`TimedTLSSocket` bound to ``read_timeout``."""
    context.sslsocket_class = type("WfserveTLSSocket", (TimedTLSSocket,),
                                   {"read_timeout": float(read_timeout)})
    return context


class TimedThreadWorker(ThreadWorker):
    """gthread, with :func:`bound_reads` on every connection, bounded bodies and answers,
    no body drain after an early answer, and lingering keep-alives; the WSGI environ carries
    :data:`~wfserve.plugins.api.rescue.RESCUE_KEY`, a writer of one answer to the request's socket
    from another thread (:mod:`wfserve.plugins.api.rescue`)."""

    read_timeout: float = 30.0
    linger: float = LINGER_S
    bounds: Bounds = Bounds()
    #: bound (host, port) -> the TLS context of the connections accepted there
    tls: dict[tuple[str, int], ssl.SSLContext] = {}

    def init_process(self) -> None:
        """Bound the reads of every plain listener's connections (see the module docstring),
        count the connections waiting for a thread, then gunicorn's own start (which runs the
        worker's loop and does not return)."""
        for listener in self.sockets:
            if listener_address(listener.getsockname()) not in self.tls:
                bound_reads(listener, self.read_timeout)
        self.waiting = 0
        self.waiting_lock = threading.Lock()
        super().init_process()

    wsgi: Callable[..., Any]  # set by gunicorn's load_wsgi

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = self.bounded(self.wsgi)

    def bounded(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """``app`` with :class:`BoundedInput` and the write bound for HTTP/1.x requests (not
        HTTP/2: its socket is shared by streams), and the rescue writer for plain HTTP."""
        watchdog = self.watchdog = Watchdog().start()
        exchange = self.exchange = threading.local()
        bounds = self.bounds

        def serve(environ: dict[str, Any], start_response: Any) -> Any:
            sock = environ[SOCKET_KEY] = environ.get("gunicorn.socket")
            if sock is None or not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
                return app(environ, start_response)
            if environ.get("wsgi.url_scheme") == "http":
                environ[RESCUE_KEY] = functools.partial(write_answer, sock)
            context = context_of(environ)
            body = exchange.body = environ["wsgi.input"] = BoundedInput(
                environ["wsgi.input"], body_length(environ), sock, bounds, watchdog, context)

            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None
                      ) -> Any:
                if not body.finished:
                    close_after(start_response)
                watchdog.swap(write_alarm(sock, bounds, context))
                return start_response(status, headers, exc_info)

            return app(environ, start)

        return serve

    def enqueue_req(self, conn: Any) -> None:
        """Hand ``conn`` to a thread; a connection of a TLS listener first gets its
        :class:`TlsConfig` (once: gunicorn wraps the socket when the thread starts on it)."""
        if self.tls and not isinstance(conn.cfg, TlsConfig):
            context = self.tls.get(listener_address(conn.server))
            if context is not None:
                conn.cfg = TlsConfig(conn.cfg, context)
        with self.waiting_lock:
            self.waiting += 1
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        """Serve ``conn``'s requests while the next one arrives within :attr:`linger`."""
        with self.waiting_lock:
            self.waiting -= 1
        keepalive = self._handle_one(conn)
        while keepalive is True and self._may_linger() and (
                conn.parser.unreader.buf.getvalue() or readable(conn.sock, self.linger)):
            keepalive = self._handle_one(conn)
        return keepalive

    def _handle_one(self, conn: Any) -> Any:
        """One request: gunicorn's ``handle``, then the answer's write bound is lifted and a
        connection whose body was left unread is shut (see the module docstring)."""
        try:
            return super().handle(conn)
        finally:
            self.watchdog.swap(None)
            body = self.exchange.__dict__.pop("body", None)
            if body is not None and not body.finished:
                drop(conn.sock)

    def _may_linger(self) -> bool:
        """Only while running and no connection waits for a thread."""
        return self.alive and self.linger > 0 and self.waiting == 0


def listener_address(name: Any) -> tuple[str, int]:
    """A listener's ``getsockname()`` as (host, port) (an IPv6 one has four fields)."""
    return str(name[0]), int(name[1])


def worker_class(read_timeout: float, linger: float = LINGER_S,
                 bounds: Bounds | None = None,
                 tls: dict[tuple[str, int], ssl.SSLContext] | None = None
                 ) -> type[TimedThreadWorker]:
    """A :class:`TimedThreadWorker` bound to ``read_timeout`` and ``linger`` seconds, to
    ``bounds`` (the body and answer time bounds; the defaults of :class:`Bounds` if None) and
    serving TLS on the listeners of ``tls`` (bound address -> context)."""
    contexts = {address: timed_tls(context, read_timeout)
                for address, context in (tls or {}).items()}
    return type("WfserveWorker", (TimedThreadWorker,),
                {"read_timeout": float(read_timeout), "linger": float(linger),
                 "bounds": bounds or Bounds(read_timeout=float(read_timeout)),
                 "tls": contexts})
