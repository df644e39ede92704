"""CORS headers as TorchServe sends them: the configured ``cors_allowed_origin``,
``cors_allowed_methods`` and ``cors_allowed_headers`` values, verbatim, as the three
``Access-Control-Allow-*`` headers of every answer on every surface (errors and ``OPTIONS``
included; ``OPTIONS`` goes to the ordinary routes). An empty value sends no header, as
TorchServe sends none for an unset key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from wfserve.kernel import hookimpl
from wfserve.kernel.settings import setting

if TYPE_CHECKING:
    import falcon

    from wfserve.kernel.core import Kernel


@dataclass(frozen=True)
class CorsSettings:
    """The three values TorchServe sends (``kernel.settings.of(CorsSettings)``)."""

    cors_allowed_origin: str = setting(
        "", "Access-Control-Allow-Origin sent on every answer, as written (empty: none).",
        ts_key="cors_allowed_origin",
    )
    cors_allowed_methods: str = setting(
        "", "Access-Control-Allow-Methods sent on every answer, as written (empty: none).",
        ts_key="cors_allowed_methods",
    )
    cors_allowed_headers: str = setting(
        "", "Access-Control-Allow-Headers sent on every answer, as written (empty: none).",
        ts_key="cors_allowed_headers",
    )


class CorsHeaders:
    """Falcon middleware adding the configured headers to every response."""

    __slots__ = ("headers",)

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        for name, value in self.headers.items():
            resp.set_header(name, value)


@hookimpl
def wfserve_settings() -> type:
    """:class:`CorsSettings`."""
    return CorsSettings


@hookimpl
def wfserve_middleware(kernel: Kernel, surfaces: list[str]) -> list[Any] | None:
    """The CORS headers, when any is configured."""
    s = kernel.settings.of(CorsSettings)
    headers = {name: value for name, value in (
        ("Access-Control-Allow-Origin", s.cors_allowed_origin),
        ("Access-Control-Allow-Methods", s.cors_allowed_methods),
        ("Access-Control-Allow-Headers", s.cors_allowed_headers),
    ) if value}
    return [CorsHeaders(headers)] if headers else None
