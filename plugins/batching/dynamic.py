"""A bounded queue that hands out batches: up to batch-size items, waiting at most
max-batch-delay after the first one arrived.

The delay is measured from the *arrival* of the oldest queued item, so an item that already
waited for a busy worker is not delayed again. Thread-safe; any number of producers and
consumers. Items are opaque: pairing a result with its request is the consumer's business
(the executor keeps the batch list it received, never a position in this queue).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from wfserve.kernel.errors import Unavailable


class DynamicBatcher:
    """Collects items into batches for one node's workers (see the module docstring).

    :param batch_size: the most items one batch holds (>= 1).
    :param max_batch_delay_ms: how long a batch may wait to fill after its first item arrived.
    :param capacity: the most items queued at once; ``put`` beyond it raises ``Unavailable``.
    :param name: the node name, for messages.
    """

    def __init__(
        self,
        batch_size: int = 1,
        max_batch_delay_ms: float = 0,
        capacity: int = 100,
        name: str = "",
    ) -> None:
        self._items: deque[Any] = deque()
        self._times: deque[float] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.name = name
        self.capacity = max(1, int(capacity))
        self.batch_size = 1
        self.max_batch_delay = 0.0
        self.configure(batch_size=batch_size, max_batch_delay_ms=max_batch_delay_ms)

    def configure(
        self, *, batch_size: int | None = None, max_batch_delay_ms: float | None = None
    ) -> None:
        """Change batch-size and/or max-batch-delay; queued items are kept."""
        with self._cond:
            if batch_size is not None:
                self.batch_size = max(1, int(batch_size))
            if max_batch_delay_ms is not None:
                self.max_batch_delay = max(0.0, float(max_batch_delay_ms)) / 1000.0
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> None:
        """Queue one item; raises ``Unavailable`` at once when the queue is full or closed."""
        with self._cond:
            if self._closed:
                raise Unavailable(f"Node {self.name} is shutting down", node=self.name)
            if len(self._items) >= self.capacity:
                raise Unavailable(
                    f"Node {self.name} job queue is full ({self.capacity} requests)",
                    node=self.name, capacity=self.capacity,
                )
            self._items.append(item)
            self._times.append(time.monotonic())
            if self.batch_size > 1 and len(self._items) == self.batch_size:
                self._cond.notify_all()  # wake any consumer waiting for the batch to fill
            else:
                self._cond.notify()

    def next_batch(self, timeout: float | None = None) -> list[Any]:
        """Block for the next batch; an empty list means ``timeout`` passed or it was closed.

        :param timeout: seconds to wait for a *first* item (None: forever). Once one is there,
            the batch fills until batch-size or until max-batch-delay after that item arrived.
        """
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                while not self._items:
                    if self._closed:
                        return []
                    remaining = None if end is None else end - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return []
                    self._cond.wait(remaining)
                if self._closed:
                    return []
                fill_until = self._times[0] + self.max_batch_delay
                while 0 < len(self._items) < self.batch_size and not self._closed:
                    remaining = fill_until - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._items and not self._closed:
                    return self._take(min(self.batch_size, len(self._items)))
                # another consumer took the items while this one waited: start over

    def _take(self, count: int) -> list[Any]:
        items, times = self._items, self._times
        batch = [items.popleft() for _ in range(count)]
        for _ in range(count):
            times.popleft()
        return batch

    def drain(self) -> list[Any]:
        """Remove and return every queued item (used after ``close`` to fail what is left)."""
        with self._cond:
            return self._take(len(self._items))

    def close(self) -> None:
        """Refuse new items and wake every waiting consumer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
