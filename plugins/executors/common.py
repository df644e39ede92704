"""What every executor shares: a node's place in the DAG and live config, the DAG step that
hands a node's output to its children, and the validation of a scale call.

Both the threaded and the Ray executor keep one node object per DAG node (subclasses of
:class:`NodeBase`) and one request record per request with ``timings``, ``single``,
``outputs``, ``leaves_left``, ``done``, ``pending`` and ``inputs``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any
from typing import Protocol

from kernel.contracts import Batcher
from kernel.contracts import NodeTiming
from kernel.errors import BadRequest
from kernel.spec import NodeSpec


def start_time(epoch: float) -> str:
    """A worker's ``startTime`` as TorchServe's describe writes it (UTC, milliseconds)."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
    return f"{whole}.{int(epoch * 1000) % 1000:03d}Z"


class NodeBase:
    """A DAG node's name, neighbours, batcher and live TorchServe properties."""

    def __init__(self, spec: NodeSpec, parents: list[str], children: list[str],
                 batcher: Batcher) -> None:
        cfg = spec.config
        self.name = spec.name
        self.spec = spec
        self.parents = tuple(parents)
        self.children = tuple(children)
        self.is_leaf = not children
        self.batcher = batcher
        self.min_workers = cfg.min_workers
        self.max_workers = cfg.max_workers
        self.batch_size = cfg.batch_size
        self.max_batch_delay = cfg.max_batch_delay
        self.retry_attempts = cfg.retry_attempts
        self.timeout_ms = cfg.timeout_ms
        self.timeout = cfg.timeout_ms / 1000.0
        self.lock = threading.Lock()

    def config_view(self) -> dict[str, Any]:
        """The node's kind and live TorchServe properties, as ``describe`` shows them."""
        return {
            "kind": self.spec.kind,
            "minWorkers": self.min_workers,
            "maxWorkers": self.max_workers,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay,
            "retryAttempts": self.retry_attempts,
            "timeoutMs": self.timeout_ms,
        }

    def apply_scale(self, min_workers: int | None, max_workers: int | None,
                    batch_size: int | None, max_batch_delay: int | None) -> None:
        """Validate and set new worker bounds and batching (None keeps a value).

        :raises BadRequest: min above max, a count below 1, a negative delay.
        """
        lo = self.min_workers if min_workers is None else min_workers
        hi = max(self.max_workers, lo) if max_workers is None else max_workers
        if lo > hi:
            raise BadRequest(f"min_workers ({lo}) exceeds max_workers ({hi})", node=self.name)
        for key, value in (("min_workers", lo), ("max_workers", hi), ("batch_size", batch_size)):
            if value is not None and value < 1:
                raise BadRequest(f"{key} must be at least 1, got {value}", node=self.name)
        if max_batch_delay is not None and max_batch_delay < 0:
            raise BadRequest(f"max_batch_delay must be >= 0, got {max_batch_delay}",
                             node=self.name)
        with self.lock:
            self.min_workers, self.max_workers = lo, hi
            if batch_size is not None:
                self.batch_size = batch_size
            if max_batch_delay is not None:
                self.max_batch_delay = max_batch_delay
        configure = getattr(self.batcher, "configure", None)
        if configure is not None:
            configure(batch_size=batch_size, max_batch_delay_ms=max_batch_delay)


class RequestState(Protocol):
    """The fields of a request record that :func:`advance` reads and writes."""

    timings: list[NodeTiming]
    single: bool
    outputs: dict[str, Any]
    leaves_left: int
    done: bool
    pending: dict[str, int]
    inputs: dict[str, dict[str, Any]]


def advance(req: RequestState, node: NodeBase, out: Any, timing: NodeTiming,
            nodes: Mapping[str, NodeBase], ready: list[tuple[Any, Any, dict[str, Any]]]) -> bool:
    """Record ``node``'s output for ``req`` and queue the children it makes ready.

    A child with one parent gets ``{"body": out}``; a child with several gets one entry per
    parent, in DAG order, once the last of them is done (TorchServe's shapes). Call under the
    executor's lock. Returns True when ``req`` has all its leaf outputs.
    """
    req.timings.append(timing)
    if req.single:  # a node run alone: its output is the answer, whatever its place
        req.outputs[node.name] = out
        req.done = True
        return True
    if node.is_leaf:
        req.outputs[node.name] = out
        req.leaves_left -= 1
        if req.leaves_left == 0:
            req.done = True
            return True
    for name in node.children:
        child = nodes[name]
        left = req.pending[name] - 1
        req.pending[name] = left
        if len(child.parents) == 1:
            ready.append((req, child, {"body": out}))
            continue
        gathered = req.inputs.setdefault(name, {})
        gathered[node.name] = out
        if left == 0:
            ready.append((req, child, {p: gathered[p] for p in child.parents}))
    return False
