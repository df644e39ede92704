"""Registered workflows and their lifecycle, safe to use from many threads.

A registration first *reserves* its name (so two concurrent registrations of one name cannot
both load), then loads outside the lock, then commits or releases. Nothing half-registered is
ever visible: a workflow is listed only once its executor has started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field

from kernel.contracts import Executor
from kernel.contracts import Workflow
from kernel.errors import Conflict
from kernel.errors import Unavailable
from kernel.errors import WorkflowNotFound

#: TorchServe's page size when ``limit`` is absent, not an integer, negative or over 100.
MAX_PAGE = 100


@dataclass
class Registered:
    """A live workflow: its definition and the executor running it."""

    workflow: Workflow
    executor: Executor
    registered_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.workflow.name


class Registry:
    """Name -> :class:`Registered`, with reservations for registrations in progress."""

    __slots__ = ("_entries", "_limit", "_lock", "_pending")

    def __init__(self, limit: int = 100) -> None:
        self._entries: dict[str, Registered] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._limit = limit

    @contextmanager
    def reserving(self, name: str) -> Iterator[None]:
        """Hold ``name`` while a registration loads; released when the block ends.

        :raises Conflict: the name is registered or being registered (TorchServe's 409 text).
        :raises Unavailable: ``limit`` workflows are already registered or loading.
        """
        with self._lock:
            if name in self._entries or name in self._pending:
                raise Conflict(f"Workflow {name} is already registered.", workflow=name)
            if len(self._entries) + len(self._pending) >= self._limit:
                raise Unavailable(
                    f"Cannot register {name}: the limit of {self._limit} workflows is reached.",
                    workflow=name,
                )
            self._pending.add(name)
        try:
            yield
        finally:
            with self._lock:
                self._pending.discard(name)

    def add(self, entry: Registered) -> None:
        """Make ``entry`` visible; its name must be reserved by the calling registration."""
        with self._lock:
            if entry.name in self._entries:
                raise Conflict(f"Workflow {entry.name} is already registered.", workflow=entry.name)
            self._entries[entry.name] = entry

    def get(self, name: str) -> Registered:
        """The live workflow ``name``; ``WorkflowNotFound`` with TorchServe's message if absent."""
        entry = self._entries.get(name)
        if entry is None:
            raise WorkflowNotFound(f"Workflow not found: {name}", workflow=name)
        return entry

    def remove(self, name: str) -> Registered:
        """Take ``name`` out of service and return it (the caller closes its executor)."""
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is None:
            raise WorkflowNotFound(f"Workflow not found: {name}", workflow=name)
        return entry

    def names(self) -> list[str]:
        """Registered names, sorted ascending (TorchServe's list order)."""
        with self._lock:
            return sorted(self._entries)

    def entries(self) -> list[Registered]:
        """Registered workflows, sorted by name."""
        with self._lock:
            return [self._entries[n] for n in sorted(self._entries)]

    def page(self, offset: int, limit: int) -> tuple[list[Registered], int | None]:
        """One page of the sorted list and TorchServe's next page token.

        ``limit`` outside 1..100 becomes 100 and a negative ``offset`` 0. The token is
        ``offset + limit`` whenever that is at most the total, even when this is the last page
        (TorchServe 0.12.0's rule, seen in its ground-truth transcript).
        """
        limit = MAX_PAGE if limit <= 0 or limit > MAX_PAGE else limit
        offset = max(offset, 0)
        items = self.entries()
        token = offset + limit if offset + limit <= len(items) else None
        return items[offset : offset + limit], token

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
