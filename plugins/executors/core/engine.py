"""The request path every engine shares: attempts, running a batch, advancing the DAG,
retrying, failing and finishing requests.

An engine subclasses :class:`EngineCore` and plugs in how a batch runs on one of its workers
(:meth:`EngineCore.run_on_worker`); where its workers live, and how batches reach them, stay
its own. Everything else happens here, for every engine alike:

- an attempt of a node is dispatched (:meth:`~EngineCore.dispatch`) with ``timeout-ms`` from
  its dispatch, and settled once, under :attr:`~EngineCore.lock`: ``QUEUED -> RUNNING -> DONE``,
  or ``ABANDONED`` by the watchdog, after which it never delivers;
- a batch's outputs are paired with its attempts by identity; a node's output goes to its
  children (TorchServe's input shapes, :func:`advance`);
- an attempt lasts at most the earlier of its ``timeout-ms`` and what is left of its
  request's deadline: at the deadline the request fails with ``Timeout`` (the watchdog) and
  the attempt's output is discarded, but its worker is stopped or replaced only for
  ``timeout-ms`` (a deadline a client chose never costs a worker); a batch taken from a node's
  batcher first drops the attempts whose request is past its deadline
  (:meth:`~EngineCore.due`): they never reach a handler, the request fails with ``Timeout``
  and the node counts them (:attr:`NodeBase.deadline_drops`);
- a failed attempt is retried up to ``retry-attempts`` times (never past its request's
  deadline: the request then fails with ``Timeout``), then its request fails with
  ``NodeFailed`` and its other branches stop; a node run alone (a model call) runs once and
  fails with TorchServe's status and message (:mod:`wfserve.plugins.executors.failures`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import structlog

from wfserve.kernel.contracts import NodeTiming
from wfserve.kernel.contracts import PredictRequest
from wfserve.kernel.contracts import PredictResult
from wfserve.kernel.errors import NodeFailed
from wfserve.kernel.errors import Timeout
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WfserveError
from wfserve.plugins.executors.core.nodes import NodeBase
from wfserve.plugins.executors.core.records import ABANDONED
from wfserve.plugins.executors.core.records import DONE
from wfserve.plugins.executors.core.records import QUEUED
from wfserve.plugins.executors.core.records import RUNNING
from wfserve.plugins.executors.core.records import Attempt
from wfserve.plugins.executors.core.records import Req
from wfserve.plugins.executors.failures import WORKER_DIED
from wfserve.plugins.executors.failures import classify
from wfserve.plugins.executors.failures import prediction_failed

log = structlog.get_logger(__name__)
#: children made ready by a node's output: ``(request, child, its input row)``
Ready = list[tuple[Req, NodeBase, dict[str, Any]]]


class HandlerFailed(Exception):
    """:meth:`EngineCore.run_on_worker`: the handler failed, in a process that classified it.

    :param reason: what happened, for logs and ``NodeFailed.cause``.
    :param failure: TorchServe's ``(status, message)`` for it.
    """

    def __init__(self, reason: str, failure: tuple[int, str] | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure


class WorkerLost(Exception):
    """:meth:`EngineCore.run_on_worker`: the worker died under the batch (the engine replaces
    it); each attempt fails with ``reason`` and is retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WorkerTimedOut(WorkerLost):
    """:meth:`EngineCore.run_on_worker`: the batch overran the earliest deadline among its
    attempts and the engine stopped its worker; attempts past their deadline fail, the others
    are dispatched again (the same attempt number)."""


def advance(req: Req, node: NodeBase, out: Any, timing: NodeTiming,
            nodes: Mapping[str, NodeBase], ready: Ready) -> bool:
    """Record ``node``'s output for ``req`` and queue the children it makes ready.

    A child with one parent gets ``{"body": out}``; a child with several gets one entry per
    parent, in DAG order, once the last of them is done (TorchServe's shapes). Call under the
    engine's lock. Returns True when ``req`` has all its leaf outputs.
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


class EngineCore:
    """Moves requests through one workflow's DAG (see the module docstring).

    :param workflow: the workflow's name, for messages.
    :param nodes: the live nodes by name (the executor's own dict: it fills it at start).
    :param leaves: the leaf node names, in the order results list them.
    :param watch_attempts: register each attempt with the watchdog (:attr:`NodeBase.timers`);
        an engine whose workers bound their own calls passes False.
    """

    def __init__(self, workflow: str, nodes: Mapping[str, NodeBase], leaves: list[str],
                 watch_attempts: bool = True) -> None:
        self.workflow = workflow
        self.nodes = nodes
        self.leaves = leaves
        self.watch_attempts = watch_attempts
        self.lock = threading.Lock()
        self.idle_cond = threading.Condition(self.lock)
        self.inflight: dict[int, Req] = {}
        self.stopping = False
        #: the watchdog's: called with each new attempt deadline
        self.hint: Callable[[float], None] = lambda deadline: None

    # --- what an engine plugs in ---------------------------------------------------------------

    def run_on_worker(self, node: NodeBase, worker: Any, live: list[Attempt]
                      ) -> tuple[list[Any], float | None]:
        """Run the rows of ``live`` as one batch on ``worker``.

        :returns: one output per attempt, in order (checked: see :mod:`.outputs`), and the
            seconds the handler ran (None: the time this call took).
        :raises HandlerFailed: the handler failed where it ran.
        :raises WorkerLost: the worker died or was stopped (see :class:`WorkerTimedOut`).
        :raises Exception: anything else the handler raised, classified here.
        """
        raise NotImplementedError

    def release(self, node: NodeBase, worker: Any) -> None:
        """``worker`` is done with a batch (before its requests are finished)."""

    def result(self, req: Req) -> Any:
        """What ``req``'s future gets: the node's output for a model call, else the
        :class:`PredictResult` of the leaf outputs. An engine holding references fetches
        the values here."""
        if req.single:
            (output,) = req.outputs.values()
            return output
        return PredictResult({leaf: req.outputs[leaf] for leaf in self.leaves}, req.timings)

    # --- admitting and dispatching ---------------------------------------------------------------

    def admit(self, request: PredictRequest, single: bool) -> Req:
        """A new request record, in flight."""
        pending = {n: len(node.parents) for n, node in self.nodes.items()}
        req = Req(request, pending, len(self.leaves), single)
        with self.lock:
            self.inflight[id(req)] = req
        return req

    def abort(self, req: Req) -> None:
        """Forget ``req``, whose first dispatch was refused (the caller raises)."""
        with self.lock:
            req.done = True
            self.inflight.pop(id(req), None)

    def new_attempt(self, req: Req, node: NodeBase, row: dict[str, Any], number: int,
                    avoid: Any = None) -> Attempt:
        """Attempt ``number`` of ``node`` for ``req``, registered with the watchdog."""
        att = Attempt(req, node, row, number, time.monotonic(), avoid)
        if self.watch_attempts and not req.single:
            node.timers.append(att)
            self.hint(att.deadline)
        return att

    def dispatch(self, req: Req, node: NodeBase, row: dict[str, Any], number: int, *,
                 avoid: Any = None) -> Any:
        """Start attempt ``number`` of ``node`` for ``req``: queue it in the node's batcher.

        :raises Unavailable: the node's queue is full or closed.
        """
        node.batcher.put(self.new_attempt(req, node, row, number, avoid))
        return None

    def dispatch_or_fail(self, req: Req, node: NodeBase, row: dict[str, Any], number: int,
                         **how: Any) -> Any:
        """:meth:`dispatch` (``how``: its keywords), failing the request instead of raising."""
        try:
            return self.dispatch(req, node, row, number, **how)
        except WfserveError as exc:
            self.fail(req, exc)
            return None

    def dispatch_ready(self, ready: Ready) -> None:
        """Dispatch each child made ready, skipping requests settled meanwhile."""
        for req, child, row in ready:
            if not req.done:  # a sibling branch failed: stop scheduling this request
                self.dispatch_or_fail(req, child, row, 0)

    # --- running a batch -----------------------------------------------------------------------

    def due(self, node: NodeBase, batch: list[Attempt]) -> list[Attempt]:
        """The attempts of ``batch`` (just taken from ``node``'s batcher) whose request is not
        past its deadline; call before any of them runs.

        The others are abandoned unrun and counted in ``node.deadline_drops``; a request of
        theirs not yet settled fails with ``Timeout`` (the watchdog may not have woken yet).
        A model call's attempt is left to its own rules (kept: its request's deadline is its
        attempt's, enforced as TorchServe does).
        """
        now = time.monotonic()
        late: list[Attempt] = []
        with self.lock:
            for att in batch:
                deadline = att.req.request.deadline
                if (att.state == QUEUED and not att.req.single and deadline is not None
                        and deadline <= now):
                    att.state = ABANDONED
                    late.append(att)
            node.deadline_drops += len(late)
        if not late:
            return batch
        for att in late:
            log.info("late input dropped", request_id=att.req.request.request_id,
                     workflow=self.workflow, node=node.name)
            self.request_deadline(att.req)
        return [a for a in batch if a.state != ABANDONED]

    def execute(self, node: NodeBase, worker: Any, batch: list[Attempt]) -> Ready:
        """Run ``batch`` on ``worker`` and settle its attempts; the children made ready.

        Attempts of requests past their deadline are dropped first (:meth:`due`)."""
        batch = self.due(node, batch)
        started = time.monotonic()
        with self.lock:
            live = [a for a in batch if a.state == QUEUED and not a.req.done]
            for att in live:
                att.state = RUNNING
                att.worker = worker
        if not live:
            self.release(node, worker)
            return []
        failed: Exception | None = None
        try:
            outputs, ran = self.run_on_worker(node, worker, live)
        except Exception as exc:
            failed, outputs, ran = exc, [], None
        ran = time.monotonic() - started if ran is None else ran
        ready: Ready = []
        finished: list[Req] = []
        with self.lock:
            kept = [a for a in live if a.state == RUNNING]
            for att in kept:
                att.state = DONE
            if failed is None:
                for att, out in zip(live, outputs, strict=True):
                    if att.state == DONE and not att.req.done:
                        timing = NodeTiming(node.name, started - att.enqueued, ran, att.number + 1)
                        if advance(att.req, node, out, timing, self.nodes, ready):
                            finished.append(att.req)
        self.release(node, worker)
        for req in finished:
            self._finish(req)
        if failed is not None:
            self._batch_failed(worker, kept, failed)
        return ready

    def _batch_failed(self, worker: Any, kept: list[Attempt], exc: Exception) -> None:
        if isinstance(exc, WorkerTimedOut):
            now = time.monotonic()
            for att in kept:
                if att.deadline <= now:
                    self.attempt_failed(att, exc.reason)
                elif not att.req.done:
                    self.dispatch_or_fail(att.req, att.node, att.row, att.number)
            return
        if isinstance(exc, WorkerLost):
            reason, failure, avoid = exc.reason, None, None
        elif isinstance(exc, HandlerFailed):
            reason, failure, avoid = exc.reason, exc.failure, worker
        else:
            reason, failure, avoid = f"{type(exc).__name__}: {exc}", classify(exc), worker
        for att in kept:
            self.attempt_failed(att, reason, failure=failure, avoid=avoid)

    # --- settling requests -------------------------------------------------------------------

    def attempt_failed(self, att: Attempt, reason: str, *,
                       failure: tuple[int, str] | None = None, avoid: Any = None) -> None:
        """Retry ``att`` (away from ``avoid``, where the engine can) or fail its request.

        A single-node run (a model call) is never retried: it fails with ``failure``
        (TorchServe's status and message for what the handler did), or "Worker died." when
        there is none (it timed out, or its worker died).
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
        deadline = req.request.deadline
        if deadline is not None and deadline <= time.monotonic():
            self.request_deadline(req)  # no budget left for a retry: the client's 408
            return
        if att.number < node.retry_attempts:
            self.dispatch_or_fail(req, node, att.row, att.number + 1, avoid=avoid)
            return
        self.fail(req, NodeFailed(
            f"Error executing {node.name}", workflow=self.workflow, node=node.name,
            attempts=att.number + 1, cause=reason,
        ))

    def expire(self, att: Attempt) -> Any:
        """The watchdog's: abandon ``att`` if unsettled; returns the worker it ran on (now
        presumed stuck), or None when it was not running."""
        with self.lock:
            if att.state >= DONE or att.req.done:
                return None
            was_running = att.state == RUNNING
            att.state = ABANDONED
        reason = ("no answer within the response timeout" if att.req.single
                  else f"timed out after {att.node.timeout_ms} ms")
        self.attempt_failed(att, reason)
        return att.worker if was_running else None

    def request_deadline(self, req: Req) -> None:
        """The watchdog's: the request's own deadline passed."""
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
        if exc is not None:
            req.future.set_exception(exc)
            return
        try:
            result = self.result(req)
        except Exception as failure:
            req.future.set_exception(WfserveError(
                f"Workflow {self.workflow}: fetching the result failed: "
                f"{type(failure).__name__}", workflow=self.workflow))
            return
        req.future.set_result(result)

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the requests in flight, fail the rest with
        ``Unavailable``, and stop (workers leave after their current batch)."""
        with self.idle_cond:
            self.idle_cond.wait_for(lambda: not self.inflight, timeout)
            left = list(self.inflight.values())
        for req in left:
            self.fail(req, Unavailable(f"Workflow {self.workflow} is shutting down",
                                       workflow=self.workflow))
        self.stopping = True
