"""The request path of the threaded executor: dispatch, run a batch, advance, retry, fail.

Pairing is by identity: a thread runs the list of attempts it took and hands output ``i``
to ``batch[i]``'s request; an attempt is settled (``QUEUED -> RUNNING -> DONE``) under one
lock, and an attempt the watchdog abandoned (``-> ABANDONED``) never delivers.

An attempt's ``timeout-ms`` runs from its dispatch, queueing included, as TorchServe's wait
on the job's promise does.

Fast path: a batch-size-1 node whose queue is empty runs on the thread that produced its
input when one of its workers is idle, so a chain of such nodes costs no thread handoff per
hop; the first ready child continues on the same thread, siblings go to runner threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from kernel.contracts import NodeTiming
from kernel.contracts import PredictResult
from kernel.errors import NodeFailed
from kernel.errors import Timeout
from kernel.errors import Unavailable
from kernel.errors import WfserveError
from plugins.executors.common import advance
from plugins.executors.failures import BATCH_MISMATCH
from plugins.executors.failures import INVALID_OUTPUT
from plugins.executors.failures import WORKER_DIED
from plugins.executors.failures import UnsupportedOutput
from plugins.executors.failures import classify
from plugins.executors.failures import prediction_failed
from plugins.executors.response import SerializerLookup
from plugins.executors.threaded.nodes import NodeRuntime
from plugins.executors.threaded.nodes import Worker
from plugins.executors.threaded.pool import RunnerPool
from plugins.executors.threaded.state import ABANDONED
from plugins.executors.threaded.state import DONE
from plugins.executors.threaded.state import QUEUED
from plugins.executors.threaded.state import RUNNING
from plugins.executors.threaded.state import Attempt
from plugins.executors.threaded.state import Req

log = structlog.get_logger(__name__)
Continuation = tuple[NodeRuntime, Worker, list[Attempt]]


class BadOutput(Exception):
    """A handler returned something other than one output per row."""


class Engine:
    """Moves requests through the DAG; owned by :class:`ThreadedExecutor`."""

    def __init__(
        self,
        workflow: str,
        nodes: dict[str, NodeRuntime],
        typed: bool,
        serializer_lookup: SerializerLookup,
        pool: RunnerPool,
        leaves: list[str],
    ) -> None:
        self.workflow = workflow
        self.leaves = leaves
        self.nodes = nodes
        self.typed = typed
        self.lookup = serializer_lookup
        self.pool = pool
        self.lock = threading.Lock()
        self.idle_cond = threading.Condition(self.lock)
        self.inflight: dict[int, Req] = {}
        self.stopping = False
        self.hint: Callable[[float], None] = lambda deadline: None  # the watchdog's

    # --- dispatch ----------------------------------------------------------------------------

    def dispatch(
        self, req: Req, node: NodeRuntime, row: dict[str, Any], number: int, here: bool
    ) -> Continuation | None:
        """Start attempt ``number`` of ``node`` for ``req``.

        :param here: the caller will run a returned continuation on its own thread.
        :raises Unavailable: the node's queue is full or the executor is closing.
        """
        att = Attempt(req, node, row, number, time.monotonic())
        if req.single:  # a model call: no timeout-ms, only its request's deadline (TorchServe)
            att.deadline = math.inf
            req.attempt = att
        else:
            node.timers.append(att)
            self.hint(att.deadline)
        if node.inline and not node.queue_length():
            worker = node.try_acquire()
            if worker is not None:
                # a node with a stuck worker may hang again: not on the caller's thread (an
                # HTTP thread with run_here), which a hang would hold until the handler returns
                if here and not node.stuck:
                    return node, worker, [att]
                try:
                    self.pool.submit(self.run_task, node, worker, [att])
                except Unavailable:
                    node.release(worker)
                    raise
                return None
        node.batcher.put(att)
        return None

    def dispatch_or_fail(
        self, req: Req, node: NodeRuntime, row: dict[str, Any], number: int, here: bool
    ) -> Continuation | None:
        """:meth:`dispatch`, failing the request instead of raising."""
        try:
            return self.dispatch(req, node, row, number, here)
        except WfserveError as exc:
            self.fail(req, exc)
            return None

    def run_task(self, node: NodeRuntime, worker: Worker, batch: list[Attempt]) -> None:
        """A runner's task: run the batch and every continuation it yields."""
        cont: Continuation | None = (node, worker, batch)
        while cont is not None:
            cont = self.execute(*cont, on_collector=False)

    def collect(self, node: NodeRuntime) -> None:
        """A collector thread: serve the node's batcher until retired or stopped."""
        try:
            while not node.collector_should_exit(self.stopping):
                batch = node.batcher.next_batch(1.0)
                if not batch:
                    continue
                worker = node.acquire(lambda: self.stopping)
                if worker is None:
                    continue
                self.execute(node, worker, batch, on_collector=True)
        except Exception:  # NOTE: a collector must never leak an exception into its thread
            log.exception("collector failed", workflow=self.workflow, node=node.name)

    # --- running a batch ---------------------------------------------------------------------

    def execute(
        self, node: NodeRuntime, worker: Worker, batch: list[Attempt], on_collector: bool
    ) -> Continuation | None:
        """Run one batch on ``worker`` and settle its attempts; returns a continuation."""
        started = time.monotonic()
        with self.lock:
            live = [a for a in batch if a.state == QUEUED and not a.req.done]
            for att in live:
                att.state = RUNNING
                att.worker = worker
        if not live:
            node.release(worker)
            return None
        worker.on_collector = on_collector
        error: Exception | None = None
        try:
            outputs = worker.handler([a.row for a in live], [a.req.meta for a in live])
            outputs = self._check(outputs, len(live))
            if not self.typed:
                outputs = self._wire_all(outputs)
            failure: str | None = None
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            error = exc
            outputs = []
        ran = time.monotonic() - started
        ready: list[tuple[Req, NodeRuntime, dict[str, Any]]] = []
        finished: list[Req] = []
        with self.lock:
            kept = [a for a in live if a.state == RUNNING]
            for att in kept:
                att.state = DONE
            if failure is None:
                for att, out in zip(live, outputs, strict=True):
                    if att.state == DONE and not att.req.done:
                        timing = NodeTiming(node.name, started - att.enqueued, ran, att.number + 1)
                        if self._advance(att.req, node, out, timing, ready):
                            finished.append(att.req)
        node.release(worker)
        for req in finished:
            self._finish(req)
        if failure is not None:
            for att in kept:
                self.attempt_failed(att, failure, error)
            return None
        return self._continue(ready, here=not on_collector)

    def _check(self, outputs: Any, expected: int) -> list[Any]:
        if not isinstance(outputs, list | tuple):
            raise BadOutput(f"{INVALID_OUTPUT}: handler returned {type(outputs).__name__}, "
                            "expected a list")
        if len(outputs) != expected:
            raise BadOutput(f"{BATCH_MISMATCH}: handler returned {len(outputs)} outputs for a "
                            f"batch of {expected}")
        return list(outputs)

    def _wire_all(self, outputs: list[Any]) -> list[bytes]:
        try:
            return [self.to_wire(o) for o in outputs]
        except Exception as exc:
            raise UnsupportedOutput(f"an output cannot be encoded: {type(exc).__name__}: "
                                    f"{exc}") from exc

    def to_wire(self, obj: Any) -> bytes:
        """Compatibility mode: an output as the bytes TorchServe would pass on."""
        if type(obj) is bytes:
            return obj
        if isinstance(obj, str):
            return obj.encode("utf-8")
        if isinstance(obj, bytearray):
            return bytes(obj)
        return self.lookup(obj).serialize(obj)

    def _advance(
        self,
        req: Req,
        node: NodeRuntime,
        out: Any,
        timing: NodeTiming,
        ready: list[tuple[Req, NodeRuntime, dict[str, Any]]],
    ) -> bool:
        """Record ``node``'s output for ``req`` (under the lock); True when req is complete."""
        return advance(req, node, out, timing, self.nodes, ready)

    def _continue(
        self, ready: list[tuple[Req, NodeRuntime, dict[str, Any]]], here: bool
    ) -> Continuation | None:
        cont: Continuation | None = None
        for req, child, row in ready:
            if req.done:
                continue  # a sibling branch failed: stop scheduling this request
            got = self.dispatch_or_fail(req, child, row, 0, here and cont is None)
            cont = cont or got
        return cont

    # --- settling requests -------------------------------------------------------------------

    def attempt_failed(self, att: Attempt, reason: str, error: Exception | None = None) -> None:
        """Retry ``att`` (from a runner, never inline) or fail its request.

        A single-node run (a model call) is never retried: it fails with TorchServe's answer
        for ``error`` (what the handler raised), or "Worker died." when ``error`` is None (it
        was abandoned at its deadline).
        """
        node, req = att.node, att.req
        log.warning(
            "node attempt failed", request_id=req.request.request_id, workflow=self.workflow,
            node=node.name, attempt=att.number + 1, reason=reason,
        )
        if req.done:
            return
        if req.single:
            status, message = (500, WORKER_DIED) if error is None else classify(error)
            self.fail(req, prediction_failed(status, message, workflow=self.workflow,
                                             node=node.name, cause=reason))
            return
        if att.number < node.retry_attempts:
            self.dispatch_or_fail(req, node, att.row, att.number + 1, here=False)
            return
        self.fail(req, NodeFailed(
            f"Error executing {node.name}", workflow=self.workflow, node=node.name,
            attempts=att.number + 1, cause=reason,
        ))

    def expire(self, att: Attempt) -> tuple[NodeRuntime, Worker] | None:
        """The watchdog's: abandon ``att`` if unsettled; returns a worker it presumes stuck."""
        with self.lock:
            if att.state >= DONE or att.req.done:
                return None
            was_running = att.state == RUNNING
            att.state = ABANDONED
        reason = ("no answer within the response timeout" if att.req.single
                  else f"timed out after {att.node.timeout_ms} ms")
        self.attempt_failed(att, reason)
        if was_running and att.worker is not None:
            return att.node, att.worker
        return None

    def request_deadline(self, req: Req) -> None:
        """The watchdog's: the request's own deadline passed."""
        self.fail(req, Timeout(
            f"Workflow {self.workflow} request timed out", workflow=self.workflow,
            request_id=req.request.request_id,
        ))

    def fail(self, req: Req, exc: WfserveError) -> None:
        """Settle ``req`` with ``exc`` unless it is settled already."""
        with self.lock:
            if req.done:
                return
            req.done = True
        self._finish(req, exc)

    def _finish(self, req: Req, exc: WfserveError | None = None) -> None:
        with self.lock:
            self.inflight.pop(id(req), None)
            if self.stopping or not self.inflight:
                self.idle_cond.notify_all()
        if exc is not None:
            req.future.set_exception(exc)
            return
        if req.single:
            (output,) = req.outputs.values()
            req.future.set_result(output)
            return
        outputs = {leaf: req.outputs[leaf] for leaf in self.leaves}
        req.future.set_result(PredictResult(outputs, req.timings))
