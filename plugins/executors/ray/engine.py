"""The Ray engine's request path: a batch runs on a worker as one call to its actor
(:class:`~wfserve.plugins.executors.core.engine.EngineCore` does the rest).

Each actor of a node has one *collector* thread in this process (the driver). It takes a
whole batch from the node's batcher and sends it to its actor as one call, then waits for the
call's small status record only. The rows' outputs stay in Ray's object store; children
receive the references (``{"body": ref}`` or ``{parent: ref, ...}``) and their actors fetch
them from the store. The driver fetches only the leaves' outputs, when the request completes,
and the outputs of a node with conditional edges out of it, to evaluate their conditions.

Ray calls bound themselves: an attempt's deadline is the wait on its status. A timed-out call
is cancelled (``ray.cancel``); because a running handler in an actor cannot be interrupted,
its actor is killed and replaced as well, and the batch's other attempts go back to the
queue. A dead actor is replaced and its attempts retried; a retry goes to another actor of the
node when it has one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import structlog

from wfserve.kernel.contracts import PredictResult
from wfserve.kernel.errors import WfserveError
from wfserve.plugins.executors.core.engine import EngineCore
from wfserve.plugins.executors.core.engine import HandlerFailed
from wfserve.plugins.executors.core.engine import WorkerLost
from wfserve.plugins.executors.core.engine import WorkerTimedOut
from wfserve.plugins.executors.core.records import Attempt
from wfserve.plugins.executors.core.records import Req
from wfserve.plugins.executors.ray.nodes import BUSY
from wfserve.plugins.executors.ray.nodes import READY
from wfserve.plugins.executors.ray.nodes import ActorWorker
from wfserve.plugins.executors.ray.nodes import RayNode

log = structlog.get_logger(__name__)
#: seconds a collector waits for a batch before checking whether it should exit
POLL_S = 0.25
Replace = Callable[[RayNode, ActorWorker, str], None]
#: ``(node, rows, seconds, error class or None)``: one handler call that ran on an actor
Report = Callable[[str, int, float, str | None], None]


class Engine(EngineCore):
    """The Ray engine; owned by :class:`~.executor.RayExecutor`.

    :param replace: the executor's ``(node, worker, reason)``: kill that actor, start another.
    :param report: the executor's ``(node, rows, seconds, error)``: a handler call ran on an
        actor (the status record's ``called`` and ``raised``), before its batch is settled.
    """

    def __init__(self, workflow: str, nodes: Mapping[str, RayNode], leaves: list[str],
                 replace: Replace, report: Report) -> None:
        super().__init__(workflow, nodes, leaves, watch_attempts=False)
        self.replace = replace
        self.report = report

    # --- collectors --------------------------------------------------------------------------

    def collect(self, node: RayNode, worker: ActorWorker) -> None:
        """A collector thread: serve ``node``'s batcher with ``worker`` until it leaves."""
        try:
            while not self.stopping and not worker.retired:
                batch = self.due(node, node.batcher.next_batch(POLL_S))
                batch = self._mine(node, worker, [a for a in batch if not a.req.done])
                if batch:
                    self.dispatch_ready(self.execute(node, worker, self._in_time(node, batch)))
        except Exception:  # NOTE: a collector must never leak an exception into its thread
            log.exception("collector failed", workflow=self.workflow, node=node.name)

    def _mine(self, node: RayNode, worker: ActorWorker, batch: list[Attempt]) -> list[Attempt]:
        """The attempts of ``batch`` this actor should run: a retry goes back to the queue
        when it failed on this actor and the node has another one."""
        if not any(a.avoid is worker for a in batch) or len(node.live()) < 2:
            return batch
        mine: list[Attempt] = []
        others: list[Attempt] = []
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

    def _in_time(self, node: RayNode, batch: list[Attempt]) -> list[Attempt]:
        """The attempts of ``batch`` still within their deadline; the others fail."""
        now = time.monotonic()
        for att in batch:
            if att.deadline <= now:
                self.attempt_failed(att, f"timed out after {node.timeout_ms} ms (queued)")
        return [a for a in batch if a.deadline > now]

    # --- one batch on one actor --------------------------------------------------------------

    def run_on_worker(self, node: Any, worker: ActorWorker, live: list[Attempt]
                      ) -> tuple[list[Any], float]:
        """Send the batch to the actor and wait for its status (until the earliest deadline);
        returns the output references and the seconds the actor's handler ran. A handler call
        whose status came back is reported (:attr:`report`) first, failed or not."""
        import ray

        worker.state = BUSY
        refs = worker.handle.run.options(num_returns=len(live) + 1).remote(
            [a.row for a in live], [a.req.meta for a in live])
        status_ref, outputs = refs[0], refs[1:]
        deadline = min(a.deadline for a in live)
        wait = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
        try:  # only the small status record comes back to this process
            status = ray.get(status_ref, timeout=wait)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(status_ref)  # a call still queued at the actor never runs
            reason = f"timed out after {node.timeout_ms} ms"
            self.replace(node, worker, reason)  # a running one stops only with its actor
            raise WorkerTimedOut(reason) from None
        except ray.exceptions.RayError as exc:
            reason = f"actor died: {type(exc).__name__}"
            self.replace(node, worker, reason)
            raise WorkerLost(reason) from None
        worker.state = READY
        if status["called"] is not None:
            self.report(node.name, len(live), status["called"], status["raised"])
        if status["error"] is not None:
            raise HandlerFailed(status["error"], status.get("failure"))
        for att, response in zip(live, status.get("responses", ()), strict=False):
            if att.req.single:  # what the handler set reaches the model call's answer
                vars(att.req.request.response).update(vars(response))
        return list(outputs), status["run"]

    def values(self, outputs: list[Any]) -> list[Any]:
        """The outputs' values, fetched from the object store (for the edges' conditions)."""
        import ray

        return list(ray.get(outputs))

    def store(self, value: Any) -> Any:
        """A gathered map output, put in the object store (children and :meth:`result` take
        references)."""
        import ray

        return ray.put(value)

    def result(self, req: Req) -> Any:
        """The values of the leaves that ran, fetched from the object store (the one fetch per
        request)."""
        import ray

        if req.single:
            (ref,) = req.outputs.values()
            return ray.get(ref)
        ran = [leaf for leaf in self.leaves if leaf in req.outputs]
        values = ray.get([req.outputs[leaf] for leaf in ran])
        return PredictResult(dict(zip(ran, values, strict=True)), req.timings)
