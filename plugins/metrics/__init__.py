"""Metrics: per-workflow and per-node Prometheus metrics, and the ``Server-Timing`` header.

The metrics of one server are a :class:`ServerMetrics` plugin object, made in the start-up's
prepare phase (``wfserve_startup``, :mod:`wfserve.kernel.startup`), before any workflow is
registered, and kept in ``kernel.stash[METRICS]``. Its wrapper hookimpls are cross-cutting:
``wfserve_make_executor`` wraps the chosen executor (each request's outcome, latency, node
timings, retries, timeouts) and ``wfserve_load_handler`` wraps each handler (each call:
duration, batch size, rows, errors by class); the calls an engine reports through
``wfserve_handler_ran`` (handlers in Ray actors, where the wrappers do not apply) are recorded
the same way. Workers and queue lengths are read from the executors when ``/metrics`` is
scraped. The Prometheus registry is the server's own, served
on the metrics API as ``/metrics``. A kernel that was never started has no metrics: its
executors and apps are not instrumented.

With several server processes (``--workers N`` with N > 1, or 0 on several cores) a scrape
shows the whole server, whichever process answers (:mod:`wfserve.plugins.metrics.shared`):
``wfserve_preload`` makes the run's metrics folder (``<run_dir>/metrics``, 0700, emptied) in
the parent; each process writes its series through to its own files in it; ``/metrics`` merges
them all. Counters and histograms are summed over every process the server ran, including ones
that died and were replaced (a total never goes backwards); ``wfserve_node_workers`` and
``wfserve_node_queue_length`` carry a ``pid`` label, one series per live process (refreshed at
start, on workflow events, every second and on the answering process at each scrape; removed by
``wfserve_process_exited`` when a process ends); there are no ``process_*`` or ``python_gc_*``
families. With one process the output is that process's registry, as before.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import falcon
import prometheus_client

from wfserve.kernel import hookimpl
from wfserve.kernel.stash import StashKey
from wfserve.plugins.api.settings import server_processes
from wfserve.plugins.metrics.instruments import Metrics
from wfserve.plugins.metrics.shared import ProcessFiles
from wfserve.plugins.metrics.shared import prepare_folder
from wfserve.plugins.metrics.shared import process_ended

if TYPE_CHECKING:
    from wfserve.kernel.contracts import Executor
    from wfserve.kernel.contracts import ExecutorState
    from wfserve.kernel.contracts import LoadContext
    from wfserve.kernel.contracts import NodeHandler
    from wfserve.kernel.contracts import Workflow
    from wfserve.kernel.core import Kernel
    from wfserve.kernel.spec import NodeSpec


class ServerMetrics:
    """Per-server plugin object: the server's :class:`Metrics` and the hooks that feed and
    serve them."""

    def __init__(self, kernel: Kernel, folder: Path | None = None) -> None:
        """:param folder: the run's shared metrics folder (several server processes), or
            None: this process's metrics are the server's."""
        registry = kernel.registry

        def describe_all() -> list[tuple[str, ExecutorState]]:
            found = []
            for entry in registry.entries():
                try:
                    found.append((entry.name, entry.executor.describe()))
                except Exception:  # NOTE: a closing executor must not break a scrape
                    continue
            return found

        self.metrics = Metrics(describe_all, None if folder is None else ProcessFiles(folder))

    @hookimpl
    def wfserve_ready(self) -> None:
        """Several processes: publish this process's gauges now and every second after."""
        if self.metrics.publisher is not None:
            self.metrics.publisher.start()

    @hookimpl
    def wfserve_workflow_event(self, event: str) -> None:
        """Several processes: a workflow came, went, changed or was scaled; publish the gauges
        now (not on a node failure: those may come often, the refresh shows them)."""
        if self.metrics.publisher is not None and event != "node_failed":
            self.metrics.publisher.publish()

    @hookimpl
    def wfserve_shutdown(self) -> None:
        """Several processes: stop refreshing the gauges."""
        if self.metrics.publisher is not None:
            self.metrics.publisher.stop()

    @hookimpl(wrapper=True)
    def wfserve_make_executor(self, workflow: Workflow
                              ) -> Generator[None, Executor | None, Executor | None]:
        """Wrap whichever executor answered in an instrumented proxy."""
        from wfserve.plugins.metrics.executor import InstrumentedExecutor

        executor = yield
        if executor is None:
            return None
        return InstrumentedExecutor(executor, workflow.name, str(workflow.version), self.metrics)

    @hookimpl(wrapper=True)
    def wfserve_load_handler(self, node: NodeSpec, context: LoadContext
                             ) -> Generator[None, NodeHandler | None, NodeHandler | None]:
        """Wrap whichever handler answered: each call is timed and counted."""
        from wfserve.plugins.metrics.handler import InstrumentedHandler

        handler = yield
        if handler is None:
            return None
        return InstrumentedHandler(handler, context.workflow, node.name, context.worker_index,
                                   self.metrics)

    @hookimpl
    def wfserve_add_routes(self, app: Any, surface: str) -> None:
        """``/metrics`` on the metrics API (replaces the API plugin's default registry route)."""
        if surface == "metrics":
            app.add_route("/metrics", MetricsResource(self.metrics))

    @hookimpl
    def wfserve_handler_ran(self, workflow: str, node: str, rows: int, seconds: float,
                            error: str | None) -> None:
        """Record a call reported by an engine, as a wrapped handler records its own."""
        from wfserve.plugins.metrics.handler import HandlerCalls

        HandlerCalls(self.metrics, workflow, node).record(rows, seconds, error)

    @hookimpl
    def wfserve_middleware(self, surfaces: list[str]) -> list[Any] | None:
        """HTTP status counts on every app; ``Server-Timing`` on the inference API."""
        from wfserve.plugins.metrics.timing import ServerTiming

        found: list[Any] = [HttpCounter(self.metrics)]
        if "inference" in surfaces:
            found.append(ServerTiming())
        return found


METRICS = StashKey[ServerMetrics]()
#: the run's shared metrics folder, made in the parent when it forks several server processes
FOLDER = StashKey[Path]()


@hookimpl
def wfserve_preload(kernel: Kernel) -> None:
    """Several server processes: make the run's metrics folder, empty and private, before
    they are forked (each one finds it in ``kernel.stash[FOLDER]``)."""
    if server_processes(kernel.settings) > 1:
        kernel.stash[FOLDER] = prepare_folder(Path(kernel.settings.run_dir) / "metrics")


@hookimpl
def wfserve_process_exited(kernel: Kernel, pid: int) -> None:
    """A server process ended: drop its gauges from the scrape (its counts stay)."""
    folder = kernel.stash.get(FOLDER)
    if folder is not None:
        process_ended(folder, pid)


@hookimpl
def wfserve_startup(kernel: Kernel) -> None:
    """Prepare: make this server's metrics (stash and plugin), before any registration."""
    plugin = kernel.stash[METRICS] = ServerMetrics(kernel, kernel.stash.get(FOLDER))
    kernel.pm.register(plugin, name="metrics.server")


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


class HttpCounter:
    """Counts answers by surface and status class (TorchServe's Requests2XX/4XX/5XX)."""

    __slots__ = ("metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        surface = getattr(req.context, "surface", None) or "unknown"
        self.metrics.http.labels(surface, f"{resp.status_code // 100}xx").inc()
