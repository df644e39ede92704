"""One server process's side of the registration store: publish a change, apply everyone's.

With a registration store (:mod:`wfserve.kernel.store`, opened by
:func:`wfserve.kernel.startup.boot`), every server process holds a :class:`Coordinator`:

- **Publish** (the process answering a management call): the new version is loaded and
  started first, invisible; then one atomic store change checks the rules against the store
  itself (409 for a version registered by any process, the workflow and version limits, 404,
  the default version) and records it; then this process applies the store's state; then the
  call waits until every live process reports that it serves the new revision
  (:meth:`Coordinator.wait_all`), so no request to any process can see the old state after the
  answer.
- **Apply** (every process): a thread polls the store's revision every :data:`POLL_S`; a new
  one is applied under one lock: records this process does not hold are loaded from the bytes
  the registering process fetched (``Record.fetched``; a URL is never fetched again), each
  name's versions and default are installed in one step (:meth:`Registry.install`), scale
  values are applied to the executors, and what the store no longer holds leaves the registry
  at once and is drained in the background. Then the process reports the revision.
- **Catch up**: a process that starts (or that the arbiter restarts) reports itself first,
  then applies the store until it is current, before it serves a request.

Scale values are per process: each process runs its own executors with the record's
``min_workers``/``max_workers``/batching (``/workflows/{name}`` reports the answering
process). Members are processes of one host: a member whose pid is gone, a zombie, or silent
for :data:`STALE_S` is dropped from the roll.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from wfserve.kernel.errors import RegistrationFailed
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.registry import Registered
from wfserve.kernel.registry import Registry
from wfserve.kernel.stash import StashKey
from wfserve.kernel.store import Member
from wfserve.kernel.store import Record
from wfserve.kernel.store import RegistrationStore

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

log = structlog.get_logger(__name__)
#: seconds between two looks at the store's revision
POLL_S = 0.005
#: seconds between two heartbeats of an idle process
HEARTBEAT_S = 1.0
#: a member silent this long is taken as dead
STALE_S = 10.0


@dataclass
class Held:
    """A record as a registry entry, so the store's rules are the registry's own
    (:func:`edit_with`)."""

    record: Record

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def version(self) -> str:
        return self.record.version


def edit_with(kernel: Kernel, change: Callable[[Registry[Held]], object]
              ) -> Callable[[list[Record]], list[Record]]:
    """A store edit that runs ``change`` on a registry holding the store's records, with
    this server's limits: the conflict, limit, not-found and default-version rules (and their
    TorchServe messages) are :class:`Registry`'s, checked against every process's records."""

    def edit(records: list[Record]) -> list[Record]:
        registry = Registry[Held](limit=kernel.settings.max_workflows,
                                  max_versions=kernel.settings.max_versions_per_workflow)
        for record in records:
            registry.add(Held(record))
        for record in records:
            if record.default:
                registry.set_default(record.name, record.version)
        change(registry)
        return [replace(held.record, default=default) for held, default in registry.state()]

    return edit


def as_record(entry: Registered, default: bool = False) -> Record:
    """The store's record of a live registry entry."""
    return Record(entry.uid, entry.name, entry.version, entry.workflow.url, default,
                  {n: dict(v) for n, v in entry.overrides.items()}, dict(entry.fetched))


class Coordinator:
    """This process's member of the registration store (see the module docstring)."""

    def __init__(self, kernel: Kernel, store: RegistrationStore, *,
                 load: Callable[[Record], Registered],
                 free: Callable[[Registered], None],
                 timeout: float = 120.0) -> None:
        """:param load: loads a record this process does not hold (never fetching a URL).
        :param free: drains and frees an entry the store no longer holds.
        :param timeout: seconds :meth:`wait_all` waits for the other processes."""
        self.kernel, self.store = kernel, store
        self.load, self.free = load, free
        self.pid = os.getpid()
        self.timeout = timeout
        self.lock = threading.RLock()
        self.applied = -1
        self.failed, self.error = 0, ""
        self.prepared: dict[str, Registered] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported = 0.0

    # --- publishing ---------------------------------------------------------------------

    def publish(self, edit: Callable[[list[Record]], list[Record]],
                prepared: tuple[Registered, ...] = (), *, wait: bool = True
                ) -> tuple[int, list[Registered]]:
        """Change the store with ``edit``, apply the result here, wait for every process.

        :param prepared: loaded and started entries that ``edit`` adds (by uid): applied as
            they are instead of loading them again.
        :param wait: :meth:`wait_all` before returning.
        :returns: the new revision and the entries this process no longer holds (the caller
            frees them: an unregistration drains before it answers).
        :raises WfserveError: what ``edit`` raised (nothing changed); 503 when a process did
            not apply the change in time; 500 when one could not.
        """
        with self.lock:
            for entry in prepared:
                self.prepared[entry.uid] = entry
            try:
                revision = self.store.change(edit)
                removed = self._apply_current()
            finally:
                for entry in prepared:
                    self.prepared.pop(entry.uid, None)
        if wait:
            self.wait_all(revision)
        return revision, removed

    def wait_all(self, revision: int) -> None:
        """Return once every live member serves ``revision``.

        :raises Unavailable: a member did not report it within :attr:`timeout` seconds.
        :raises RegistrationFailed: a member reported that it could not apply it.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            waiting, failed = [], []
            for member in self.store.members():
                if member.pid == self.pid:
                    continue
                if not alive(member):
                    log.warning("server process gone from the registration roll",
                                process=member.pid)
                    self.store.leave(member.pid)
                elif member.failed >= revision:
                    failed.append(member)
                elif member.applied < revision:
                    waiting.append(member.pid)
            if failed:
                raise RegistrationFailed("The change was made, but server process "
                                    + "; ".join(f"{m.pid} could not apply it: {m.error}"
                                                for m in failed))
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"The change was made, but server processes {waiting} did "
                                  f"not apply it within {self.timeout:g} s")
            time.sleep(POLL_S / 5)

    # --- applying -------------------------------------------------------------------------

    def join(self) -> None:
        """Enter the roll, catch up with the store, then follow it on a daemon thread."""
        self._report(force=True)
        while self.applied != self.store.revision():
            with self.lock:
                for entry in self._apply_current():
                    self.free(entry)
        self._thread = threading.Thread(target=self._follow, name="wfserve-sync", daemon=True)
        self._thread.start()
        log.info("registrations in sync", revision=self.applied,
                 workflows=self.kernel.registry.names())

    def leave(self) -> None:
        """Stop following and leave the roll (the process is stopping)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.store.leave(self.pid)

    def others(self) -> int:
        """How many other live members the roll holds."""
        return sum(1 for m in self.store.members() if m.pid != self.pid and alive(m))

    def _follow(self) -> None:
        while not self._stopping.wait(POLL_S):
            try:
                if self.store.revision() != self.applied:
                    with self.lock:
                        removed = self._apply_current()
                    for entry in removed:
                        threading.Thread(target=self.free, args=(entry,), daemon=True,
                                         name="wfserve-drain").start()
                self._report()
            except Exception as exc:  # NOTE: the follower must outlive a store hiccup
                log.error("registration sync failed", error=str(exc))
                self._stopping.wait(HEARTBEAT_S)

    def _report(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._reported >= HEARTBEAT_S:
            self.store.report(Member(self.pid, self.applied, now, self.failed, self.error))
            self._reported = now

    def _apply_current(self) -> list[Registered]:
        """Make the registry what the store holds now; report; return what left it.
        Called with :attr:`lock` held."""
        revision, records = self.store.read()
        if revision == self.applied:
            return []
        removed, errors = self._apply(records)
        self.applied = revision
        if errors:
            self.failed, self.error = revision, "; ".join(errors)
        self._report(force=True)
        return removed

    def _apply(self, records: list[Record]) -> tuple[list[Registered], list[str]]:
        registry = self.kernel.registry
        held = {entry.uid: entry for entry, _ in registry.state()}
        errors: list[str] = []
        names = set(registry.names()) | {r.name for r in records}
        removed: list[Registered] = []
        for name in sorted(names):
            versions: dict[str, Registered] = {}
            default: str | None = None
            for record in (r for r in records if r.name == name):
                entry = held.get(record.uid) or self.prepared.get(record.uid)
                if entry is None:
                    try:
                        entry = self.load(record)
                    except WfserveError as exc:
                        errors.append(f"{name} {record.version}: {exc.message}")
                        log.error("could not load a registration of another process",
                                  workflow=name, version=record.version, error=exc.message)
                        continue
                versions[record.version] = entry
                if record.default:
                    default = record.version
            if versions and default not in versions:
                default = next(iter(versions))
            removed += registry.install(name, versions, default)
            for record in (r for r in records if r.name == name and r.version in versions):
                errors += self._scale(versions[record.version], record)
        return removed, errors

    def _scale(self, entry: Registered, record: Record) -> list[str]:
        errors = []
        for node, values in record.scale.items():
            if entry.overrides.get(node) == dict(values):
                continue
            try:
                entry.executor.scale(node, **values)
                entry.overrides[node] = dict(values)
            except WfserveError as exc:
                errors.append(f"{record.name}__{node}: {exc.message}")
        return errors


def alive(member: Member) -> bool:
    """False for a member whose process is gone or a zombie, or that has been silent for
    :data:`STALE_S` seconds."""
    if time.time() - member.seen > STALE_S:
        return False
    try:
        os.kill(member.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{member.pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


COORDINATOR = StashKey[Coordinator]()


def coordinator(kernel: Kernel) -> Coordinator | None:
    """The kernel's coordinator; None for a kernel without a registration store."""
    return kernel.stash.get(COORDINATOR)
