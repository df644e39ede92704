"""The built-in routes of each surface (a ``wfserve_add_routes`` implementation)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

import falcon
import prometheus_client

from wfserve.plugins.api.inference import Ping
from wfserve.plugins.api.inference import WorkflowPrediction
from wfserve.plugins.api.management import ModelCollection
from wfserve.plugins.api.management import ModelItem
from wfserve.plugins.api.management import WorkflowCollection
from wfserve.plugins.api.management import WorkflowItem
from wfserve.plugins.api.model_call import NodeExplanation
from wfserve.plugins.api.model_call import NodePrediction
from wfserve.plugins.api.openapi import ApiDescription
from wfserve.plugins.api.openapi import RootOptions
from wfserve.plugins.api.versions import DefaultVersion
from wfserve.plugins.api.versions import NodeScale
from wfserve.plugins.api.versions import WorkflowVersion
from wfserve.plugins.api.versions import WorkflowVersions

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel


class Metrics:
    """``/metrics``: Prometheus text exposition of the process's registry."""

    __slots__ = ()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Prometheus text exposition (the metrics plugin replaces this with its registry)."""
        resp.content_type = prometheus_client.CONTENT_TYPE_LATEST
        resp.data = prometheus_client.generate_latest()


def add_routes(app: falcon.App, kernel: Kernel, surface: str) -> None:
    """Add the routes TorchServe serves on ``surface``."""
    routes: dict[str, list[tuple[str, Any]]] = {
        "inference": [
            ("/ping", Ping(kernel)),
            ("/wfpredict/{name}", WorkflowPrediction(kernel)),
            ("/wfpredict/{name}/{version}", WorkflowPrediction(kernel)),
            ("/predictions/{name}", NodePrediction(kernel)),
            ("/predictions/{name}/{version}", NodePrediction(kernel)),
            ("/predictions/{name}/{version}/{url_path:path}", NodePrediction(kernel)),
            ("/explanations/{name}", NodeExplanation(kernel)),
            ("/explanations/{name}/{version}", NodeExplanation(kernel)),
            ("/explanations/{name}/{version}/{url_path:path}", NodeExplanation(kernel)),
        ],
        "management": [
            ("/workflows", WorkflowCollection(kernel)),
            ("/workflows/{name}", WorkflowItem(kernel)),
            ("/workflows/{name}/all", WorkflowVersions(kernel)),
            ("/workflows/{name}/nodes/{node}", NodeScale(kernel)),
            ("/workflows/{name}/{version}", WorkflowVersion(kernel)),
            ("/workflows/{name}/{version}/set-default", DefaultVersion(kernel)),
            ("/models", ModelCollection(kernel)),
            ("/models/{name}", ModelItem(kernel)),
            ("/models/{name}/{version}", ModelItem(kernel)),
        ],
        "metrics": [("/metrics", Metrics())],
    }
    routes[surface] = [*routes.get(surface, []), ("/api-description", ApiDescription(app)),
                       ("/", RootOptions(app))]
    for path, resource in routes[surface]:
        app.add_route(path, resource)
