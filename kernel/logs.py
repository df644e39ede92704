"""Logging setup: structlog, JSON in production, readable on a terminal.

Call :func:`configure_logging` once per process (the CLI and the server do); importing this
module configures nothing. Request-scoped fields (request id, workflow, node) are bound with
``structlog.contextvars`` and merged into every line.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from kernel.settings import Settings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


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
