"""Token authorization compatible with TorchServe 0.12, on unless
``disable_token_authorization`` (``--disable-token-auth``) is set.

At start-up the keys are made and written to ``key_file`` (``key_file.json`` in the current
folder, as TorchServe does); each API app gets a :class:`~wfserve.plugins.auth.middleware.TokenAuth`
middleware and the management API gets ``/token`` for rotating a key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import structlog

from wfserve.kernel import hookimpl
from wfserve.kernel.stash import StashKey
from wfserve.plugins.auth.keys import KeyStore
from wfserve.plugins.auth.settings import AuthSettings

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

log = structlog.get_logger(__name__)
KEYS = StashKey[KeyStore]()


def keys_for(kernel: Kernel) -> KeyStore:
    """This server's keys, made (and the key file written) on first use."""

    def make() -> KeyStore:
        auth = kernel.settings.of(AuthSettings)
        store = KeyStore(Path(auth.key_file).absolute(), auth.token_expiration_min)
        log.info("token authorization is on: send 'Authorization: Bearer <key>'",
                 key_file=str(store.path))
        return store

    return kernel.stash.setdefault(KEYS, make)


def enabled(kernel: Kernel) -> bool:
    """Whether token authorization is on for this server."""
    return not kernel.settings.of(AuthSettings).disable_token_authorization


@hookimpl
def wfserve_settings() -> type:
    """:class:`~wfserve.plugins.auth.settings.AuthSettings`."""
    return AuthSettings


@hookimpl
def wfserve_preload(kernel: Kernel) -> None:
    """Make the keys once, before the server processes are forked: they all share them."""
    if enabled(kernel):
        keys_for(kernel)


@hookimpl
def wfserve_startup(kernel: Kernel) -> None:
    """Write the key file before the first request, as TorchServe does at start."""
    if enabled(kernel):
        keys_for(kernel)


@hookimpl
def wfserve_add_routes(app: Any, kernel: Kernel, surface: str) -> None:
    """``/token`` on the management API."""
    if enabled(kernel) and surface == "management":
        from wfserve.plugins.auth.middleware import TokenRotation

        app.add_route("/token", TokenRotation(keys_for(kernel)))


@hookimpl
def wfserve_middleware(kernel: Kernel, surfaces: list[str]) -> list[Any] | None:
    """The token check, for apps serving the inference or management API."""
    if not enabled(kernel) or not {"inference", "management"} & set(surfaces):
        return None
    from wfserve.plugins.auth.middleware import TokenAuth

    return [TokenAuth(keys_for(kernel))]
