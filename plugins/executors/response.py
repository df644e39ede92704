"""The HTTP body of a workflow answer, built from the leaf outputs as TorchServe builds it.

TorchServe (``WorkflowManager.predict``): one leaf -> its bytes unchanged; several leaves -> a
pretty-printed JSON object ``{leaf: <leaf output parsed as JSON>, ...}`` plus a trailing
newline, where every leaf output must parse as a JSON *object* (else a 500).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from wfserve.kernel.contracts import PredictResult
from wfserve.kernel.contracts import Serializer
from wfserve.kernel.errors import WfserveError

SerializerLookup = Callable[[Any], Serializer]


def to_bytes(obj: Any, serializer_lookup: SerializerLookup | None = None) -> bytes:
    """One output as bytes with TorchServe's rules (bytes as is, str UTF-8, tensor, JSON)."""
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, bytearray):
        return bytes(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if serializer_lookup is None:
        from wfserve.plugins.serializers import for_object

        serializer_lookup = for_object
    return serializer_lookup(obj).serialize(obj)


def render_response(
    result: PredictResult, serializer_lookup: SerializerLookup | None = None
) -> bytes:
    """The response body for ``result``.

    :param result: the executor's result; ``outputs`` is ``{leaf: output}`` (bytes in
        compatibility mode, objects in typed mode).
    :param serializer_lookup: finds the encoder of an object, e.g.
        ``lambda obj: kernel.hooks.serializer("", obj)``; defaults to TorchServe's rules.
    :raises WfserveError: (500) no leaf output, or, with several leaves, a leaf whose output is
        not a JSON object.
    """
    outputs = result.outputs
    if not outputs:
        raise WfserveError("Workflow inference request failed!")
    if len(outputs) == 1:
        return to_bytes(next(iter(outputs.values())), serializer_lookup)
    merged: dict[str, Any] = {}
    for leaf, output in outputs.items():
        data = to_bytes(output, serializer_lookup)
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        if not isinstance(parsed, dict):
            raise WfserveError(
                f"Workflow with several leaves: the output of leaf node '{leaf}' is not a JSON "
                "object, so the leaf outputs cannot be merged",
                node=leaf,
            )
        merged[leaf] = parsed
    return (json.dumps(merged, indent=2) + "\n").encode("utf-8")
