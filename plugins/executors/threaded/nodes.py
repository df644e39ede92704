"""One DAG node at run time: its live config, batcher and pool of workers (handler instances).

A *worker* is one handler instance (TorchServe's worker process); it is not tied to a thread.
Whoever runs a batch first takes an idle worker (:meth:`NodeRuntime.try_acquire` or
:meth:`NodeRuntime.acquire`) and gives it back with :meth:`NodeRuntime.release`. Collector
threads (one per worker) serve the node's batcher; batch-size-1 nodes are also run inline by
the thread that produced their input, when a worker is idle and nothing is queued.

A worker whose attempt timed out while running is presumed stuck: it is retired, and a
replacement is loaded, at most ``max-workers`` stuck workers per node at a time (the bound on
the threads and handler instances a hanging handler can cost). A stuck worker that returns is
taken back if the node is short of workers, else dropped.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from wfserve.kernel.contracts import Batcher
from wfserve.kernel.contracts import NodeHandler
from wfserve.kernel.contracts import NodeState
from wfserve.kernel.contracts import WorkerState
from wfserve.kernel.spec import NodeSpec
from wfserve.plugins.executors.core.nodes import NodeBase
from wfserve.plugins.executors.core.nodes import start_time

IDLE, BUSY, STUCK = "idle", "busy", "stuck"
_STATUS = {IDLE: "READY", BUSY: "BUSY", STUCK: "UNRESPONSIVE"}  # TorchServe's worker status


class Worker:
    """One handler instance of a node."""

    __slots__ = ("handler", "index", "on_collector", "retired", "started", "state")

    def __init__(self, index: int, handler: NodeHandler) -> None:
        self.index = index
        self.handler = handler
        self.started = time.time()  # wall clock, for describe's startTime
        self.state = IDLE
        self.retired = False
        self.on_collector = False  # whether the thread running it is a collector thread


class NodeRuntime(NodeBase):
    """Live state of one node; every mutable field is guarded by :attr:`lock`."""

    def __init__(
        self,
        spec: NodeSpec,
        parents: list[str],
        children: list[str],
        batcher: Batcher,
    ) -> None:
        super().__init__(spec, parents, children, batcher)
        self.inline = self.batch_size == 1
        self.cond = threading.Condition(self.lock)
        self.workers: list[Worker] = []
        self.idle: list[Worker] = []
        self.waiting = 0
        self.stuck = 0
        self.stuck_collectors = 0
        self.collectors = 0
        self.next_index = 0
        self.threads: list[threading.Thread] = []

    def apply_scale(self, min_workers: int | None, max_workers: int | None,
                    batch_size: int | None, max_batch_delay: int | None) -> None:
        """As :meth:`NodeBase.apply_scale`; a batch-size-1 node also takes the inline path."""
        super().apply_scale(min_workers, max_workers, batch_size, max_batch_delay)
        with self.lock:
            self.inline = self.batch_size == 1

    def add(self, worker: Worker) -> None:
        """Put a freshly loaded worker in service."""
        with self.lock:
            self.workers.append(worker)
            self.idle.append(worker)
            self.cond.notify()

    def take_index(self) -> int:
        """A worker index not used before in this node."""
        with self.lock:
            self.next_index += 1
            return self.next_index - 1

    def try_acquire(self) -> Worker | None:
        """An idle worker, or None at once."""
        if not self.idle:
            return None
        with self.lock:
            if self.idle:
                worker = self.idle.pop()
                worker.state = BUSY
                return worker
        return None

    def acquire(self, stopping: Callable[[], bool]) -> Worker | None:
        """Wait for an idle worker; None when ``stopping()`` turns true."""
        with self.cond:
            self.waiting += 1
            try:
                while not self.idle:
                    if stopping():
                        return None
                    self.cond.wait(0.1)
                worker = self.idle.pop()
                worker.state = BUSY
                return worker
            finally:
                self.waiting -= 1

    def release(self, worker: Worker) -> None:
        """Give a worker back: idle again, or dropped if retired (scaled down or replaced)."""
        with self.lock:
            if worker.state == STUCK:
                self.stuck -= 1
                if worker.on_collector:
                    self.stuck_collectors -= 1
                if len(self.workers) < self.target:
                    worker.retired = False
                    self.workers.append(worker)
            if worker.retired:
                return
            worker.state = IDLE
            self.idle.append(worker)
            if self.waiting:
                self.cond.notify()

    def mark_stuck(self, worker: Worker) -> tuple[bool, bool] | None:
        """Retire a worker whose attempt timed out while it ran.

        :returns: None if it was not busy (or already retired), else ``(replace_worker,
            replace_collector)``: whether to load a replacement worker (False once
            ``max-workers`` are stuck) and whether a collector thread is stuck with it.
        """
        with self.lock:
            if worker.state != BUSY or worker.retired:
                return None
            worker.state = STUCK
            worker.retired = True
            self.workers.remove(worker)
            self.stuck += 1
            if worker.on_collector:
                self.stuck_collectors += 1
            return self.stuck <= self.max_workers, worker.on_collector

    def retire_extra(self) -> None:
        """Scale down to :attr:`target` workers: idle ones go first, busy ones when released."""
        with self.lock:
            extra = len(self.workers) - self.target
            victims = [w for w in self.idle][:extra]
            if len(victims) < extra:
                busy = [w for w in self.workers if w not in victims and w.state == BUSY]
                victims += busy[: extra - len(victims)]
            for worker in victims:
                worker.retired = True
                self.workers.remove(worker)
                if worker in self.idle:
                    self.idle.remove(worker)

    def collector_should_exit(self, stopping: bool) -> bool:
        """Called by a collector thread between batches; counts it out when it should exit."""
        with self.lock:
            if stopping or self.collectors - self.stuck_collectors > self.target:
                self.collectors -= 1
                return True
            return False

    def worker_states(self) -> tuple[WorkerState, ...]:
        """The workers in service (stuck ones are out of service until they return)."""
        pid = os.getpid()
        with self.lock:
            return tuple(WorkerState(id=w.index, status=_STATUS[w.state], state=w.state,
                                     start_time=start_time(w.started), pid=pid)
                         for w in self.workers)

    def state(self, **extra: Any) -> NodeState:
        """As :meth:`NodeBase.state`, with the workers presumed stuck."""
        return super().state(stuck_workers=self.stuck, **extra)
