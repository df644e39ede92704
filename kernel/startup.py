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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from wfserve.kernel.plugins import Hooks
from wfserve.kernel.stash import StashKey
from wfserve.kernel.store import RegistrationStore

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

    Called from the thread that starts the server, before any request is served; an exception
    from a phase stops the start-up (and the server with it).
    """
    for name, phase in PHASES:
        log.debug("start-up phase", phase=name)
        phase(kernel.hooks, kernel)
