"""Counters and histograms for the request path, exposed through prometheus-client.

``prometheus_client.Histogram.observe`` walks its buckets in a Python loop and takes a lock
per bucket and per sum; ``Counter.inc`` takes a lock per call and ``labels()`` validates and
locks per lookup. On a request path that records ~10 values per request that came to a tenth
of a small workflow's server CPU. These keep each series as plain numbers under one lock
(``bisect`` finds the bucket) and are read by a custom collector at scrape time, which
prometheus-client renders as usual: same names, ``_total``, ``_bucket{le}``, ``_sum`` and
``_count`` samples, same label names. Exact: every update holds the series' lock.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Generic
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString


class CounterSeries:
    """One labelled counter; :meth:`inc` is exact across threads."""

    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._lock:
            self.value += amount


class HistogramSeries:
    """One labelled histogram: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("_lock", "bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._lock = threading.Lock()
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose upper bound is >= it."""
        i = bisect_left(self.bounds, amount)
        with self._lock:
            self.counts[i] += 1
            self.sum += amount

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
                 registry: CollectorRegistry | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], S] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def _new(self) -> S:
        raise NotImplementedError

    def labels(self, *values: str) -> S:
        """The series of these label values (created on first use)."""
        found = self._series.get(values)
        if found is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            with self._lock:
                found = self._series.setdefault(tuple(str(v) for v in values), self._new())
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

    def _new(self) -> CounterSeries:
        return CounterSeries()

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
                 buckets: Sequence[float], registry: CollectorRegistry | None = None) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"{name}: buckets must be increasing, got {buckets}")
        super().__init__(name, documentation, labelnames, registry)

    def _new(self) -> HistogramSeries:
        return HistogramSeries(self.bounds)

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
