"""Log lines written in batches: the server's access log without a system call per request.

Writing each access-log line at once costs a ``write`` per request, and every system call lets
another thread take the GIL: under 32 clients that was ~10 of a request's ~40 thread switches
and ~10 % of its throughput. :class:`BatchedSink` holds debug and info lines and writes them
together every ``interval`` seconds (``log_batch_ms``, from a flusher thread); a warning or
error is written at once, after everything held before it, so lines keep their order.

The server's sink is made by :func:`batch_logs` in the worker process and kept in
``kernel.stash[LOG_SINK]``; the API plugin closes it last at shutdown (everything held is
written, the flusher stops, later lines are written at once). A process that exits without
shutdown still flushes (``atexit``); one killed outright loses at most the last ``interval``
of info lines. A forked child (a handler's worker processes) starts empty, with its own lock
and flusher: the parent writes the lines it held.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import TYPE_CHECKING
from typing import TextIO

from wfserve.kernel.logs import configure_logging
from wfserve.kernel.stash import StashKey
from wfserve.plugins.api.settings import ApiSettings

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel


class BatchedSink:
    """A :class:`wfserve.kernel.logs.LineSink` that batches non-urgent lines for ``interval`` s."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream = stream
        self.interval = interval
        self._pid = os.getpid()
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._closed = False
        atexit.register(self.flush)

    def _check_fork(self) -> None:
        """In a forked child: start empty (the parent writes the lines it held), with a lock
        of its own (one held at the fork by a thread that does not exist here would never be
        released) and no flusher (no thread survives a fork).

        NOTE: found out on the child's first use instead of with ``os.register_at_fork``, a
        process-wide registry that would keep every sink ever made alive.
        """
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._lines = []
            self._stop = threading.Event()
            self._flusher = None

    def write(self, line: str, urgent: bool) -> None:
        self._check_fork()
        with self._lock:
            self._lines.append(line)
            if urgent or self._closed:
                self._drain()
            elif self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_every_interval,
                                                 args=(self._stop,), daemon=True,
                                                 name="wfserve-log-flusher")
                self._flusher.start()

    def flush(self) -> None:
        self._check_fork()
        with self._lock:
            self._drain()

    def close(self) -> None:
        """Write everything held, stop the flusher; later lines are written at once."""
        self._check_fork()
        with self._lock:
            self._closed = True
            self._stop.set()
            self._drain()
        atexit.unregister(self.flush)

    def _drain(self) -> None:
        if self._lines:
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # NOTE: a closed stream loses its lines, silently
                pass

    def _flush_every_interval(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.flush()


LOG_SINK = StashKey[BatchedSink]()


def batch_logs(kernel: Kernel, stream: TextIO) -> BatchedSink | None:
    """Log this process's lines to ``stream`` through a :class:`BatchedSink` kept in
    ``kernel.stash[LOG_SINK]``, when ``log_batch_ms`` is over 0; returns it (else None and
    logging is left as it is). Call it in the process that serves (its flusher lives there).
    """
    batch_ms = kernel.settings.of(ApiSettings).log_batch_ms
    if batch_ms <= 0:
        return None
    sink = kernel.stash[LOG_SINK] = BatchedSink(stream, batch_ms / 1000)
    configure_logging(kernel.settings, stream, sink)
    return sink
