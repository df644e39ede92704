"""Metrics: per-workflow and per-node Prometheus metrics, and the ``Server-Timing`` header.

Cross-cutting, mostly as wrapper hookimpls: ``wfserve_make_executor`` wraps the chosen
executor (each request's outcome, latency, node timings, retries, timeouts), and a per-server
plugin object, registered the first time the metrics of a server are needed, wraps
``wfserve_load_handler`` (each handler call: duration, batch size, rows, errors by class) and
records the same for the calls an engine reports through ``wfserve_handler_ran`` (handlers
that run in Ray actors, where this server's wrappers do not apply). Workers and queue lengths
are read from the executors when ``/metrics`` is scraped. The registry is the server's own (in
``kernel.stash``), served on the metrics API as ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING
from typing import Any

import falcon
import prometheus_client

from kernel import hookimpl
from kernel.stash import StashKey
from plugins.metrics.instruments import Metrics

if TYPE_CHECKING:
    from kernel.contracts import Archive
    from kernel.contracts import Executor
    from kernel.contracts import ExecutorState
    from kernel.contracts import LoadContext
    from kernel.contracts import NodeHandler
    from kernel.contracts import Workflow
    from kernel.core import Kernel
    from kernel.settings import Settings
    from kernel.spec import NodeSpec

METRICS = StashKey[Metrics]()


def metrics_for(kernel: Kernel) -> Metrics:
    """This server's metrics; the first call also registers the handler-instrumenting plugin."""

    def make() -> Metrics:
        def describe_all() -> list[tuple[str, ExecutorState]]:
            found = []
            for entry in kernel.registry.entries():
                try:
                    found.append((entry.name, entry.executor.describe()))
                except Exception:  # NOTE: a closing executor must not break a scrape
                    continue
            return found

        metrics = Metrics(describe_all)
        kernel.pm.register(HandlerMetrics(metrics), name="metrics.handlers")
        return metrics

    return kernel.stash.setdefault(METRICS, make)


class HandlerMetrics:
    """Per-server plugin: records every handler call of this server's workflows, by wrapping
    each handler ``wfserve_load_handler`` returns in this process, and from the calls engines
    report through ``wfserve_handler_ran`` (handlers that run in other processes)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    @hookimpl(wrapper=True)
    def wfserve_load_handler(self, node: NodeSpec, archive: Archive, context: LoadContext
                             ) -> Generator[None, NodeHandler | None, NodeHandler | None]:
        from plugins.metrics.handler import InstrumentedHandler

        handler = yield
        if handler is None:
            return None
        return InstrumentedHandler(handler, context.workflow, node.name, context.worker_index,
                                   self.metrics)

    @hookimpl
    def wfserve_handler_ran(self, workflow: str, node: str, rows: int, seconds: float,
                            error: str | None) -> None:
        """Record a call reported by an engine, as a wrapped handler records its own."""
        from plugins.metrics.handler import HandlerCalls

        HandlerCalls(self.metrics, workflow, node).record(rows, seconds, error)


@hookimpl(wrapper=True)
def wfserve_make_executor(workflow: Workflow, settings: Settings, kernel: Kernel
                          ) -> Generator[None, Executor | None, Executor | None]:
    """Wrap whichever executor answered in an instrumented proxy."""
    from plugins.metrics.executor import InstrumentedExecutor

    metrics = metrics_for(kernel)  # NOTE: before the executor starts, so handlers get wrapped
    executor = yield
    if executor is None:
        return None
    return InstrumentedExecutor(executor, workflow.name, str(workflow.version), metrics)


@hookimpl
def wfserve_startup(kernel: Kernel) -> None:
    """Make the metrics before any workflow is registered."""
    metrics_for(kernel)


class MetricsResource:
    """``/metrics``: Prometheus text exposition of this server's metrics."""

    __slots__ = ("metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    openapi: dict[str, Any] = {"query": {"name[]": "only these metric families"}}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Prometheus text exposition of the workflow, node and TorchServe metrics."""
        names = req.get_param_as_list("name[]")
        registry: Any = self.metrics.registry
        if names:
            registry = registry.restricted_registry(names)
        resp.content_type = prometheus_client.CONTENT_TYPE_LATEST
        resp.data = prometheus_client.generate_latest(registry)


@hookimpl
def wfserve_add_routes(app: Any, kernel: Kernel, surface: str) -> None:
    """``/metrics`` on the metrics API (replaces the API plugin's default registry route)."""
    if surface == "metrics":
        app.add_route("/metrics", MetricsResource(metrics_for(kernel)))


@hookimpl
def wfserve_middleware(kernel: Kernel, surfaces: list[str]) -> list[Any] | None:
    """HTTP status counts on every app; ``Server-Timing`` on the inference API."""
    from plugins.metrics.timing import ServerTiming

    found: list[Any] = [HttpCounter(metrics_for(kernel))]
    if "inference" in surfaces:
        found.append(ServerTiming())
    return found


class HttpCounter:
    """Counts answers by surface and status class (TorchServe's Requests2XX/4XX/5XX)."""

    __slots__ = ("metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        surface = getattr(req.context, "surface", None) or "unknown"
        self.metrics.http.labels(surface, f"{resp.status_code // 100}xx").inc()
