"""Inference API resources (port 8080): ``/wfpredict`` and ``/ping``; ``/predictions`` on a node
is :mod:`wfserve.plugins.api.model_call`.

A request's deadline (wfserve extension): its ``X-Request-Timeout-Ms`` header, capped by
``max_request_timeout_ms``; else the workflow spec's ``deadline-ms`` (``/wfpredict`` only);
else ``default_response_timeout``, as TorchServe. See :func:`request_timeout`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from typing import Any

import falcon

from wfserve.kernel.contracts import PredictRequest
from wfserve.kernel.errors import BadRequest
from wfserve.kernel.errors import Timeout
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WfserveError
from wfserve.plugins.api import inline
from wfserve.plugins.api.decoding import build_row
from wfserve.plugins.api.decoding import handler_headers
from wfserve.plugins.api.decoding import json_pretty
from wfserve.plugins.api.decoding import read_body
from wfserve.plugins.api.multipart import MultipartLimits
from wfserve.plugins.api.settings import ApiSettings

if TYPE_CHECKING:
    import concurrent.futures

    from wfserve.kernel.core import Kernel

#: seconds a response may take beyond the request's own deadline before we stop waiting
GRACE = 1.0
#: attempts of one request while versions are swapped under it
SWAP_RETRIES = 3
#: the request header asking for a request's own deadline, in milliseconds (wfserve extension)
TIMEOUT_HEADER = "X-Request-Timeout-Ms"


def request_timeout(req: falcon.Request, kernel: Kernel, spec_ms: int | None = None) -> float:
    """Seconds ``req`` may take end to end.

    Its ``X-Request-Timeout-Ms`` header when present, capped by ``max_request_timeout_ms``
    (0: by ``default_response_timeout``); else ``spec_ms`` (a workflow's ``deadline-ms``);
    else ``default_response_timeout``. Call after authentication (in a responder).

    :raises BadRequest: the header is not a positive integer of milliseconds.
    """
    value = req.get_header(TIMEOUT_HEADER)
    settings = kernel.settings
    if value is None:
        return spec_ms / 1000.0 if spec_ms is not None else float(
            settings.default_response_timeout)
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise BadRequest(f"Invalid {TIMEOUT_HEADER} header: {value[:40]!r} is not a positive "
                         f"integer of milliseconds", header=TIMEOUT_HEADER)
    cap = settings.of(ApiSettings).max_request_timeout_ms
    if cap <= 0:
        cap = settings.default_response_timeout * 1000
    return min(int(text), cap) / 1000.0


class Predicting:
    """Shared by the two prediction resources: decode, submit, wait with a deadline."""

    __slots__ = ("kernel",)

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def _decode(self, content_type: str, data: bytes) -> Any:
        return self.kernel.hooks.serializer(content_type, data).deserialize(data)

    def _row(self, req: falcon.Request, body: bytes) -> dict[str, Any]:
        """The root input row (an :class:`~wfserve.kernel.contracts.InputRow`), a form bounded by
        ``max_multipart_parts``/``_depth``; remembers the body's length for :meth:`_request`."""
        req.context.body_length = len(body)
        limits = MultipartLimits.from_settings(self.kernel.settings)
        return build_row(req.content_type, body, self._decode, limits)

    def _request(self, req: falcon.Request, row: dict[str, Any],
                 spec_ms: int | None = None) -> PredictRequest:
        """The request for ``row``: the headers as handlers see them
        (:func:`~wfserve.plugins.api.decoding.handler_headers`), the request id, the deadline
        (:func:`request_timeout`; ``spec_ms``: the workflow's ``deadline-ms``).

        :raises BadRequest: a bad ``X-Request-Timeout-Ms`` header."""
        timeout = request_timeout(req, self.kernel, spec_ms)
        length = getattr(req.context, "body_length", None)
        if length is None:
            length = req.content_length or 0
        headers = handler_headers(req.headers, length)
        return PredictRequest(row=row, headers=headers, request_id=req.context.request_id,
                              deadline=time.monotonic() + timeout)

    def _wait(self, future: concurrent.futures.Future[Any], request: PredictRequest) -> Any:
        import concurrent.futures

        assert request.deadline is not None
        try:
            return future.result(timeout=max(request.deadline - time.monotonic(), 0) + GRACE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Timeout("Request timed out", request_id=request.request_id) from None

    def _send(self, resp: falcon.Response, data: bytes) -> None:
        limit = self.kernel.settings.max_response_size
        if len(data) > limit:
            raise WfserveError(f"Response of {len(data)} bytes exceeds max_response_size "
                               f"({limit})")
        resp.content_type = falcon.MEDIA_JSON
        resp.data = data


class WorkflowPrediction(Predicting):
    """``/wfpredict/{name}`` (the default version) and ``/wfpredict/{name}/{version}``: any
    method, as TorchServe; query parameters are not inputs.

    A request that meets a version being swapped out (its executor refuses with
    ``Unavailable`` while the registry already serves another one) is sent again to the
    version now serving, so an update never fails a request.
    """

    __slots__ = ()

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str,
                version: str | None = None) -> None:
        registry = self.kernel.registry
        entry = registry.get(name, version)
        body = read_body(req, self.kernel.settings.max_request_size)
        request = self._request(req, self._row(req, body), entry.workflow.spec.deadline_ms)
        for _ in range(SWAP_RETRIES):
            try:
                future, answered = inline.submit(entry.executor, request, req.env,
                                                 self.kernel.settings.max_response_size)
                if answered is not None:  # the client has its answer; log its status
                    req.context.answered_elsewhere = True
                    resp.status = answered
                    return
                result = self._wait(future, request)
                break
            except Unavailable:
                current = registry.get(name, version)
                if current is entry:
                    raise
                entry = current
        else:
            raise Unavailable(f"Workflow {name} is being updated, try again", workflow=name)
        self._send(resp, entry.executor.render(result))

    on_get = on_put = on_patch = on_delete = on_post


class Ping:
    """``/ping``: TorchServe's health answer."""

    __slots__ = ("kernel",)

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = json_pretty({"status": "Healthy"})

    on_post = on_get
