"""OpenAPI 3 documents generated from the routes an app actually serves (never hand-kept).

Every route a ``wfserve_add_routes`` implementation added is in :attr:`RoutedApp.routes`, with
its surface; each ``on_<method>`` responder becomes an operation whose summary is the first
line of the responder's (or else the resource's) docstring. A resource may refine its entry
with an ``openapi`` class attribute: ``{"query": {name: description}, "body": True}``.
TorchServe answers ``OPTIONS /`` with its API description; so does wfserve, on every surface.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from typing import Any

import falcon

if TYPE_CHECKING:
    from wfserve.plugins.api.app import Route

OPENAPI_VERSION = "3.0.3"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?}")
_BODY_METHODS = {"post", "put", "patch"}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "type", "message"],
    "properties": {"code": {"type": "integer"}, "type": {"type": "string"},
                   "message": {"type": "string"}},
}


def openapi_path(template: str) -> str:
    """``/models/{name:int}`` -> ``/models/{name}`` (Falcon converters dropped)."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", template)


def responders(route: Route) -> dict[str, Any]:
    """``{method: responder}`` for the ``on_<method>[_suffix]`` methods of a route's resource."""
    tail = f"_{route.suffix}" if route.suffix else ""
    found = {}
    for method in METHODS:
        responder = getattr(route.resource, f"on_{method}{tail}", None)
        if callable(responder):
            found[method] = responder
    return found


def _summary(responder: Any, resource: object) -> str:
    doc = inspect.getdoc(responder) or inspect.getdoc(type(resource)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def operation(route: Route, method: str, responder: Any) -> dict[str, Any]:
    """The OpenAPI operation object for one responder."""
    meta: dict[str, Any] = getattr(route.resource, "openapi", None) or {}
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAM.findall(route.template)
    ]
    params += [
        {"name": name, "in": "query", "required": False, "description": text,
         "schema": {"type": "string"}}
        for name, text in meta.get("query", {}).items()
    ]
    op: dict[str, Any] = {
        "operationId": f"{method}_{route.surface or 'any'}_{openapi_path(route.template)}",
        "summary": _summary(responder, route.resource),
        "tags": [route.surface] if route.surface else [],
        "parameters": params,
        "responses": {
            "200": {"description": "Success."},
            "default": {"description": "TorchServe's error body.",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Error"}}}},
        },
    }
    if method in _BODY_METHODS and meta.get("body"):
        op["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
    return op


def document(routes: Iterable[Route], title: str = "wfserve") -> dict[str, Any]:
    """The OpenAPI 3 document of ``routes``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version

    try:
        release = version("wfserve")
    except PackageNotFoundError:  # NOTE: running from a source tree without installing
        release = "0"
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(routes, key=lambda r: r.template):
        item = paths.setdefault(openapi_path(route.template), {})
        for method, responder in responders(route).items():
            item[method] = operation(route, method, responder)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": release,
                 "description": "TorchServe-compatible workflow server."},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
    }


class ApiDescription:
    """The API description of the app it is served by (``GET /api-description``, ``OPTIONS /``)."""

    __slots__ = ("app",)

    def __init__(self, app: falcon.App) -> None:
        self.app = app

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """This port's OpenAPI 3 document, generated from its routes."""
        routes = getattr(self.app, "routes", {}).values()
        surfaces = "+".join(getattr(self.app, "surfaces", ())) or "wfserve"
        resp.content_type = falcon.MEDIA_JSON
        resp.data = (json.dumps(document(routes, f"wfserve {surfaces} API"), indent=2)
                     + "\n").encode()

    on_options = on_get


class RootOptions:
    """``OPTIONS /``: TorchServe's way of asking a port for its API description."""

    __slots__ = ("description",)

    def __init__(self, app: falcon.App) -> None:
        self.description = ApiDescription(app)

    def on_options(self, req: falcon.Request, resp: falcon.Response) -> None:
        """This port's OpenAPI 3 document, generated from its routes."""
        self.description.on_get(req, resp)
