"""Default fetcher for bare names (looked up in the store) and ``file://`` URLs (copied).

Bare names follow TorchServe (research §1.5), stricter where it is unsafe: the name is taken
as it is (never percent-decoded again), must be one plain file name
(:func:`~wfserve.plugins.fetchers.common.check_bare_name`) and must resolve inside the store. A
workflow must be a file there; a model may also be a folder in the store (a ``no-archive``
model) or an absolute folder path, which is a local URL like ``file://`` and must match
``allowed_urls`` as ``file://<resolved path>``.

``file://`` URLs: the path is decoded once and resolved (links and ``..`` followed), and the
rules are matched against ``file://<resolved path>``, so ``%2e%2e`` or a link cannot lead
out of an allowed prefix. Only a regular file or a folder of regular files is copied, into a
fresh ``<store>/.downloads/<uuid>/`` folder under a name wfserve chooses, bounded by
``max_download_size``, ``max_archive_entries`` and ``download_timeout``; the kernel may delete
the copy on unregister.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlsplit

import structlog

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Fetched
from wfserve.kernel.errors import DownloadFailed
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.errors import WorkflowNotFound
from wfserve.kernel.redact import clip
from wfserve.kernel.redact import redact_url
from wfserve.kernel.settings import Settings
from wfserve.plugins.fetchers.common import FetchSettings
from wfserve.plugins.fetchers.common import as_download
from wfserve.plugins.fetchers.common import check_allowed
from wfserve.plugins.fetchers.common import check_bare_name
from wfserve.plugins.fetchers.common import check_relative
from wfserve.plugins.fetchers.common import discard
from wfserve.plugins.fetchers.common import download_dir
from wfserve.plugins.fetchers.common import download_name
from wfserve.plugins.fetchers.common import inside
from wfserve.plugins.fetchers.common import missing
from wfserve.plugins.fetchers.common import not_found
from wfserve.plugins.fetchers.common import reused
from wfserve.plugins.fetchers.copying import Budget
from wfserve.plugins.fetchers.copying import CopyRefused
from wfserve.plugins.fetchers.copying import copy_file
from wfserve.plugins.fetchers.copying import copy_tree

log = structlog.get_logger(__name__)


def resolve_in_store(url: str, store: Path, settings: Settings, kind: str) -> Path:
    """The local path of a bare name, by TorchServe's rules (see the module docstring).

    :raises WorkflowNotFound: for a workflow: an invalid name, absent, outside the store, or
        not a file.
    :raises ModelNotFound: for a model: an invalid name, nothing found, or outside the store.
    """
    workflow = kind == "war"
    if not url and workflow:  # TorchServe: the store folder itself
        raise WorkflowNotFound("Workflow not found at: ", url=url)
    if url and not workflow and Path(url).is_absolute():
        return _absolute_folder(url, settings, kind)
    name = check_bare_name(url, kind)
    target = Path(store) / name
    if not target.exists():
        raise missing(url, kind)
    if not inside(target, Path(store)):
        raise not_found(url, kind,
                        f"{redact_url(url)} resolves outside the store (a link?)")
    if workflow and not target.is_file():
        raise WorkflowNotFound(f"Workflow not found at: {url}", url=url)
    return target


def _absolute_folder(url: str, settings: Settings, kind: str) -> Path:
    """A model's absolute folder path: a local URL, so ``allowed_urls`` applies to it."""
    check_relative(url, kind)
    if "\0" in url:
        raise missing(url, kind)
    resolved = Path(os.path.realpath(url))
    check_allowed(f"file://{resolved.as_posix()}", kind, settings, shown=url)
    if not resolved.is_dir():
        raise missing(url, kind)
    return Path(url)


def _file_path(url: str, settings: Settings, kind: str) -> Path:
    """The resolved local path a ``file://`` URL names, checked against ``allowed_urls``."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path or "\0" in path:
        raise not_found(url, kind,
                        f"Given URL {redact_url(url)} does not name a local file")
    resolved = Path(os.path.realpath(path))
    check_allowed(f"file://{resolved.as_posix()}", kind, settings, shown=url)
    check_relative(url, kind)
    return resolved


def copy_file_url(url: str, store: Path, settings: Settings, kind: str) -> Path:
    """Copy the regular file or folder a ``file://`` URL names into a new download folder.

    :returns: ``<store>/.downloads/<uuid>/<name>``.
    :raises WorkflowNotFound | ModelNotFound: not allowed (as resolved), or ``..`` in the URL.
    :raises DownloadFailed: the source is absent, unreadable, a device, FIFO or link inside a
        folder; the copy timed out; or the store is missing.
    :raises TooLarge: over ``max_download_size`` or ``max_archive_entries``.
    """
    source = _file_path(url, settings, kind)
    shown = redact_url(url)
    failed = f"Failed to download archive from: {shown}"
    try:
        info = source.stat()
    except OSError:
        raise DownloadFailed(failed, url=shown, reason="no such file") from None
    mode = info.st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DownloadFailed(failed, url=shown, reason="not a regular file or folder")
    if stat.S_ISREG(mode) and info.st_size > settings.of(FetchSettings).max_download_size:
        limit = settings.of(FetchSettings).max_download_size
        raise TooLarge(f"{shown} is larger than {limit} bytes", url=shown, limit=limit)
    try:
        folder = download_dir(Path(store))
    except OSError as exc:
        raise DownloadFailed(failed, url=shown, reason=clip(exc)) from None
    target = folder / download_name(url)
    bounds = settings.of(FetchSettings)
    budget = Budget.lasting(bounds.max_download_size, settings.max_archive_entries,
                            bounds.download_timeout)
    try:
        if stat.S_ISDIR(mode):
            copy_tree(source, target, budget)
        else:
            copy_file(source, target, budget)
    except CopyRefused as exc:
        discard(folder)
        if exc.too_large:
            raise TooLarge(f"{shown} is {exc}", url=shown,
                           limit=settings.of(FetchSettings).max_download_size) from None
        raise DownloadFailed(failed, url=shown, reason=clip(exc)) from None
    except OSError as exc:
        discard(folder)
        raise DownloadFailed(failed, url=shown, reason=clip(exc.strerror or exc)) from None
    except BaseException:
        discard(folder)
        raise
    log.info("archive copied", url=shown, path=str(target))
    return target


@hookimpl
def wfserve_settings() -> type:
    """:class:`~wfserve.plugins.fetchers.common.FetchSettings` (shared by both default fetchers)."""
    return FetchSettings


@hookimpl(trylast=True)
def wfserve_fetch(url: str, store: Path, settings: Settings, kind: str, reuse: str | None
                  ) -> Fetched | None:
    """Default implementation: ``file://`` URLs (copied: a download, released on unregister,
    reused from a snapshot while it exists) and bare names (the store's own file, never
    deleted); None for other schemes."""
    if url.lower().startswith("file://"):
        again = reused(reuse, Path(store))
        return again or as_download(copy_file_url(url, Path(store), settings, kind))
    if "://" in url:
        return None
    return Fetched(resolve_in_store(url, Path(store), settings, kind))
