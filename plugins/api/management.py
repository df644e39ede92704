"""Management API resources (port 8081): ``/workflows`` and the workflow-internal ``/models``.

Bodies and messages are TorchServe 0.12.0's (``torchserve-api-ground-truth.md``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from typing import Any

import falcon

from kernel.errors import BadRequest
from kernel.errors import MethodNotAllowed
from kernel.errors import ModelNotFound
from kernel.lifecycle import register_workflow
from kernel.lifecycle import unregister_workflow
from kernel.lifecycle import update_workflow
from kernel.redact import redact_url
from plugins.api.decoding import json_pretty
from plugins.api.decoding import media_type
from plugins.api.decoding import read_body

#: TorchServe's 405 message (the same text as Falcon's own 405 answers)
NOT_ALLOWED = "Requested method is not allowed, please refer to API document."

if TYPE_CHECKING:
    from kernel.core import Kernel
    from kernel.registry import Registered
    from kernel.spec import NodeSpec


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
        entry = register_workflow(self.kernel, params.get("url"), params.get("workflow_name"),
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
        return {k: req.get_param(k) for k in ("url", "workflow_name", "version")}


def describe(entry: Registered, is_default: bool) -> dict[str, Any]:
    """TorchServe's describe entry of one workflow version, then wfserve's extension fields.

    TorchServe's fields come first and unchanged (the spec's global values); the extensions
    are ``workflowVersion``, ``isDefault`` and ``nodes``: per node the live ``minWorkers``,
    ``maxWorkers``, ``batchSize``, ``maxBatchDelay``, ``workers`` (id and status) and
    ``queued``, as changed by the scale call.
    """
    spec = entry.workflow.spec
    g = spec.globals
    live = entry.executor.describe().get("nodes", {})
    nodes = {}
    for name, node in live.items():
        nodes[name] = {k: node[k] for k in ("minWorkers", "maxWorkers", "batchSize",
                                            "maxBatchDelay") if k in node}
        nodes[name]["workers"] = [{k: w[k] for k in ("id", "status") if k in w}
                                  for w in node.get("workers", [])]
        nodes[name]["queued"] = node.get("queued", 0)
    return {
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


def find_node(kernel: Kernel, model_name: str) -> tuple[Registered, NodeSpec]:
    """Resolve ``<workflow>__<node>``; ``ModelNotFound`` with TorchServe's message if absent."""
    wf, sep, node = model_name.partition("__")
    if sep and wf in kernel.registry:
        entry = kernel.registry.get(wf)
        spec = entry.workflow.spec.nodes.get(node)
        if spec is not None:
            return entry, spec
    raise ModelNotFound(f"Model not found: {model_name}", model=model_name)


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
        offset, limit = _page_params(req)
        limit = 100 if limit <= 0 or limit > 100 else limit
        offset = max(offset, 0)
        body: dict[str, Any] = {}
        if offset + limit <= len(models):
            body["nextPageToken"] = str(offset + limit)
        body["models"] = [
            {"modelName": name, "modelUrl": url} for name, url in models[offset:offset + limit]
        ]
        _send(resp, body)


class ModelItem:
    """``/models/{wf}__{node}``: describe one workflow node as TorchServe describes a model."""

    __slots__ = ("kernel",)

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        entry, node = find_node(self.kernel, name)
        live = entry.executor.describe().get("nodes", {}).get(node.name, {})
        c = node.config
        archive = entry.workflow.node_archives.get(node.name)
        body: dict[str, Any] = {"modelName": name, "modelVersion": (archive and archive.version)
                                or "1.0"}
        if node.url:
            body["modelUrl"] = redact_url(node.url)
        body.update({
            "runtime": "python",
            "minWorkers": c.min_workers,
            "maxWorkers": c.max_workers,
            "batchSize": c.batch_size,
            "maxBatchDelay": c.max_batch_delay,
            "responseTimeout": self.kernel.settings.default_response_timeout,
            "retryAttempts": c.retry_attempts,
            "timeoutMs": c.timeout_ms,
            "deviceType": "cpu",
            "workers": live.get("workers", []),
            "jobQueueStatus": {
                "remainingCapacity": max(
                    self.kernel.settings.job_queue_size - live.get("queued", 0), 0
                ),
                "pendingRequests": live.get("queued", 0),
            },
        })
        _send(resp, [body])
