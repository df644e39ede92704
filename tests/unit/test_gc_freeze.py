"""gc.freeze after start-up and registrations; reference cycles of an unregistered workflow are
still collected (unfreeze, collect, freeze), once per burst of unregistrations."""

import gc
import weakref

import pytest

from kernel.settings import Settings
from plugins import gc_freeze
from plugins.gc_freeze import GcFreezeSettings


class Kernelish:
    def __init__(self, **settings):
        self.settings = Settings().with_section(GcFreezeSettings(**settings))


class Node:
    pass


@pytest.fixture(autouse=True)
def unfrozen():
    gc.unfreeze()
    yield
    for timer in list(gc_freeze._pending):
        timer.cancel()
    gc_freeze._pending.clear()
    gc.unfreeze()


def test_startup_freezes_unless_turned_off():
    gc_freeze.wfserve_startup(Kernelish(gc_freeze=False))
    assert gc.get_freeze_count() == 0
    gc_freeze.wfserve_startup(Kernelish())
    assert gc.get_freeze_count() > 0


def test_cycles_frozen_with_an_unregistered_workflow_are_freed_by_the_refreeze():
    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle, as handler modules and their functions are
    alive = weakref.ref(a)
    gc.freeze()
    del a, b
    gc.collect()
    assert alive() is not None  # frozen: never collected
    gc_freeze.refreeze()
    assert alive() is None and gc.get_freeze_count() > 0


def test_registration_changes_schedule_one_refreeze():
    kernel = Kernelish()
    gc_freeze.REFREEZE_DELAY_S, delay = 0.05, gc_freeze.REFREEZE_DELAY_S
    try:
        gc_freeze.wfserve_workflow_event(kernel, "registered", None)
        gc_freeze.wfserve_workflow_event(kernel, "unregistered", None)
        gc_freeze.wfserve_workflow_event(kernel, "scaled", None)
    finally:
        gc_freeze.REFREEZE_DELAY_S = delay
    assert len(gc_freeze._pending) == 1  # a burst of changes costs one collection
    (timer,) = gc_freeze._pending
    timer.join(10)
    assert not gc_freeze._pending and gc.get_freeze_count() > 0
    gc_freeze.wfserve_workflow_event(kernel, "node_failed", None)
    gc_freeze.wfserve_workflow_event(Kernelish(gc_freeze=False), "unregistered", None)
    assert not gc_freeze._pending
