"""Keep the loaded workflows out of the garbage collector's scans (``gc.freeze``).

Loaded models, handlers and their modules are hundreds of thousands of objects that live as
long as their workflow. CPython's cyclic collector scans all of them on every full
collection: ~150 ms with the GIL held on the benchmark machine (``seq_wf`` and ``par_wf``
loaded), a stall for every request in flight, and several µs per request on average. Frozen
objects are skipped by every collection (reference counting still frees them).

- at start-up, in the ready phase (``wfserve_ready``, :mod:`wfserve.kernel.startup`), after every
  start-up registration: collect once, then freeze;
- after a workflow is registered, updated, scaled or unregistered later: a little later (once
  the management call's own references are gone), everything is unfrozen, collected once and
  frozen again, so what was loaded is frozen and the reference cycles of what was freed (or
  of loading's garbage) are still collected. A burst of changes costs one collection.

The timing is one server's :class:`Freezer`, made in the prepare phase, kept in
``kernel.stash[FREEZER]`` and registered as a plugin object. Off with ``gc_freeze: false``.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from wfserve.kernel import hookimpl
from wfserve.kernel.settings import setting
from wfserve.kernel.stash import StashKey

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

log = structlog.get_logger(__name__)
#: seconds after an unregistration before the collection that frees its reference cycles
REFREEZE_DELAY_S = 2.0


@dataclass(frozen=True)
class GcFreezeSettings:
    """Whether the plugin freezes (``kernel.settings.of(GcFreezeSettings)``)."""

    gc_freeze: bool = setting(
        True, "Keep loaded workflows out of the garbage collector's scans (gc.freeze after "
        "start-up and registrations): no full-collection stalls over the loaded models."
    )


def refreeze() -> None:
    """Unfreeze, collect everything once, freeze again."""
    gc.unfreeze()
    freed = gc.collect()
    gc.freeze()
    log.debug("garbage collected and frozen", freed=freed, frozen=gc.get_freeze_count())


class Freezer:
    """When one server freezes: once when its start-up is ready, then one delayed
    :func:`refreeze` per burst of registration changes, none after its shutdown.

    NOTE: the frozen generation is process-wide; a Freezer only decides when. Two servers in
    one process (tests) each refreeze everything, which is harmless: every call ends frozen.
    """

    def __init__(self, delay: float = REFREEZE_DELAY_S) -> None:
        self.delay = delay
        self._lock = threading.Lock()
        self._pending: threading.Timer | None = None
        self._ready = False
        self._closed = False

    @property
    def pending(self) -> threading.Timer | None:
        """The scheduled refreeze not run yet, if any."""
        return self._pending

    @hookimpl
    def wfserve_ready(self) -> None:
        """After every start-up registration: collect once, freeze."""
        with self._lock:
            if self._closed:
                return
            self._ready = True
        gc.collect()
        gc.freeze()

    @hookimpl
    def wfserve_workflow_event(self, event: str) -> None:
        """After a registration change: collect once, then freeze what stays (delayed).
        Changes before the ready phase need none: that phase collects and freezes."""
        if event != "node_failed":
            self.schedule()

    @hookimpl(tryfirst=True)
    def wfserve_shutdown(self) -> None:
        """Cancel a pending refreeze and schedule no more (shutdown unregisters everything)."""
        with self._lock:
            self._closed = True
            timer, self._pending = self._pending, None
        if timer is not None:
            timer.cancel()

    def schedule(self) -> threading.Timer | None:
        """:func:`refreeze` on a daemon timer after :attr:`delay` s, unless one is pending,
        the start-up is not ready yet, or the server is shutting down; returns the timer."""
        with self._lock:
            if self._pending is not None or not self._ready or self._closed:
                return None
            timer = self._pending = threading.Timer(self.delay, self._run)
            timer.daemon = True
            timer.name = "wfserve-gc-refreeze"
        timer.start()
        return timer

    def _run(self) -> None:
        with self._lock:
            self._pending = None
        refreeze()


FREEZER = StashKey[Freezer]()


@hookimpl
def wfserve_settings() -> type:
    """:class:`GcFreezeSettings`."""
    return GcFreezeSettings


@hookimpl
def wfserve_startup(kernel: Kernel) -> None:
    """Prepare: with ``gc_freeze`` on, this server's :class:`Freezer` (stash and plugin)."""
    if kernel.settings.of(GcFreezeSettings).gc_freeze:
        freezer = kernel.stash[FREEZER] = Freezer()
        kernel.pm.register(freezer, name="gc_freeze.freezer")
