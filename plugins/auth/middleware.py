"""The token check (a middleware per app) and TorchServe's ``/token`` key rotation resource.

Which key a request needs comes from the surface of its route (``req.context.surface``):
the inference key on the inference API, the management key on the management API, the API key
for ``/token``. The metrics API, ``/ping``, the API description and ``OPTIONS`` need none.
``Authorization: Bearer <key>`` as TorchServe reads it; a missing, wrong or expired key is
TorchServe's 400 ``InvalidKeyException``.
"""

from __future__ import annotations

from typing import Any

import falcon
import structlog

from wfserve.kernel.errors import InvalidKey
from wfserve.plugins.auth.keys import API
from wfserve.plugins.auth.keys import INFERENCE
from wfserve.plugins.auth.keys import MANAGEMENT
from wfserve.plugins.auth.keys import KeyStore

log = structlog.get_logger(__name__)
MESSAGE = "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
#: routes anyone may call: health, the API description
OPEN_ROUTES = frozenset({"/ping", "/api-description", "/"})
KIND_OF_SURFACE = {"inference": INFERENCE, "management": MANAGEMENT}


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (TorchServe's parse)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class TokenRotation:
    """``/token?type=management|inference`` (management API, API key): make a new key."""

    __slots__ = ("keys",)

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    openapi: dict[str, Any] = {"query": {"type": "management or inference"}}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Rotate the management or inference key; the new one is in the key file."""
        kind = req.get_param("type") or ""
        try:
            self.keys.rotate(kind)
        except ValueError:
            raise InvalidKey(MESSAGE, kind=kind) from None
        log.info("token rotated", type=kind, key_file=str(self.keys.path))
        resp.content_type = falcon.MEDIA_JSON
        resp.data = b""  # NOTE: TorchServe answers 200 with an empty body

    on_post = on_put = on_get


class TokenAuth:
    """Refuses a request whose route needs a key it does not carry."""

    __slots__ = ("keys",)

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict[str, Any]) -> None:
        if req.method == "OPTIONS" or req.uri_template in OPEN_ROUTES:
            return
        kind = API if isinstance(resource, TokenRotation) else KIND_OF_SURFACE.get(
            req.context.surface or "")
        if kind is None:
            return
        if not self.keys.check(bearer(req.get_header("Authorization")), kind):
            log.warning("token refused", need=kind, path=req.path)
            raise InvalidKey(MESSAGE, need=kind)
