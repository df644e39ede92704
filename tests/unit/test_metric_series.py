"""The request-path counters and histograms: exact across threads, and exposed exactly as
prometheus-client's own Counter and Histogram expose the same values."""

import threading

import prometheus_client
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from wfserve.plugins.metrics.series import Counter
from wfserve.plugins.metrics.series import Histogram

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


def samples(registry, *, created=False):
    text = prometheus_client.generate_latest(registry).decode()
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                  for f in text_string_to_metric_families(text) for s in f.samples
                  if created or not s.name.endswith("_created"))


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]),
                          st.one_of(st.sampled_from(BUCKETS), st.floats(0, 20))), max_size=40))
def test_exposition_matches_prometheus_client(observations):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    h = Histogram("lat_seconds", "Latency.", ("wf",), BUCKETS, registry=ours)
    c = Counter("calls", "Calls.", ("wf",), registry=ours)
    ph = prometheus_client.Histogram("lat_seconds", "Latency.", ("wf",), buckets=BUCKETS,
                                     registry=theirs)
    pc = prometheus_client.Counter("calls", "Calls.", ("wf",), registry=theirs)
    for wf, value in observations:
        h.labels(wf).observe(value)
        ph.labels(wf).observe(value)
        c.labels(wf).inc(value)
        pc.labels(wf).inc(value)
    mine, reference = samples(ours), samples(theirs)
    assert [s[:2] for s in mine] == [s[:2] for s in reference]
    assert [s[2] for s in mine] == pytest.approx([s[2] for s in reference])


def test_a_value_on_a_bound_counts_in_that_bucket():
    registry = CollectorRegistry()
    h = Histogram("x", "X.", ("n",), BUCKETS, registry=registry)
    h.labels("1").observe(0.01)
    found = {dict(labels)["le"]: v for name, labels, v in samples(registry)
             if name == "x_bucket"}
    assert found == {"0.001": 0, "0.01": 1, "0.1": 1, "1.0": 1, "10.0": 1, "+Inf": 1}


def test_updates_from_many_threads_are_exact():
    c = Counter("n", "N.", ("k",))
    h = Histogram("h", "H.", ("k",), BUCKETS)

    def work():
        for i in range(5000):
            c.labels("x").inc()
            h.labels("x").observe(i % 3)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.labels("x").value == 40000
    counts, total = h.labels("x").snapshot()
    assert sum(counts) == 40000 and total == 8 * sum(i % 3 for i in range(5000))


def test_a_restricted_registry_finds_the_families_by_name():
    registry = CollectorRegistry()
    Counter("calls", "Calls.", ("wf",), registry=registry).labels("a").inc(2)
    Histogram("lat", "L.", ("wf",), BUCKETS, registry=registry).labels("a").observe(1)
    text = prometheus_client.generate_latest(registry.restricted_registry(["calls_total"]))
    assert b'calls_total{wf="a"} 2.0' in text and b"lat_" not in text


def test_bad_use_is_refused():
    with pytest.raises(ValueError, match="increasing"):
        Histogram("h", "H.", (), (1.0, 0.5))
    with pytest.raises(ValueError, match="expected labels"):
        Counter("c", "C.", ("a", "b")).labels("only-one")
    with pytest.raises(ValueError, match="non-negative"):
        Counter("c", "C.", ()).labels().inc(-1)
