"""The API plugin's settings: the HTTP server (gunicorn), its time and size bounds, TLS."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wfserve.kernel.settings import Settings
from wfserve.kernel.settings import setting


@dataclass(frozen=True)
class ApiSettings:
    """The HTTP server's settings (``kernel.settings.of(ApiSettings)``)."""

    allow_remote_management: bool = setting(
        False, "Allow the management API to bind a non-loopback address."
    )
    foreground: bool = setting(
        False, "Stay attached to the terminal (default: start in the background, as "
        "torchserve --start does, and return once the server answers)."
    )
    workers: int = setting(
        0, "Server processes (gunicorn workers), each serving every surface and every "
        "registered workflow with its own copy of the models (0: one per core, or 1 when an "
        "NVIDIA GPU is visible: every process would load every model onto it)."
    )
    threads: int = setting(32, "HTTP threads per worker process.")
    http_linger_ms: float = setting(
        1.0, "Milliseconds an HTTP thread waits for the next request on the keep-alive "
        "connection it just answered, while no other connection waits for a thread (0: every "
        "kept-alive connection goes back to the poller, as in stock gunicorn)."
    )
    log_batch_ms: float = setting(
        100.0, "The server writes debug and info lines (the access log) in batches at most "
        "this many milliseconds apart; warnings and errors at once (0: every line at once)."
    )
    request_read_timeout: float = setting(
        30.0, "Seconds a client may stall while sending a request before it is dropped."
    )
    request_body_timeout: float = setting(
        60.0, "Seconds a client may take to send a whole request body (after the headers)."
    )
    request_min_rate: int = setting(
        1024, "Bytes per second a request body must average once request_read_timeout has "
        "passed; a slower sender is dropped (0: no minimum)."
    )
    response_write_timeout: float = setting(
        30.0, "Seconds a client may take to read a response before it is dropped."
    )
    max_request_timeout_ms: int = setting(
        0, "Most milliseconds a request may ask for with its X-Request-Timeout-Ms header; a "
        "larger value is capped to it (0: default_response_timeout)."
    )
    max_multipart_parts: int = setting(
        1000, "Most parts a multipart/form-data request body may hold."
    )
    max_multipart_depth: int = setting(
        4, "Deepest nesting of multipart parts inside a multipart/form-data request body."
    )
    certificate_file: str = setting(
        "", "PEM certificate (chain) of the https:// addresses; with private_key_file.",
        ts_key="certificate_file",
    )
    private_key_file: str = setting(
        "", "PEM private key of the https:// addresses; with certificate_file.",
        ts_key="private_key_file",
    )
    keystore: str = setting(
        "", "PKCS12 keystore holding the key and certificate of the https:// addresses (used "
        "before certificate_file; neither: a self-signed certificate is made).",
        ts_key="keystore",
    )
    keystore_pass: str = setting(
        "changeit", "Password of the keystore.", ts_key="keystore_pass", secret=True
    )
    keystore_type: str = setting(
        "PKCS12", "Type of the keystore: PKCS12 (JKS is refused: convert it with keytool).",
        ts_key="keystore_type",
    )


def server_processes(settings: Settings) -> int:
    """How many server processes serve: ``workers``, or for 0 one per core, and 1 when an
    NVIDIA GPU is visible (checked without initialising CUDA before the fork)."""
    workers = settings.of(ApiSettings).workers
    if workers > 0:
        return workers
    return 1 if gpu_visible() else max(1, os.cpu_count() or 1)


def gpu_visible(env: Mapping[str, str] = os.environ, root: Path = Path("/")) -> bool:
    """Whether the NVIDIA driver lists a GPU that ``CUDA_VISIBLE_DEVICES`` does not hide."""
    if env.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return False
    gpus = root / "proc" / "driver" / "nvidia" / "gpus"
    return gpus.is_dir() and any(gpus.iterdir())
