"""The registration store's contract: the one source of truth for what every server process
serves, and the roll of the processes serving it.

A store holds a list of :class:`Record` (one per registered workflow version) under a
*revision*, a number that grows with every change. A change is a function from the current
records to the new ones, applied atomically (:meth:`RegistrationStore.change`): two processes
changing the store at once are serialised, and a change whose function raises changes nothing,
so limits and conflicts are checked against the store itself, not against one process's view.

Each server process reports itself as a :class:`Member` (its pid, the revision it serves,
a heartbeat); a management call answers once every live member serves its revision
(:mod:`wfserve.kernel.sync`). The default store is a SQLite file in the state folder
(:mod:`wfserve.plugins.store`); a plugin may put the same contract in a database
(``wfserve_registration_store``).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Protocol

#: scale values a record may carry, per node
SCALE_KEYS = frozenset({"min_workers", "max_workers", "batch_size", "max_batch_delay"})


@dataclass(frozen=True)
class Record:
    """One registered workflow version, as every process must serve it.

    ``uid`` names one load of it: a process holding that uid serves this record (a new uid
    for the same name and version, as an update makes, means load again). ``url`` is redacted;
    ``fetched`` maps a fetch key (``""`` for the war, else the node name) to ``(redacted url,
    kept path)``: the archive bytes the registering process fetched, which the others load
    instead of fetching again. ``scale`` holds the scale call's values per node.
    """

    uid: str
    name: str
    version: str
    url: str
    default: bool
    scale: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    fetched: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (:meth:`from_json` reads it back)."""
        return {"uid": self.uid, "name": self.name, "version": self.version, "url": self.url,
                "default": self.default,
                "scale": {n: dict(v) for n, v in self.scale.items()},
                "fetched": {k: list(v) for k, v in self.fetched.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        """The record :meth:`to_json` wrote.

        :raises ValueError: a field is missing or of the wrong type.
        """
        try:
            scale = {str(n): {str(k): int(v) for k, v in dict(values).items()}
                     for n, values in dict(data.get("scale", {})).items()}
            fetched = {str(k): (str(v[0]), str(v[1]))
                       for k, v in dict(data.get("fetched", {})).items()}
            record = cls(str(data["uid"]), str(data["name"]), str(data["version"]),
                         str(data["url"]), bool(data["default"]), scale, fetched)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"not a registration record: {exc}") from None
        if any(k not in SCALE_KEYS for values in scale.values() for k in values):
            raise ValueError("not a registration record: unknown scale key")
        return record


@dataclass(frozen=True)
class Member:
    """A server process as the store knows it.

    ``applied`` is the revision it serves (-1 while it catches up at start); ``failed`` the
    last revision it could not fully apply and ``error`` why (``0`` and ``""`` when none);
    ``seen`` the wall-clock time of its last report.
    """

    pid: int
    applied: int
    seen: float
    failed: int = 0
    error: str = ""


Edit = Callable[[list[Record]], list[Record]]


class RegistrationStore(Protocol):
    """Where the registrations of all server processes live. Every method is safe to call
    from any thread of any server process (an implementation opens its connections per
    process: the store object is made before the server processes are forked)."""

    def begin_run(self) -> None:
        """Start a server run: forget every record and member of an earlier run (snapshots,
        not the store, carry registrations across restarts). Called once per server start, in
        the parent process, before any server process exists."""

    def revision(self) -> int:
        """The current revision (0 before any change). Cheap: polled by every process."""

    def read(self) -> tuple[int, list[Record]]:
        """The current revision and its records, read together."""

    def change(self, edit: Edit) -> int:
        """Apply ``edit`` atomically: it gets the current records and returns the new list.

        :returns: the new revision (the same one when ``edit`` returned the records it got).
        :raises Exception: whatever ``edit`` raised; then nothing changed.
        """

    def first_start(self) -> AbstractContextManager[bool]:
        """Held by one process at a time while it starts: yields True when no process of
        this run has finished the start-up registrations yet (this one must do them). A block
        that ends without an exception marks them done; one that raises leaves them for the
        next process."""

    def report(self, member: Member) -> None:
        """Insert or replace ``member`` (keyed by pid)."""

    def members(self) -> list[Member]:
        """Every reported member, alive or not."""

    def leave(self, pid: int) -> None:
        """Forget the member ``pid`` (it stopped, or was found dead)."""
