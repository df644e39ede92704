"""Management resources beyond TorchServe's workflow calls: versions and node scaling.

Shaped like TorchServe's model versioning and scale calls (``GET /models/{name}/all``,
``PUT /models/{name}/{version}/set-default``, ``DELETE /models/{name}/{version}``,
``PUT /models/{name}?min_worker=...``), for workflows:

- ``GET /workflows/{name}/all``: the describe entry of every version;
- ``GET|DELETE /workflows/{name}/{version}``: describe or unregister one version;
- ``PUT /workflows/{name}/{version}/set-default``: make it the one ``/wfpredict/{name}`` serves;
- ``GET|PUT /workflows/{name}/nodes/{node}``: a node's live state, or scale it
  (``min_worker``, ``max_worker``, ``batch_size``, ``max_batch_delay``, optional ``version``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from wfserve.kernel.errors import BadRequest
from wfserve.kernel.errors import ModelNotFound
from wfserve.kernel.lifecycle import scale_node
from wfserve.kernel.lifecycle import set_default_version
from wfserve.kernel.lifecycle import unregister_workflow
from wfserve.plugins.api.management import _send
from wfserve.plugins.api.management import describe
from wfserve.plugins.api.management import node_view

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

#: query parameter -> (executor keyword, smallest value allowed)
SCALE_PARAMS = {
    "min_worker": ("min_workers", 1),
    "max_worker": ("max_workers", 1),
    "batch_size": ("batch_size", 1),
    "max_batch_delay": ("max_batch_delay", 0),
}


class _Resource:
    __slots__ = ("kernel",)

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel


class WorkflowVersions(_Resource):
    """``/workflows/{name}/all``: every version, ascending, each with ``isDefault``."""

    __slots__ = ()

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        entries, default = self.kernel.registry.versions(name)
        _send(resp, [describe(e, e.version == default) for e in entries])


class WorkflowVersion(_Resource):
    """``/workflows/{name}/{version}``: describe (GET) or unregister (DELETE) one version."""

    __slots__ = ()

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str,
               version: str) -> None:
        entry = self.kernel.registry.get(name, version)
        _, default = self.kernel.registry.versions(name)
        _send(resp, [describe(entry, version == default)])

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str,
                  version: str) -> None:
        unregister_workflow(self.kernel, name, version)
        _send(resp, {"status": f'Workflow "{name}" version "{version}" unregistered'})


class DefaultVersion(_Resource):
    """``/workflows/{name}/{version}/set-default``: TorchServe's answer, for a workflow."""

    __slots__ = ()

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str,
               version: str) -> None:
        set_default_version(self.kernel, name, version)
        _send(resp, {"status": f'Default version successfully updated for workflow "{name}" '
                               f'to "{version}"'})


class NodeScale(_Resource):
    """``/workflows/{name}/nodes/{node}``: live node state (GET) and the scale call (PUT).

    Scaling is synchronous: new workers are loaded before the answer, surplus ones retire when
    idle, in-flight requests are never dropped.
    """

    __slots__ = ()

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, node: str) -> None:
        entry = self.kernel.registry.get(name, req.get_param("version") or None)
        live = entry.executor.describe().nodes.get(node)
        if live is None:
            raise ModelNotFound(f"Model not found: {name}__{node}", workflow=name, node=node)
        _send(resp, node_view(live))

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str, node: str) -> None:
        values = scale_values(req)
        live = scale_node(self.kernel, name, node, req.get_param("version") or None, **values)
        _send(resp, {"status": (
            f"Workflow node {name}__{node} scaled: minWorkers {live.min_workers}, "
            f"maxWorkers {live.max_workers}, batchSize {live.batch_size}, "
            f"maxBatchDelay {live.max_batch_delay}"
        )})


def scale_values(req: falcon.Request) -> dict[str, int | None]:
    """The scale call's parameters as executor keywords; strict, unlike TorchServe's parsing.

    :raises BadRequest: a value is not an integer or is too small, ``min_worker`` exceeds
        ``max_worker``, or no parameter is given.
    """
    values: dict[str, int | None] = {}
    for param, (key, least) in SCALE_PARAMS.items():
        raw = req.get_param(param)
        if raw is None or raw == "":
            values[key] = None
            continue
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{param} must be an integer, got {raw!r}") from None
        if value < least:
            raise BadRequest(f"{param} must be at least {least}, got {value}")
        values[key] = value
    lo, hi = values["min_workers"], values["max_workers"]
    if lo is not None and hi is not None and lo > hi:
        raise BadRequest(f"min_worker ({lo}) must not exceed max_worker ({hi})")
    if all(v is None for v in values.values()):
        raise BadRequest("Nothing to scale: give min_worker, max_worker, batch_size or "
                         "max_batch_delay")
    return values
