"""A node at run time, as every engine keeps it: its place in the DAG, its live TorchServe
properties, its batcher, and the validation of a scale call.

An engine subclasses :class:`NodeBase` for its workers and implements
:meth:`NodeBase.worker_states`; :meth:`NodeBase.state` is then the node's ``describe`` record.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING
from typing import Any

from wfserve.kernel.contracts import Batcher
from wfserve.kernel.contracts import NodeState
from wfserve.kernel.contracts import WorkerState
from wfserve.kernel.errors import BadRequest
from wfserve.kernel.spec import NodeSpec

if TYPE_CHECKING:
    from wfserve.plugins.executors.core.records import Attempt


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
        #: attempts in dispatch order, hence in deadline order: the watchdog's to-do list (an
        #: engine that bounds attempts itself leaves it empty)
        self.timers: deque[Attempt] = deque()
        #: inputs dropped unrun because their request was past its deadline (written under
        #: the engine's lock; ``describe``'s ``deadline_drops``)
        self.deadline_drops = 0

    @property
    def target(self) -> int:
        """How many workers the node should have (``max-workers``, as TorchServe starts)."""
        return self.max_workers

    def queue_length(self) -> int:
        """Items waiting in the batcher."""
        return len(self.batcher)

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
        self.batcher.configure(batch_size=batch_size, max_batch_delay_ms=max_batch_delay)

    def worker_states(self) -> tuple[WorkerState, ...]:
        """The node's workers in service, as ``describe`` reports them (the engine's)."""
        raise NotImplementedError

    def state(self, **extra: Any) -> NodeState:
        """The node's ``describe`` record; ``extra``: the engine's own :class:`NodeState`
        fields (``stuck_workers``, ``replaced_workers``, ``placement``)."""
        return NodeState(
            kind=self.spec.kind, min_workers=self.min_workers, max_workers=self.max_workers,
            batch_size=self.batch_size, max_batch_delay=self.max_batch_delay,
            retry_attempts=self.retry_attempts, timeout_ms=self.timeout_ms,
            workers=self.worker_states(), queued=self.queue_length(),
            deadline_drops=self.deadline_drops, **extra,
        )
