"""Map edges (``edges: {"a -> b": {map: true}}``): splitting a parent's output into items and
gathering the child's outputs back, for every engine.

Compatibility mode: the parent's bytes are JSON-decoded into a list; each item reaches the
child's handler as ``{"body": bytearray(<the item, JSON-encoded>)}``; each item's output (bytes)
is JSON-decoded (or, when it is not JSON, taken as its UTF-8 text) and the gathered list is
JSON-encoded (bytes) for the child's children. Typed mode: a list or tuple passes its items as
they are, a ``torch.Tensor`` is split along its first dimension; the gathered list is a list,
or, when the input was a tensor and every output is one, the outputs stacked into a tensor.
An empty list gives an empty list (an empty ``torch`` stack is not attempted: ``[]``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from wfserve.kernel.contracts import NodeTiming


class MapError(Exception):
    """A parent's output cannot be split, or an item's output cannot be gathered.

    :param item: the index of the item to blame, None when it is the parent's output.
    """

    def __init__(self, message: str, item: int | None = None) -> None:
        super().__init__(message)
        self.item = item


def _tensor_type() -> Any:
    """``torch.Tensor`` when torch is already imported (never imported here), else None."""
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None)


def split(output: Any, typed: bool) -> tuple[list[Any], bool]:
    """The items of a parent's ``output``, as the child's handler receives each one's body,
    and whether the output was a tensor (typed mode).

    :raises MapError: not a list (compatibility: not JSON, or JSON but not a list; typed:
        neither a list, a tuple nor a tensor with at least one dimension).
    """
    if typed:
        tensor = _tensor_type()
        if tensor is not None and isinstance(output, tensor):
            if output.dim() == 0:
                raise MapError("the output is a 0-dimensional tensor, not a list of items")
            return list(output.unbind(0)), True
        if isinstance(output, list | tuple):
            return list(output), False
        raise MapError(f"the output is a {type(output).__name__}, not a list or a tensor")
    if not isinstance(output, bytes | bytearray):
        raise MapError(f"the output is a {type(output).__name__}, not JSON bytes")
    try:
        items = json.loads(output)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MapError(f"the output is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise MapError(f"the output is JSON {type(items).__name__}, not a list")
    return [bytearray(json.dumps(item).encode()) for item in items], False


def gather(outputs: list[Any], typed: bool, was_tensor: bool) -> Any:
    """The child's item ``outputs``, in item order, as one output (see the module docstring).

    :raises MapError: compatibility mode and an output that is neither JSON nor UTF-8 text
        (names its item).
    """
    if typed:
        tensor = _tensor_type()
        if was_tensor and outputs and tensor is not None and all(
                isinstance(o, tensor) for o in outputs):
            return sys.modules["torch"].stack(outputs)
        return list(outputs)
    values: list[Any] = []
    for i, out in enumerate(outputs):
        try:
            values.append(json.loads(out))
        except UnicodeDecodeError:
            raise MapError("its output is neither JSON nor UTF-8 text", item=i) from None
        except ValueError:
            values.append(bytes(out).decode())
    return json.dumps(values).encode()


class MapState:
    """One request's map over one child: its item rows, the outputs gathered so far.

    An item is known by its row's identity (``id(row)``): a retry dispatches the same row, so
    the engines' dispatch needs no item index. Written under the engine's lock.

    :param rows: the items' rows, in item order.
    :param was_tensor: the parent's output was a tensor (typed mode).
    """

    __slots__ = ("_index", "left", "outputs", "rows", "timings", "was_tensor")

    def __init__(self, rows: list[dict[str, Any]], was_tensor: bool) -> None:
        self.rows = rows
        self.was_tensor = was_tensor
        self._index = {id(row): i for i, row in enumerate(rows)}
        self.outputs: list[Any] = [None] * len(rows)
        self.timings: list[NodeTiming | None] = [None] * len(rows)
        self.left = len(rows)

    def index(self, row: dict[str, Any]) -> int | None:
        """The item index of ``row``, None when it is not one of this map's rows."""
        return self._index.get(id(row))

    def put(self, row: dict[str, Any], output: Any, timing: NodeTiming) -> bool:
        """Record the output of the item whose row is ``row`` (once: a second output of the
        same item is ignored); True when that was the last item."""
        i = self._index[id(row)]
        if self.timings[i] is not None:
            return False
        self.outputs[i] = output
        self.timings[i] = timing
        self.left -= 1
        return self.left == 0

    def timing(self, node: str) -> NodeTiming:
        """The node's timing for the whole map: the longest wait in a queue, the sum of the
        batches' run times (a batch shared by items counts once per item), and the most
        attempts any item took."""
        done = [t for t in self.timings if t is not None]
        if not done:
            return NodeTiming(node, 0.0, 0.0, 1)
        return NodeTiming(node, max(t.queued for t in done), sum(t.run for t in done),
                          max(t.attempts for t in done))
