"""A handler call reported through ``wfserve_handler_ran`` (one that ran in a Ray actor) is
recorded exactly as the same call of a handler wrapped in this process."""

import contextlib

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from wfserve.kernel.contracts import RowMeta
from wfserve.kernel.core import Kernel
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings
from wfserve.plugins.metrics import METRICS
from wfserve.plugins.metrics.handler import InstrumentedHandler
from wfserve.plugins.metrics.instruments import Metrics

#: the handler series, less what depends on the clock (duration's sum and buckets)
SERIES = ("wfserve_node_requests_total", "wfserve_node_errors_total",
          "wfserve_node_batch_size_bucket", "wfserve_node_batch_size_count",
          "wfserve_node_batch_size_sum", "wfserve_node_duration_seconds_count")


def handler_samples(metrics):
    text = prometheus_client.generate_latest(metrics.registry).decode()
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                  for f in text_string_to_metric_families(text) for s in f.samples
                  if s.name in SERIES)


def test_a_reported_call_is_recorded_as_a_wrapped_one():
    def handler(batch, meta):
        if any(row.get("fail") for row in batch):
            raise ValueError("bad row")
        return batch

    wrapped_metrics = Metrics(lambda: [])
    wrapped = InstrumentedHandler(handler, "wf", "m1", 0, wrapped_metrics)
    batches = [[{}], [{}, {}, {}], [{}, {"fail": True}]]
    for batch in batches:
        with contextlib.suppress(ValueError):
            wrapped(batch, [RowMeta(str(i), {}) for i in range(len(batch))])

    settings = Settings()
    pm = make_plugin_manager(settings, builtin=("wfserve.plugins.metrics",),
                             env={"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    kernel = Kernel.create(settings, pm=pm)
    kernel.hooks.startup(kernel)  # the prepare phase makes the server's metrics
    reported_metrics = kernel.stash[METRICS].metrics
    for batch in batches:
        error = "ValueError" if any(row.get("fail") for row in batch) else None
        kernel.hooks.handler_ran(workflow="wf", node="m1", rows=len(batch), seconds=0.001,
                                 error=error)

    expected = handler_samples(wrapped_metrics)
    assert ("wfserve_node_requests_total", (("node", "m1"), ("workflow", "wf")), 6.0) in expected
    assert ("wfserve_node_errors_total", (("node", "m1"), ("type", "ValueError"),
                                          ("workflow", "wf")), 1.0) in expected
    assert handler_samples(reported_metrics) == expected

