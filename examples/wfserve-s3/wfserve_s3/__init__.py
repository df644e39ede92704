"""wfserve-s3: register ``.war`` and ``.mar`` archives from S3-compatible object storage.

A third-party wfserve plugin, loaded through the ``wfserve`` entry-point group (name ``s3``).
It answers ``wfserve_fetch`` for ``s3://<bucket>/<key>`` URLs only (None for any other, so the
built-in fetchers keep theirs) and declares :class:`~wfserve_s3.settings.S3Settings` through
``wfserve_settings``. How a URL is checked and downloaded: :mod:`wfserve_s3.fetch`.
"""

from __future__ import annotations

from pathlib import Path

from wfserve import hookimpl
from wfserve.kernel.contracts import Fetched
from wfserve.kernel.settings import Settings
from wfserve.plugins.fetchers.common import as_download
from wfserve.plugins.fetchers.common import reused
from wfserve_s3.fetch import download
from wfserve_s3.fetch import is_s3
from wfserve_s3.settings import S3Settings

__all__ = ["S3Settings", "wfserve_fetch", "wfserve_settings"]


@hookimpl
def wfserve_settings() -> type:
    """:class:`~wfserve_s3.settings.S3Settings` (``s3_endpoint_url``, ``s3_region``)."""
    return S3Settings


@hookimpl
def wfserve_fetch(url: str, store: Path, settings: Settings, kind: str, reuse: str | None
                  ) -> Fetched | None:
    """``s3://`` URLs: the download a snapshot kept (``reuse``) while it is still one of
    ``store``'s downloads, else a new download (released, i.e. deleted, on unregister or a
    failed registration; kept as its path); None for any other URL."""
    if not is_s3(url):
        return None
    again = reused(reuse, Path(store))
    if again is not None:
        return again
    return as_download(download(url, Path(store), settings, kind))
