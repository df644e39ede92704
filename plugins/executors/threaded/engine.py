"""The threaded engine's request path: a batch runs on a worker by calling its handler on
the thread that holds the worker (:class:`~wfserve.plugins.executors.core.engine.EngineCore` does
the rest).

Fast path: a batch-size-1 node whose queue is empty runs on the thread that produced its
input when one of its workers is idle, so a chain of such nodes costs no thread handoff per
hop; the first ready child continues on the same thread, siblings go to runner threads. A
request's first node may also be left to the submitting thread (:mod:`.inline`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from wfserve.kernel.errors import Unavailable
from wfserve.plugins.executors.core.engine import EngineCore
from wfserve.plugins.executors.core.engine import Ready
from wfserve.plugins.executors.core.outputs import finish_outputs
from wfserve.plugins.executors.core.records import Attempt
from wfserve.plugins.executors.core.records import Req
from wfserve.plugins.executors.response import SerializerLookup
from wfserve.plugins.executors.threaded.nodes import NodeRuntime
from wfserve.plugins.executors.threaded.nodes import Worker
from wfserve.plugins.executors.threaded.pool import RunnerPool

log = structlog.get_logger(__name__)
#: a batch that the thread holding its worker is to run: ``(node, worker, attempts)``
Continuation = tuple[NodeRuntime, Worker, list[Attempt]]


class Engine(EngineCore):
    """The threaded engine; owned by :class:`~.executor.ThreadedExecutor`."""

    def __init__(self, workflow: str, nodes: Mapping[str, NodeRuntime], leaves: list[str],
                 typed: bool, serializer_lookup: SerializerLookup, pool: RunnerPool) -> None:
        super().__init__(workflow, nodes, leaves)
        self.typed = typed
        self.lookup = serializer_lookup
        self.pool = pool

    # --- dispatch ----------------------------------------------------------------------------

    def dispatch(self, req: Req, node: Any, row: dict[str, Any], number: int, *,
                 avoid: Any = None, here: bool = False) -> Continuation | None:
        """Start attempt ``number`` of ``node`` for ``req``.

        :param here: the caller will run a returned continuation on its own thread.
        :raises Unavailable: the node's queue is full or the executor is closing.
        """
        att = self.new_attempt(req, node, row, number, avoid)
        if node.inline and not node.queue_length():
            worker = node.try_acquire()
            if worker is not None:
                # a node with a stuck worker may hang again: not on the caller's thread (an
                # HTTP thread, see .inline), which a hang would hold until the handler returns
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

    def run_task(self, node: NodeRuntime, worker: Worker, batch: list[Attempt]) -> None:
        """Run the batch and every continuation it yields, on this thread."""
        cont: Continuation | None = (node, worker, batch)
        while cont is not None:
            cont = self.run(*cont, on_collector=False)

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
                self.run(node, worker, batch, on_collector=True)
        except Exception:  # NOTE: a collector must never leak an exception into its thread
            log.exception("collector failed", workflow=self.workflow, node=node.name)

    # --- running a batch ---------------------------------------------------------------------

    def run(self, node: NodeRuntime, worker: Worker, batch: list[Attempt], on_collector: bool
            ) -> Continuation | None:
        """Run one batch on ``worker`` (:meth:`execute`); returns a continuation."""
        worker.on_collector = on_collector
        ready = self.execute(node, worker, batch)
        return self._continue(ready, here=not on_collector)

    def run_on_worker(self, node: Any, worker: Worker, live: list[Attempt]
                      ) -> tuple[list[Any], None]:
        """Call the worker's handler on this thread; outputs checked, and encoded unless
        typed."""
        outputs = worker.handler([a.row for a in live], [a.req.meta for a in live])
        return finish_outputs(outputs, len(live), self.typed, self.lookup), None

    def release(self, node: Any, worker: Worker) -> None:
        """Give the worker back to its node."""
        node.release(worker)

    def _continue(self, ready: Ready, here: bool) -> Continuation | None:
        cont: Continuation | None = None
        for req, child, row in ready:
            if req.done:
                continue  # a sibling branch failed: stop scheduling this request
            got = self.dispatch_or_fail(req, child, row, 0, here=here and cont is None)
            cont = cont or got
        return cont
