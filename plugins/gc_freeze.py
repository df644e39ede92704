"""Keep the loaded workflows out of the garbage collector's scans (``gc.freeze``).

Loaded models, handlers and their modules are hundreds of thousands of objects that live as
long as their workflow. CPython's cyclic collector scans all of them on every full
collection: ~150 ms with the GIL held on the benchmark machine (``seq_wf`` and ``par_wf``
loaded), a stall for every request in flight, and several µs per request on average. Frozen
objects are skipped by every collection (reference counting still frees them).

- at start-up, after every start-up registration (``trylast``): collect once, then freeze;
- after a workflow is registered, updated, scaled or unregistered: a little later (once the
  management call's own references are gone), everything is unfrozen, collected once and
  frozen again, so what was loaded is frozen and the reference cycles of what was freed (or
  of loading's garbage) are still collected. A burst of changes costs one collection.

Off with ``gc_freeze: false``.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from kernel import hookimpl
from kernel.settings import setting

if TYPE_CHECKING:
    from kernel.contracts import Workflow
    from kernel.core import Kernel

log = structlog.get_logger(__name__)
#: seconds after an unregistration before the collection that frees its reference cycles
REFREEZE_DELAY_S = 2.0
_pending: list[threading.Timer] = []
_lock = threading.Lock()


@dataclass(frozen=True)
class GcFreezeSettings:
    """Whether the plugin freezes (``kernel.settings.of(GcFreezeSettings)``)."""

    gc_freeze: bool = setting(
        True, "Keep loaded workflows out of the garbage collector's scans (gc.freeze after "
        "start-up and registrations): no full-collection stalls over the loaded models."
    )


def refreeze() -> None:
    """Unfreeze, collect everything once, freeze again."""
    with _lock:
        _pending.clear()
    gc.unfreeze()
    freed = gc.collect()
    gc.freeze()
    log.debug("garbage collected and frozen", freed=freed, frozen=gc.get_freeze_count())


def schedule_refreeze(delay: float | None = None) -> None:
    """:func:`refreeze` on a daemon timer (:data:`REFREEZE_DELAY_S` by default), unless one is
    already pending."""
    delay = REFREEZE_DELAY_S if delay is None else delay
    with _lock:
        if _pending:
            return
        timer = threading.Timer(delay, refreeze)
        timer.daemon = True
        timer.name = "wfserve-gc-refreeze"
        _pending.append(timer)
    timer.start()


@hookimpl
def wfserve_settings() -> type:
    """:class:`GcFreezeSettings`."""
    return GcFreezeSettings


@hookimpl(trylast=True)
def wfserve_startup(kernel: Kernel) -> None:
    """After every start-up registration: collect once, freeze."""
    if kernel.settings.of(GcFreezeSettings).gc_freeze:
        gc.collect()
        gc.freeze()


@hookimpl
def wfserve_workflow_event(kernel: Kernel, event: str, workflow: Workflow) -> None:
    """After a registration change: collect once, then freeze what stays (delayed)."""
    if kernel.settings.of(GcFreezeSettings).gc_freeze and event != "node_failed":
        schedule_refreeze()
