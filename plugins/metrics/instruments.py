"""The metrics of one server: a private Prometheus registry and its instruments.

wfserve-native metrics (seconds, per workflow and per node)::

    wfserve_workflow_requests_total{workflow}            requests finished, any outcome
    wfserve_workflow_errors_total{workflow,type}         failed requests by error class
    wfserve_workflow_duration_seconds{workflow}          end-to-end latency (histogram)
    wfserve_node_requests_total{workflow,node}           rows run by the node's handler
    wfserve_node_errors_total{workflow,node,type}        handler calls that raised, by class
    wfserve_node_duration_seconds{workflow,node}         handler call (one batch) latency
    wfserve_node_queue_seconds{workflow,node}            wait before a request's node ran
    wfserve_node_batch_size{workflow,node}               rows per handler call (histogram)
    wfserve_node_retries_total{workflow,node}            extra attempts a request needed
    wfserve_node_timeouts_total{workflow,node}           requests failed by an attempt timeout
    wfserve_request_timeouts_total{workflow}             requests past their own deadline
    wfserve_node_workers{workflow,node,status}           workers READY/BUSY/UNRESPONSIVE now
    wfserve_node_queue_length{workflow,node}             requests waiting for the node now
    wfserve_node_deadline_drops_total{workflow,node}     inputs dropped unrun, past deadline
    wfserve_http_requests_total{surface,status}          HTTP answers by status class

TorchServe's names, per node with ``model_name="<wf>__<node>"`` as TorchServe labels workflow
nodes: ``ts_inference_requests_total``, ``ts_inference_latency_microseconds`` and
``ts_queue_latency_microseconds`` (cumulative, exposed untyped under their exact names).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client import GCCollector
from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from wfserve.kernel.contracts import ExecutorState
from wfserve.plugins.metrics.series import Counter
from wfserve.plugins.metrics.series import Histogram

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)
WF, NODE = ("workflow",), ("workflow", "node")


class TorchServeCounters(Collector):
    """TorchServe's per-model counters, under TorchServe's exact metric names."""

    NAMES = {
        "ts_inference_requests_total": "Total number of inference requests.",
        "ts_inference_latency_microseconds": "Cumulative inference duration in microseconds",
        "ts_queue_latency_microseconds": "Cumulative queue duration in microseconds",
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], dict[str, float]] = {}
        self.hostname = socket.gethostname()

    def add(self, model: str, version: str, requests: float, latency_us: float,
            queue_us: float) -> None:
        """Count one request to ``model`` (``<wf>__<node>``) and add its durations."""
        with self._lock:
            row = self._values.setdefault((model, version), dict.fromkeys(self.NAMES, 0.0))
            row["ts_inference_requests_total"] += requests
            row["ts_inference_latency_microseconds"] += latency_us
            row["ts_queue_latency_microseconds"] += queue_us

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            rows = {k: dict(v) for k, v in self._values.items()}
        for name, doc in self.NAMES.items():
            metric = Metric(name, doc, "unknown")
            for (model, version), row in sorted(rows.items()):
                metric.add_sample(name, {"model_name": model, "model_version": version,
                                         "hostname": self.hostname}, row[name])
            yield metric


class LiveState(Collector):
    """Workers by status, queue lengths and deadline drops, read from the executors at scrape
    time (the drops count since the workflow's executor started)."""

    def __init__(self, describe_all: Callable[[], list[tuple[str, ExecutorState]]]) -> None:
        self.describe_all = describe_all

    def collect(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily("wfserve_node_workers", "Workers of a node by status.",
                                    labels=["workflow", "node", "status"])
        queued = GaugeMetricFamily("wfserve_node_queue_length",
                                   "Requests waiting for a node's workers.",
                                   labels=["workflow", "node"])
        drops = CounterMetricFamily("wfserve_node_deadline_drops",
                                    "Inputs dropped before a node's handler ran, their request "
                                    "being past its deadline.", labels=["workflow", "node"])
        for workflow, described in self.describe_all():
            for node, info in described.nodes.items():
                counts = {"READY": 0, "BUSY": 0, "UNRESPONSIVE": 0}
                for worker in info.workers:
                    counts[worker.status] = counts.get(worker.status, 0) + 1
                for status, n in counts.items():
                    workers.add_metric([workflow, node, status], n)
                queued.add_metric([workflow, node], float(info.queued))
                drops.add_metric([workflow, node], float(info.deadline_drops))
        yield workers
        yield queued
        yield drops


class Metrics:
    """Every instrument of one server, on its own :class:`CollectorRegistry`."""

    def __init__(self, describe_all: Callable[[], list[tuple[str, ExecutorState]]]) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("wfserve_workflow_requests", "Workflow requests finished.",
                                WF, registry=r)
        self.errors = Counter("wfserve_workflow_errors", "Workflow requests failed, by error.",
                              (*WF, "type"), registry=r)
        self.duration = Histogram("wfserve_workflow_duration_seconds",
                                  "End-to-end workflow request latency.", WF,
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.node_requests = Counter("wfserve_node_requests", "Rows run by a node's handler.",
                                     NODE, registry=r)
        self.node_errors = Counter("wfserve_node_errors", "Handler calls that raised, by class.",
                                   (*NODE, "type"), registry=r)
        self.node_duration = Histogram("wfserve_node_duration_seconds",
                                       "Latency of one handler call (one batch).", NODE,
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.node_queue = Histogram("wfserve_node_queue_seconds",
                                    "Wait between a node being due and running.", NODE,
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("wfserve_node_batch_size", "Rows per handler call.", NODE,
                                    buckets=BATCH_BUCKETS, registry=r)
        self.retries = Counter("wfserve_node_retries", "Extra attempts requests needed.", NODE,
                               registry=r)
        self.node_timeouts = Counter("wfserve_node_timeouts",
                                     "Requests failed because a node attempt timed out.", NODE,
                                     registry=r)
        self.request_timeouts = Counter("wfserve_request_timeouts",
                                        "Requests that ran past their deadline.", WF,
                                        registry=r)
        self.http = Counter("wfserve_http_requests", "HTTP answers by surface and status class.",
                            ("surface", "status"), registry=r)
        self.torchserve = TorchServeCounters()
        r.register(self.torchserve)
        r.register(LiveState(describe_all))
        ProcessCollector(registry=r)
        GCCollector(registry=r)
