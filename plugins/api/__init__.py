"""The REST API plugin: TorchServe-compatible inference, management and metrics surfaces,
served by gunicorn, plus the registration of start-up workflows and the drain at shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

import structlog

from wfserve.kernel import hookimpl
from wfserve.kernel.errors import Conflict
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.lifecycle import register_workflow
from wfserve.kernel.lifecycle import retire_all
from wfserve.kernel.sync import coordinator
from wfserve.plugins.api.logbatch import LOG_SINK
from wfserve.plugins.api.settings import ApiSettings
from wfserve.plugins.snapshot.settings import SnapshotSettings

if TYPE_CHECKING:
    import argparse

    from wfserve.kernel.core import Kernel
    from wfserve.kernel.settings import Settings

log = structlog.get_logger(__name__)


@hookimpl
def wfserve_settings() -> type:
    """:class:`~wfserve.plugins.api.settings.ApiSettings`."""
    return ApiSettings


@hookimpl(tryfirst=True)
def wfserve_add_routes(app: Any, kernel: Kernel, surface: str) -> None:
    """Built-in routes go first, so a plugin adding the same path replaces them."""
    from wfserve.plugins.api.routes import add_routes

    add_routes(app, kernel, surface)


@hookimpl(trylast=True)
def wfserve_serve(kernel: Kernel) -> int:
    """Default implementation: gunicorn, in the background unless ``foreground`` is set."""
    if not kernel.settings.of(ApiSettings).foreground:
        from wfserve.plugins.api.daemon import start_background

        return start_background(kernel.settings)
    from wfserve.plugins.api.server import serve

    return serve(kernel)


@hookimpl
def wfserve_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """``wfserve stop`` and the client commands."""
    from wfserve.plugins.api.client import add_commands
    from wfserve.plugins.api.daemon import stop

    def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
        return stop(settings)

    stop_parser = subparsers.add_parser("stop", help="Stop the background server.")
    stop_parser.set_defaults(func=cmd_stop)
    add_commands(subparsers)


@hookimpl
def wfserve_register_configured(kernel: Kernel) -> None:
    """Register the ``workflows`` setting's ``NAME=URL`` entries (start-up phase 3, after the
    restore); a name already registered is left as restored, unfetched; a failure is logged."""
    for item in kernel.settings.workflows:
        name, sep, url = item.partition("=")
        if not sep:
            name, url = "", item
        if name and name in kernel.registry:
            log.info("start-up workflow already registered (restored from a snapshot)",
                     entry=item)
            continue
        try:
            register_workflow(kernel, url, name or None)
        except Conflict:  # a bare URL whose archive names a restored workflow
            log.info("start-up workflow already registered (restored from a snapshot)",
                     entry=item)
        except WfserveError as exc:
            log.error("start-up registration failed", entry=item, error=exc.message)


@hookimpl
def wfserve_shutdown(kernel: Kernel) -> None:
    """Drain and free every workflow this process serves (nothing is unregistered from the
    registration store); downloaded archives stay when snapshots are on (the snapshot names
    them) or other server processes still serve them. Then write the held log lines and
    stop batching."""
    sync = coordinator(kernel)
    others = sync is not None and sync.others() > 0
    keep = kernel.settings.of(SnapshotSettings).snapshot or others
    retire_all(kernel, drain=10.0, keep_downloads=keep)
    sink = kernel.stash.get(LOG_SINK)
    if sink is not None:
        sink.close()
