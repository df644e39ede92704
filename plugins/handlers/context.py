"""The ``context`` a handler receives: duck-compatible with TorchServe's ``ts.context.Context``.

It is a compatibility view built at the handler boundary from typed data (the node's
:class:`~kernel.spec.NodeConfig`, the :class:`~kernel.contracts.LoadContext`, the archive);
nothing in wfserve reads it back except per-request response status and headers, which
TorchServe ignores inside workflows too (research §3.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import yaml

from kernel.contracts import Archive
from kernel.contracts import LoadContext
from kernel.contracts import RowMeta
from kernel.spec import NodeSpec

SERVER_NAME = "MMS"  # what TorchServe reports in system_properties["server_name"]
SERVER_VERSION = "0.12.0"


@dataclass
class Metric:
    """One recorded metric (name, value, unit, dimensions)."""

    name: str
    value: float
    unit: str = ""
    dimensions: Sequence[Any] = ()
    kind: str = "gauge"

    def update(self, value: float, request_id: str | None = None,
               dimensions: Sequence[Any] | None = None) -> None:
        """Replace the value (TorchServe's ``Metric.update``)."""
        self.value = value

    def add_or_update(self, value: float, dimension_values: Sequence[Any] = (),
                      request_id: str = "") -> None:
        """Replace the value (TorchServe's ``Metric.add_or_update``)."""
        self.value = value


@dataclass
class MetricsCache:
    """A small stand-in for TorchServe's metrics cache: handlers may record, nobody fails."""

    metrics: dict[str, Metric] = field(default_factory=dict)

    def add_metric(self, name: str, value: float = 0, unit: str = "",
                   idx: Any = None, dimensions: Sequence[Any] | None = None,
                   metric_type: Any = "gauge", **_: Any) -> Metric:
        """Record (or update) a metric and return it."""
        metric = self.metrics.get(name)
        if metric is None:
            metric = self.metrics[name] = Metric(name, value, unit, dimensions or (),
                                                 str(metric_type))
        else:
            metric.value = value
        return metric

    def add_counter(self, name: str, value: float = 1, idx: Any = None,
                    dimensions: Sequence[Any] | None = None, **_: Any) -> Metric:
        """Add ``value`` to a counter."""
        previous = self.metrics[name].value if name in self.metrics else 0
        return self.add_metric(name, previous + value, "count", idx, dimensions, "counter")

    def add_time(self, name: str, value: float, idx: Any = None, unit: str = "ms",
                 dimensions: Sequence[Any] | None = None, **_: Any) -> Metric:
        """Record a duration."""
        return self.add_metric(name, value, unit, idx, dimensions)

    def add_size(self, name: str, value: float, idx: Any = None, unit: str = "MB",
                 dimensions: Sequence[Any] | None = None, **_: Any) -> Metric:
        """Record a size."""
        return self.add_metric(name, value, unit, idx, dimensions)

    def add_percent(self, name: str, value: float, idx: Any = None,
                    dimensions: Sequence[Any] | None = None, **_: Any) -> Metric:
        """Record a percentage."""
        return self.add_metric(name, value, "percent", idx, dimensions)

    def add_error(self, name: str, value: float, dimensions: Sequence[Any] | None = None,
                  **_: Any) -> Metric:
        """Record an error count."""
        return self.add_metric(name, value, "", None, dimensions)

    def get_metric(self, metric_name: str, metric_type: Any = None) -> Metric:
        """The metric of that name, created at 0 when absent."""
        return self.metrics.get(metric_name) or self.add_metric(metric_name, 0)


class RequestProcessor:
    """Per-row request headers and response status, as TorchServe's ``RequestProcessor``."""

    def __init__(self, request_header: Mapping[str, str]) -> None:
        self._request_header = dict(request_header)
        self._status_code = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}

    def get_request_property(self, key: str) -> str | None:
        return self._request_header.get(key)

    def get_request_properties(self) -> dict[str, str]:
        return self._request_header

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self._status_code = code
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_header[key] = value

    def get_response_headers(self) -> dict[str, str]:
        return self._response_header


class Context:
    """What ``handle(data, context)`` and ``initialize(context)`` see (``ts.context.Context``)."""

    def __init__(self, model_name: str, model_dir: str, manifest: Mapping[str, Any] | None,
                 batch_size: int, gpu: int | None, model_yaml_config: Mapping[str, Any],
                 limit_max_image_pixels: bool = True) -> None:
        self.model_name = model_name
        self.manifest = manifest
        self._system_properties: dict[str, Any] = {
            "model_dir": model_dir,
            "gpu_id": gpu,
            "batch_size": batch_size,
            "server_name": SERVER_NAME,
            "server_version": SERVER_VERSION,
            "limit_max_image_pixels": limit_max_image_pixels,
        }
        self.model_yaml_config = dict(model_yaml_config)
        self.request_ids: dict[int, str] | None = None
        self.request_processor: list[RequestProcessor] | None = None
        self.metrics = MetricsCache()
        self.stopping_criteria: Any = None

    @property
    def system_properties(self) -> dict[str, Any]:
        return self._system_properties

    def begin_batch(self, meta: Sequence[RowMeta]) -> None:
        """Set the request ids and headers of the batch about to be handled."""
        self.request_ids = {i: m.request_id for i, m in enumerate(meta)}
        self.request_processor = [RequestProcessor(m.headers) for m in meta]

    def get_request_id(self, idx: int = 0) -> str | None:
        return None if self.request_ids is None else self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self._row(idx).get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self._row(idx).get_request_properties()

    def get_sequence_id(self, idx: int) -> str:
        return self.get_request_header(idx, "ts_request_sequence_id") or ""

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        if self.request_processor is not None and idx < len(self.request_processor):
            self.request_processor[idx].report_status(code, reason_phrase=phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for row in self.request_processor or []:
            row.report_status(code, reason_phrase=phrase)

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        row = self._row(idx)
        return row.get_response_status_code(), row.get_response_status_phrase()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self._row(idx).add_response_property(key, value)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self._row(idx).get_response_headers()

    def _row(self, idx: int) -> RequestProcessor:
        if self.request_processor is None:
            return RequestProcessor({})
        return self.request_processor[idx]


def model_yaml_config(archive: Archive) -> dict[str, Any]:
    """The parsed ``configFile`` of a ``.mar`` (``{}`` when none, unreadable or not a map)."""
    if archive.kind != "mar" or not archive.config_file:
        return {}
    try:
        data = yaml.safe_load(archive.path(archive.config_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def build_context(node: NodeSpec, archive: Archive, load: LoadContext) -> Context:
    """The TorchServe ``Context`` for one worker of ``node``.

    ``model_dir`` is the archive's folder (the extracted ``.war`` for a function node, as in
    TorchServe); ``manifest`` is the ``.mar`` manifest, None for a function node; the batch
    size is the node's; ``model_name`` is the worker's (``<workflow>__<node>``).
    """
    is_model = node.kind == "model"
    return Context(
        model_name=load.model_name,
        model_dir=str(archive.root),
        manifest=dict(archive.manifest) if is_model else None,
        batch_size=node.config.batch_size,
        gpu=load.gpu_id,
        model_yaml_config=model_yaml_config(archive) if is_model else {},
    )
