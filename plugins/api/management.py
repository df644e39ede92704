"""Management API resources (port 8081): ``/workflows`` and the workflow-internal ``/models``.

Bodies and messages are TorchServe 0.12.0's (``torchserve-api-ground-truth.md``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

import falcon
import yaml

from wfserve.kernel.contracts import NodeState
from wfserve.kernel.contracts import WorkerState
from wfserve.kernel.errors import BadRequest
from wfserve.kernel.errors import MethodNotAllowed
from wfserve.kernel.lifecycle import register_workflow
from wfserve.kernel.lifecycle import unregister_workflow
from wfserve.kernel.lifecycle import update_workflow
from wfserve.kernel.redact import redact_url
from wfserve.kernel.registry import page
from wfserve.kernel.spec import edge_name
from wfserve.plugins.api.decoding import json_pretty
from wfserve.plugins.api.decoding import media_type
from wfserve.plugins.api.decoding import read_body
from wfserve.plugins.api.inference import Predicting
from wfserve.plugins.api.model_call import apply_response
from wfserve.plugins.api.model_call import call_node
from wfserve.plugins.api.model_call import check_version
from wfserve.plugins.api.model_call import find_node
from wfserve.plugins.api.model_call import model_version
from wfserve.plugins.api.model_call import with_headers

#: TorchServe's 405 message (the same text as Falcon's own 405 answers)
NOT_ALLOWED = "Requested method is not allowed, please refer to API document."
#: what TorchServe reports for a workflow model's startup timeout and retry window (seconds);
#: wfserve loads workers once, at registration or scale time, and never retries a start
STARTUP_TIMEOUT = 120
MAX_RETRY_TIMEOUT_S = 300

if TYPE_CHECKING:
    from wfserve.kernel.contracts import Archive
    from wfserve.kernel.contracts import ResponseMeta
    from wfserve.kernel.core import Kernel
    from wfserve.kernel.registry import Registered
    from wfserve.kernel.spec import NodeSpec


def _int_param(req: falcon.Request, name: str, default: int) -> int:
    """TorchServe's lenient integers: absent or not an integer gives the default."""
    try:
        return int(req.get_param(name) or default)
    except ValueError:
        return default


def _page_params(req: falcon.Request) -> tuple[int, int]:
    limit = _int_param(req, "limit", 100)
    offset = _int_param(req, "next_page_token", 0)
    return offset, limit


def _send(resp: falcon.Response, obj: Any) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json_pretty(obj)


class WorkflowCollection:
    """``/workflows``: register (POST) and list (GET)."""

    __slots__ = ("kernel",)

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = self._register_params(req, self.kernel.settings.max_request_size)
        # NOTE: an empty workflow_name is TorchServe's "no name" (the manifest's is used); an
        # empty url is a url, naming the store itself (TorchServe's 404), only a missing one 400
        entry = register_workflow(self.kernel, params.get("url"),
                                  params.get("workflow_name") or None,
                                  params.get("version") or None)
        _send(resp, {"status": f"Workflow {entry.name} has been registered and scaled "
                               "successfully."})

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        offset, limit = _page_params(req)
        items, token = self.kernel.registry.page(offset, limit)
        body: dict[str, Any] = {}
        if token is not None:
            body["nextPageToken"] = str(token)
        body["workflows"] = [
            {"workflowName": e.name, "workflowUrl": e.workflow.url} for e in items
        ]
        _send(resp, body)

    @staticmethod
    def _register_params(req: falcon.Request, limit: int) -> dict[str, Any]:
        """Query parameters, or a JSON body (at most ``limit`` bytes) with the same keys (then
        the query is ignored)."""
        if media_type(req.content_type) == "application/json":
            raw = read_body(req, limit)
            try:
                body = json.loads(raw or b"{}")
            except (ValueError, RecursionError):
                raise BadRequest("The registration body is not valid JSON") from None
            if not isinstance(body, dict):
                raise BadRequest("The registration body must be a JSON object")
            return {k: str(v) for k, v in body.items() if v is not None}
        query = falcon.uri.parse_query_string(req.query_string, keep_blank=True)
        first = {k: v[0] if isinstance(v, list) else v for k, v in query.items()}
        return {k: first.get(k) for k in ("url", "workflow_name", "version")}


def node_view(node: NodeState) -> dict[str, Any]:
    """A node's live state as the management API shows it."""
    return {
        "minWorkers": node.min_workers,
        "maxWorkers": node.max_workers,
        "batchSize": node.batch_size,
        "maxBatchDelay": node.max_batch_delay,
        "workers": [{"id": w.id, "status": w.status} for w in node.workers],
        "queued": node.queued,
    }


def describe(entry: Registered, is_default: bool) -> dict[str, Any]:
    """TorchServe's describe entry of one workflow version, then wfserve's extension fields.

    TorchServe's fields come first and unchanged (the spec's global values); the extensions
    are ``workflowVersion``, ``isDefault`` and ``nodes``: per node the live ``minWorkers``,
    ``maxWorkers``, ``batchSize``, ``maxBatchDelay``, ``workers`` (id and status) and
    ``queued``, as changed by the scale call; and, only for a spec with conditional or map
    edges, ``edges``: ``{"parent -> child": {"when": "<condition>"} or {"map": true}}``.
    """
    spec = entry.workflow.spec
    g = spec.globals
    nodes = {name: node_view(node) for name, node in entry.executor.describe().nodes.items()}
    described = {
        "workflowName": entry.name,
        "workflowUrl": entry.workflow.url,
        "minWorkers": g.min_workers,
        "maxWorkers": g.max_workers,
        "batchSize": g.batch_size,
        "maxBatchDelay": g.max_batch_delay,
        "workflowDag": spec.dag_string,
        "workflowVersion": entry.version,
        "isDefault": is_default,
        "nodes": nodes,
    }
    if spec.conditions or spec.maps:
        edges: dict[str, dict[str, Any]] = {
            edge_name(edge): {"when": condition.source}
            for edge, condition in spec.conditions.items()}
        edges.update({edge_name(edge): {"map": True} for edge in sorted(spec.maps)})
        described["edges"] = edges
    return described


class WorkflowItem:
    """``/workflows/{name}``: describe (GET, an array as TorchServe), update (PUT with ``url``,
    a wfserve extension) and unregister every version (DELETE)."""

    __slots__ = ("kernel",)

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        _send(resp, [describe(self.kernel.registry.get(name), True)])

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """Update: load ``url`` fully, switch the default to it, drain and free the old one.

        Without ``url`` this is TorchServe's call, which answers 405 (its transcript, step 31).
        """
        url = req.get_param("url")
        if not url:
            raise MethodNotAllowed(NOT_ALLOWED)
        entry, _ = update_workflow(self.kernel, name, url, req.get_param("version") or None)
        _send(resp, {"status": f"Workflow {name} updated to version {entry.version}"})

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        unregister_workflow(self.kernel, name)
        _send(resp, {"status": f'Workflow "{name}" unregistered'})


class ModelCollection:
    """``/models``: the model nodes of every workflow as ``<wf>__<node>`` (functions hidden)."""

    __slots__ = ("kernel",)

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        models = sorted(
            (f"{e.name}__{n.name}", redact_url(n.url or ""))
            for e in self.kernel.registry.entries()
            for n in e.workflow.spec.models
        )
        items, token = page(models, *_page_params(req))
        body: dict[str, Any] = {}
        if token is not None:
            body["nextPageToken"] = str(token)
        body["models"] = [{"modelName": name, "modelUrl": url} for name, url in items]
        _send(resp, body)


class ModelItem:
    """``/models/{wf}__{node}[/{version}]``: describe one workflow node as TorchServe describes
    a model (:func:`describe_model`); ``?customized=true`` adds the handler's own metadata,
    as TorchServe's ``describe`` call to the worker does; version ``all`` lists every one."""

    __slots__ = ("kernel",)

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str,
               version: str | None = None) -> None:
        entry, node = find_node(self.kernel, name)
        if version != "all":
            check_version(entry, node, name, version)
        meta = customized = None
        if version != "all" and (req.get_param("customized") or "").lower() == "true":
            request = with_headers(Predicting(self.kernel)._request(req, {}), describe="True")
            data = call_node(self.kernel, entry, node, request)
            meta = request.response
            customized = _json_object(data) if data else None
        _send(resp, [describe_model(self.kernel, entry, node, name, customized)])
        if meta is not None:
            apply_response(resp, meta)
            resp.content_type = meta_content_type(meta) or falcon.MEDIA_JSON


def _json_object(data: bytes) -> dict[str, Any]:
    """TorchServe's ``customizedMetadata``: the handler's answer as a JSON object, ``{}`` when
    it is not one."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def meta_content_type(meta: ResponseMeta) -> str | None:
    """The Content-Type a handler set, if any."""
    found = [v for k, v in meta.headers.items() if k.lower() == "content-type"]
    return found[-1] if found else None


def _mar_workers(archive: Archive | None) -> tuple[int, int] | None:
    """``minWorkers``/``maxWorkers`` of a ``.mar``'s model-config.yaml when TorchServe would
    use them (min > 0 and max >= min), else None."""
    if archive is None or not archive.config_file:
        return None
    try:
        config = yaml.safe_load(archive.path(archive.config_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(config, dict):
        return None
    lo, hi = config.get("minWorkers"), config.get("maxWorkers")
    if type(lo) is int and type(hi) is int and lo > 0 and hi >= lo:
        return lo, hi
    return None


def _workers(live: Sequence[WorkerState]) -> list[dict[str, Any]]:
    """TorchServe's worker entries: READY while loaded (idle or busy), else UNLOADING; one
    process holds every threaded worker, which no per-worker memory figure can tell apart."""
    return [{
        "id": str(w.id),
        "startTime": w.start_time,
        "status": "READY" if w.status in ("READY", "BUSY") else "UNLOADING",
        "memoryUsage": 0,
        "pid": w.pid or 0,
        "gpu": False,
        "gpuUsage": "N/A",
    } for w in live]


def describe_model(kernel: Kernel, entry: Registered, node: NodeSpec, name: str,
                   customized: dict[str, Any] | None = None) -> dict[str, Any]:
    """TorchServe 0.12.0's ``DescribeModelResponse`` for one node (its fields in its order,
    those it leaves null on CPU omitted, as Gson does), then wfserve's own fields.

    As TorchServe reports a workflow model: ``minWorkers`` = ``maxWorkers`` = the node's
    ``max-workers`` (live), unless its ``.mar``'s model-config.yaml sets valid ones.
    ``customized``: the handler's own metadata (``?customized=true``), placed where
    TorchServe places it.
    """
    live = entry.executor.describe().nodes.get(node.name)
    c = node.config
    archive = entry.workflow.node_archives.get(node.name)
    workers = c.max_workers if live is None else live.max_workers
    lo, hi = _mar_workers(archive) or (workers, workers)
    queued = 0 if live is None else live.queued
    body: dict[str, Any] = {"modelName": name, "modelVersion": model_version(entry, node)}
    if node.url:
        body["modelUrl"] = redact_url(node.url)
    body.update({
        "runtime": "python",
        "minWorkers": lo,
        "maxWorkers": hi,
        "batchSize": c.batch_size if live is None else live.batch_size,
        "maxBatchDelay": c.max_batch_delay if live is None else live.max_batch_delay,
        "responseTimeout": kernel.settings.default_response_timeout,
        "startupTimeout": STARTUP_TIMEOUT,
        "maxRetryTimeoutInSec": MAX_RETRY_TIMEOUT_S,
        "clientTimeoutInMills": 0,
        "parallelType": "",
        "parallelLevel": 0,
        "deviceType": "cpu",
        "continuousBatching": False,
        "useJobTicket": False,
        "useVenv": False,
        "stateful": False,
        "sequenceMaxIdleMSec": 0,
        "sequenceTimeoutMSec": 0,
        "maxNumSequence": 0,
        "maxSequenceJobQueueSize": 0,
        "loadedAtStartup": False,
        "workers": _workers(() if live is None else live.workers),
        "jobQueueStatus": {
            "remainingCapacity": max(kernel.settings.job_queue_size - queued, 0),
            "pendingRequests": queued,
        },
    })
    if customized is not None:
        body["customizedMetadata"] = customized
    body.update({"retryAttempts": c.retry_attempts, "timeoutMs": c.timeout_ms})
    return body
