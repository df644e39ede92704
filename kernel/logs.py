"""Logging setup: structlog, JSON in production, readable on a terminal.

Call :func:`configure_logging` once per process (the CLI and the server do); importing this
module configures nothing. Request-scoped fields (request id, workflow) are bound with
``structlog.contextvars``, a node call's (workflow, node, worker, request id) with
:data:`NODE_CONTEXT`; both are merged into every line.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import MutableMapping
from typing import Any
from typing import TextIO

import structlog

from kernel.settings import Settings

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


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Configure structlog (and the standard library's root logger) for this process.

    :param settings: ``log_format`` (json, console, auto) and ``log_level``.
    :param stream: where lines go; standard error by default.
    """
    stream = stream or sys.stderr
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
        merge_node_context,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # gunicorn and libraries log through the standard library: render them the same way.
    handler = logging.StreamHandler(stream)
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
