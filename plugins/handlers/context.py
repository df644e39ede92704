"""The ``context`` a handler receives: duck-compatible with TorchServe's ``ts.context.Context``.

It is a compatibility view built at the handler boundary from typed data (the node's
:class:`~wfserve.kernel.spec.NodeConfig`, the :class:`~wfserve.kernel.contracts.LoadContext`, the
archive, the
batch's :class:`~wfserve.kernel.contracts.RowMeta`). Per batch, as ``ts/service.py`` does, each row
gets a :class:`RequestProcessor` holding TorchServe's per-request header dict
(:func:`request_header`) and the status and headers the handler sets for its answer, which
:meth:`Context.record_responses` copies back into ``RowMeta.response``. Request ids are dashed
UUIDs (:func:`handler_request_id`); ``metrics`` is TorchServe's metrics cache
(:mod:`wfserve.plugins.handlers.metrics`).
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import yaml

from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import LoadContext
from wfserve.kernel.contracts import RowMeta
from wfserve.kernel.spec import NodeSpec
from wfserve.plugins.handlers.metrics import MetricsCache
from wfserve.plugins.handlers.settings import HandlerSettings

SERVER_NAME = "MMS"  # what TorchServe reports in system_properties["server_name"]
SERVER_VERSION = "0.12.0"


#: the namespace of the dashed UUIDs made from request ids that are not UUIDs
REQUEST_ID_NAMESPACE = uuid.UUID("5b1f0e0e-54a4-4b55-9c1e-7766f5e2a0d1")


@functools.lru_cache(maxsize=4096)
def handler_request_id(request_id: str) -> str:
    """The request id a handler sees: a dashed UUID, as TorchServe's are.

    wfserve's own ids (32 hex digits, the ``X-Request-ID`` of responses and logs) and client
    ids that are UUIDs are shown dashed (``uuid.UUID(id)``); any other client id is turned into
    a name-based UUID (``uuid5``), the same for the same id.
    """
    try:
        return str(uuid.UUID(request_id))
    except ValueError:
        return str(uuid.uuid5(REQUEST_ID_NAMESPACE, request_id))


def request_header(row: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """TorchServe's per-request header dict (``Service.retrieve_data_for_inference``).

    One entry ``{name: {"content-type": ct}}`` per input parameter (``ct`` from the row's
    ``content_types`` when it is a :class:`~wfserve.kernel.contracts.InputRow`, else ``""``), then
    the request's headers, written after them: a header named like a parameter (names compared
    without case) replaces it.
    """
    types: Mapping[str, str] = getattr(row, "content_types", None) or {}
    out: dict[str, Any] = {name: {"content-type": types.get(name, "")} for name in row}
    if out and headers:
        lowered = {name.lower() for name in headers}
        for name in [n for n in out if n.lower() in lowered]:
            del out[name]
    out.update(headers)
    return out


class RequestProcessor:
    """Per-row request headers and response status, as TorchServe's ``RequestProcessor``.

    Header names are looked up as given first, then without case: behind WSGI the client's
    spelling is lost, so headers have their canonical names (``Content-Type``).
    :meth:`for_row` builds the header dict only when a handler first reads it.
    """

    __slots__ = ("_header", "_reason_phrase", "_response_header", "_source", "_status_code")

    def __init__(self, request_header: dict[str, Any] | None = None,
                 source: tuple[Mapping[str, Any], Mapping[str, str]] | None = None) -> None:
        self._header = request_header
        self._source = source
        self._status_code = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}

    @classmethod
    def for_row(cls, row: Mapping[str, Any], headers: Mapping[str, str]) -> RequestProcessor:
        """The processor of one input row; its header dict is :func:`request_header`."""
        return cls(None, (row, headers))

    @property
    def _request_header(self) -> dict[str, Any]:
        if self._header is None:  # PERF: most handlers never read their headers
            row, headers = self._source or ({}, {})
            self._header = request_header(row, headers)
        return self._header

    def answer_set(self) -> bool:
        """Whether the handler set anything for this row's answer."""
        return (self._status_code != 200 or self._reason_phrase is not None
                or bool(self._response_header))

    def get_request_property(self, key: str) -> Any:
        """The header (or parameter entry) ``key``, matched exactly, else without case."""
        value = self._request_header.get(key)
        if value is None and isinstance(key, str):
            wanted = key.lower()
            for name, found in self._request_header.items():
                if name.lower() == wanted:
                    return found
        return value

    def get_request_properties(self) -> dict[str, Any]:
        """The whole per-request header dict."""
        return self._request_header

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        """Set the status of this row's answer."""
        self._status_code = code
        self._reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        """The status set for this row's answer (200 unless set)."""
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        """The reason phrase set for this row's answer (None unless set)."""
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        """Set a header of this row's answer (the name kept as written)."""
        self._response_header[key] = value

    def get_response_headers(self) -> dict[str, str]:
        """The headers set for this row's answer."""
        return self._response_header

    def get_response_header(self, key: str) -> str | None:
        """One header set for this row's answer."""
        return self._response_header.get(key)


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
        self.metrics = MetricsCache(model_name)
        self.metrics.set_request_ids(str(uuid.uuid4()))  # as TorchServe's loader, for load time
        self.stopping_criteria: Any = None
        self.header_key_sequence_id = os.getenv("TS_REQUEST_SEQUENCE_ID",
                                                "ts_request_sequence_id")
        self.header_key_sequence_start = os.getenv("TS_REQUEST_SEQUENCE_START",
                                                   "ts_request_sequence_start")
        self.header_key_sequence_end = os.getenv("TS_REQUEST_SEQUENCE_END",
                                                 "ts_request_sequence_end")

    @property
    def system_properties(self) -> dict[str, Any]:
        """``model_dir``, ``gpu_id``, ``batch_size``, ``server_name``, ``server_version``,
        ``limit_max_image_pixels``."""
        return self._system_properties

    def begin_batch(self, rows: Sequence[Mapping[str, Any]], meta: Sequence[RowMeta]) -> None:
        """Set the request ids, request headers and fresh response state of the batch about to
        be handled (``rows`` as the executor built them, before any conversion)."""
        if len(rows) != len(meta):
            raise ValueError(f"{len(rows)} rows but {len(meta)} row metas")
        ids: dict[int, str] = {}
        processors: list[RequestProcessor] = []
        for i, row in enumerate(meta):
            ids[i] = handler_request_id(row.request_id)
            processors.append(RequestProcessor(None, (rows[i], row.headers)))
        self.request_ids = ids
        self.request_processor = processors
        self.metrics.set_request_ids(ids)

    def record_responses(self, meta: Sequence[RowMeta]) -> None:
        """Copy what the handler set for each row's answer (status, phrase, headers as written)
        into ``meta[i].response``; a row whose answer the handler left alone is left alone."""
        for processor, row in zip(self.request_processor or (), meta, strict=False):
            if (processor._status_code == 200 and processor._reason_phrase is None
                    and not processor._response_header):
                continue  # PERF: nothing set, nothing to copy
            response = row.response
            response.status = processor.get_response_status_code()
            response.phrase = processor.get_response_status_phrase()
            response.headers = dict(processor.get_response_headers())

    def get_request_id(self, idx: int = 0) -> str | None:
        """The dashed UUID of row ``idx`` (see :func:`handler_request_id`)."""
        return None if self.request_ids is None else self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> Any:
        """One request header (or parameter entry) of row ``idx``, matched without case."""
        return self._row(idx).get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, Any]:
        """Row ``idx``'s per-request header dict (see :func:`request_header`)."""
        return self._row(idx).get_request_properties()

    def get_sequence_id(self, idx: int) -> str | None:
        """The ``ts_request_sequence_id`` header of row ``idx`` (None when absent)."""
        return self._row(idx).get_request_property(self.header_key_sequence_id)

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        """Set the status of row ``idx``'s answer."""
        if self.request_processor is not None and idx < len(self.request_processor):
            self.request_processor[idx].report_status(code, reason_phrase=phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        """Set the status of every row's answer."""
        for row in self.request_processor or []:
            row.report_status(code, reason_phrase=phrase)

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        """``(code, phrase)`` set for row ``idx``'s answer."""
        row = self._row(idx)
        return row.get_response_status_code(), row.get_response_status_phrase()

    def set_response_content_type(self, idx: int, value: str) -> None:
        """Set row ``idx``'s answer's ``content-type`` header."""
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        """Row ``idx``'s answer's ``content-type`` header."""
        return self.get_response_headers(idx).get("content-type")

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        """Set one header of row ``idx``'s answer (the name kept as written)."""
        self._row(idx).add_response_property(key, value)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        """The headers set for row ``idx``'s answer."""
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
        limit_max_image_pixels=load.settings.of(HandlerSettings).limit_max_image_pixels,
    )
