"""What a handler's answer must be, checked once for every engine (in whichever process ran it).

A handler returns one output per row, as a list (TorchServe's rule); in compatibility mode
each output then becomes the bytes TorchServe would pass on. Failures carry TorchServe's own
message prefixes, so :func:`wfserve.plugins.executors.failures.classify` answers as TorchServe does.
"""

from __future__ import annotations

from typing import Any

from wfserve.plugins.executors.failures import BATCH_MISMATCH
from wfserve.plugins.executors.failures import INVALID_OUTPUT
from wfserve.plugins.executors.failures import UnsupportedOutput
from wfserve.plugins.executors.response import SerializerLookup
from wfserve.plugins.executors.response import to_bytes


class BadOutput(Exception):
    """A handler returned something other than one output per row."""


def check_outputs(outputs: Any, expected: int) -> list[Any]:
    """``outputs`` as a list of ``expected`` items.

    :raises BadOutput: not a list or tuple ("Invalid model predict output"), or another count
        ("number of batch response mismatched").
    """
    if not isinstance(outputs, list | tuple):
        raise BadOutput(f"{INVALID_OUTPUT}: handler returned {type(outputs).__name__}, "
                        "expected a list")
    if len(outputs) != expected:
        raise BadOutput(f"{BATCH_MISMATCH}: handler returned {len(outputs)} outputs for a "
                        f"batch of {expected}")
    return list(outputs)


def to_wire(outputs: list[Any], lookup: SerializerLookup | None = None) -> list[bytes]:
    """Compatibility mode: each output as the bytes TorchServe would pass on.

    :param lookup: finds an object's serializer (default: TorchServe's rules).
    :raises UnsupportedOutput: an output cannot be encoded.
    """
    try:
        return [o if type(o) is bytes else to_bytes(o, lookup) for o in outputs]
    except Exception as exc:
        raise UnsupportedOutput(f"an output cannot be encoded: {type(exc).__name__}: "
                                f"{exc}") from exc


def finish_outputs(outputs: Any, expected: int, typed: bool,
                   lookup: SerializerLookup | None = None) -> list[Any]:
    """A handler's answer for ``expected`` rows checked, and encoded unless ``typed``."""
    checked = check_outputs(outputs, expected)
    return checked if typed else to_wire(checked, lookup)
