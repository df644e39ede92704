"""Downloads of ``scheme://`` URLs: per registration, reusable from a snapshot, deleted whole.

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
        self.fetched[key] = (url, str(path))
        return path

    def _reusable(self, key: str, url: str, store: Path) -> Path | None:
        old = self.reuse.get(key)
        if old is None or len(old) != 2 or old[0] != url:
            return None
        path = Path(old[1])
        downloads = (store / DOWNLOADS).resolve()
        try:
            inside = path.resolve().parent.parent == downloads
        except OSError:
            return None
        return path if inside and path.exists() else None


def discard(workdir: Path | None, downloaded: list[Path]) -> None:
    """Delete downloaded archives (and their unique folders) and the work folder; errors are
    logged, never raised."""
    for path in downloaded:
        try:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            if path.parent.parent.name == DOWNLOADS:  # the download's own unique folder
                path.parent.rmdir()
        except OSError as exc:
            log.warning("could not delete a downloaded archive", path=str(path), error=str(exc))
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
