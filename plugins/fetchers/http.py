"""Default fetcher for ``http://`` and ``https://`` URLs: streamed with httpx, bounded.

The URL must match ``allowed_urls`` (TorchServe's check and message). The body is streamed to
``<store>/.downloads/<uuid>/<filename>`` (never two downloads in one place), refused past
``max_download_size`` (announced or counted), and abandoned after ``download_timeout`` seconds
in all; any failure removes the partial file and is TorchServe's
``DownloadFailed("Failed to download archive from: <url>")`` with the reason as a field.

A progress bar (rich, on standard error) is drawn only when the settings ask for it:
``plugins: {fetchers.http: {progress: true}}``, which the command line sets; the server logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import structlog

from kernel import hookimpl
from kernel.errors import DownloadFailed
from kernel.errors import TooLarge
from kernel.settings import Settings
from plugins.fetchers.common import check_allowed
from plugins.fetchers.common import check_relative
from plugins.fetchers.common import discard
from plugins.fetchers.common import download_dir
from plugins.fetchers.common import filename

log = structlog.get_logger(__name__)
PLUGIN = "fetchers.http"
_CHUNK = 256 * 1024


def with_progress(settings: Settings) -> Settings:
    """``settings`` with this plugin's progress bar switched on (for command-line use)."""
    config = dict(settings.plugin_config)
    config[PLUGIN] = {**settings.plugin(PLUGIN), "progress": True}
    return dataclasses.replace(settings, plugin_config=config)


@contextlib.contextmanager
def _bar(url: str, total: int | None, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import DownloadColumn
    from rich.progress import Progress
    from rich.progress import TransferSpeedColumn

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                  transient=True) as progress:
        task = progress.add_task(filename(url) or url, total=total)
        yield lambda n: progress.advance(task, n)


def _stream(url: str, target: Path, settings: Settings, progress: bool) -> int:
    failed = f"Failed to download archive from: {url}"
    limit = settings.max_download_size
    deadline = time.monotonic() + settings.download_timeout
    with httpx.stream("GET", url, timeout=settings.download_timeout,
                      follow_redirects=True) as response:
        if response.status_code != 200:
            raise DownloadFailed(failed, url=url, status=response.status_code,
                                 reason=f"HTTP {response.status_code}")
        announced = response.headers.get("content-length")
        total = int(announced) if announced and announced.isdigit() else None
        if total is not None and total > limit:
            raise TooLarge(f"{url} is larger than {limit} bytes", url=url, limit=limit)
        written = 0
        with open(target, "xb") as out, _bar(url, total, progress) as advance:
            for chunk in response.iter_bytes(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise TooLarge(f"{url} is larger than {limit} bytes", url=url, limit=limit)
                if time.monotonic() > deadline:
                    raise DownloadFailed(failed, url=url, reason="timed out")
                out.write(chunk)
                if advance is not None:
                    advance(len(chunk))
    return written


def download(url: str, store: Path, settings: Settings, *, progress: bool = False) -> Path:
    """Download ``url`` into a new folder of ``store`` (see the module docstring).

    :returns: ``<store>/.downloads/<uuid>/<filename>``.
    :raises WorkflowNotFound | ModelNotFound: not allowed, or ``..`` in the URL.
    :raises DownloadFailed: refused, unreachable, not 200, timed out, or the store is missing.
    :raises TooLarge: over ``max_download_size``.
    """
    check_allowed(url, store, settings)
    check_relative(url, store, settings)
    failed = f"Failed to download archive from: {url}"
    try:
        folder = download_dir(Path(store))
    except OSError as exc:
        raise DownloadFailed(failed, url=url, reason=str(exc)) from None
    target = folder / (filename(url) or "archive")
    log.info("download started", url=url)
    try:
        size = _stream(url, target, settings, progress)
    except httpx.TimeoutException:
        discard(folder)
        raise DownloadFailed(failed, url=url, reason="timed out") from None
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        discard(folder)
        raise DownloadFailed(failed, url=url, reason=str(exc) or type(exc).__name__) from None
    except BaseException:
        discard(folder)
        raise
    log.info("download finished", url=url, path=str(target), bytes=size)
    return target


@hookimpl(trylast=True)
def wfserve_fetch(url: str, store: Path, settings: Settings) -> Path | None:
    """Default implementation: ``http(s)://`` URLs; None for any other."""
    if not url.lower().startswith(("http://", "https://")):
        return None
    progress = bool(settings.plugin(PLUGIN).get("progress", False))
    return download(url, Path(store), settings, progress=progress)
