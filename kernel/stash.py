"""Typed per-plugin state on shared kernel objects (pytest's ``Stash``, in small).

A plugin declares a module-level ``KEY = StashKey[Thing]()`` and keeps its state in
``kernel.stash[KEY]`` instead of adding attributes to kernel objects. Keys are compared by
identity, so two plugins can never collide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from typing import Generic
from typing import TypeVar
from typing import cast

T = TypeVar("T")


class StashKey(Generic[T]):
    """A typed key; create one per kind of state, at module level."""

    __slots__ = ()


class Stash:
    """A thread-safe mapping from :class:`StashKey` to values of the key's type."""

    __slots__ = ("_data", "_lock")

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], object] = {}
        self._lock = threading.Lock()

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._data[key])

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __contains__(self, key: StashKey[T]) -> bool:
        return key in self._data

    def get(self, key: StashKey[T], default: T | None = None) -> T | None:
        """The value for ``key``, or ``default``."""
        return cast("T | None", self._data.get(key, default))

    def setdefault(self, key: StashKey[T], factory: Callable[[], T]) -> T:
        """The value for ``key``, made by ``factory`` (once, under a lock) when absent."""
        with self._lock:
            if key not in self._data:
                self._data[key] = factory()
            return cast(T, self._data[key])
