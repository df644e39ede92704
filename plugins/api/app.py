"""Composition: one Falcon app per bound address, routes from ``wfserve_add_routes``.

Each surface (inference, management, metrics) binds its own address; a route answers only on
its surface's port. When two surfaces share an address (TorchServe allows it) their routes are
served by one app. :class:`PortDispatch` picks the app by the port the connection came in on.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import urlsplit

import falcon

from kernel.errors import UsageError
from plugins.api import errors
from plugins.api.middleware import RequestContext

if TYPE_CHECKING:
    from kernel.core import Kernel

SURFACES = ("inference", "management", "metrics")
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def parse_address(address: str) -> tuple[str, int]:
    """``http://127.0.0.1:8080`` -> ``("127.0.0.1", 8080)``; https is refused (use a proxy)."""
    parts = urlsplit(address if "://" in address else f"http://{address}")
    if parts.scheme != "http":
        raise UsageError(f"Only http:// addresses can be bound, got {address}")
    if not parts.hostname or parts.port is None:
        raise UsageError(f"An address needs a host and a port, got {address}")
    return parts.hostname, parts.port


def surface_addresses(kernel: Kernel) -> dict[str, tuple[str, int]]:
    """Each surface's bind address from the settings."""
    s = kernel.settings
    return {
        "inference": parse_address(s.inference_address),
        "management": parse_address(s.management_address),
        "metrics": parse_address(s.metrics_address),
    }


def create_app(kernel: Kernel, surfaces: Iterable[str]) -> falcon.App:
    """A Falcon app serving the routes of ``surfaces``, with TorchServe's error bodies."""
    names = list(surfaces)
    app = falcon.App(middleware=[RequestContext("+".join(names))])
    app.req_options.auto_parse_form_urlencoded = False
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    for surface in names:
        kernel.hooks.add_routes(app, kernel, surface)
    return app


class PortDispatch:
    """A WSGI app that hands each request to the app of the port it arrived on."""

    __slots__ = ("apps", "fallback")

    def __init__(self, apps: dict[int, falcon.App], fallback: falcon.App) -> None:
        self.apps = apps
        self.fallback = fallback

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        try:
            app = self.apps[int(environ.get("SERVER_PORT", 0))]
        except (KeyError, ValueError):
            app = self.fallback
        return app(environ, start_response)


def create_wsgi(kernel: Kernel) -> PortDispatch:
    """The WSGI application gunicorn serves: one app per distinct bound port."""
    by_port: dict[int, list[str]] = {}
    for surface, (_, port) in surface_addresses(kernel).items():
        by_port.setdefault(port, []).append(surface)
    apps = {port: create_app(kernel, surfaces) for port, surfaces in by_port.items()}
    return PortDispatch(apps, fallback=create_app(kernel, ()))
