"""The auth plugin's settings: TorchServe's token authorization."""

from __future__ import annotations

from dataclasses import dataclass

from wfserve.kernel.settings import setting


@dataclass(frozen=True)
class AuthSettings:
    """Token authorization (``kernel.settings.of(AuthSettings)``)."""

    disable_token_authorization: bool = setting(
        False, "Turn token authorization off.", ts_key="disable_token_authorization"
    )
    token_expiration_min: float = setting(
        60.0, "Minutes an inference or management key stays valid after it is made.",
        ts_key="token_expiration_min",
    )
    key_file: str = setting(
        "key_file.json", "Where the token keys are written (TorchServe's key_file.json; "
        "relative paths are under the current folder)."
    )
