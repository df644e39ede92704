"""Conditions of conditional edges (a wfserve extension of the spec, ``edges:``).

A condition is a JMESPath expression over the parent node's output, compiled (syntax-checked)
once, when the spec is parsed, and evaluated per request, never with ``eval``. It *holds* when
its result is truthy in JMESPath's sense: everything except ``false``, ``null``, an empty string,
an empty list and an empty object (so ``0`` holds, as JMESPath's ``||`` and filters treat it).

What it sees of the output: the object itself in typed mode (``typed: true``), which must then
be JSON data (dicts with string keys, lists, tuples, strings, numbers, booleans, None); in
compatibility mode the bytes TorchServe passes on, JSON-decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

#: the deepest nesting of an output a condition accepts (deeper: not JSON data here)
MAX_DEPTH = 200


class ConditionError(Exception):
    """A condition could not be evaluated over an output (the message says why)."""


def truthy(value: Any) -> bool:
    """JMESPath's truth: false for ``false``, ``null``, ``""``, ``[]`` and ``{}``, else true."""
    if value is None or value is False:
        return False
    return not (isinstance(value, str | list | dict) and not value)


def _check_json(value: Any, depth: int = 0) -> None:
    """:raises ConditionError: ``value`` is not JSON data (names the first offending type)."""
    if depth > MAX_DEPTH:
        raise ConditionError(f"the output is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConditionError(
                    f"the output is not JSON data (a {type(key).__name__} key)")
            _check_json(item, depth + 1)
        return
    raise ConditionError(f"the output is not JSON data (a {type(value).__name__})")


def json_view(output: Any, typed: bool) -> Any:
    """What a condition sees of ``output``: the object itself (typed mode), else the bytes
    JSON-decoded.

    :raises ConditionError: typed mode and not JSON data; compatibility mode and not JSON
        (invalid JSON, not UTF-8, or not bytes at all).
    """
    if typed:
        _check_json(output)
        return output
    if not isinstance(output, bytes | bytearray):
        raise ConditionError(f"the output is not JSON (a {type(output).__name__})")
    try:
        return json.loads(output)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConditionError(f"the output is not JSON: {exc}") from None


@dataclass(frozen=True)
class Condition:
    """A compiled condition; build it with :meth:`compile`."""

    #: the expression as written in the spec
    source: str
    _parsed: Any = field(repr=False, compare=False)

    @classmethod
    def compile(cls, source: str) -> Condition:
        """Compile ``source``.

        :raises ValueError: not a valid JMESPath expression (the message is JMESPath's).
        """
        try:
            return cls(source, jmespath.compile(source))
        except JMESPathError as exc:
            raise ValueError(str(exc).replace("\n", " ")) from None

    def holds(self, output: Any, typed: bool) -> bool:
        """Whether the condition holds over ``output`` (see the module docstring).

        :raises ConditionError: the output is not JSON data, or the expression failed on it
            (a function given the wrong type, say ``length(@)`` over a number).
        """
        value = json_view(output, typed)
        try:
            return truthy(self._parsed.search(value))
        except (JMESPathError, TypeError, ValueError, RecursionError) as exc:
            raise ConditionError(f"{type(exc).__name__}: {exc}") from None
