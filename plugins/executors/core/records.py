"""The records every engine keeps: one request in flight, one attempt of one node.

Every field that changes after creation is written under the engine's lock. An attempt is
paired with its request by *identity* (``attempt.req``), never by a position in a queue, and
moves ``QUEUED -> RUNNING -> DONE``, or to ``ABANDONED`` (timed out: it never delivers).
"""

from __future__ import annotations

import concurrent.futures
import math
from typing import TYPE_CHECKING
from typing import Any

from wfserve.kernel.contracts import NodeTiming
from wfserve.kernel.contracts import PredictRequest
from wfserve.kernel.contracts import RowMeta

if TYPE_CHECKING:
    from wfserve.plugins.executors.core.mapping import MapState
    from wfserve.plugins.executors.core.nodes import NodeBase

#: attempt states, in the order an attempt goes through them
QUEUED, RUNNING, DONE, ABANDONED = 0, 1, 2, 3


class Req:
    """One request in flight: its future, the inputs gathered per node, the leaf outputs.

    :param pending: node -> parents still to finish.
    :param leaves: how many leaf outputs complete the request.
    :param single: a node run alone (a model call): its one output is the answer.
    """

    __slots__ = (
        "attempt", "done", "future", "inputs", "leaves_left", "maps", "meta", "outputs",
        "pending", "request", "single", "timings",
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
        self.pending = pending
        self.inputs: dict[str, dict[str, Any]] = {}  # node -> {parent: output}
        self.outputs: dict[str, Any] = {}  # values, or an engine's references to them
        self.leaves_left = leaves
        self.timings: list[NodeTiming] = []
        #: child of a map edge -> its map for this request (:mod:`.mapping`)
        self.maps: dict[str, MapState] = {}
        self.done = False  # set once, under the lock, by whoever settles the future


class Attempt:
    """One attempt of one node for one request.

    Its deadline is ``timeout-ms`` after its dispatch (queueing included, as TorchServe's wait
    on the job's promise); a model call's single attempt has none of its own, only its
    request's deadline.
    """

    __slots__ = ("avoid", "deadline", "enqueued", "node", "number", "req", "row", "state",
                 "worker")

    def __init__(
        self, req: Req, node: NodeBase, row: dict[str, Any], number: int, now: float,
        avoid: Any = None,
    ) -> None:
        self.req = req
        self.node = node
        self.row = row
        self.number = number  # 0 for the first attempt
        self.enqueued = now
        if req.single:  # a model call: no timeout-ms, only its request's deadline (TorchServe)
            self.deadline = req.request.deadline or math.inf
            req.attempt = self
        else:
            self.deadline = now + node.timeout
        self.state = QUEUED
        #: the worker running it, once it runs
        self.worker: Any = None
        #: a retry: the worker the previous attempt failed on (an engine may avoid it)
        self.avoid = avoid
