"""The gunicorn worker class: gthread, with every client socket's reads bounded in time.

gunicorn's gthread worker waits a while for a new connection's first bytes, then reads the
rest of the request with a blocking socket and no timeout, so a client that sends half a
request and stalls (slowloris) holds an HTTP thread for ever. Here each client socket gets a
kernel receive timeout (``SO_RCVTIMEO``, which Python's ``setblocking(True)`` leaves alone):
a read that waits longer than ``request_read_timeout`` fails and the connection is closed.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

from gunicorn.workers.gthread import ThreadWorker


def bound_reads(sock: socket.socket, seconds: float) -> None:
    """Make every blocking read on ``sock`` fail after ``seconds`` without data."""
    whole = int(seconds)
    micro = int((seconds - whole) * 1_000_000)
    with contextlib.suppress(OSError):  # NOTE: a client already gone is gunicorn's to notice
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", whole, micro))


class TimedThreadWorker(ThreadWorker):
    """gthread, with :func:`bound_reads` applied to every connection it serves."""

    read_timeout: float = 30.0

    def enqueue_req(self, conn: Any) -> None:
        bound_reads(conn.sock, self.read_timeout)
        super().enqueue_req(conn)


def worker_class(read_timeout: float) -> type[TimedThreadWorker]:
    """A :class:`TimedThreadWorker` bound to ``read_timeout`` seconds."""
    return type("WfserveWorker", (TimedThreadWorker,), {"read_timeout": float(read_timeout)})
