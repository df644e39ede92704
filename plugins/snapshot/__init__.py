"""Snapshots: every registration change is written to ``snapshot_dir``; the newest valid
snapshot is restored at start, so a restarted (or SIGKILLed and respawned) server process
serves the same workflows, versions, defaults and node scale.

- The state of one server is a :class:`Snapshotter`, made in the start-up's prepare phase
  (``wfserve_startup``) when ``snapshot`` is on, kept in ``kernel.stash[SNAPSHOTTER]`` and
  registered as a plugin object; ``--no-snapshot`` (TorchServe's ``--ncs``) makes none, which
  turns both writing and restoring off.
- Restored in the start-up's restore phase (``wfserve_restore``), before the ``workflows``
  setting and the example are registered (:mod:`wfserve.kernel.startup`). A corrupt snapshot is
  logged and skipped for the next older one; it is fully validated before anything is applied. A
  workflow that fails to register is logged and the rest are restored.
- Written on every registration change (``wfserve_workflow_event``: registered, unregistered,
  updated, scaled) after the restore.
- URLs are kept with their credentials redacted (as everywhere wfserve shows a URL): a
  workflow registered from ``https://user:pass@host/x.war`` is restored from its kept
  download, or skipped with a warning when that is gone.
- Shutdown writes nothing: the server drains and unregisters everything when it stops, and
  the snapshot must keep what was registered (the API plugin keeps downloaded archives then).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from wfserve.kernel import hookimpl
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.lifecycle import register_workflow
from wfserve.kernel.lifecycle import scale_node
from wfserve.kernel.redact import REDACTED
from wfserve.kernel.redact import has_credentials
from wfserve.kernel.startup import STORE
from wfserve.kernel.stash import StashKey
from wfserve.plugins.snapshot.settings import SnapshotSettings
from wfserve.plugins.snapshot.store import CorruptSnapshot
from wfserve.plugins.snapshot.store import Entry
from wfserve.plugins.snapshot.store import files
from wfserve.plugins.snapshot.store import load
from wfserve.plugins.snapshot.store import write

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

log = structlog.get_logger(__name__)


#: registration changes that are written
CHANGES = frozenset({"registered", "unregistered", "updated", "scaled"})


class Snapshotter:
    """The snapshots of one server (one kernel): a plugin object registered on its kernel's
    plugin manager at start-up; it writes only between its restore and its shutdown."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.folder = Path(kernel.settings.of(SnapshotSettings).snapshot_dir)
        self.lock = threading.Lock()
        self.writing = False
        self.stamp = 0

    @hookimpl
    def wfserve_restore(self) -> None:
        """Restore the newest valid snapshot, then write one on every later change."""
        self.restore()
        with self.lock:
            self.writing = True

    @hookimpl
    def wfserve_workflow_event(self, event: str) -> None:
        """Write the registry's state after a registration change."""
        if event in CHANGES:
            self.save()

    @hookimpl(tryfirst=True)
    def wfserve_shutdown(self) -> None:
        """Stop writing before the server unregisters everything."""
        with self.lock:
            self.writing = False

    @hookimpl
    def wfserve_ready(self) -> None:
        """A server process that did not restore (another process of the run did) writes the
        changes made through it from now on."""
        with self.lock:
            self.writing = True

    def save(self) -> Path | None:
        """Write the registrations' current state: the registration store's when the server
        has one (read under the folder's lock, so the last snapshot written holds the last
        state, whichever server process writes it), else this registry's."""
        keep = self.kernel.settings.of(SnapshotSettings).snapshot_keep
        try:
            with self.lock, folder_lock(self.folder):
                if not self.writing:
                    return None
                entries = self.entries()
                path, self.stamp = write(self.folder, entries, keep=keep, after=self.stamp)
        except OSError as exc:
            log.error("snapshot could not be written", folder=str(self.folder), error=str(exc))
            return None
        log.debug("snapshot written", path=str(path), workflows=len(entries))
        return path

    def entries(self) -> list[Entry]:
        """What a snapshot holds now: the registration store's records when the server has
        a store, else this registry's versions."""
        store = self.kernel.stash.get(STORE)
        if store is not None:
            return [Entry(r.name, r.version, r.url, r.default,
                          {n: dict(v) for n, v in r.scale.items()}, dict(r.fetched))
                    for r in store.read()[1]]
        return [Entry(e.name, e.version, e.workflow.url, default,
                      {n: dict(v) for n, v in e.overrides.items()}, dict(e.fetched))
                for e, default in self.kernel.registry.state()]

    def newest(self) -> tuple[Path, list[Entry]] | None:
        """The newest snapshot that validates; corrupt ones are reported and skipped."""
        for path in files(self.folder):
            try:
                return path, load(path)
            except CorruptSnapshot as exc:
                log.error("corrupt snapshot skipped", path=str(path), reason=str(exc))
        return None

    def restore(self) -> None:
        """Register everything the newest valid snapshot holds (defaults first)."""
        found = self.newest()
        if found is None:
            return
        path, entries = found
        stamp = path.name.removeprefix("snapshot-").removesuffix(".json")
        self.stamp = int(stamp)
        restored = 0
        for e in sorted(entries, key=lambda e: (e.name, not e.default)):
            if not _restorable(e):
                log.warning("snapshot workflow skipped: its URL had credentials, which "
                            "snapshots do not keep, and its download is gone; register it "
                            "again", workflow=e.name, version=e.version, url=e.url)
                continue
            try:
                register_workflow(self.kernel, e.url, e.name, e.version, reuse=e.fetched)
                for node, values in e.scale.items():
                    scale_node(self.kernel, e.name, node, e.version, **values)
                restored += 1
            except WfserveError as exc:
                log.error("snapshot workflow not restored", workflow=e.name, version=e.version,
                          url=e.url, error=exc.message)
        log.info("snapshot restored", path=str(path), workflows=restored, of=len(entries))


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` itself (snapshot writers of several processes;
    no lock file is left in it)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _restorable(entry: Entry) -> bool:
    """False for a workflow whose URL was stored redacted and whose kept download is gone:
    fetching the redacted URL could only fail (or reach the host without credentials)."""
    if REDACTED not in entry.url or not has_credentials(entry.url):
        return True
    kept = entry.fetched.get("")
    return kept is not None and Path(kept[1]).is_file()


SNAPSHOTTER = StashKey[Snapshotter]()


@hookimpl
def wfserve_settings() -> type:
    """:class:`~wfserve.plugins.snapshot.settings.SnapshotSettings`."""
    return SnapshotSettings


@hookimpl
def wfserve_startup(kernel: Kernel) -> None:
    """Prepare: with ``snapshot`` on, this server's :class:`Snapshotter` (stash and plugin)."""
    if not kernel.settings.of(SnapshotSettings).snapshot:
        return
    snap = kernel.stash[SNAPSHOTTER] = Snapshotter(kernel)
    kernel.pm.register(snap, name="snapshot.writer")
