"""Logging setup: structlog, JSON in production, readable on a terminal.

Call :func:`configure_logging` once per process (the CLI and the server do); importing this
module configures nothing. Request-scoped fields (request id, workflow) are bound with
``structlog.contextvars``, a node call's (workflow, node, worker, request id) with
:data:`NODE_CONTEXT`; both are merged into every line.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from typing import Any
from typing import Protocol
from typing import TextIO

import structlog

from wfserve.kernel.settings import Settings

#: fields of the node call being run on this thread (workflow, node, worker, request id): one
#: context variable set per handler call, where binding each field with structlog's
#: ``bind_contextvars`` costs a variable each (PERF: a handler call is on every request's path)
NODE_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "wfserve_node_context", default=None)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def merge_node_context(logger: Any, method: str, event_dict: MutableMapping[str, Any]
                       ) -> MutableMapping[str, Any]:
    """structlog processor: add :data:`NODE_CONTEXT`'s fields (a line's own fields win)."""
    fields = NODE_CONTEXT.get()
    if fields:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return event_dict


class LineSink(Protocol):
    """Where rendered log lines go."""

    def write(self, line: str, urgent: bool) -> None:
        """Write one line (no newline). ``urgent`` (warning and above): at once; other lines
        may be written later, in order."""

    def flush(self) -> None:
        """Write everything held back, now."""


class StreamSink:
    """Every line to ``stream`` at once (the default)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def write(self, line: str, urgent: bool) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def flush(self) -> None:
        with self._lock:
            self.stream.flush()


class SinkLogger:
    """A structlog logger writing to a :class:`LineSink`; debug and info lines may wait."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink

    def _now(self, message: str) -> None:
        self._sink.write(message, True)

    def _later(self, message: str) -> None:
        self._sink.write(message, False)

    debug = info = _later
    msg = log = warning = warn = error = err = critical = fatal = exception = failure = _now


class SinkHandler(logging.Handler):
    """A standard-library handler writing to a :class:`LineSink` (warnings and above urgent)."""

    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write(self.format(record), record.levelno >= logging.WARNING)
        except Exception:  # NOTE: logging must never raise into the caller
            self.handleError(record)

    def flush(self) -> None:
        self.sink.flush()


def add_process_id(logger: Any, method: str, event: MutableMapping[str, Any]
                   ) -> MutableMapping[str, Any]:
    """structlog processor: ``pid``, the process that logged the line (several server
    processes write to one stream)."""
    event.setdefault("pid", os.getpid())
    return event


def configure_logging(settings: Settings, stream: TextIO | None = None,
                      sink: LineSink | None = None) -> None:
    """Configure structlog (and the standard library's root logger) for this process.

    :param settings: ``log_format`` (json, console, auto) and ``log_level``.
    :param stream: where lines go; standard error by default (also decides ``auto``).
    :param sink: what writes the lines to ``stream``; :class:`StreamSink` (each line at once)
        by default.
    """
    stream = stream or sys.stderr
    sink = sink or StreamSink(stream)
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    level = _LEVELS[settings.log_level]
    shared: list[structlog.typing.Processor] = [
        add_process_id,
        merge_node_context,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: SinkLogger(sink),
        cache_logger_on_first_use=False,
    )
    # gunicorn and libraries log through the standard library: render them the same way.
    handler = SinkHandler(sink)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # NOTE: httpx logs every request at INFO; the client commands report results themselves.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
