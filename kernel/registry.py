"""Registered workflows, their versions and lifecycle, safe to use from many threads.

The registry is the single source of truth: per name, a set of versions (each a
:class:`Registered`) and a default version pointer. ``get(name)`` answers the default; changing
the default (``set_default``, ``swap``) is one assignment under the lock, so a request sees the
old version or the new one, never neither.

A registration first *reserves* its ``(name, version)`` (so two concurrent registrations of one
version cannot both load), then loads outside the lock, then commits or releases. An update
reserves the whole name. Nothing half-registered is ever visible: a version is listed only
once its executor has started.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Generic
from typing import Protocol
from typing import TypeVar

from wfserve.kernel.contracts import Executor
from wfserve.kernel.contracts import Workflow
from wfserve.kernel.errors import BadRequest
from wfserve.kernel.errors import Conflict
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WorkflowNotFound

#: TorchServe's page size when ``limit`` is absent, not an integer, negative or over 100.
MAX_PAGE = 100
T = TypeVar("T")


class Versioned(Protocol):
    """What a registry holds: something with a name and a version."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...


E = TypeVar("E", bound=Versioned)
#: the pending marker of an update: it holds every version of the name
WHOLE = "*"


@dataclass
class Registered:
    """A live workflow version: its definition, the executor running it, its scale overrides.

    ``overrides`` maps a node name to the values changed through the scale call
    (``min_workers``, ``max_workers``, ``batch_size``, ``max_batch_delay``); snapshots keep it.
    """

    workflow: Workflow
    executor: Executor
    registered_at: float = field(default_factory=time.time)
    overrides: dict[str, dict[str, int]] = field(default_factory=dict)
    #: per reusable fetch (key ``""`` for the war, else the node name): ``(redacted url,
    #: Fetched.keep)``, handed back to the fetcher by a snapshot's restore as ``reuse``
    fetched: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: names this load of the version in the registration store (a new load, a new uid)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def name(self) -> str:
        return self.workflow.name

    @property
    def version(self) -> str:
        return str(getattr(self.workflow, "version", "1.0"))


@dataclass
class _Versions(Generic[E]):
    versions: dict[str, E]
    default: str

    def current(self) -> E:
        return self.versions[self.default]


def _version_key(version: str) -> tuple[Any, ...]:
    """Numeric-aware order: 1.0 < 2.0 < 10.0; non-numeric parts compare as text."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in version.split("."))


class Registry(Generic[E]):
    """Name -> versions and a default, with reservations for registrations in progress."""

    __slots__ = ("_entries", "_limit", "_lock", "_max_versions", "_pending")

    def __init__(self, limit: int = 100, max_versions: int = 10) -> None:
        self._entries: dict[str, _Versions[E]] = {}
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._limit = limit
        self._max_versions = max_versions

    def check_room(self, name: str, version: str | None = None) -> None:
        """Raise now what :meth:`reserving` would raise for ``name`` (and ``version`` when
        known), without reserving anything: lets a registration refuse before it downloads.

        :raises Conflict: that version is registered or being registered, or the name is
            being updated.
        :raises Unavailable: a count limit (workflows, versions of one workflow) is reached.
        """
        with self._lock:
            self._check_room(name, version)

    def check_updatable(self, name: str) -> None:
        """Raise now what :meth:`updating` would raise for ``name``, reserving nothing."""
        with self._lock:
            self._check_updatable(name)

    def _check_room(self, name: str, version: str | None) -> None:
        held = self._entries.get(name)
        if (name, WHOLE) in self._pending or (version is not None and (
                (held is not None and version in held.versions)
                or (name, version) in self._pending)):
            raise Conflict(f"Workflow {name} is already registered.", workflow=name,
                           version=version)
        pending = sum(1 for n, _ in self._pending if n == name)
        if held is None and not pending:
            names = set(self._entries) | {n for n, _ in self._pending}
            if len(names) >= self._limit:
                raise Unavailable(
                    f"Cannot register {name}: the limit of {self._limit} workflows is "
                    "reached.", workflow=name,
                )
        versions = (len(held.versions) if held is not None else 0) + pending
        if versions >= self._max_versions:
            raise Unavailable(
                f"Cannot register another version of {name}: the limit of "
                f"{self._max_versions} versions per workflow is reached.", workflow=name,
            )

    def _check_updatable(self, name: str) -> None:
        if name not in self._entries:
            raise WorkflowNotFound(f"Workflow not found: {name}", workflow=name)
        if any(n == name for n, _ in self._pending):
            raise Conflict(f"Workflow {name} is being updated or registered.", workflow=name)

    @contextmanager
    def reserving(self, name: str, version: str = "1.0") -> Iterator[None]:
        """Hold ``(name, version)`` while a registration loads; released when the block ends.

        :raises Conflict: that version is registered or being registered, or the name is being
            updated (TorchServe's 409 text).
        :raises Unavailable: ``limit`` workflows (names) are already registered or loading, or
            ``max_versions`` versions of ``name`` are.
        """
        with self._lock:
            self._check_room(name, version)
            self._pending.add((name, version))
        try:
            yield
        finally:
            with self._lock:
                self._pending.discard((name, version))

    @contextmanager
    def updating(self, name: str) -> Iterator[None]:
        """Hold every version of ``name`` while its replacement loads.

        :raises WorkflowNotFound: ``name`` is not registered.
        :raises Conflict: ``name`` is already being updated or registered.
        """
        with self._lock:
            self._check_updatable(name)
            self._pending.add((name, WHOLE))
        try:
            yield
        finally:
            with self._lock:
                self._pending.discard((name, WHOLE))

    def add(self, entry: E) -> None:
        """Make ``entry`` visible; the first version of a name becomes its default."""
        with self._lock:
            held = self._entries.get(entry.name)
            if held is None:
                self._entries[entry.name] = _Versions({entry.version: entry}, entry.version)
            elif entry.version in held.versions:
                raise Conflict(f"Workflow {entry.name} is already registered.", workflow=entry.name)
            else:
                held.versions[entry.version] = entry

    def swap(self, entry: E) -> list[E]:
        """Install ``entry`` as its name's default in one step; returns what it replaced.

        Replaced: the previous default version and any version equal to ``entry``'s; the caller
        drains and frees them. Other versions stay.
        """
        with self._lock:
            held = self._entries.get(entry.name)
            if held is None:
                self._entries[entry.name] = _Versions({entry.version: entry}, entry.version)
                return []
            old = [held.current()]
            same = held.versions.get(entry.version)
            if same is not None and same is not old[0]:
                old.append(same)
            for gone in old:
                held.versions.pop(gone.version, None)
            held.versions[entry.version] = entry
            held.default = entry.version
            return old

    def install(self, name: str, versions: dict[str, E], default: str | None) -> list[E]:
        """Make ``versions`` (with ``default``) all of ``name``'s versions in one step; an
        empty ``versions`` removes the name. Returns the entries no longer held (compared by
        identity); the caller frees them. Used to apply the registration store's state.
        """
        with self._lock:
            held = self._entries.pop(name, None)
            if versions:
                assert default in versions, "the default must be one of the versions"
                self._entries[name] = _Versions(dict(versions), default)
            if held is None:
                return []
            kept = {id(e) for e in versions.values()}
            return [e for e in held.versions.values() if id(e) not in kept]

    def get(self, name: str, version: str | None = None) -> E:
        """The default version of ``name``, or ``version`` of it.

        :raises WorkflowNotFound: TorchServe's "Workflow not found: <name>", or for a missing
            version "Workflow version: <v> does not exist for workflow: <name>".
        """
        with self._lock:
            held = self._entries.get(name)
            if held is None:
                raise WorkflowNotFound(f"Workflow not found: {name}", workflow=name)
            entry = held.current() if version is None else held.versions.get(version)
        if entry is None:
            raise WorkflowNotFound(
                f"Workflow version: {version} does not exist for workflow: {name}",
                workflow=name, version=version,
            )
        return entry

    def versions(self, name: str) -> tuple[list[E], str]:
        """Every version of ``name`` (ascending) and the default version."""
        with self._lock:
            held = self._entries.get(name)
            if held is None:
                raise WorkflowNotFound(f"Workflow not found: {name}", workflow=name)
            keys = sorted(held.versions, key=_version_key)
            return [held.versions[k] for k in keys], held.default

    def set_default(self, name: str, version: str) -> None:
        """Point ``name``'s default at ``version`` (atomic)."""
        with self._lock:
            held = self._entries.get(name)
            if held is None:
                raise WorkflowNotFound(f"Workflow not found: {name}", workflow=name)
            if version not in held.versions:
                raise WorkflowNotFound(
                    f"Workflow version: {version} does not exist for workflow: {name}",
                    workflow=name, version=version,
                )
            held.default = version

    def remove(self, name: str, version: str | None = None) -> list[E]:
        """Take every version of ``name`` (or only ``version``) out of service and return them.

        The caller closes their executors. Removing the only version removes the name.

        :raises WorkflowNotFound: the name or version is absent.
        :raises BadRequest: ``version`` is the default while other versions remain.
        """
        with self._lock:
            held = self._entries.get(name)
            if held is None:
                raise WorkflowNotFound(f"Workflow not found: {name}", workflow=name)
            if version is None or list(held.versions) == [version]:
                if version is not None and version not in held.versions:
                    raise WorkflowNotFound(
                        f"Workflow version: {version} does not exist for workflow: {name}",
                        workflow=name, version=version)
                del self._entries[name]
                return list(held.versions.values())
            if version not in held.versions:
                raise WorkflowNotFound(
                    f"Workflow version: {version} does not exist for workflow: {name}",
                    workflow=name, version=version,
                )
            if version == held.default:
                raise BadRequest(
                    f"Cannot remove the default version {version} of workflow {name}: set "
                    "another default first, or unregister the workflow.",
                    workflow=name, version=version,
                )
            return [held.versions.pop(version)]

    def names(self) -> list[str]:
        """E names, sorted ascending (TorchServe's list order)."""
        with self._lock:
            return sorted(self._entries)

    def entries(self) -> list[E]:
        """The default version of every registered workflow, sorted by name."""
        with self._lock:
            return [self._entries[n].current() for n in sorted(self._entries)]

    def state(self) -> list[tuple[E, bool]]:
        """Every version of every workflow with its default flag, sorted by name and version."""
        with self._lock:
            return [
                (held.versions[v], v == held.default)
                for n in sorted(self._entries)
                for held in (self._entries[n],)
                for v in sorted(held.versions, key=_version_key)
            ]

    def page(self, offset: int, limit: int) -> tuple[list[E], int | None]:
        """One page of the sorted list and TorchServe's next page token (:func:`page`)."""
        return page(self.entries(), offset, limit)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def page(items: Sequence[T], offset: int, limit: int) -> tuple[list[T], int | None]:
    """One page of ``items`` and its next page token, by TorchServe 0.12.0's rule
    (``ApiUtils.getModelList``, also its workflow list).

    Only a ``limit`` below 0 or above 100 becomes 100 (``limit=0`` is an empty page), and a
    negative ``offset`` 0. The token is ``offset + limit`` whenever that is at most the total,
    even on the last page or an empty one (seen in TorchServe's ground-truth transcript).
    """
    limit = MAX_PAGE if limit < 0 or limit > MAX_PAGE else limit
    offset = max(offset, 0)
    token = offset + limit if offset + limit <= len(items) else None
    return list(items[offset : offset + limit]), token
