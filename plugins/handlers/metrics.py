"""TorchServe's metrics cache as handlers see it (``context.metrics``).

The same methods, signatures, return values and errors as TorchServe 0.12.0's
``ts/metrics/metric_cache_abstract.py``, ``metric_cache_yaml_impl.py`` and ``caching_metric.py``,
so handler code written for TorchServe runs unchanged:

- ``add_metric``, ``add_counter``, ``add_time``, ``add_size``, ``add_percent`` and
  ``add_error`` record a value and return None; ``add_time`` takes only ``ms``/``s``
  (:class:`MetricsCacheValueError`), ``add_size`` only ``MB``/``kB``/``GB``/``B``
  (``ValueError``);
- ``get_metric(name, metric_type=MetricTypes.COUNTER)`` returns the :class:`CachingMetric` or
  raises :class:`MetricsCacheKeyError` (a ``KeyError``);
- ``add_metric_to_cache`` creates (or replaces) a metric and returns it;
- the cache starts with TorchServe's default model metrics, ``HandlerTime`` and
  ``PredictionTime`` (gauges in ms with dimensions ``ModelName`` and ``Level``).

A metric type may be this module's :class:`MetricTypes` or TorchServe's own enum (with
``wfserve[ts]`` installed): they are matched by value. Where TorchServe prints a ``[METRICS]``
line for its frontend, wfserve logs the update at debug level; handler metrics are not
exported (wfserve's own per-node metrics are, on the metrics port).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import structlog

log = structlog.get_logger(__name__)

#: TorchServe's unit names (``ts/metrics/unit.py``)
UNITS: dict[str | None, str] = {
    "ms": "Milliseconds", "s": "Seconds", "percent": "Percent", "count": "Count",
    "MB": "Megabytes", "GB": "Gigabytes", "kB": "Kilobytes", "B": "Bytes", "": "unit",
    None: "unit",
}
TIME_UNITS = ("ms", "s")
SIZE_UNITS = ("MB", "kB", "GB", "B")
#: TorchServe's default ``model_metrics`` (``ts/configs/metrics.yaml``)
DEFAULT_GAUGES = ("HandlerTime", "PredictionTime")


class MetricTypes(enum.Enum):
    """TorchServe's ``ts.metrics.metric_type_enum.MetricTypes``."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class MetricsCacheKeyError(KeyError):
    """No such metric (TorchServe's ``metric_cache_errors.MetricsCacheKeyError``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class MetricsCacheValueError(ValueError):
    """A bad value, e.g. a time unit other than ``ms``/``s``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class MetricsCacheTypeError(TypeError):
    """An argument of the wrong type (a name that is not a str, a type that is no enum)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class Dimension:
    """A ``name:value`` pair (``ts.metrics.dimension.Dimension``)."""

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value

    def __str__(self) -> str:
        return f"{self.name}:{self.value}"

    def to_dict(self) -> dict[str, Any]:
        """``{"Name": name, "Value": value}``."""
        return {"Name": self.name, "Value": self.value}


def as_metric_type(value: Any) -> MetricTypes:
    """``value`` as a :class:`MetricTypes`; TorchServe's own enum members are matched by value.

    :raises MetricsCacheTypeError: not a metric type enum member.
    """
    if isinstance(value, MetricTypes):
        return value
    if isinstance(value, enum.Enum):
        try:
            return MetricTypes(value.value)
        except ValueError:
            pass
    raise MetricsCacheTypeError("`metric_type` must be a MetricTypes enum")


class CachingMetric:
    """One metric: name, unit, dimension names, type (``ts.metrics.caching_metric``)."""

    def __init__(self, metric_name: str, unit: str, dimension_names: Sequence[str] | None = None,
                 metric_type: MetricTypes = MetricTypes.COUNTER) -> None:
        self.metric_name = metric_name
        self.unit = UNITS.get(unit, unit)
        self.dimension_names = list(dimension_names or [])
        self.metric_type = metric_type

    def add_or_update(self, value: float, dimension_values: Sequence[Any] = (),
                      request_id: str = "") -> None:
        """Record ``value``; dimension values that do not match the names, or a negative
        counter, are logged and dropped, as TorchServe does."""
        values = list(dimension_values or [])
        if len(values) != len(self.dimension_names):
            log.error("metric not updated: dimension values do not match the names",
                      metric=self.metric_name, values=values, names=self.dimension_names)
            return
        if self.metric_type is MetricTypes.COUNTER and value < 0:
            log.error("metric not updated: a counter cannot decrease", metric=self.metric_name,
                      value=value)
            return
        log.debug("handler metric", metric=self.metric_name, unit=self.unit, value=value,
                  dimensions=dict(zip(self.dimension_names, values, strict=True)),
                  type=self.metric_type.name, handler_request_id=request_id)

    def update(self, value: float, request_id: str = "",
               dimensions: Sequence[Dimension] = ()) -> None:
        """TorchServe's backwards-compatible update: replaces the dimension names."""
        self.dimension_names = [d.name for d in dimensions]
        self.add_or_update(value, [d.value for d in dimensions], request_id)


class MetricsCache:
    """TorchServe's metrics cache (``MetricsCacheYamlImpl`` with its default metrics).

    :param model_name: the ``ModelName`` dimension (``<workflow>__<node>``).
    """

    def __init__(self, model_name: str | None = None) -> None:
        self.cache: dict[MetricTypes, dict[str, CachingMetric]] = {}
        self.store: list[Any] = []
        self.request_ids: Mapping[int, str] | str | None = None
        self.model_name = model_name
        self.config_file_path: str | None = None
        self.initialize_cache()

    def initialize_cache(self) -> None:
        """Create TorchServe's default model metrics."""
        for name in DEFAULT_GAUGES:
            self.add_metric_to_cache(name, "ms", ["ModelName", "Level"], MetricTypes.GAUGE)

    def set_request_ids(self, request_ids: Mapping[int, str] | str | None) -> None:
        """The batch's request ids (``{index: id}``), for the metrics' request id."""
        self.request_ids = request_ids

    def _get_req(self, idx: Any) -> Any:
        ids = self.request_ids
        req_id: Any = ",".join(ids.values()) if isinstance(ids, Mapping) else ids
        if idx is not None and isinstance(ids, Mapping) and idx in ids:
            req_id = ids[idx]
        return req_id

    def _default_dims(self, req_id: Any, dimensions: Sequence[Dimension] | None) -> list[Dimension]:
        dims = list(dimensions or [])
        names = {d.name for d in dims}
        if req_id is not None and "ModelName" not in names:
            dims.append(Dimension("ModelName", self.model_name))
        if "Level" not in names:
            dims.append(Dimension("Level", "Error" if req_id is None else "Model"))
        return dims

    def _record(self, name: str, value: float, unit: str, idx: Any,
                dimensions: Sequence[Dimension] | None, kind: Any) -> None:
        req_id = self._get_req(idx)
        dims = self._default_dims(req_id, dimensions)
        metric = self._get_or_add_metric(name, unit, dims, as_metric_type(kind))
        metric.add_or_update(value, [d.value for d in dims], req_id)

    def add_metric(self, name: str, value: float, unit: str, idx: Any = None,
                   dimensions: Sequence[Dimension] | None = None,
                   metric_type: Any = MetricTypes.COUNTER) -> None:
        """Record a generic metric (a counter unless ``metric_type`` says otherwise)."""
        self._record(name, value, unit, idx, dimensions, metric_type)

    def add_counter(self, name: str, value: float, idx: Any = None,
                    dimensions: Sequence[Dimension] | None = None) -> None:
        """Record a counter (unit ``count``)."""
        self._record(name, value, "count", idx, dimensions, MetricTypes.COUNTER)

    def add_time(self, name: str, value: float, idx: Any = None, unit: str = "ms",
                 dimensions: Sequence[Dimension] | None = None,
                 metric_type: Any = MetricTypes.GAUGE) -> None:
        """Record a duration.

        :raises MetricsCacheValueError: ``unit`` is not ``ms`` or ``s``.
        """
        if unit not in TIME_UNITS:
            raise MetricsCacheValueError(
                "the unit for a timed metric should be one of ['ms', 's']")
        self._record(name, value, unit, idx, dimensions, metric_type)

    def add_size(self, name: str, value: float, idx: Any = None, unit: str = "MB",
                 dimensions: Sequence[Dimension] | None = None,
                 metric_type: Any = MetricTypes.GAUGE) -> None:
        """Record a size.

        :raises ValueError: ``unit`` is not ``MB``, ``kB``, ``GB`` or ``B``.
        """
        if unit not in SIZE_UNITS:
            raise ValueError("The unit for size based metric is one of ['MB','kB', 'GB', 'B']")
        self._record(name, value, unit, idx, dimensions, metric_type)

    def add_percent(self, name: str, value: float, idx: Any = None,
                    dimensions: Sequence[Dimension] | None = None,
                    metric_type: Any = MetricTypes.GAUGE) -> None:
        """Record a percentage."""
        self._record(name, value, "percent", idx, dimensions, metric_type)

    def add_error(self, name: str, value: float,
                  dimensions: Sequence[Dimension] | None = None) -> None:
        """Record an error counter (``Level: Error``, no model name)."""
        dims = self._default_dims(None, dimensions)
        metric = self._get_or_add_metric(name, "", dims, MetricTypes.COUNTER)
        metric.add_or_update(value, [d.value for d in dims])

    def _get_or_add_metric(self, name: str, unit: str, dims: Sequence[Dimension],
                           kind: MetricTypes) -> CachingMetric:
        try:
            return self.get_metric(name, kind)
        except MetricsCacheKeyError:
            return self.add_metric_to_cache(name, unit, [d.name for d in dims], kind)

    def get_metric(self, metric_name: str,
                   metric_type: Any = MetricTypes.COUNTER) -> CachingMetric:
        """The metric of that name and type.

        :raises MetricsCacheTypeError: a name that is not a str, a type that is no enum.
        :raises MetricsCacheKeyError: no such metric.
        """
        if not isinstance(metric_name, str):
            raise MetricsCacheTypeError("`metric_name` must be a str")
        kind = as_metric_type(metric_type)
        try:
            return self.cache[kind][metric_name]
        except KeyError:
            raise MetricsCacheKeyError(
                f"Metric of type '{kind}' and name '{metric_name}' doesn't exist") from None

    def add_metric_to_cache(self, metric_name: str, unit: str,
                            dimension_names: Sequence[str] | None = None,
                            metric_type: Any = MetricTypes.COUNTER) -> CachingMetric:
        """Create a metric, replacing one of the same name and type, and return it.

        :raises MetricsCacheTypeError: a name or unit that is not a str, a type that is no
            enum, dimension names that are not a list.
        """
        if not isinstance(metric_name, str):
            raise MetricsCacheTypeError("`metric_name` must be a str")
        if not isinstance(unit, str):
            raise MetricsCacheTypeError("`unit` must be a str")
        kind = as_metric_type(metric_type)
        if dimension_names and not isinstance(dimension_names, list):
            raise MetricsCacheTypeError(
                "`dimension_names` should be a list of dimension name strings")
        metric = CachingMetric(metric_name, unit, dimension_names, kind)
        self.cache.setdefault(kind, {})[metric_name] = metric
        return metric

    def cache_keys(self) -> list[str]:
        """``["<type>:<name>", ...]`` (TorchServe's testing helper)."""
        return [f"{kind.value}:{name}" for kind, metrics in self.cache.items() for name in metrics]

