"""Default serializers: bytes, JSON, text and torch tensors, with TorchServe's conversions.

Encoding follows ``ts/protocol/otf_message_handler.create_predict_response``: bytes pass as
they are, ``str`` becomes UTF-8, a tensor becomes ``torch.save`` bytes, anything else
``json.dumps(obj, indent=2)``. Decoding follows its ``_retrieve_input_data``: only
``application/json`` is parsed (UTF-8 text, as TorchServe decodes it first), ``text*`` becomes a
``str`` (strict UTF-8), everything else, ``+json`` types included, stays raw as a ``bytearray``
(what TorchServe's backend reads off its socket). A decoder raises when the data does not
decode; the caller then passes the raw ``bytearray`` on, as TorchServe does.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Serializer
from wfserve.plugins.serializers.pretty_json import dumps_indent2


class BytesSerializer:
    """``application/octet-stream`` and any unknown type: bytes out, a ``bytearray`` in."""

    content_type = "application/octet-stream"

    def serialize(self, obj: Any) -> bytes:
        return bytes(obj)

    def deserialize(self, data: bytes) -> Any:
        return bytearray(data)


class TextSerializer:
    """``text/*``: UTF-8 text; decoding is strict (``UnicodeDecodeError`` on bad bytes)."""

    content_type = "text/plain"

    def serialize(self, obj: Any) -> bytes:
        if isinstance(obj, bytes | bytearray):
            return bytes(obj)
        return str(obj).encode("utf-8")

    def deserialize(self, data: bytes) -> Any:
        return bytes(data).decode("utf-8")


class JsonSerializer:
    """``application/json``; encodes with indent 2 as TorchServe's backend does, decodes UTF-8
    text only (``json.loads(value.decode("utf-8"))``: a BOM or UTF-16 does not parse)."""

    content_type = "application/json"

    def serialize(self, obj: Any) -> bytes:
        if isinstance(obj, bytes | bytearray):
            return bytes(obj)
        return dumps_indent2(obj).encode("utf-8")

    def deserialize(self, data: bytes) -> Any:
        return json.loads(bytes(data).decode("utf-8"))


class TensorSerializer:
    """Torch tensors, as ``torch.save`` bytes (``application/x-torch``)."""

    content_type = "application/x-torch"

    def serialize(self, obj: Any) -> bytes:
        if isinstance(obj, bytes | bytearray):
            return bytes(obj)
        import torch

        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    def deserialize(self, data: bytes) -> Any:
        import torch

        return torch.load(io.BytesIO(data), weights_only=True)


BYTES = BytesSerializer()
TEXT = TextSerializer()
JSON = JsonSerializer()
TENSOR = TensorSerializer()


def _is_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")  # NOTE: no tensor can exist unless torch is imported
    return torch is not None and isinstance(obj, torch.Tensor)


def for_content_type(content_type: str) -> Serializer:
    """The decoder TorchServe would use for a request part of this (lower-case) media type:
    JSON for ``application/json`` only, text for ``text*``, raw bytes for every other type."""
    if content_type == "application/json":
        return JSON
    if content_type.startswith("text"):
        return TEXT
    return BYTES


def for_object(obj: Any) -> Serializer:
    """The encoder TorchServe would use for a node output of this type."""
    if isinstance(obj, bytes | bytearray):
        return BYTES
    if isinstance(obj, str):
        return TEXT
    if _is_tensor(obj):
        return TENSOR
    return JSON


@hookimpl(trylast=True)
def wfserve_serializer(content_type: str, obj: Any) -> Serializer:
    """Default implementation: bytes are decoded by content type, objects encoded by type."""
    if isinstance(obj, bytes | bytearray):
        return for_content_type(content_type)
    return for_object(obj)
