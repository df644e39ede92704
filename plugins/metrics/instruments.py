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

One server process (``--workers 1``) exposes its own registry, with ``process_*`` and
``python_gc_*``. With several (:mod:`wfserve.plugins.metrics.shared`) every instrument writes
through this process's files and the exposed registry merges all processes' files: the same
families, counters and histograms summed over every process the server ran, the two gauges
with a ``pid`` label (one series per live process), and no ``process_*``/``python_gc_*``
(they would describe only the answering process).
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
from wfserve.plugins.metrics.series import Family
from wfserve.plugins.metrics.series import Histogram
from wfserve.plugins.metrics.series import Sink
from wfserve.plugins.metrics.series import sample_key
from wfserve.plugins.metrics.shared import GaugePublisher
from wfserve.plugins.metrics.shared import ProcessFiles
from wfserve.plugins.metrics.shared import SharedCollector

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

    def __init__(self, sink: Sink | None = None) -> None:
        """:param sink: where every value is written through (several processes)."""
        self.sink = sink
        self._lock = threading.Lock() if sink is None else sink.lock
        self._values: dict[tuple[str, str], dict[str, float]] = {}
        self._keys: dict[tuple[str, str], dict[str, str]] = {}
        self.hostname = socket.gethostname()

    def _labels(self, model: str, version: str) -> dict[str, str]:
        return {"model_name": model, "model_version": version, "hostname": self.hostname}

    def _row(self, model: str, version: str) -> dict[str, float]:
        """The row of ``(model, version)``, made on first use (under the lock): zeros, or
        with a sink what it holds, and the row's keys in it."""
        row = self._values.get((model, version))
        if row is None:
            row = self._values[(model, version)] = dict.fromkeys(self.NAMES, 0.0)
            if self.sink is not None:
                labels = self._labels(model, version)
                keys = self._keys[(model, version)] = {
                    name: sample_key(name, name, labels, doc) for name, doc in self.NAMES.items()}
                for name, k in keys.items():
                    row[name] = self.sink.read(k)
        return row

    def add(self, model: str, version: str, requests: float, latency_us: float,
            queue_us: float) -> None:
        """Count one request to ``model`` (``<wf>__<node>``) and add its durations."""
        with self._lock:
            row = self._row(model, version)
            row["ts_inference_requests_total"] += requests
            row["ts_inference_latency_microseconds"] += latency_us
            row["ts_queue_latency_microseconds"] += queue_us
            if self.sink is not None:
                for name, k in self._keys[(model, version)].items():
                    self.sink.write(k, row[name])

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            rows = {k: dict(v) for k, v in self._values.items()}
        for name, doc in self.NAMES.items():
            metric = Metric(name, doc, "unknown")
            for (model, version), row in sorted(rows.items()):
                metric.add_sample(name, self._labels(model, version), row[name])
            yield metric


class LiveState(Collector):
    """Workers by status, queue lengths and deadline drops, read from the executors at scrape
    time (the drops count since the workflow's executor started)."""

    def __init__(self, describe_all: Callable[[], list[tuple[str, ExecutorState]]]) -> None:
        self.describe_all = describe_all

    def describe(self) -> Iterator[Metric]:
        """Names and types only."""
        return LiveState(list).collect()

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
    """Every instrument of one server process.

    :attr:`registry` is what ``/metrics`` exposes: this process's own collectors, or, given
    ``files`` (several server processes), a registry that merges every process's files.
    :attr:`publisher` is then the one writing this process's live state and :attr:`files`
    those files (both None otherwise).
    """

    def __init__(self, describe_all: Callable[[], list[tuple[str, ExecutorState]]],
                 files: ProcessFiles | None = None) -> None:
        own = CollectorRegistry()
        self.files = files
        c = None if files is None else files.counters
        h = None if files is None else files.histograms
        self.requests = Counter("wfserve_workflow_requests", "Workflow requests finished.",
                                WF, registry=own, sink=c)
        self.errors = Counter("wfserve_workflow_errors", "Workflow requests failed, by error.",
                              (*WF, "type"), registry=own, sink=c)
        self.duration = Histogram("wfserve_workflow_duration_seconds",
                                  "End-to-end workflow request latency.", WF,
                                  buckets=LATENCY_BUCKETS, registry=own, sink=h)
        self.node_requests = Counter("wfserve_node_requests", "Rows run by a node's handler.",
                                     NODE, registry=own, sink=c)
        self.node_errors = Counter("wfserve_node_errors", "Handler calls that raised, by class.",
                                   (*NODE, "type"), registry=own, sink=c)
        self.node_duration = Histogram("wfserve_node_duration_seconds",
                                       "Latency of one handler call (one batch).", NODE,
                                       buckets=LATENCY_BUCKETS, registry=own, sink=h)
        self.node_queue = Histogram("wfserve_node_queue_seconds",
                                    "Wait between a node being due and running.", NODE,
                                    buckets=LATENCY_BUCKETS, registry=own, sink=h)
        self.batch_size = Histogram("wfserve_node_batch_size", "Rows per handler call.", NODE,
                                    buckets=BATCH_BUCKETS, registry=own, sink=h)
        self.retries = Counter("wfserve_node_retries", "Extra attempts requests needed.", NODE,
                               registry=own, sink=c)
        self.node_timeouts = Counter("wfserve_node_timeouts",
                                     "Requests failed because a node attempt timed out.", NODE,
                                     registry=own, sink=c)
        self.request_timeouts = Counter("wfserve_request_timeouts",
                                        "Requests that ran past their deadline.", WF,
                                        registry=own, sink=c)
        self.http = Counter("wfserve_http_requests", "HTTP answers by surface and status class.",
                            ("surface", "status"), registry=own, sink=c)
        self.torchserve = TorchServeCounters(None if files is None else files.untyped)
        own.register(self.torchserve)
        live = LiveState(describe_all)
        own.register(live)
        self.publisher: GaugePublisher | None = None
        if files is None:
            ProcessCollector(registry=own)
            GCCollector(registry=own)
            self.registry = own
            return
        self.publisher = GaugePublisher(files, live.collect)
        families = [m for f in vars(self).values() if isinstance(f, Family)
                    for m in f.describe()]
        families += [*TorchServeCounters().collect(), *live.describe()]
        self.registry = CollectorRegistry()
        self.registry.register(SharedCollector(files.folder, self.publisher.publish, families))
