"""Log lines written in batches: the server's access log without a system call per request.

Writing each access-log line at once costs a ``write`` per request, and every system call lets
another thread take the GIL: under 32 clients that was ~10 of a request's ~40 thread switches
and ~10 % of its throughput. :class:`BatchedSink` holds debug and info lines and writes them
together every ``interval`` seconds (``log_batch_ms``, from a flusher thread); a warning or
error is written at once, after everything held before it, so lines keep their order. A clean
stop flushes; a process killed outright loses at most the last ``interval`` of info lines. A
forked child starts empty, with its own lock and flusher.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import TextIO


class BatchedSink:
    """A :class:`kernel.logs.LineSink` that batches non-urgent lines for ``interval`` s."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream = stream
        self.interval = interval
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._flusher_pid: int | None = None
        atexit.register(self.flush)
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child (a handler's worker processes): the parent writes the lines it
        held; a lock held at the fork by a thread that does not exist here is replaced."""
        self._lock = threading.Lock()
        self._lines = []
        self._flusher_pid = None

    def write(self, line: str, urgent: bool) -> None:
        with self._lock:
            self._lines.append(line)
            if urgent:
                self._drain()
            elif self._flusher_pid != os.getpid():  # NOTE: no thread survives a fork
                self._flusher_pid = os.getpid()
                threading.Thread(target=self._flush_every_interval, daemon=True,
                                 name="wfserve-log-flusher").start()

    def flush(self) -> None:
        with self._lock:
            self._drain()

    def _drain(self) -> None:
        if self._lines:
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # NOTE: a closed stream loses its lines, silently
                pass

    def _flush_every_interval(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.interval):
            self.flush()
