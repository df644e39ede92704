"""Default fetcher for ``http://`` and ``https://`` URLs: streamed with httpx, bounded.

The URL must match ``allowed_urls`` (TorchServe's check and message). Redirects are followed
by hand, at most :data:`MAX_REDIRECTS`, and every hop must match ``allowed_urls`` again (and
stay http(s)), so an allowed server cannot send the download elsewhere. Proxy environment
variables are ignored. With ``block_private_addresses`` each hop's host is resolved once,
must be public, and is connected to at the address checked
(:mod:`wfserve.plugins.fetchers.addresses`).

The body is streamed to ``<store>/.downloads/<uuid>/<name>`` (a name wfserve chooses; never
two downloads in one place), refused past ``max_download_size`` (announced or counted), and
abandoned after ``download_timeout`` seconds in all, redirects included; any failure removes
the partial file and is TorchServe's ``DownloadFailed("Failed to download archive from:
<url>")`` with the reason as a field. URLs in messages and logs have their credentials
redacted.

A progress bar (rich, on standard error) is drawn only when the settings ask for it:
``plugins: {fetchers.http: {progress: true}}``, which the command line sets; the server logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import structlog

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Fetched
from wfserve.kernel.errors import DownloadFailed
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.redact import clip
from wfserve.kernel.redact import redact_url
from wfserve.kernel.settings import Settings
from wfserve.plugins.fetchers.addresses import AddressRefused
from wfserve.plugins.fetchers.addresses import pinned_address
from wfserve.plugins.fetchers.common import FetchSettings
from wfserve.plugins.fetchers.common import as_download
from wfserve.plugins.fetchers.common import check_allowed
from wfserve.plugins.fetchers.common import check_relative
from wfserve.plugins.fetchers.common import create_exclusive
from wfserve.plugins.fetchers.common import discard
from wfserve.plugins.fetchers.common import download_dir
from wfserve.plugins.fetchers.common import download_name
from wfserve.plugins.fetchers.common import filename
from wfserve.plugins.fetchers.common import is_allowed
from wfserve.plugins.fetchers.common import reused

log = structlog.get_logger(__name__)
PLUGIN = "fetchers.http"
MAX_REDIRECTS = 5
_CHUNK = 256 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


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
        task = progress.add_task(filename(url) or "archive", total=total)
        yield lambda n: progress.advance(task, n)


def _request(client: httpx.Client, url: str, settings: Settings) -> httpx.Request:
    """A GET of ``url``; with ``block_private_addresses``, to the checked address."""
    target = httpx.URL(url)
    if not settings.of(FetchSettings).block_private_addresses:
        return client.build_request("GET", target)
    port = target.port or (443 if target.scheme == "https" else 80)
    address = pinned_address(target.host, port)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return client.build_request("GET", target.copy_with(host=address),
                                headers={"Host": target.netloc.decode("ascii")},
                                extensions=extensions)


def _open(client: httpx.Client, url: str, settings: Settings, failed: str) -> httpx.Response:
    """The streamed answer to ``url`` after following allowed redirects."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        response = client.send(_request(client, current, settings), stream=True)
        location = response.headers.get("location")
        if response.status_code not in _REDIRECTS or not location:
            return response
        response.close()
        hop = urljoin(current, location)
        if not hop.lower().startswith(("http://", "https://")) or not is_allowed(hop, settings):
            raise DownloadFailed(
                f"{failed}: redirected to {clip(redact_url(hop))}, which does not match any "
                "allowed URL(s)", url=redact_url(url), reason="redirect not allowed")
        current = hop
    raise DownloadFailed(failed, url=redact_url(url),
                         reason=f"more than {MAX_REDIRECTS} redirects")


def _stream(url: str, target: Path, settings: Settings, progress: bool) -> int:
    shown = redact_url(url)
    failed = f"Failed to download archive from: {shown}"
    limit = settings.of(FetchSettings).max_download_size
    deadline = time.monotonic() + settings.of(FetchSettings).download_timeout
    with httpx.Client(timeout=settings.of(FetchSettings).download_timeout, follow_redirects=False,
                      trust_env=False) as client:
        response = _open(client, url, settings, failed)
        try:
            if response.status_code != 200:
                raise DownloadFailed(failed, url=shown, status=response.status_code,
                                     reason=f"HTTP {response.status_code}")
            announced = response.headers.get("content-length")
            total = int(announced) if announced and announced.isdigit() else None
            if total is not None and total > limit:
                raise TooLarge(f"{shown} is larger than {limit} bytes", url=shown, limit=limit)
            written = 0
            with os.fdopen(create_exclusive(target), "wb") as out, \
                    _bar(url, total, progress) as advance:
                for chunk in response.iter_bytes(_CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise TooLarge(f"{shown} is larger than {limit} bytes", url=shown,
                                       limit=limit)
                    if time.monotonic() > deadline:
                        raise DownloadFailed(failed, url=shown, reason="timed out")
                    out.write(chunk)
                    if advance is not None:
                        advance(len(chunk))
        finally:
            response.close()
    return written


def download(url: str, store: Path, settings: Settings, kind: str, *, progress: bool = False
             ) -> Path:
    """Download ``url`` into a new folder of ``store`` (see the module docstring).

    :returns: ``<store>/.downloads/<uuid>/<name>``.
    :raises WorkflowNotFound | ModelNotFound: not allowed, or ``..`` in the URL.
    :raises DownloadFailed: refused, unreachable, not 200, redirected where not allowed, an
        address ``block_private_addresses`` refuses, timed out, or the store is missing.
    :raises TooLarge: over ``max_download_size``.
    """
    check_allowed(url, kind, settings)
    check_relative(url, kind)
    shown = redact_url(url)
    failed = f"Failed to download archive from: {shown}"
    try:
        folder = download_dir(Path(store))
    except OSError as exc:
        raise DownloadFailed(failed, url=shown, reason=clip(exc)) from None
    target = folder / download_name(url)
    log.info("download started", url=shown)
    try:
        size = _stream(url, target, settings, progress)
    except httpx.TimeoutException:
        discard(folder)
        raise DownloadFailed(failed, url=shown, reason="timed out") from None
    except AddressRefused as exc:
        discard(folder)
        raise DownloadFailed(f"{failed}: {clip(exc)}", url=shown, reason="address refused") \
            from None
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        discard(folder)
        raise DownloadFailed(failed, url=shown,
                             reason=clip(str(exc) or type(exc).__name__)) from None
    except BaseException:
        discard(folder)
        raise
    log.info("download finished", url=shown, path=str(target), bytes=size)
    return target


@hookimpl
def wfserve_settings() -> type:
    """:class:`~wfserve.plugins.fetchers.common.FetchSettings` (shared by both default fetchers)."""
    return FetchSettings


@hookimpl(trylast=True)
def wfserve_fetch(url: str, store: Path, settings: Settings, kind: str, reuse: str | None
                  ) -> Fetched | None:
    """Default implementation: ``http(s)://`` URLs (a download, released on unregister,
    reused from a snapshot while it exists); None for any other."""
    if not url.lower().startswith(("http://", "https://")):
        return None
    again = reused(reuse, Path(store))
    if again is not None:
        return again
    progress = bool(settings.plugin(PLUGIN).get("progress", False))
    return as_download(download(url, Path(store), settings, kind, progress=progress))
