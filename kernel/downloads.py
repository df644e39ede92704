"""Downloads of ``scheme://`` URLs: per registration, reusable from a snapshot, deleted whole.

What is recorded of a download (``fetched``: key -> ``(url, path)``) holds the URL with its
credentials redacted, so snapshots never keep a password; a redacted URL is matched against
the redacted form of the URL asked for.

Fetchers write a remote archive to ``<store>/.downloads/<unique>/<file>``, so two workflows
downloading the same ``.mar`` name never collide; the registration that downloaded a file owns
it and deletes it (and its unique folder) when it fails or is unregistered.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kernel.redact import redact_url

if TYPE_CHECKING:
    from kernel.core import Kernel

log = structlog.get_logger(__name__)
#: fetchers download into <store>/.downloads/<unique>/<file> so downloads never collide
DOWNLOADS = ".downloads"


def is_remote(url: str) -> bool:
    """A URL with a scheme is downloaded into the store (and deleted on unregister)."""
    return "://" in url


class Fetcher:
    """Fetch one URL, record downloads, reuse a snapshot's download when it still exists."""

    __slots__ = ("downloaded", "fetched", "kernel", "reuse")

    def __init__(self, kernel: Kernel, reuse: Mapping[str, Sequence[str]],
                 downloaded: list[Path], fetched: dict[str, tuple[str, str]]) -> None:
        self.kernel, self.reuse = kernel, reuse
        self.downloaded, self.fetched = downloaded, fetched

    def __call__(self, key: str, url: str, store: Path) -> Path:
        if not is_remote(url):
            return self.kernel.hooks.fetch(url, store)
        path = self._reusable(key, url, store)
        if path is None:
            path = self.kernel.hooks.fetch(url, store)
        self.downloaded.append(path)
        self.fetched[key] = (redact_url(url), str(path))
        return path

    def _reusable(self, key: str, url: str, store: Path) -> Path | None:
        old = self.reuse.get(key)
        if old is None or len(old) != 2 or old[0] != redact_url(url):
            return None
        path = Path(old[1])
        downloads = (store / DOWNLOADS).resolve()
        try:
            inside = path.resolve().parent.parent == downloads
        except OSError:
            return None
        return path if inside and path.exists() else None


def owned_download(path: Path) -> bool:
    """Whether ``path`` is a download's own file: directly inside a ``.downloads/<unique>/``
    folder, links resolved. Only such paths are ever deleted."""
    try:
        real = path.parent.resolve() / path.name
    except (OSError, RuntimeError):
        return False
    return real.parent.parent.name == DOWNLOADS and not path.parent.is_symlink()


def discard(workdir: Path | None, downloaded: list[Path]) -> None:
    """Delete downloaded archives (and their unique folders) and the work folder; errors are
    logged, never raised. A path outside a ``.downloads/<unique>/`` folder is left alone."""
    for path in downloaded:
        if not owned_download(path):
            log.warning("not deleting a download outside a downloads folder", path=str(path))
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            path.parent.rmdir()  # the download's own unique folder, when empty
        except OSError as exc:
            log.warning("could not delete a downloaded archive", path=str(path), error=str(exc))
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
