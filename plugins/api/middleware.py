"""Request-scoped concerns: request id (bound into every log line), surface, access log.

The request id comes from ``X-Request-ID`` when it is short and plain, is made otherwise, is
bound into structlog's context (so every line logged while serving the request carries it,
with the workflow once the route is known) and is echoed in the response.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

import falcon
import structlog

access = structlog.get_logger("wfserve.access")
#: a client-given request id is echoed only when it is short and plain
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
#: the version (4) and variant (RFC 4122) bits of a random UUID
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A random UUID4 as 32 hex digits, like ``uuid.uuid4().hex``.

    PERF: from ``random`` (reseeded in every forked process), not ``os.urandom``: a request id
    need not be secret, and the system call let another thread take the GIL on every request.
    """
    return f"{(random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"


class RequestContext:
    """Takes ``X-Request-ID`` (or makes one), binds it for logs, echoes it, logs the access.

    Sets ``req.context.request_id``, ``req.context.started`` and, once routed,
    ``req.context.surface`` (``surface_of(req.uri_template)``); binds ``workflow`` for routes
    with a ``{name}`` (``/predictions/<wf>__<node>`` also binds ``node``).
    """

    __slots__ = ("process", "surface", "surface_of")

    def __init__(self, surface: str,
                 surface_of: Callable[[str | None], str | None] | None = None,
                 process: str | None = None) -> None:
        """:param process: sent as ``X-Wfserve-Process`` on every answer when given (the
            server process id, when several processes serve one address)."""
        self.surface = surface
        self.surface_of = surface_of
        self.process = process

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-ID")
        request_id = given if given and _SAFE_ID.fullmatch(given) else new_request_id()
        req.context.request_id = request_id
        req.context.started = time.perf_counter()
        req.context.surface = None
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict[str, Any]) -> None:
        if self.surface_of is not None:
            req.context.surface = self.surface_of(req.uri_template)
        name = params.get("name")
        if isinstance(name, str):
            workflow, sep, node = name.partition("__")
            if req.uri_template and req.uri_template.startswith("/predictions") and sep:
                structlog.contextvars.bind_contextvars(workflow=workflow, node=node)
            else:
                structlog.contextvars.bind_contextvars(workflow=name)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        request_id = getattr(req.context, "request_id", None)
        if request_id:
            resp.set_header("X-Request-ID", request_id)
        if self.process is not None:
            resp.set_header("X-Wfserve-Process", self.process)
        started = getattr(req.context, "started", None)
        elapsed = (time.perf_counter() - started) * 1000 if started else None
        access.info("access", surface=self.surface, method=req.method, path=req.path,
                    status=resp.status_code,
                    ms=round(elapsed, 3) if elapsed is not None else None,
                    **({"answered_elsewhere": True}
                       if getattr(req.context, "answered_elsewhere", False) else {}))
        structlog.contextvars.clear_contextvars()
