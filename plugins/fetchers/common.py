"""What every default fetcher shares: TorchServe's URL checks, its messages, download folders.

TorchServe (``ArchiveUtils.validateURL``, ``WorkflowArchive.downloadWorkflow``,
``ModelArchive.downloadModel``): a URL that *looks like* ``file://``, ``http(s)://`` or
``s3://`` must fully match one of ``allowed_urls`` (case-insensitive), otherwise 404 "Given URL
<url> does not match any allowed URL(s)"; a URL containing ``..`` is refused; a missing workflow
is "Workflow not found in workflow store: <url>", a missing model "Model not found at: <url>".
Whether a workflow (``.war``) or a model (``.mar``) is wanted, ``wfserve_fetch`` is told
(``kind``).

Where wfserve is stricter than TorchServe, on purpose:

- A bare name is taken as it is: the HTTP layer decoded the query string once, and nothing
  decodes it again (``%2F`` stays three characters of a file name). It must be a single file
  name (:func:`check_bare_name`) and resolve inside its store.
- Downloads are named by wfserve (:func:`download_name`: a sanitised base name), never by the
  URL's decoded last segment, and each lands in its own ``<store>/.downloads/<uuid>/`` folder,
  so two registrations downloading the same file name never collide and no name escapes.
- Messages and log fields show URLs with their credentials redacted.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlsplit

import structlog

from wfserve.kernel.contracts import Fetched
from wfserve.kernel.errors import ModelNotFound
from wfserve.kernel.errors import NotFound
from wfserve.kernel.errors import WorkflowNotFound
from wfserve.kernel.redact import redact_url
from wfserve.kernel.settings import Settings
from wfserve.kernel.settings import setting

log = structlog.get_logger(__name__)
DOWNLOADS = ".downloads"


@dataclass(frozen=True)
class FetchSettings:
    """The download bounds both default fetchers apply
    (``kernel.settings.of(FetchSettings)``,
    declared by each)."""

    block_private_addresses: bool = setting(
        False, "Refuse downloads from loopback, link-local and private addresses (checked "
        "after DNS resolution; the download connects to the address checked)."
    )
    download_timeout: float = setting(60.0, "Seconds an archive download may take.")
    max_download_size: int = setting(
        2 * 1024**3, "Largest archive a URL may download, in bytes."
    )


_LOOKS_LIKE_URL = re.compile(r"file?://.*|http(s)?://.*|s3://.*", re.IGNORECASE | re.DOTALL)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
#: the longest download file name wfserve makes
_NAME_MAX = 128


def not_found(url: str, kind: str, message: str) -> NotFound:
    """``WorkflowNotFound`` (``kind`` ``war``) or ``ModelNotFound`` with ``message``."""
    cls = WorkflowNotFound if kind == "war" else ModelNotFound
    return cls(message, url=redact_url(url))


def missing(url: str, kind: str) -> NotFound:
    """TorchServe's "not found" error for ``url``."""
    shown = redact_url(url)
    if kind == "war":
        return WorkflowNotFound(f"Workflow not found in workflow store: {shown}", url=shown)
    return ModelNotFound(f"Model not found at: {shown}", url=shown)


def check_relative(url: str, kind: str) -> None:
    """Refuse a URL containing ``..`` with TorchServe's message."""
    if ".." in url:
        raise not_found(url, kind, f"Relative path is not allowed in url: {redact_url(url)}")


def is_allowed(url: str, settings: Settings) -> bool:
    """Whether ``url`` fully matches one of ``allowed_urls`` (case-insensitive)."""
    for pattern in settings.allowed_urls:
        try:
            if re.fullmatch(pattern, url, re.IGNORECASE | re.DOTALL):
                return True
        except re.error:
            continue  # TorchServe would fail at start-up; a bad pattern allows nothing here
    return False


def check_allowed(url: str, kind: str, settings: Settings, *, shown: str | None = None
                  ) -> None:
    """Refuse a URL that looks like one but matches none of ``allowed_urls`` (full match).

    :param shown: the URL the message names (the one the user gave), when ``url`` is a
        resolved form of it.
    """
    if not _LOOKS_LIKE_URL.fullmatch(url) or is_allowed(url, settings):
        return
    raise not_found(shown or url, kind,
                    f"Given URL {redact_url(shown or url)} does not match any allowed URL(s)")


def filename(url: str) -> str:
    """The last path segment of ``url`` (``ArchiveUtils.getFilenameFromUrl``).

    A URL's segment is percent-decoded once (it was encoded to be a URL); a bare name is
    returned as it is: it was decoded by the HTTP layer already.
    """
    if "://" not in url:
        return url.rstrip("/").rsplit("/", 1)[-1]
    return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def check_bare_name(url: str, kind: str) -> str:
    """The store file name a bare URL names; refuses anything but one plain file name.

    :raises WorkflowNotFound | ModelNotFound: empty, ``.``, ``..`` (anywhere, TorchServe's
        message), a path separator or a NUL.
    """
    if not url:
        raise not_found(url, kind, "empty url")
    check_relative(url, kind)
    if url == "." or "/" in url or "\\" in url or "\0" in url or os.sep in url:
        raise not_found(url, kind,
                        f"Invalid archive name in url: {redact_url(url)!r} (a name in the "
                        "store, without a path separator or NUL)")
    return url


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, all links resolved, is ``folder`` or lies under it."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError, ValueError):
        return False


def download_name(url: str) -> str:
    """The file name wfserve gives a download of ``url``: its decoded last segment with
    every character but ``A-Za-z0-9._-`` replaced by ``_``, no leading dot, at most 128
    characters (the end, and so the extension, kept); ``archive`` when nothing is left."""
    name = _UNSAFE_CHARS.sub("_", filename(url)).lstrip(".")
    if len(name) > _NAME_MAX:
        name = name[-_NAME_MAX:].lstrip(".")
    return name or "archive"


def download_dir(store: Path) -> Path:
    """A new, empty ``<store>/.downloads/<uuid>/`` folder for one download (mode 0700).

    :raises OSError: the store does not exist or is not writable, or ``.downloads`` is not a
        real folder (a link is refused).
    """
    if not store.is_dir():
        raise FileNotFoundError(f"store folder {store} does not exist")
    downloads = store / DOWNLOADS
    downloads.mkdir(mode=0o700, exist_ok=True)
    if downloads.is_symlink() or not downloads.is_dir():
        raise NotADirectoryError(f"{downloads} is not a folder")
    folder = downloads / uuid.uuid4().hex
    folder.mkdir(mode=0o700)
    return folder


def create_exclusive(target: Path) -> int:
    """Open a new file for writing: created here, never an existing file or a link.

    :returns: the file descriptor (mode 0600).
    :raises FileExistsError: ``target`` exists (a link included).
    """
    return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   0o600)


def discard(folder: Path) -> None:
    """Remove a download folder after a failed download (best effort)."""
    shutil.rmtree(folder, ignore_errors=True)


def owned_download(path: Path) -> bool:
    """Whether ``path`` is a download's own file: directly inside a ``.downloads/<unique>/``
    folder, links resolved. Only such paths are ever deleted."""
    try:
        real = path.parent.resolve() / path.name
    except (OSError, RuntimeError):
        return False
    return real.parent.parent.name == DOWNLOADS and not path.parent.is_symlink()


def release_download(path: Path) -> None:
    """Delete a download (file or copied folder) and its unique folder; errors are logged,
    never raised. A path outside a ``.downloads/<unique>/`` folder is left alone."""
    if not owned_download(path):
        log.warning("not deleting a download outside a downloads folder", path=str(path))
        return
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        path.parent.rmdir()  # the download's own unique folder, when empty
    except FileNotFoundError:
        pass  # NOTE: another server process released the same download first
    except OSError as exc:
        log.warning("could not delete a downloaded archive", path=str(path), error=str(exc))


def as_download(path: Path) -> Fetched:
    """A download this fetcher made: released by deleting it, kept (for a snapshot) as its
    path."""
    return Fetched(path, release=functools.partial(release_download, path), keep=str(path))


def reused(keep: str | None, store: Path) -> Fetched | None:
    """An earlier download a snapshot kept (``keep``: its path), when it is still one of this
    store's downloads; None otherwise (fetch again)."""
    if not keep:
        return None
    path = Path(keep)
    try:
        inside_downloads = path.resolve().parent.parent == (store / DOWNLOADS).resolve()
    except OSError:
        return None
    return as_download(path) if inside_downloads and path.exists() else None
