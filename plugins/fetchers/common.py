"""What every default fetcher shares: TorchServe's URL checks, its messages, download folders.

TorchServe (``ArchiveUtils.validateURL``, ``WorkflowArchive.downloadWorkflow``,
``ModelArchive.downloadModel``): a URL that *looks like* ``file://``, ``http(s)://`` or
``s3://`` must fully match one of ``allowed_urls`` (case-insensitive), otherwise 404 "Given URL
<url> does not match any allowed URL(s)"; a URL containing ``..`` is refused; a missing workflow
is "Workflow not found in workflow store: <url>", a missing model "Model not found at: <url>".
Whether a URL names a workflow or a model is told from ``store`` and the name (see
:func:`is_workflow`), because ``wfserve_fetch`` is given nothing else.

Downloads never collide (TorchServe fails when two registrations download the same file
name): each lands in its own ``<store>/.downloads/<uuid>/<filename>``.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlsplit

from kernel.errors import ModelNotFound
from kernel.errors import NotFound
from kernel.errors import WorkflowNotFound
from kernel.settings import Settings

DOWNLOADS = ".downloads"
_LOOKS_LIKE_URL = re.compile(r"file?://.*|http(s)?://.*|s3://.*", re.IGNORECASE | re.DOTALL)


def is_workflow(url: str, store: Path, settings: Settings) -> bool:
    """True when ``url`` names a workflow archive rather than a model.

    A name ending in ``.war`` is a workflow; so is any URL resolved against a workflow store
    that is not also the model store.
    """
    if filename(url).lower().endswith(".war"):
        return True
    workflow_store = settings.workflow_store_path
    return _same(store, workflow_store) and not _same(store, settings.model_store_path)


def _same(a: Path, b: Path) -> bool:
    return Path(a).absolute() == Path(b).absolute()


def not_found(url: str, store: Path, settings: Settings, message: str) -> NotFound:
    """``WorkflowNotFound`` or ``ModelNotFound`` (by :func:`is_workflow`) with ``message``."""
    cls = WorkflowNotFound if is_workflow(url, store, settings) else ModelNotFound
    return cls(message, url=url)


def missing(url: str, store: Path, settings: Settings) -> NotFound:
    """TorchServe's "not found" error for ``url``."""
    if is_workflow(url, store, settings):
        return WorkflowNotFound(f"Workflow not found in workflow store: {url}", url=url)
    return ModelNotFound(f"Model not found at: {url}", url=url)


def check_relative(url: str, store: Path, settings: Settings) -> None:
    """Refuse a URL containing ``..`` with TorchServe's message."""
    if ".." in url:
        raise not_found(url, store, settings, f"Relative path is not allowed in url: {url}")


def check_allowed(url: str, store: Path, settings: Settings) -> None:
    """Refuse a URL that looks like one but matches none of ``allowed_urls`` (full match)."""
    if not _LOOKS_LIKE_URL.fullmatch(url):
        return
    for pattern in settings.allowed_urls:
        try:
            if re.fullmatch(pattern, url, re.IGNORECASE | re.DOTALL):
                return
        except re.error:
            continue  # TorchServe would fail at start-up; a bad pattern allows nothing here
    raise not_found(url, store, settings,
                    f"Given URL {url} does not match any allowed URL(s)")


def filename(url: str) -> str:
    """The last path segment of ``url`` (``ArchiveUtils.getFilenameFromUrl``), unquoted."""
    path = urlsplit(url).path if "://" in url else url
    return unquote(path.rstrip("/").rsplit("/", 1)[-1])


def download_dir(store: Path) -> Path:
    """A new, empty ``<store>/.downloads/<uuid>/`` folder for one download.

    :raises OSError: the store does not exist or is not writable.
    """
    if not store.is_dir():
        raise FileNotFoundError(f"store folder {store} does not exist")
    folder = store / DOWNLOADS / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def discard(folder: Path) -> None:
    """Remove a download folder after a failed download (best effort)."""
    shutil.rmtree(folder, ignore_errors=True)
