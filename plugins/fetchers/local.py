"""Default fetcher for bare names (looked up in the store) and ``file://`` URLs (copied).

Bare names follow TorchServe (research §1.5): the file name is the URL's last segment and is
looked up as ``<store>/<name>``. A workflow must be a file there; a model may also be a
folder in the store (a ``no-archive`` model) or an absolute folder path. ``file://`` URLs are
checked against ``allowed_urls`` and copied into a fresh ``<store>/.downloads/<uuid>/`` folder,
like a download, so the kernel may delete the copy on unregister.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlsplit

import structlog

from kernel import hookimpl
from kernel.errors import DownloadFailed
from kernel.errors import TooLarge
from kernel.errors import WorkflowNotFound
from kernel.settings import Settings
from plugins.fetchers.common import check_allowed
from plugins.fetchers.common import check_relative
from plugins.fetchers.common import discard
from plugins.fetchers.common import download_dir
from plugins.fetchers.common import filename
from plugins.fetchers.common import is_workflow
from plugins.fetchers.common import missing
from plugins.fetchers.common import not_found

log = structlog.get_logger(__name__)


def resolve_in_store(url: str, store: Path, settings: Settings) -> Path:
    """The local path of a bare name, by TorchServe's rules.

    :raises WorkflowNotFound: for a workflow: ``..`` in the name, absent, or not a file.
    :raises ModelNotFound: for a model: empty, ``..`` in the name, or nothing found.
    """
    if not url:
        raise not_found(url, store, settings, "empty url")
    check_relative(url, store, settings)
    target = Path(store) / filename(url)
    if is_workflow(url, store, settings):
        if not target.exists():
            raise missing(url, store, settings)
        if not target.is_file():
            raise WorkflowNotFound(f"Workflow not found at: {url}", url=url)
        return target
    if target.is_file():
        return target
    direct = Path(url)
    if direct.is_absolute() and direct.is_dir():
        return direct
    if target.is_dir():
        return target
    raise missing(url, store, settings)


def copy_file_url(url: str, store: Path, settings: Settings) -> Path:
    """Copy the file or folder a ``file://`` URL names into a new download folder.

    :returns: ``<store>/.downloads/<uuid>/<filename>``.
    :raises WorkflowNotFound | ModelNotFound: not allowed, or ``..`` in the URL.
    :raises DownloadFailed: the source is absent or unreadable, or the store is missing.
    :raises TooLarge: a file over ``max_download_size``.
    """
    check_allowed(url, store, settings)
    check_relative(url, store, settings)
    source = Path(unquote(urlsplit(url).path))
    failed = f"Failed to download archive from: {url}"
    if not source.exists():
        raise DownloadFailed(failed, url=url, reason="no such file")
    if source.is_file() and source.stat().st_size > settings.max_download_size:
        raise TooLarge(f"{url} is larger than {settings.max_download_size} bytes",
                       url=url, limit=settings.max_download_size)
    try:
        folder = download_dir(Path(store))
    except OSError as exc:
        raise DownloadFailed(failed, url=url, reason=str(exc)) from None
    target = folder / (filename(url) or "archive")
    try:
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copyfile(source, target)
    except OSError as exc:
        discard(folder)
        raise DownloadFailed(failed, url=url, reason=str(exc)) from None
    log.info("archive copied", url=url, path=str(target))
    return target


@hookimpl(trylast=True)
def wfserve_fetch(url: str, store: Path, settings: Settings) -> Path | None:
    """Default implementation: ``file://`` URLs and bare names; None for other schemes."""
    if url.lower().startswith("file://"):
        return copy_file_url(url, Path(store), settings)
    if "://" in url:
        return None
    return resolve_in_store(url, Path(store), settings)
