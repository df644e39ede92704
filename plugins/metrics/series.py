"""Counters and histograms for the request path, exposed through prometheus-client.

``prometheus_client.Histogram.observe`` walks its buckets in a Python loop and takes a lock
per bucket and per sum; ``Counter.inc`` takes a lock per call and ``labels()`` validates and
locks per lookup. On a request path that records ~10 values per request that came to a tenth
of a small workflow's server CPU. These keep each series as plain numbers under one lock
(``bisect`` finds the bucket) and are read by a custom collector at scrape time, which
prometheus-client renders as usual: same names, ``_total``, ``_bucket{le}``, ``_sum`` and
``_count`` samples, same label names. Exact: every update holds the series' lock.

With several server processes a family is given a :class:`Sink` (a process's multiprocess
file, :mod:`wfserve.plugins.metrics.shared`): each series then starts from the value stored
for it and writes every update through, under the sink's lock, for the scrape to merge.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Generic
from typing import Protocol
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString


class Sink(Protocol):
    """Where series write their values through (:class:`~wfserve.plugins.metrics.shared.
    FileSink`): a caller holds :attr:`lock` around :meth:`read` and :meth:`write`, and a
    writer around computing the new value too."""

    lock: threading.Lock

    def read(self, key: str) -> float:
        """The stored value of ``key`` (0.0 when new); the caller holds :attr:`lock`."""

    def write(self, key: str, value: float) -> None:
        """Store ``value`` for ``key``; the caller holds :attr:`lock`."""


def sample_key(family: str, sample: str, labels: dict[str, str], documentation: str) -> str:
    """The key of one sample in a sink (prometheus-client's multiprocess ``mmap_key``)."""
    return json.dumps([family, sample, labels, documentation], sort_keys=True)


class CounterSeries:
    """One labelled counter; :meth:`inc` is exact across threads."""

    __slots__ = ("_key", "_lock", "_sink", "value")

    def __init__(self, sink: Sink | None = None, key: str = "") -> None:
        self._sink = sink
        self._key = key
        self._lock = threading.Lock() if sink is None else sink.lock
        self.value = 0.0
        if sink is not None:
            with sink.lock:
                self.value = sink.read(key)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._lock:
            self.value += amount
            if self._sink is not None:
                self._sink.write(self._key, self.value)


class HistogramSeries:
    """One labelled histogram: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("_keys", "_lock", "_sink", "bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...], sink: Sink | None = None,
                 keys: Sequence[str] = ()) -> None:
        """:param keys: with a sink, the key of each bucket (``+Inf`` last), then of the sum."""
        self._lock = threading.Lock() if sink is None else sink.lock
        self._sink = sink
        self._keys = tuple(keys)
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        if sink is not None:
            with sink.lock:
                self.counts = [int(sink.read(k)) for k in self._keys[:-1]]
                self.sum = sink.read(self._keys[-1])

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose upper bound is >= it."""
        i = bisect_left(self.bounds, amount)
        with self._lock:
            self.counts[i] += 1
            self.sum += amount
            if self._sink is not None:
                self._sink.write(self._keys[i], self.counts[i])
                self._sink.write(self._keys[-1], self.sum)

    def snapshot(self) -> tuple[list[int], float]:
        """(per-bucket counts, sum), read together."""
        with self._lock:
            return list(self.counts), self.sum


#: the series type of a family
S = TypeVar("S", CounterSeries, HistogramSeries)


class Family(Collector, Generic[S]):
    """A metric name with label names; ``labels(*values)`` gives the (cached) series."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None = None, sink: Sink | None = None) -> None:
        """:param sink: where every series writes its values through (several processes)."""
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.sink = sink
        self._series: dict[tuple[str, ...], S] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def _new(self, values: tuple[str, ...]) -> S:
        raise NotImplementedError

    def labels(self, *values: str) -> S:
        """The series of these label values (created on first use)."""
        found = self._series.get(values)
        if found is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            key = tuple(str(v) for v in values)
            with self._lock:
                found = self._series.get(key)
                if found is None:
                    found = self._series[key] = self._new(key)
        return found

    def _items(self) -> list[tuple[tuple[str, ...], S]]:
        with self._lock:
            return sorted(self._series.items())

    def describe(self) -> Iterator[Metric]:
        """Name and type only (lets a restricted registry find this family by name)."""
        yield from self._families()

    def _families(self) -> Iterator[Metric]:
        raise NotImplementedError


class Counter(Family[CounterSeries]):
    """A labelled counter family, exposed as ``<name>_total``."""

    def _new(self, values: tuple[str, ...]) -> CounterSeries:
        if self.sink is None:
            return CounterSeries()
        labels = dict(zip(self.labelnames, values, strict=True))
        return CounterSeries(self.sink, sample_key(self.name, f"{self.name}_total", labels,
                                                   self.documentation))

    def _families(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in self._items():
            family.add_metric(list(values), series.value)
        yield family


class Histogram(Family[HistogramSeries]):
    """A labelled histogram family with fixed upper bounds (``+Inf`` added)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry | None = None,
                 sink: Sink | None = None) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"{name}: buckets must be increasing, got {buckets}")
        super().__init__(name, documentation, labelnames, registry, sink)

    def _new(self, values: tuple[str, ...]) -> HistogramSeries:
        if self.sink is None:
            return HistogramSeries(self.bounds)
        labels = dict(zip(self.labelnames, values, strict=True))
        uppers = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        keys = [sample_key(self.name, f"{self.name}_bucket", {**labels, "le": upper},
                           self.documentation) for upper in uppers]
        keys.append(sample_key(self.name, f"{self.name}_sum", labels, self.documentation))
        return HistogramSeries(self.bounds, self.sink, keys)

    def _families(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        uppers = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for values, series in self._items():
            counts, total = series.snapshot()
            cumulative, running = [], 0
            for upper, n in zip(uppers, counts, strict=True):
                running += n
                cumulative.append((upper, running))
            family.add_metric(list(values), cumulative, total)
        yield family
