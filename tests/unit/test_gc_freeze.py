"""gc.freeze after start-up and registrations; reference cycles of an unregistered workflow are
still collected (unfreeze, collect, freeze), once per burst of registration changes. The
timing is one server's Freezer, kept in its kernel's stash."""

import gc
import weakref

import pytest

from wfserve.kernel.core import Kernel
from wfserve.kernel.settings import Settings
from wfserve.plugins import gc_freeze
from wfserve.plugins.gc_freeze import FREEZER
from wfserve.plugins.gc_freeze import Freezer
from wfserve.plugins.gc_freeze import GcFreezeSettings

NO_AUTOLOAD = {"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"}


def kernel(**settings) -> Kernel:
    return Kernel.create(Settings().with_section(GcFreezeSettings(**settings)),
                         builtin=("wfserve.plugins.gc_freeze",), env=NO_AUTOLOAD)


class Node:
    pass


@pytest.fixture(autouse=True)
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_freezer_is_per_kernel_and_only_when_on():
    off, on, other = kernel(gc_freeze=False), kernel(), kernel()
    for k in (off, on, other):
        k.hooks.startup(k)
    assert FREEZER not in off.stash
    assert isinstance(on.stash[FREEZER], Freezer) and on.stash[FREEZER] is not other.stash[FREEZER]
    assert on.pm.get_plugin("gc_freeze.freezer") is on.stash[FREEZER]


def test_ready_freezes_unless_turned_off():
    off = kernel(gc_freeze=False)
    off.hooks.startup(off)
    off.hooks.ready(off)
    assert gc.get_freeze_count() == 0
    on = kernel()
    on.hooks.startup(on)
    assert gc.get_freeze_count() == 0  # prepared, not ready: nothing frozen yet
    on.hooks.ready(on)
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


def test_registration_changes_after_ready_schedule_one_refreeze():
    k = kernel()
    k.hooks.startup(k)
    freezer = k.stash[FREEZER]
    freezer.delay = 0.05
    k.hooks.workflow_event(k, "registered", None)
    assert freezer.pending is None  # before ready: the ready phase collects and freezes
    k.hooks.ready(k)
    gc.unfreeze()
    k.hooks.workflow_event(k, "registered", None)
    timer = freezer.pending
    k.hooks.workflow_event(k, "unregistered", None)
    k.hooks.workflow_event(k, "scaled", None)
    assert timer is not None and freezer.pending is timer  # a burst costs one collection
    timer.join(10)
    assert freezer.pending is None and gc.get_freeze_count() > 0
    k.hooks.workflow_event(k, "node_failed", None)
    assert freezer.pending is None


def test_shutdown_cancels_the_pending_refreeze_and_schedules_no_more():
    k = kernel()
    k.hooks.startup(k)
    k.hooks.ready(k)
    freezer = k.stash[FREEZER]
    k.hooks.workflow_event(k, "registered", None)
    timer = freezer.pending
    k.hooks.shutdown(k)
    k.hooks.workflow_event(k, "unregistered", None)  # shutdown unregisters everything
    assert freezer.pending is None
    timer.join(10)
    assert timer.finished.is_set() and not timer.is_alive()
