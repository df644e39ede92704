"""``wfserve serve``: gunicorn (gthread) serving the three surfaces from one worker process.

The registry and the models live in the worker, so the app is built after the fork
(``load``), where the start-up phases run (:func:`wfserve.kernel.startup.start`: restoring
snapshots, registering ``workflows``...); ``wfserve_shutdown`` runs when the worker exits. Settings
for gunicorn itself come from ``conf/gunicorn.conf.py``; binds, threads and worker count
from wfserve's settings.
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import logging
import os
import runpy
import socket
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import structlog
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from wfserve.kernel.errors import UsageError
from wfserve.kernel.startup import boot
from wfserve.kernel.startup import start
from wfserve.kernel.startup import stop
from wfserve.plugins.api.app import bound_address
from wfserve.plugins.api.app import create_wsgi
from wfserve.plugins.api.app import surface_addresses
from wfserve.plugins.api.app import tls_binds
from wfserve.plugins.api.bounded import Bounds
from wfserve.plugins.api.logbatch import batch_logs
from wfserve.plugins.api.settings import ApiSettings
from wfserve.plugins.api.settings import server_processes
from wfserve.plugins.api.tls import server_context
from wfserve.plugins.api.worker import worker_class

if TYPE_CHECKING:
    import ssl

    from wfserve.kernel.core import Kernel

log = structlog.get_logger(__name__)
#: gunicorn's own settings (package data of ``wfserve.conf``)
GUNICORN_CONF = Path(str(importlib.resources.files("wfserve.conf") / "gunicorn.conf.py"))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to loopback (``localhost``)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_binds(kernel: Kernel) -> list[str]:
    """The distinct ``host:port`` binds; refuses a remote management bind unless allowed.

    Two surfaces whose addresses name one local address (``localhost:P`` and ``127.0.0.1:P``)
    share one bind, as :func:`~wfserve.plugins.api.app.create_wsgi` shares their app."""
    addresses = surface_addresses(kernel)
    host, _ = addresses["management"]
    if not is_loopback(host) and not kernel.settings.of(ApiSettings).allow_remote_management:
        raise UsageError(
            f"The management API runs handler code; refusing to bind it to {host}. "
            "Set allow_remote_management (--allow-remote-management) to do it anyway."
        )
    if kernel.settings.of(ApiSettings).workers < 0:
        raise UsageError("workers must be 0 (one server process per core) or more")
    binds = []
    for host, port in addresses.values():
        host, port = bound_address(host, port)
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if bind not in binds:
            binds.append(bind)
    return binds


def tls_contexts(kernel: Kernel) -> dict[tuple[str, int], ssl.SSLContext]:
    """The TLS context of each ``https://`` bind (one context, made once, shared by all:
    :func:`~wfserve.plugins.api.tls.server_context`); empty when every address is plain HTTP."""
    binds = tls_binds(kernel)
    if not binds:
        return {}
    context = server_context(kernel.settings, sorted({host for host, _ in binds}))
    return dict.fromkeys(binds, context)


def share_cores(processes: int) -> None:
    """In a server process: give torch an equal share of the cores when several processes
    serve (each would otherwise run as many threads as there are cores), unless
    ``OMP_NUM_THREADS`` already says how many."""
    torch = sys.modules.get("torch")
    if processes > 1 and torch is not None and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))


class StructlogLogger(glogging.Logger):
    """gunicorn's logger, sending its lines through the root logger (structlog-rendered)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for name in ("gunicorn.error", "gunicorn.access"):
            logger = logging.getLogger(name)
            logger.handlers = []
            logger.propagate = True


class WfserveApplication(BaseApplication):
    """A gunicorn application built around one kernel."""

    def __init__(self, kernel: Kernel, binds: list[str],
                 tls: dict[tuple[str, int], ssl.SSLContext] | None = None) -> None:
        self.kernel = kernel
        self.binds = binds
        self.tls = tls or {}
        super().__init__()

    def load_config(self) -> None:
        if GUNICORN_CONF.exists():
            for key, value in runpy.run_path(str(GUNICORN_CONF)).items():
                if key in self.cfg.settings and value is not None:
                    self.cfg.set(key, value)
        settings = self.kernel.settings.of(ApiSettings)
        self.cfg.set("bind", self.binds)
        self.cfg.set("workers", server_processes(self.kernel.settings))
        self.cfg.set("worker_class", worker_class(settings.request_read_timeout,
                                                  settings.http_linger_ms / 1000,
                                                  Bounds.from_settings(self.kernel.settings),
                                                  self.tls))
        self.cfg.set("threads", settings.threads)
        self.cfg.set("logger_class", StructlogLogger)
        self.cfg.set("worker_exit", self._worker_exit)
        self.cfg.set("child_exit", self._child_exit)

    def load(self) -> Any:
        batch_logs(self.kernel, sys.stderr)  # in the worker: its flusher thread lives here
        share_cores(server_processes(self.kernel.settings))
        start(self.kernel)
        log.info("wfserve ready", binds=self.binds, workflows=self.kernel.registry.names())
        app = create_wsgi(self.kernel)
        self.booted = True
        return app

    def _child_exit(self, server: Any, worker: Any) -> None:
        """In the master, once a worker ended (any way): ``wfserve_process_exited``. A plugin
        that raises is logged; the master goes on supervising."""
        try:
            self.kernel.hooks.process_exited(self.kernel, worker.pid)
        except Exception:
            log.exception("wfserve_process_exited failed", pid=worker.pid)

    def _worker_exit(self, server: Any, worker: Any) -> None:
        """Drain through ``wfserve_shutdown``, then end the worker process for sure.

        A booted worker exits with ``os._exit(0)`` once the shutdown hooks ran: an HTTP thread
        stuck in a handler would otherwise keep the interpreter alive after gunicorn's master
        gave up on it (seen in the reliability race tests: orphaned workers spinning a core).
        A worker that failed to boot keeps gunicorn's own exit code, so the master stops
        instead of restarting a broken app for ever.
        """
        try:
            stop(self.kernel)
        finally:
            if getattr(self, "booted", False):
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)


def serve(kernel: Kernel) -> int:
    """Run gunicorn in the foreground until SIGTERM/SIGINT; returns the exit code."""
    binds = check_binds(kernel)
    # NOTE: torch warns at import when numpy is absent; wfserve does not use numpy.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    Path(kernel.settings.model_store).mkdir(parents=True, exist_ok=True)
    boot(kernel)
    WfserveApplication(kernel, binds, tls_contexts(kernel)).run()
    return 0
