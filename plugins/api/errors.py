"""One place that turns errors into TorchServe's JSON error bodies and statuses.

Kernel errors map to a status by class (most specific first, along the MRO); Falcon's own
errors (unknown route, wrong method, bad request) get TorchServe's wording; anything else is
logged with its traceback and answered 500 without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import falcon
import structlog

from wfserve.kernel import errors
from wfserve.plugins.serializers.pretty_json import dumps_indent2

log = structlog.get_logger(__name__)

#: kernel error class -> HTTP status; looked up along the exception's MRO
STATUS: dict[type[errors.WfserveError], int] = {
    errors.BadRequest: 400,
    errors.TooLarge: 413,
    errors.NotFound: 404,
    errors.MethodNotAllowed: 405,
    errors.Conflict: 409,
    errors.Timeout: 408,
    errors.Unavailable: 503,
    errors.UsageError: 400,
    errors.WfserveError: 500,
}
NOT_FOUND = "Requested resource is not found, please refer to API document."
NOT_ALLOWED = "Requested method is not allowed, please refer to API document."


def status_of(exc: errors.WfserveError) -> int:
    """The HTTP status for a kernel error (a ``PredictionFailed`` carries its own)."""
    if isinstance(exc, errors.PredictionFailed) and isinstance(exc.fields.get("http_status"),
                                                               int):
        return exc.fields["http_status"]
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(code: int, type_: str, message: str) -> bytes:
    """TorchServe's error body: ``{"code", "type", "message"}`` pretty-printed."""
    return (dumps_indent2({"code": code, "type": type_, "message": message}) + "\n").encode()


def _answer(resp: falcon.Response, code: int, type_: str, message: str) -> None:
    resp.status = code
    resp.content_type = falcon.MEDIA_JSON
    resp.data = error_body(code, type_, message)
    resp.complete = True


def handle_kernel_error(req: falcon.Request, resp: falcon.Response, exc: Exception,
                        params: dict[str, Any]) -> None:
    """Falcon error handler for every :class:`~wfserve.kernel.errors.WfserveError`."""
    assert isinstance(exc, errors.WfserveError)
    code = status_of(exc)
    if code >= 500:
        log.warning("request failed", status=code, error=type(exc).__name__, message=exc.message,
                    **{k: v for k, v in exc.fields.items() if isinstance(v, str | int | float)})
    _answer(resp, code, exc.ts_type, exc.message)


def handle_http_error(req: falcon.Request, resp: falcon.Response, exc: Exception,
                      params: dict[str, Any]) -> None:
    """Falcon's own errors (no route, wrong method, malformed input) in TorchServe's shape."""
    assert isinstance(exc, falcon.HTTPError)
    code = exc.status_code
    if code == 404:
        _answer(resp, 404, "ResourceNotFoundException", NOT_FOUND)
    elif code == 405:
        _answer(resp, 405, "MethodNotAllowedException", NOT_ALLOWED)
    elif code == 413:
        _answer(resp, 413, "RequestEntityTooLargeException", exc.description or exc.title)
    else:
        message = exc.description or exc.title or "Bad request"
        _answer(resp, code, "BadRequestException" if code < 500 else "InternalServerException",
                message)
    headers = exc.headers or {}  # falcon takes a mapping or (name, value) pairs
    for name, value in headers.items() if isinstance(headers, Mapping) else headers:
        if name.lower() != "content-type":
            resp.set_header(name, value)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception,
                      params: dict[str, Any]) -> None:
    """Anything not raised on purpose: log the traceback, answer 500 without it."""
    log.error("unhandled error", path=req.path, method=req.method, exc_info=exc)
    _answer(resp, 500, "InternalServerException", "Internal server error")


def install(app: falcon.App) -> None:
    """Register the handlers; Falcon picks the most specific one by MRO."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(errors.WfserveError, handle_kernel_error)
