"""The request path of the Ray executor: collectors, one batch on one actor, advance, retry.

Each actor of a node has one *collector* thread in this process (the driver). It takes a
whole batch from the node's batcher (batch-size, max-batch-delay: the threaded executor's
batcher, unchanged) and sends it to its actor as one call, then waits for the call's small
status record only. The rows' outputs stay in Ray's object store; children receive the
references (``{"body": ref}`` or ``{parent: ref, ...}``) and their actors fetch them from the
store. The driver fetches only the leaves' outputs, when the request completes.

Failures, per attempt, as the threaded executor: the handler raised -> retry (``retry-attempts``)
on another actor of the node when it has one, then ``NodeFailed("Error executing <node>")``.
A timed-out attempt is cancelled (``ray.cancel``); because a running handler in an actor
cannot be interrupted, its actor is killed and replaced as well, and the batch's other
attempts go back to the queue. A dead actor is replaced and its attempts retried.
"""

from __future__ import annotations

import heapq
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
from kernel.errors import WfserveError
from plugins.executors.common import advance
from plugins.executors.failures import WORKER_DIED
from plugins.executors.failures import prediction_failed
from plugins.executors.ray.nodes import BUSY
from plugins.executors.ray.nodes import READY
from plugins.executors.ray.nodes import ActorWorker
from plugins.executors.ray.nodes import Attempt
from plugins.executors.ray.nodes import RayNode
from plugins.executors.ray.nodes import Req

log = structlog.get_logger(__name__)
#: seconds a collector waits for a batch before checking whether it should exit
POLL_S = 0.25
Replace = Callable[[RayNode, ActorWorker, str], None]
Ready = list[tuple[Req, RayNode, dict[str, Any]]]


class Engine:
    """Moves requests through the DAG; owned by :class:`~.executor.RayExecutor`.

    :param replace: the executor's ``(node, worker, reason)``: kill that actor, start another.
    """

    def __init__(self, workflow: str, nodes: dict[str, RayNode], leaves: list[str],
                 replace: Replace) -> None:
        self.workflow = workflow
        self.nodes = nodes
        self.leaves = leaves
        self.replace = replace
        self.lock = threading.Lock()
        self.idle_cond = threading.Condition(self.lock)
        self.inflight: dict[int, Req] = {}
        self.stopping = False

    # --- dispatch ----------------------------------------------------------------------------

    def dispatch(self, req: Req, node: RayNode, row: dict[str, Any], number: int) -> None:
        """Queue attempt ``number`` of ``node``; raises ``Unavailable`` (queue full, closing)."""
        node.batcher.put(self._attempt(req, node, row, number))

    @staticmethod
    def _attempt(req: Req, node: RayNode, row: dict[str, Any], number: int) -> Attempt:
        att = Attempt(req, node, row, number, time.monotonic())
        if req.single:  # a model call: no timeout-ms, only its request's deadline (TorchServe)
            att.deadline = req.request.deadline or math.inf
        return att

    def dispatch_or_fail(self, req: Req, node: RayNode, row: dict[str, Any], number: int,
                         avoid: ActorWorker | None = None) -> None:
        """:meth:`dispatch`, failing the request instead of raising."""
        att = self._attempt(req, node, row, number)
        att.avoid = avoid
        try:
            node.batcher.put(att)
        except WfserveError as exc:
            self.fail(req, exc)

    # --- collectors --------------------------------------------------------------------------

    def collect(self, node: RayNode, worker: ActorWorker) -> None:
        """A collector thread: serve ``node``'s batcher with ``worker`` until it leaves."""
        try:
            while not self.stopping and not worker.retired:
                batch = node.batcher.next_batch(POLL_S)
                batch = self._mine(node, worker, [a for a in batch if not a.req.done])
                if batch:
                    self.run_batch(node, worker, batch)
        except Exception:  # NOTE: a collector must never leak an exception into its thread
            log.exception("collector failed", workflow=self.workflow, node=node.name)

    def _mine(self, node: RayNode, worker: ActorWorker, batch: list[Attempt]) -> list[Attempt]:
        """The attempts of ``batch`` this actor should run: a retry goes back to the queue
        when it failed on this actor and the node has another one."""
        if not any(a.avoid is worker for a in batch) or len(node.live()) < 2:
            return batch
        mine, others = [], []
        for att in batch:
            (others if att.avoid is worker else mine).append(att)
        for att in others:
            try:
                node.batcher.put(att)
            except WfserveError as exc:
                self.fail(att.req, exc)
        if not mine:
            time.sleep(0.002)  # let another actor's collector take it
        return mine

    def run_batch(self, node: RayNode, worker: ActorWorker, batch: list[Attempt]) -> None:
        """Send one batch to ``worker``'s actor, wait for its status, settle every attempt."""
        import ray

        started = time.monotonic()
        late = [a for a in batch if a.deadline <= started]
        for att in late:
            self.attempt_failed(att, f"timed out after {node.timeout_ms} ms (queued)")
        batch = [a for a in batch if a.deadline > started]
        if not batch:
            return
        worker.state = BUSY
        refs = worker.handle.run.options(num_returns=len(batch) + 1).remote(
            [a.row for a in batch], [a.req.meta for a in batch]
        )
        status_ref, outputs = refs[0], refs[1:]
        deadline = min(a.deadline for a in batch)
        wait = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
        try:  # only the small status record comes back to this process
            status = ray.get(status_ref, timeout=wait)
        except ray.exceptions.GetTimeoutError:
            self._timed_out(node, worker, batch, status_ref)
            return
        except ray.exceptions.RayError as exc:
            reason = f"actor died: {type(exc).__name__}"
            self.replace(node, worker, reason)
            for att in batch:
                self.attempt_failed(att, reason)
            return
        worker.state = READY
        if status["error"] is not None:
            for att in batch:
                self.attempt_failed(att, status["error"], avoid=worker,
                                    failure=status.get("failure"))
            return
        for att, response in zip(batch, status.get("responses", ()), strict=False):
            if att.req.single:  # what the handler set reaches the model call's answer
                vars(att.req.request.response).update(vars(response))
        self._settle(node, batch, outputs, started, status["run"])

    def _timed_out(self, node: RayNode, worker: ActorWorker, batch: list[Attempt],
                   status_ref: Any) -> None:
        import ray

        ray.cancel(status_ref)  # a call still queued at the actor never runs
        reason = f"timed out after {node.timeout_ms} ms"
        self.replace(node, worker, reason)  # a running one stops only with its actor
        now = time.monotonic()
        for att in batch:
            if att.deadline <= now:
                self.attempt_failed(att, reason)
            elif not att.req.done:
                self.dispatch_or_fail(att.req, node, att.row, att.number)

    def _settle(self, node: RayNode, batch: list[Attempt], outputs: list[Any], started: float,
                ran: float) -> None:
        ready: Ready = []
        finished: list[Req] = []
        with self.lock:
            for att, ref in zip(batch, outputs, strict=True):
                if att.req.done:
                    continue
                timing = NodeTiming(node.name, started - att.enqueued, ran, att.number + 1)
                if self._advance(att.req, node, ref, timing, ready):
                    finished.append(att.req)
        for req in finished:
            self._finish(req)
        for req, child, row in ready:
            if not req.done:
                self.dispatch_or_fail(req, child, row, 0)

    def _advance(self, req: Req, node: RayNode, ref: Any, timing: NodeTiming,
                 ready: Ready) -> bool:
        """Record ``node``'s output reference for ``req`` (under the lock); True when done."""
        return advance(req, node, ref, timing, self.nodes, ready)

    # --- settling requests -------------------------------------------------------------------

    def attempt_failed(self, att: Attempt, reason: str, avoid: ActorWorker | None = None,
                       failure: tuple[int, str] | None = None) -> None:
        """Retry ``att`` (away from ``avoid``) or fail its request with ``NodeFailed``.

        A single-node run (a model call) is never retried: it fails with ``failure``
        (TorchServe's status and message for what the handler did), or "Worker died." when
        there is none (timed out, or its actor died).
        """
        node, req = att.node, att.req
        log.warning("node attempt failed", request_id=req.request.request_id,
                    workflow=self.workflow, node=node.name, attempt=att.number + 1, reason=reason)
        if req.done:
            return
        if req.single:
            status, message = failure or (500, WORKER_DIED)
            self.fail(req, prediction_failed(status, message, workflow=self.workflow,
                                             node=node.name, cause=reason))
            return
        if att.number < node.retry_attempts:
            self.dispatch_or_fail(req, node, att.row, att.number + 1, avoid)
            return
        self.fail(req, NodeFailed(
            f"Error executing {node.name}", workflow=self.workflow, node=node.name,
            attempts=att.number + 1, cause=reason,
        ))

    def request_deadline(self, req: Req) -> None:
        """The request's own deadline passed."""
        self.fail(req, Timeout(f"Workflow {self.workflow} request timed out",
                               workflow=self.workflow, request_id=req.request.request_id))

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
        if exc is None:
            try:
                result = self._fetch(req)
            except Exception as fetch_exc:
                exc = WfserveError(f"Workflow {self.workflow}: fetching the result failed: "
                                   f"{type(fetch_exc).__name__}", workflow=self.workflow)
        if exc is not None:
            req.future.set_exception(exc)
        else:
            req.future.set_result(result)

    def _fetch(self, req: Req) -> Any:
        """The leaves' values, fetched from the object store (the one fetch per request)."""
        import ray

        if req.single:
            (ref,) = req.outputs.values()
            return ray.get(ref)
        values = ray.get([req.outputs[leaf] for leaf in self.leaves])
        return PredictResult(dict(zip(self.leaves, values, strict=True)), req.timings)


class Deadlines:
    """One thread that fails requests whose own deadline (``PredictRequest.deadline``) passed."""

    def __init__(self, name: str, expire: Callable[[Req], None]) -> None:
        self._heap: list[tuple[float, int, Req]] = []
        self._cond = threading.Condition()
        self._expire = expire
        self._stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"{name}-ray-deadlines")

    def start(self) -> None:
        """Start the thread."""
        self.thread.start()

    def track(self, req: Req, deadline: float) -> None:
        """Fail ``req`` with a timeout at ``deadline`` unless it is done by then."""
        with self._cond:
            heapq.heappush(self._heap, (deadline, id(req), req))
            self._cond.notify()

    def stop(self) -> None:
        """Stop and join the thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self.thread.is_alive():
            self.thread.join(5.0)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                while self._heap and (self._heap[0][2].done
                                      or self._heap[0][0] <= time.monotonic()):
                    _, _, req = heapq.heappop(self._heap)
                    if not req.done:
                        self._cond.release()
                        try:
                            self._expire(req)
                        finally:
                            self._cond.acquire()
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                self._cond.wait(wait)
