"""Records of the Ray executor: a request in flight, one attempt of one node, one actor, one node.

Every field that changes after creation is written under the engine's lock (requests and
attempts) or the node's lock (its actors). Outputs recorded here are Ray object references,
never values, until the request's leaves are fetched.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from typing import Any

from kernel.contracts import Batcher
from kernel.contracts import NodeTiming
from kernel.contracts import PredictRequest
from kernel.contracts import RowMeta
from kernel.spec import NodeSpec
from plugins.executors.common import NodeBase
from plugins.executors.common import start_time

STARTING, READY, BUSY, DEAD = "starting", "ready", "busy", "dead"
_STATUS = {STARTING: "LOADING", READY: "READY", BUSY: "BUSY", DEAD: "UNRESPONSIVE"}


class Req:
    """One request in flight: its future, per-node inputs gathered, leaf output references."""

    __slots__ = ("done", "future", "inputs", "leaves_left", "meta", "outputs", "pending",
                 "request", "single", "timings")

    def __init__(self, request: PredictRequest, pending: dict[str, int], leaves: int,
                 single: bool) -> None:
        self.request = request
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.single = single
        self.meta = RowMeta(request.request_id, request.headers, request.response)
        self.pending = pending
        self.inputs: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, Any] = {}
        self.leaves_left = leaves
        self.timings: list[NodeTiming] = []
        self.done = False


class Attempt:
    """One attempt of one node for one request; its ``timeout-ms`` runs from its dispatch."""

    __slots__ = ("avoid", "deadline", "enqueued", "node", "number", "req", "row")

    def __init__(self, req: Req, node: RayNode, row: dict[str, Any], number: int,
                 now: float) -> None:
        self.req = req
        self.node = node
        self.row = row
        self.number = number
        self.enqueued = now
        self.deadline = now + node.timeout
        self.avoid: ActorWorker | None = None  # a retry: the actor the attempt failed on


class ActorWorker:
    """One actor of a node, served by one collector thread of the driver."""

    __slots__ = ("handle", "index", "node_id", "pid", "retired", "started", "state", "thread")

    def __init__(self, index: int, handle: Any) -> None:
        self.index = index
        self.handle = handle
        self.started = time.time()  # wall clock, for describe's startTime
        self.state = STARTING
        self.retired = False
        self.node_id: str | None = None
        self.pid: int | None = None
        self.thread: threading.Thread | None = None


class RayNode(NodeBase):
    """Live state of one DAG node: its config, batcher and actors."""

    def __init__(self, spec: NodeSpec, parents: list[str], children: list[str],
                 batcher: Batcher, options: dict[str, Any]) -> None:
        super().__init__(spec, parents, children, batcher)
        self.options = options
        self.workers: list[ActorWorker] = []
        self.replaced = 0
        self._indexes = itertools.count()

    @property
    def target(self) -> int:
        """How many actors the node should have (max-workers, as the threaded executor)."""
        return self.max_workers

    def take_index(self) -> int:
        """A worker index not used before in this node."""
        with self.lock:
            return next(self._indexes)

    def live(self) -> list[ActorWorker]:
        """Actors in service (not retired, not dead)."""
        with self.lock:
            return [w for w in self.workers if not w.retired and w.state != DEAD]

    def queue_length(self) -> int:
        """Items waiting in the batcher (0 when it cannot tell)."""
        try:
            return len(self.batcher)  # type: ignore[arg-type]
        except TypeError:
            return 0

    def describe(self) -> dict[str, Any]:
        """JSON-able live view; each worker names the Ray node and process it runs in."""
        with self.lock:
            workers = [
                {"id": w.index, "state": w.state, "status": _STATUS[w.state],
                 "rayNodeId": w.node_id, "pid": w.pid, "startTime": start_time(w.started)}
                for w in self.workers if not w.retired
            ]
        queued = self.queue_length()
        return {
            **self.config_view(),
            "workers": workers,
            "replacedWorkers": self.replaced,
            "ray": dict(self.spec.extensions.get("ray", {})),
            "queueLength": queued,
            "queued": queued,
        }
