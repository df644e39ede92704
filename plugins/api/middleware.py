"""Request-scoped concerns: request id (bound into every log line) and the access log."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import falcon
import structlog

access = structlog.get_logger("wfserve.access")
#: a client-given request id is echoed only when it is short and plain
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContext:
    """Takes ``X-Request-ID`` (or makes one), binds it for logs, echoes it, logs the access."""

    __slots__ = ("surface",)

    def __init__(self, surface: str) -> None:
        self.surface = surface

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-ID")
        request_id = given if given and _SAFE_ID.match(given) else uuid.uuid4().hex
        req.context.request_id = request_id
        req.context.started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        request_id = getattr(req.context, "request_id", None)
        if request_id:
            resp.set_header("X-Request-ID", request_id)
        started = getattr(req.context, "started", None)
        elapsed = (time.perf_counter() - started) * 1000 if started else None
        access.info("access", surface=self.surface, method=req.method, path=req.path,
                    status=resp.status_code,
                    ms=round(elapsed, 3) if elapsed is not None else None)
        structlog.contextvars.clear_contextvars()
