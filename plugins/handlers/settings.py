"""The handlers plugin's settings: what TorchServe handlers see of the server."""

from __future__ import annotations

from dataclasses import dataclass

from wfserve.kernel.settings import setting


@dataclass(frozen=True)
class HandlerSettings:
    """TorchServe handler settings (``kernel.settings.of(HandlerSettings)``)."""

    limit_max_image_pixels: bool = setting(
        True, "Handlers see it in context.system_properties; TorchServe's vision handler "
        "lifts Pillow's decompression-bomb limit when it is false.",
        ts_key="limit_max_image_pixels",
    )
