"""Records of the Ray engine: one actor, one node (requests and attempts are the core's).

Every field that changes after creation is written under the node's lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from wfserve.kernel.contracts import Batcher
from wfserve.kernel.contracts import NodeState
from wfserve.kernel.contracts import WorkerState
from wfserve.kernel.spec import NodeSpec
from wfserve.plugins.executors.core.nodes import NodeBase
from wfserve.plugins.executors.core.nodes import start_time

STARTING, READY, BUSY, DEAD = "starting", "ready", "busy", "dead"
_STATUS = {STARTING: "LOADING", READY: "READY", BUSY: "BUSY", DEAD: "UNRESPONSIVE"}


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

    def take_index(self) -> int:
        """A worker index not used before in this node."""
        with self.lock:
            return next(self._indexes)

    def live(self) -> list[ActorWorker]:
        """Actors in service (not retired, not dead)."""
        with self.lock:
            return [w for w in self.workers if not w.retired and w.state != DEAD]

    def worker_states(self) -> tuple[WorkerState, ...]:
        """The actors in service; each names the Ray node and process it runs in."""
        with self.lock:
            return tuple(WorkerState(id=w.index, status=_STATUS[w.state], state=w.state,
                                     start_time=start_time(w.started), pid=w.pid,
                                     host=w.node_id)
                         for w in self.workers if not w.retired)

    def state(self, **extra: Any) -> NodeState:
        """As :meth:`NodeBase.state`, with the actors replaced and the ``ray:`` placement."""
        return super().state(replaced_workers=self.replaced,
                             placement=dict(self.spec.extensions.get("ray", {})), **extra)
