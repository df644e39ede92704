"""The watchdog thread of every engine: expires attempts past ``timeout-ms`` and requests
past their deadline.

Each node keeps its attempts in a deque in dispatch order; as all attempts of a node share one
timeout, that is deadline order, so the watchdog only looks at the heads: settled attempts are
dropped, expired ones handed to ``on_expire``. Request deadlines, which differ per request,
live in a heap. Registration costs one ``deque.append``; the watchdog is woken early only
when a new deadline falls before its planned wake-up. An engine whose workers bound their
own calls registers no attempts; the watchdog then keeps request deadlines only.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence

import structlog

from wfserve.plugins.executors.core.nodes import NodeBase
from wfserve.plugins.executors.core.records import DONE
from wfserve.plugins.executors.core.records import Attempt
from wfserve.plugins.executors.core.records import Req

log = structlog.get_logger(__name__)
MAX_SLEEP_S = 1.0  # earlier deadlines wake it through hint()
MIN_SLEEP_S = 0.002


class Watchdog:
    """Calls ``on_expire(attempt)`` and ``on_deadline(req)`` from its own thread."""

    def __init__(
        self,
        name: str,
        nodes: Sequence[NodeBase],
        on_expire: Callable[[Attempt], None],
        on_deadline: Callable[[Req], None],
    ) -> None:
        self.name = name
        self._nodes = nodes
        self._on_expire = on_expire
        self._on_deadline = on_deadline
        self._cond = threading.Condition()
        self._requests: list[tuple[float, int, Req]] = []
        self._seq = itertools.count()
        self._wake_at = 0.0
        self._stopped = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread."""
        self.thread = threading.Thread(
            target=self._loop, name=f"{self.name}-watchdog", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        """Stop the thread (it exits within one tick)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def hint(self, deadline: float) -> None:
        """A deadline was registered: wake early if it is before the planned wake-up."""
        if deadline < self._wake_at:
            with self._cond:
                if deadline < self._wake_at:
                    self._wake_at = deadline
                    self._cond.notify()

    def track_request(self, req: Req, deadline: float) -> None:
        """Fail ``req`` through ``on_deadline`` if it is still running at ``deadline``."""
        with self._cond:
            heapq.heappush(self._requests, (deadline, next(self._seq), req))
            if deadline < self._wake_at:
                self._wake_at = deadline
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._wake_at = math.inf  # while scanning, every hint is recorded
            try:
                wake = self._tick(time.monotonic())
            except Exception:  # NOTE: the watchdog must outlive any callback failure
                log.exception("watchdog tick failed", workflow=self.name)
                wake = time.monotonic() + MAX_SLEEP_S
            with self._cond:
                if self._stopped:
                    return
                wake = min(wake, self._wake_at)
                self._wake_at = wake
                delay = wake - time.monotonic()
                if delay > 0:
                    self._cond.wait(max(delay, MIN_SLEEP_S))

    def _tick(self, now: float) -> float:
        wake = now + MAX_SLEEP_S
        for node in self._nodes:
            timers = node.timers
            while timers:
                att = timers[0]
                if att.state >= DONE or att.req.done:
                    timers.popleft()
                elif att.deadline <= now:
                    timers.popleft()
                    self._on_expire(att)
                else:
                    wake = min(wake, att.deadline)
                    break
        expired: list[Req] = []
        with self._cond:
            heap = self._requests
            while heap and (heap[0][2].done or heap[0][0] <= now):
                _, _, req = heapq.heappop(heap)
                if not req.done:
                    expired.append(req)
            if heap:
                wake = min(wake, heap[0][0])
        for req in expired:
            self._on_deadline(req)
        return wake
