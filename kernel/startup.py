"""Start-up in phases: the one place that decides in which order plugins start a server.

:func:`start` runs :data:`PHASES` in order, each a hook that every plugin may implement:

1. ``prepare`` (``wfserve_startup``): each plugin makes its per-server state, kept in
   ``kernel.stash``, and registers its stateful plugin objects: metrics, token keys, the
   snapshot writer, the gc freezer. No workflow is registered yet, so the first registration
   event already finds all of them.
2. ``restore`` (``wfserve_restore``): what an earlier run saved (snapshots) comes back first,
   with its versions, defaults and scale.
3. ``register configured`` (``wfserve_register_configured``): the ``workflows`` setting; a
   name the restore registered is left as restored.
4. ``register defaults`` (``wfserve_register_defaults``): the bundled example, when its name
   is still free, so a configured or restored ``example`` wins.
5. ``ready`` (``wfserve_ready``): every start-up registration is done; the loaded objects are
   frozen out of the garbage collector's scans.

Within one phase plugins are called in pluggy's order (LIFO, ``tryfirst``/``trylast``), which
no plugin may depend on: whatever must happen first belongs to an earlier phase.

Before any of it, :func:`boot` runs once per server start in the parent process, before the
server processes are forked: it opens the registration store and calls ``wfserve_preload``.
With a store, phases 2-4 run once per run, in the first server process to start; every
process then catches up with the store before phase 5 (:mod:`wfserve.kernel.sync`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from wfserve.kernel.lifecycle import free_entry
from wfserve.kernel.lifecycle import load_record
from wfserve.kernel.plugins import Hooks
from wfserve.kernel.stash import StashKey
from wfserve.kernel.store import RegistrationStore
from wfserve.kernel.sync import COORDINATOR
from wfserve.kernel.sync import Coordinator
from wfserve.kernel.sync import coordinator

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

log = structlog.get_logger(__name__)
#: the registration store :func:`boot` opened (absent for a kernel that never booted)
STORE = StashKey[RegistrationStore]()

#: the start-up phases, in the order :func:`start` runs them: (name, facade method)
PHASES: tuple[tuple[str, Callable[[Hooks, Kernel], None]], ...] = (
    ("prepare", Hooks.startup),
    ("restore", Hooks.restore),
    ("register configured", Hooks.register_configured),
    ("register defaults", Hooks.register_defaults),
    ("ready", Hooks.ready),
)


def boot(kernel: Kernel) -> None:
    """Once per server start, in the parent process, before the server processes are forked:
    open the registration store (``wfserve_registration_store``), begin a run in it, and let
    plugins make what the processes share (``wfserve_preload``).

    A kernel that serves in the process that made it (tests, embedding) is never booted: it
    has no store and its registrations are its own.
    """
    store = kernel.hooks.registration_store(kernel.settings)
    if store is not None:
        store.begin_run()
        kernel.stash[STORE] = store
    kernel.hooks.preload(kernel)


def start(kernel: Kernel) -> None:
    """Run every start-up phase, in :data:`PHASES` order, once per server process.

    With a registration store (the kernel was booted), the registering phases (restore,
    register configured, register defaults) run in the first process of the run only, under
    the store's start lock; every process then joins the store's roll and catches up with it
    (:class:`~wfserve.kernel.sync.Coordinator`) before the ready phase. Called from the thread
    that starts the server, before any request is served; an exception from a phase stops the
    start-up (and the server with it).
    """
    store = kernel.stash.get(STORE)
    prepare, *registering, ready = PHASES
    _run(kernel, prepare)
    if store is None:
        for phase in registering:
            _run(kernel, phase)
    else:
        sync = kernel.stash[COORDINATOR] = Coordinator(
            kernel, store, load=functools.partial(load_record, kernel), free=free_entry)
        with store.first_start() as first:
            if first:
                for phase in registering:
                    _run(kernel, phase)
        sync.join()
    _run(kernel, ready)


def stop(kernel: Kernel) -> None:
    """The server process is stopping: leave the registration store's roll (the others stop
    waiting for this one), then ``wfserve_shutdown``."""
    sync = coordinator(kernel)
    try:
        if sync is not None:
            sync.leave()
    finally:
        kernel.hooks.shutdown(kernel)


def _run(kernel: Kernel, phase: tuple[str, Callable[[Hooks, Kernel], None]]) -> None:
    name, call = phase
    log.debug("start-up phase", phase=name)
    call(kernel.hooks, kernel)
