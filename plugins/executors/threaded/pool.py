"""An elastic pool of runner threads: starts a thread when no idle one can take a task.

Runners execute batch-size-1 nodes inline; every task handed over already holds a node
worker, so the number of busy runners is bounded by the number of workers. Idle runners exit
after :data:`IDLE_EXIT_S`. Tasks never raise into the thread: failures are logged.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from wfserve.kernel.errors import Unavailable

log = structlog.get_logger(__name__)
IDLE_EXIT_S = 10.0


class RunnerPool:
    """Runs callables on reused threads named ``<name>-runner-<n>``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._cond = threading.Condition()
        self._idle = 0
        self._count = 0
        self._stopped = False
        self.threads: set[threading.Thread] = set()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a runner; raises ``Unavailable`` once stopped."""
        with self._cond:
            if self._stopped:
                raise Unavailable(f"Workflow {self.name} is shutting down", workflow=self.name)
            self._tasks.append((fn, args))
            if len(self._tasks) <= self._idle:
                self._cond.notify()
                return
            self._count += 1
            thread = threading.Thread(
                target=self._loop, name=f"{self.name}-runner-{self._count}", daemon=True
            )
            self.threads.add(thread)
        thread.start()

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._tasks and not self._stopped:
                    self._idle += 1
                    woken = self._cond.wait(IDLE_EXIT_S)
                    self._idle -= 1
                    if not woken and not self._tasks:
                        self.threads.discard(me)
                        return
                if not self._tasks:
                    self.threads.discard(me)
                    return
                fn, args = self._tasks.popleft()
            try:
                fn(*args)
            except Exception:  # NOTE: a runner must survive anything a task does
                log.exception("executor task failed", pool=self.name)

    def stop(self) -> None:
        """Refuse new tasks; runners finish queued ones and exit."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
