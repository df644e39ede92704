"""``/predictions/{wf}__{node}``: one node of a workflow called as a TorchServe model.

As TorchServe's ``InferenceRequestHandler.handlePredictions`` and ``RestJob.responseInference``
do for any model: the body (never the query) is the input row; the request headers gain
``url_path`` (the path after the version, else empty) and ``explain`` (``"True"`` on
``/explanations``, else ``"False"``); the handler runs once (see
:meth:`~wfserve.kernel.contracts.Executor.submit_node`); the answer is its output as bytes, with the
status, Content-Type and headers the handler set on its context, and no Content-Type at all
when it set none. Failures answer TorchServe's status and message
(:mod:`wfserve.plugins.executors.failures`).
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import falcon
import structlog

from wfserve.kernel.contracts import PredictRequest
from wfserve.kernel.contracts import ResponseMeta
from wfserve.kernel.errors import ModelNotFound
from wfserve.kernel.errors import ModelVersionNotFound
from wfserve.kernel.errors import PredictionFailed
from wfserve.kernel.errors import Timeout
from wfserve.kernel.errors import WfserveError
from wfserve.plugins.api.decoding import read_body
from wfserve.plugins.api.inference import GRACE
from wfserve.plugins.api.inference import Predicting
from wfserve.plugins.executors.failures import UNSUPPORTED_OUTPUT

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel
    from wfserve.kernel.registry import Registered
    from wfserve.kernel.spec import NodeSpec

log = structlog.get_logger(__name__)
#: response headers the server owns: a handler's values for them are ignored
SERVER_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def find_node(kernel: Kernel, model_name: str) -> tuple[Registered, NodeSpec]:
    """Resolve ``<workflow>__<node>`` (trying every ``__``, as either name may hold one);
    ``ModelNotFound`` with TorchServe's message if absent."""
    start = 0
    while (cut := model_name.find("__", start)) >= 0:
        wf, node = model_name[:cut], model_name[cut + 2:]
        if wf in kernel.registry:
            entry = kernel.registry.get(wf)
            spec = entry.workflow.spec.nodes.get(node)
            if spec is not None:
                return entry, spec
        start = cut + 1
    raise ModelNotFound(f"Model not found: {model_name}", model=model_name)


def model_version(entry: Registered, node: NodeSpec) -> str:
    """The node's model version: its ``.mar``'s, ``1.0`` for a function node (TorchServe)."""
    archive = entry.workflow.node_archives.get(node.name)
    return (archive and archive.version) or "1.0"


def check_version(entry: Registered, node: NodeSpec, model_name: str,
                  version: str | None) -> None:
    """TorchServe's 404 for a model version that is not the node's."""
    if version is not None and version != model_version(entry, node):
        raise ModelVersionNotFound(
            f"Model version: {version} does not exist for model: {model_name}",
            model=model_name, version=version)


def call_node(kernel: Kernel, entry: Registered, node: NodeSpec,
              request: PredictRequest) -> bytes:
    """Run ``node`` once on ``request`` and return its output as the bytes to answer.

    :raises Timeout: no answer by the request's deadline plus :data:`GRACE`.
    :raises PredictionFailed: the call failed (TorchServe's status and message).
    """
    future = entry.executor.submit_node(node.name, request)
    assert request.deadline is not None
    try:
        output = future.result(timeout=max(request.deadline - time.monotonic(), 0) + GRACE)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise Timeout("Request timed out", request_id=request.request_id) from None
    if isinstance(output, bytes | bytearray):
        return bytes(output)
    try:  # typed mode: the output is an object, encoded as TorchServe would
        return kernel.hooks.serializer("", output).serialize(output)
    except Exception as exc:
        raise PredictionFailed(UNSUPPORTED_OUTPUT, http_status=503, node=node.name,
                               cause=f"{type(exc).__name__}: {exc}") from None


def with_headers(request: PredictRequest, **added: str) -> PredictRequest:
    """``request`` with headers TorchServe's frontend adds after the client's (they win)."""
    return replace(request, headers={**request.headers, **added})


def apply_response(resp: falcon.Response, meta: ResponseMeta) -> None:
    """The status, phrase and headers a handler set, as TorchServe sends them.

    The server's own headers (``Content-Length``, ``Transfer-Encoding``, ``Connection``) stay
    the server's; a header that could split the response (a name that is not an HTTP token,
    a control character in a value or the phrase) is dropped and logged.
    """
    status = meta.status if meta.status is not None else 200
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise PredictionFailed(f"Invalid response status set by the handler: {status!r}",
                               http_status=500)
    phrase = meta.phrase or ""
    if phrase and not _CONTROL.search(phrase):
        resp.status = f"{status} {phrase}"
    else:
        resp.status = status
    for name, value in meta.headers.items():
        if name.lower() in SERVER_HEADERS:
            continue
        if not isinstance(name, str) or not _TOKEN.fullmatch(name) or _CONTROL.search(
                str(value)):
            log.warning("response header set by the handler dropped", header=repr(name)[:80])
            continue
        resp.set_header(name, str(value))


class NodePrediction(Predicting):
    """``/predictions/{wf}__{node}[/{version}[/{url_path}]]``: any method, as TorchServe."""

    __slots__ = ()
    explain = "False"

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str,
                version: str | None = None, url_path: str = "") -> None:
        entry, node = find_node(self.kernel, name)
        check_version(entry, node, name, version)
        body = read_body(req, self.kernel.settings.max_request_size)
        request = with_headers(self._request(req, self._row(req, body)),
                               url_path=url_path, explain=self.explain)
        data = call_node(self.kernel, entry, node, request)
        limit = self.kernel.settings.max_response_size
        if len(data) > limit:
            raise WfserveError(f"Response of {len(data)} bytes exceeds max_response_size "
                               f"({limit})")
        apply_response(resp, request.response)
        resp.data = data

    on_get = on_put = on_patch = on_delete = on_post


class NodeExplanation(NodePrediction):
    """``/explanations/{wf}__{node}[/{version}[/{url_path}]]``: the same call with
    ``explain: True`` (TorchServe's handlers answer ``explain_handle`` then)."""

    __slots__ = ()
    explain = "True"
