"""The connection of this process (the Ray *driver*) to a Ray cluster.

The first Ray executor of a server process connects (:func:`connect`), with the
``ray_address`` setting: ``local`` starts a cluster inside this process's session (``num_cpus``
from ``ray_num_cpus``), ``auto`` joins the cluster running on this machine, ``ray://host:port``
goes through Ray Client. A process that is already connected (a test, an embedding program)
is used as it is. :func:`disconnect` undoes only a connection made here.

Extra ``ray.init`` keywords may be given as ``plugins: {ray: {init: {...}}}`` in the YAML.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import structlog

from wfserve.kernel.errors import UsageError
from wfserve.kernel.settings import Settings
from wfserve.kernel.stash import StashKey
from wfserve.plugins.executors.ray.settings import RaySettings

log = structlog.get_logger(__name__)
EXTRA_MESSAGE = "The ray executor needs the 'ray' extra: pip install 'wfserve[ray]'"


def require_ray() -> Any:
    """The ``ray`` module; raises ``UsageError`` naming the extra when it is not installed."""
    try:
        import ray
    except ImportError:
        raise UsageError(EXTRA_MESSAGE, executor="ray") from None
    return ray


def init_kwargs(settings: Settings) -> dict[str, Any]:
    """The ``ray.init`` keywords for ``settings`` (see the module docstring).

    :raises UsageError: ``ray_address`` is not local, auto or ray://...
    """
    ray = settings.of(RaySettings)
    address = ray.ray_address.strip()
    extra = settings.plugin("ray").get("init", {})
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if address == "local":
        if ray.ray_num_cpus > 0:
            kwargs["num_cpus"] = ray.ray_num_cpus
    elif address == "auto" or address.startswith("ray://"):
        kwargs["address"] = address
        kwargs.pop("include_dashboard")
    else:
        raise UsageError(
            f"setting ray_address: {address!r} is not local, auto or ray://host:port",
            key="ray_address",
        )
    if isinstance(extra, dict):
        kwargs.update(extra)
    return kwargs


class Connection:
    """One server's connection to Ray (kept in ``kernel.stash[CONNECTION]``): made by the
    first workflow that needs it, shut down at the server's shutdown only if this server made
    it (another server in the process, or a driver that called ``ray.init`` itself, keeps
    its own). NOTE: ``ray.init`` is per process; the lock orders the servers of one process.
    """

    _process_lock = threading.Lock()

    def __init__(self) -> None:
        self.owned = False

    def connect(self, settings: Settings) -> Any:
        """Connect this process to the cluster ``settings`` name, once; returns ``ray``.

        :raises UsageError: Ray is not installed, or ``ray_address`` is malformed.
        """
        ray = require_ray()
        with self._process_lock:
            if ray.is_initialized():
                return ray
            kwargs = init_kwargs(settings)
            log.info("connecting to Ray", address=kwargs.get("address", "local"))
            with _keep_signal_handlers():
                ray.init(**kwargs)
            self.owned = True
        return ray

    def disconnect(self) -> None:
        """Shut the Ray connection down if :meth:`connect` made it (no-op otherwise)."""
        with self._process_lock:
            if not self.owned:
                return
            self.owned = False
            import ray

            ray.shutdown()


CONNECTION = StashKey[Connection]()


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """Undo the SIGTERM/SIGINT handlers ``ray.init`` installs in the main thread: the
    server's own (gunicorn's graceful stop) must stay in charge."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


