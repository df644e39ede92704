"""Composition: one Falcon app per bound address, routes from ``wfserve_add_routes``.

Each surface (inference, management, metrics) binds its own address; a route answers only on
its surface's address. When two surfaces share an address (TorchServe allows it) their routes
are served by one app. :class:`AddressDispatch` picks the app by the local address (host and
port) the connection came in on: two surfaces on one port but different hosts (127.0.0.2:P and
127.0.0.1:P) never serve each other's routes.

Each app is a :class:`RoutedApp`: it records the surface every route was added for, which the
request context middleware publishes as ``req.context.surface`` (for auth) and the OpenAPI
document is generated from (``plugins/api/openapi.py``). Middleware: the API's own
:class:`~wfserve.plugins.api.middleware.RequestContext` first, then every ``wfserve_middleware``
result.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import urlsplit

import falcon
import structlog

from wfserve.kernel.errors import UsageError
from wfserve.plugins.api import errors
from wfserve.plugins.api.middleware import RequestContext
from wfserve.plugins.api.settings import server_processes

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

log = structlog.get_logger(__name__)
SURFACES = ("inference", "management", "metrics")
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Address = tuple[str, int]
#: the hosts of a wildcard bind: any local address of the family
WILDCARDS = ("0.0.0.0", "::")
#: the WSGI environ key of the request's connection socket, set by the server's worker
SOCKET_KEY = "wfserve.socket"


def parse_address(address: str) -> tuple[str, int]:
    """``http://127.0.0.1:8080`` -> ``("127.0.0.1", 8080)``; ``https://`` alike (served with
    TLS, :func:`is_tls`); a bare ``host:port`` is ``http://``."""
    parts = urlsplit(address if "://" in address else f"http://{address}")
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"Only http:// and https:// addresses can be bound, got {address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise UsageError(f"An address needs a host and a port, got {address}")
    return parts.hostname, port


def is_tls(address: str) -> bool:
    """Whether ``address`` is an ``https://`` one."""
    return address.strip().lower().startswith("https://")


def surface_addresses(kernel: Kernel) -> dict[str, tuple[str, int]]:
    """Each surface's bind address from the settings."""
    return {surface: parse_address(address)
            for surface, address in surface_urls(kernel).items()}


def surface_urls(kernel: Kernel) -> dict[str, str]:
    """Each surface's address as configured (``http://...`` or ``https://...``)."""
    s = kernel.settings
    return {"inference": s.inference_address, "management": s.management_address,
            "metrics": s.metrics_address}


def tls_binds(kernel: Kernel) -> set[Address]:
    """The bound addresses (as :func:`bound_address` writes them) served with TLS.

    :raises UsageError: two surfaces sharing one bound address, one with ``https://`` and
        the other with ``http://`` (one port speaks one protocol).
    """
    schemes: dict[Address, tuple[bool, str]] = {}
    for surface, url in surface_urls(kernel).items():
        bound = bound_address(*parse_address(url))
        tls = is_tls(url)
        seen = schemes.setdefault(bound, (tls, surface))
        if seen[0] != tls:
            raise UsageError(f"The {seen[1]} and {surface} addresses share {bound[0]}:"
                             f"{bound[1]} but not the scheme (http and https): one port "
                             "speaks one protocol")
    return {bound for bound, (tls, _) in schemes.items() if tls}


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
    several = server_processes(kernel.settings) > 1
    app.add_middleware(RequestContext("+".join(names), app.surface_of,
                                      str(os.getpid()) if several else None))
    app.req_options.auto_parse_form_urlencoded = False
    app.req_options.strip_url_path_trailing_slash = True
    # NOTE: no default Content-Type: a model's answer has none unless its handler set one, as
    # in TorchServe; every other resource sets its own (falcon types the option str, yet its
    # App sends no Content-Type for None)
    app.resp_options.default_media_type = None  # type: ignore[assignment]  # None: see above
    errors.install(app)
    for surface in names:
        app.adding = surface
        kernel.hooks.add_routes(app, kernel, surface)
    app.adding = names[0] if len(names) == 1 else ""
    app.add_middleware(kernel.hooks.middleware(kernel, names))
    return app


def bound_address(host: str, port: int) -> Address:
    """The local address a bind of ``host:port`` listens on, as ``getsockname()`` reports it.

    An IP literal is written the standard way (``::0001`` -> ``::1``); a name is resolved the
    way gunicorn binds it (IPv4, first address: ``localhost`` -> ``127.0.0.1``); a name that
    does not resolve is kept as given (the bind itself will fail).
    """
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return host, port
    return (str(infos[0][4][0]), port) if infos else (host, port)


def local_address(environ: dict[str, Any]) -> Address | None:
    """The local (host, port) of the request's connection: the accepted socket's
    ``getsockname()`` (:data:`SOCKET_KEY`, which the wfserve worker sets), else PEP 3333's
    ``SERVER_NAME``/``SERVER_PORT``; None when neither can be read."""
    sock = environ.get(SOCKET_KEY)
    try:
        if sock is not None:
            name = sock.getsockname()
            return name[0], int(name[1])
        return str(environ["SERVER_NAME"]), int(environ["SERVER_PORT"])
    except (OSError, KeyError, ValueError, TypeError, IndexError):
        return None


class AddressDispatch:
    """A WSGI app that hands each request to the app of the local address it arrived on.

    Lookup: the exact (host, port) first; then, for an IPv4-mapped IPv6 host, its IPv4 form;
    then a wildcard bind (``0.0.0.0``/``::``) of that port. An address with no app gets
    ``fallback`` (an app without routes: 404). PERF: one ``getsockname()`` and a dict lookup
    per request; the slower normalising lookup runs only on a miss.
    """

    __slots__ = ("apps", "fallback")

    def __init__(self, apps: dict[Address, WSGIApp], fallback: WSGIApp) -> None:
        self.apps = apps
        self.fallback = fallback

    def app_for(self, address: Address | None) -> WSGIApp:
        """The app serving connections to ``address``."""
        if address is None:
            return self.fallback
        app = self.apps.get(address)
        return app if app is not None else self._slow_lookup(*address)

    def _slow_lookup(self, host: str, port: int) -> WSGIApp:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])  # NOTE: drop an IPv6 scope id
        except ValueError:
            return self.fallback
        mapped = getattr(ip, "ipv4_mapped", None)
        for candidate in (str(ip), str(mapped) if mapped else None, *WILDCARDS):
            app = self.apps.get((candidate, port)) if candidate else None
            if app is not None:
                return app
        return self.fallback

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        return self.app_for(local_address(environ))(environ, start_response)


def create_wsgi(kernel: Kernel) -> AddressDispatch:
    """The WSGI application gunicorn serves: one app per distinct bound address."""
    by_address: dict[Address, list[str]] = {}
    for surface, (host, port) in surface_addresses(kernel).items():
        by_address.setdefault(bound_address(host, port), []).append(surface)
    apps: dict[Address, WSGIApp] = {
        address: create_app(kernel, surfaces) for address, surfaces in by_address.items()}
    log.debug("surfaces by address", **{f"{h}:{p}": "+".join(s)
                                        for (h, p), s in by_address.items()})
    return AddressDispatch(apps, fallback=create_app(kernel, ()))
