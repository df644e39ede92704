"""Plain records of the threaded executor: one request in flight, one attempt of one node.

Every field that changes after creation is written under the executor's lock. An attempt is
paired with its request by *identity* (``attempt.req``), never by a position in a queue.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING
from typing import Any

from kernel.contracts import NodeTiming
from kernel.contracts import PredictRequest
from kernel.contracts import RowMeta

if TYPE_CHECKING:
    from plugins.executors.threaded.nodes import NodeRuntime
    from plugins.executors.threaded.nodes import Worker

#: attempt states
QUEUED, RUNNING, DONE, ABANDONED = 0, 1, 2, 3


class Req:
    """One request in flight: its future, the inputs gathered per node, the leaf outputs."""

    __slots__ = (
        "attempt", "done", "future", "inputs", "leaves_left", "meta", "outputs", "pending",
        "request", "single", "timings",
    )

    def __init__(
        self, request: PredictRequest, pending: dict[str, int], leaves: int, single: bool = False
    ) -> None:
        self.request = request
        #: PredictResult, or for a single-node run (``single``) that node's output
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.single = single
        #: a single-node run's one attempt (it is never retried), None otherwise
        self.attempt: Attempt | None = None
        self.meta = RowMeta(request.request_id, request.headers, request.response)
        self.pending = pending  # node -> parents still to finish
        self.inputs: dict[str, dict[str, Any]] = {}  # node -> {parent: output}
        self.outputs: dict[str, Any] = {}
        self.leaves_left = leaves
        self.timings: list[NodeTiming] = []
        self.done = False  # set once, under the lock, by whoever settles the future


class Attempt:
    """One attempt of one node for one request; abandoned attempts never deliver."""

    __slots__ = ("deadline", "enqueued", "node", "number", "req", "row", "state", "worker")

    def __init__(
        self, req: Req, node: NodeRuntime, row: dict[str, Any], number: int, now: float
    ) -> None:
        self.req = req
        self.node = node
        self.row = row
        self.number = number  # 0 for the first attempt
        self.enqueued = now
        self.deadline = now + node.timeout
        self.state = QUEUED
        self.worker: Worker | None = None
