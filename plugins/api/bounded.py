"""Time bounds on a request body and on writing the answer, whatever pace the client keeps.

``SO_RCVTIMEO`` (:mod:`wfserve.plugins.api.worker`) only bounds a *stall*: a client that sends one
byte a second never stalls, and gunicorn's body reader loops on ``recv`` until it has what
it was asked for, so such a client held an HTTP thread for as long as it liked. Likewise a
client that reads its answer slowly kept the thread in ``sendall``.

Here every bound is a deadline on a :class:`Watchdog`: one thread per worker process that,
at a deadline still armed, shuts the connection's socket down, which wakes the blocked
``recv``/``send`` at once (Linux). Arming and disarming is a dict write under a lock (no
thread per request, no timer per read).

- :class:`BoundedInput` wraps ``environ["wsgi.input"]``. A whole body must arrive within
  ``body_timeout`` seconds of the request reaching the app; and once ``read_timeout`` has
  passed, it must average at least ``min_rate`` bytes a second (0: no minimum). The body is
  read in steps of :func:`step_size` bytes; each step's deadline is the earlier of the two
  bounds, so a sender is cut only when it is really behind. A read past a bound shuts the
  socket for reading and raises :class:`BodyTimeout` or :class:`BodyTooSlow` (400s: the
  client's fault); the connection is then closed, never reused.
- :func:`write_alarm`, armed with :meth:`Watchdog.swap`, bounds writing an answer to
  ``write_timeout`` seconds; past it the socket is shut both ways and the write fails.

Who arms what, per request, is :mod:`wfserve.plugins.api.worker`'s WSGI wrapper (gunicorn's
internals stay there).
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog

from wfserve.kernel.errors import BadRequest
from wfserve.plugins.api.settings import ApiSettings

log = structlog.get_logger(__name__)

#: seconds between two looks of the watchdog at the armed deadlines (its lateness at most)
TICK_S = 0.25
#: the smallest body step (see :func:`step_size`)
MIN_STEP = 4096
#: the largest body step: gunicorn asks the socket for up to 1 MiB at once anyway
MAX_STEP = 1 << 20
BODY_LATE = "request body timeout: connection dropped"
BODY_SLOW = "request body below the minimum rate: connection dropped"
WRITE_LATE = "answer not read in time: connection dropped"


class BodyTimeout(BadRequest):
    """The whole request body did not arrive within ``request_body_timeout``."""


class BodyTooSlow(BadRequest):
    """The request body averaged less than ``request_min_rate`` bytes a second."""


@dataclass(frozen=True)
class Bounds:
    """The time bounds of one request/answer exchange (seconds; bytes per second)."""

    body_timeout: float = 60.0
    read_timeout: float = 30.0
    min_rate: int = 1024
    write_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Any) -> Bounds:
        """The bounds of wfserve's settings (``request_body_timeout``, ``request_min_rate``,
        ``request_read_timeout``, ``response_write_timeout``); a timeout of 0 or less is no
        bound, as a ``request_min_rate`` of 0 is no minimum."""
        def seconds(value: float) -> float:
            return float(value) if value > 0 else math.inf

        api = settings.of(ApiSettings)
        return cls(seconds(api.request_body_timeout), float(api.request_read_timeout),
                   max(0, int(api.request_min_rate)), seconds(api.response_write_timeout))


def step_size(bounds: Bounds) -> int:
    """Bytes per body read step: what ``min_rate`` asks for within ``read_timeout``, so the
    first step is due when the grace ends (at least :data:`MIN_STEP`)."""
    if bounds.min_rate <= 0:
        return MAX_STEP
    return max(MIN_STEP, min(MAX_STEP, int(bounds.min_rate * bounds.read_timeout)))


Context = dict[str, str]


class Alarm:
    """One armed deadline: at ``deadline`` (monotonic) shut ``sock`` down (``how``); logged
    as ``event`` with ``context`` (client, path); ``fired`` tells whether it did."""

    __slots__ = ("context", "deadline", "event", "fired", "how", "sock")

    def __init__(self, deadline: float, sock: socket.socket, how: int, event: str,
                 context: Context) -> None:
        self.deadline = deadline
        self.sock = sock
        self.how = how
        self.event = event
        self.context = context
        self.fired = False

    def fire(self) -> None:
        """Shut the socket down (a blocked ``recv``/``send`` on it returns at once)."""
        self.fired = True
        shut(self.sock, self.how)

    def log(self) -> None:
        log.warning(self.event, **self.context)


def shut(sock: socket.socket, how: int) -> None:
    """Shut ``sock`` down (``how``), from any thread; a blocked ``recv``/``send`` returns.

    NOTE: the plain socket's ``shutdown`` even on a TLS socket: ``SSLSocket.shutdown`` also
    drops its TLS state, under the thread still reading from it.
    """
    with contextlib.suppress(OSError):  # NOTE: a client gone meanwhile: nothing to cut
        socket.socket.shutdown(sock, how)


def context_of(environ: dict[str, Any]) -> Context:
    """What the log lines of a dropped connection say about it: the client and the path."""
    return {"client": str(environ.get("REMOTE_ADDR", "")),
            "path": str(environ.get("PATH_INFO", ""))[:200]}


def write_alarm(sock: socket.socket, bounds: Bounds, context: Context) -> Alarm:
    """An alarm that ends the connection if its answer is not written in time."""
    return Alarm(time.monotonic() + bounds.write_timeout, sock, socket.SHUT_RDWR, WRITE_LATE,
                 context)


class Watchdog:
    """At most one armed :class:`Alarm` per thread; a daemon thread fires the expired ones.

    ``swap`` sets (or, with None, clears) the calling thread's alarm and returns the one it
    replaced: None when there was none or it fired meanwhile. An alarm that fires is cleared
    first, under the same lock, so an alarm swapped out never fires afterwards.
    """

    def __init__(self, tick: float = TICK_S) -> None:
        self._tick = tick
        self._armed: dict[int, Alarm] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> Watchdog:
        """Start the firing thread (once, in the process that serves)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="wfserve-io-watchdog")
            self._thread.start()
        return self

    def swap(self, alarm: Alarm | None) -> Alarm | None:
        """Arm ``alarm`` for this thread (None: disarm); the alarm it replaces."""
        key = threading.get_ident()
        with self._lock:
            if alarm is None:
                return self._armed.pop(key, None)
            previous = self._armed.get(key)
            self._armed[key] = alarm
            return previous

    def fire_expired(self, now: float) -> list[Alarm]:
        """Fire every alarm due by ``now``; the fired ones."""
        fired = []
        with self._lock:
            for key, alarm in list(self._armed.items()):
                if alarm.deadline <= now:
                    del self._armed[key]
                    alarm.fire()
                    fired.append(alarm)
        return fired

    def _run(self) -> None:
        while True:
            time.sleep(self._tick)
            try:
                for alarm in self.fire_expired(time.monotonic()):
                    alarm.log()
            except Exception:  # NOTE: the watchdog must outlive any one alarm
                log.exception("io watchdog: an alarm failed")


class BoundedInput:
    """``wsgi.input`` with the body bounds of :class:`Bounds` (see the module docstring).

    :param stream: the server's input stream.
    :param length: the body's Content-Length; None for a chunked body (read to its end).
    :param sock: the connection's socket, shut for reading when a bound is passed.
    :param bounds: the limits.
    :param watchdog: where the step deadlines are armed.
    :param context: for the log line of a dropped connection (:func:`context_of`).

    ``finished`` tells whether the whole body was read; ``failed`` whether a read failed
    (the connection must then not be reused).
    """

    __slots__ = ("_bounds", "_context", "_count", "_eof", "_length", "_sock", "_start",
                 "_step", "_stream", "_watchdog", "failed")

    def __init__(self, stream: Any, length: int | None, sock: socket.socket, bounds: Bounds,
                 watchdog: Watchdog, context: Context | None = None) -> None:
        self._stream = stream
        self._context = context or {}
        self._length = length
        self._sock = sock
        self._bounds = bounds
        self._watchdog = watchdog
        self._start = time.monotonic()
        self._step = step_size(bounds)
        self._count = 0
        self._eof = length == 0
        self.failed = False

    @property
    def finished(self) -> bool:
        """The whole body was read (always, for a request without one), and no read failed."""
        return not self.failed and (
            self._eof or (self._length is not None and self._count >= self._length))

    def read(self, size: int | None = -1) -> bytes:
        want = self._want(size)
        parts = []
        while want is None or want > 0:
            step = self._step if want is None else min(want, self._step)
            data = self._timed(self._stream.read, step)
            if not data:
                break
            parts.append(data)
            if want is not None:
                want -= len(data)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        want = self._want(size)
        parts = []
        while want is None or want > 0:
            step = self._step if want is None else min(want, self._step)
            data = self._timed(self._stream.readline, step)
            if not data:
                break
            parts.append(data)
            if want is not None:
                want -= len(data)
            if data.endswith(b"\n"):
                break
        return b"".join(parts)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> BoundedInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def _want(self, size: int | None) -> int | None:
        """Bytes to read for ``size``: at most what is left of a Content-Length body;
        None: to the end of a chunked body."""
        left = None if self._length is None else max(0, self._length - self._count)
        if size is None or size < 0:
            return left
        return size if left is None else min(size, left)

    def _timed(self, read: Any, step: int) -> bytes:
        """One step ``read(step)`` under its deadline; end of stream marks the body read.
        Another alarm of this thread (an answer already being written) is kept."""
        if self.failed:
            raise BadRequest("The request body could not be read earlier")
        alarm = self._alarm(step)
        if alarm.deadline <= time.monotonic():
            alarm.fire()
            alarm.log()
            raise self._late(alarm)
        outer = self._watchdog.swap(alarm)
        try:
            data = read(step)
        except Exception:
            self.failed = True
            if alarm.fired:
                raise self._late(alarm) from None
            raise
        finally:
            self._watchdog.swap(outer)
        if alarm.fired:
            raise self._late(alarm)
        if not data:
            self._eof = True
        self._count += len(data)
        return data

    def _alarm(self, step: int) -> Alarm:
        """The deadline of reading ``step`` more bytes: the body timeout, or earlier the time
        by which the minimum rate wants them (never before ``read_timeout``)."""
        b = self._bounds
        deadline, event = self._start + b.body_timeout, BODY_LATE
        if b.min_rate > 0:
            due = self._start + max(b.read_timeout, (self._count + step) / b.min_rate)
            if due < deadline:
                deadline, event = due, BODY_SLOW
        return Alarm(deadline, self._sock, socket.SHUT_RD, event, self._context)

    def _late(self, alarm: Alarm) -> BadRequest:
        """The error for a step past ``alarm`` (the connection is not to be reused)."""
        self.failed = True
        fields: dict[str, Any] = {"received": self._count,
                                  "seconds": round(time.monotonic() - self._start, 3)}
        if alarm.event == BODY_SLOW:
            return BodyTooSlow(f"The request body was sent slower than "
                               f"{self._bounds.min_rate} bytes/s", **fields)
        return BodyTimeout(f"The request body was not sent within "
                           f"{self._bounds.body_timeout} s", **fields)
