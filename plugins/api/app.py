"""Composition: one Falcon app per bound address, routes from ``wfserve_add_routes``.

Each surface (inference, management, metrics) binds its own address; a route answers only on
its surface's port. When two surfaces share an address (TorchServe allows it) their routes are
served by one app. :class:`PortDispatch` picks the app by the port the connection came in on.

Each app is a :class:`RoutedApp`: it records the surface every route was added for, which the
request context middleware publishes as ``req.context.surface`` (for auth) and the OpenAPI
document is generated from (``plugins/api/openapi.py``). Middleware: the API's own
:class:`~plugins.api.middleware.RequestContext` first, then every ``wfserve_middleware`` result.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Route:
    """One route of an app: its URI template, resource, surface and responder suffix."""

    template: str
    resource: object
    surface: str
    suffix: str | None = None


class RoutedApp(falcon.App):
    """A ``falcon.App`` that remembers the surface each route was added for."""

    def __init__(self, surfaces: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.surfaces = surfaces
        self.routes: dict[str, Route] = {}
        self.adding = surfaces[0] if len(surfaces) == 1 else ""

    def add_route(self, uri_template: str, resource: object, **kwargs: Any) -> None:
        """Falcon's ``add_route``, recording the route under the surface being built."""
        super().add_route(uri_template, resource, **kwargs)
        self.routes[uri_template] = Route(uri_template, resource, self.adding,
                                          kwargs.get("suffix"))

    def surface_of(self, template: str | None) -> str | None:
        """The surface of a matched route (by template); the only surface when there is one."""
        route = self.routes.get(template or "")
        if route is not None and route.surface:
            return route.surface
        return self.surfaces[0] if len(self.surfaces) == 1 else None


def create_app(kernel: Kernel, surfaces: Iterable[str]) -> RoutedApp:
    """A Falcon app serving the routes of ``surfaces``, with TorchServe's error bodies."""
    names = list(surfaces)
    app = RoutedApp(names)
    app.add_middleware(RequestContext("+".join(names), app.surface_of))
    app.req_options.auto_parse_form_urlencoded = False
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    for surface in names:
        app.adding = surface
        kernel.hooks.add_routes(app, kernel, surface)
    app.adding = names[0] if len(names) == 1 else ""
    app.add_middleware(kernel.hooks.middleware(kernel, names))
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
