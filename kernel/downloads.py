"""What one registration fetched: recorded for snapshots, released as a whole.

The fetchers own their downloads (where they are written, whether one can be reused, how it
is deleted): ``wfserve_fetch`` returns a :class:`~wfserve.kernel.contracts.Fetched`. The kernel
keeps, per registration, each fetch's ``release`` (called when the registration fails or is
unregistered) and its ``keep`` under a key (``""`` for the ``.war``, else the node name),
with the URL redacted, so that a snapshot can hand it back as ``reuse`` on the next start and
never stores a password.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from wfserve.kernel.errors import RegistrationFailed
from wfserve.kernel.redact import redact_url

if TYPE_CHECKING:
    from wfserve.kernel.contracts import ArchiveKind
    from wfserve.kernel.core import Kernel

log = structlog.get_logger(__name__)
Release = Callable[[], None]


class Fetcher:
    """Fetch the URLs of one registration through ``wfserve_fetch``, recording what to release
    and what a snapshot may reuse."""

    __slots__ = ("fetched", "kept_only", "kernel", "releases", "reuse")

    def __init__(self, kernel: Kernel, reuse: Mapping[str, Sequence[str]],
                 releases: list[Release], fetched: dict[str, tuple[str, str]],
                 *, kept_only: bool = False) -> None:
        """:param reuse: a snapshot's record (key -> ``(redacted url, keep)``).
        :param releases: gets each fetch's ``release``.
        :param fetched: gets ``key -> (redacted url, keep)`` for each fetch that may be reused.
        :param kept_only: never fetch a URL (``scheme://``) again: its kept download must be
            there (another server process fetched it); a bare name is still found in the
            store.
        """
        self.kernel, self.reuse = kernel, reuse
        self.releases, self.fetched = releases, fetched
        self.kept_only = kept_only

    def __call__(self, key: str, url: str, store: Path, kind: ArchiveKind) -> Path:
        """The local path of ``url`` (a ``kind`` archive, bare names resolved in ``store``)."""
        shown = redact_url(url)
        old = self.reuse.get(key)
        keep = old[1] if old is not None and len(old) == 2 and old[0] == shown else None
        if self.kept_only and "://" in url and (keep is None or not Path(keep).exists()):
            raise RegistrationFailed(f"{shown}: the archive another server process fetched is "
                                     "gone; it is not fetched again")
        fetched = self.kernel.hooks.fetch(url, store, kind, keep)
        if fetched.release is not None:
            self.releases.append(fetched.release)
        if fetched.keep is not None:
            self.fetched[key] = (shown, fetched.keep)
        return fetched.path


def discard(workdir: Path | None, releases: Sequence[Release]) -> None:
    """Release downloads (each fetcher deletes its own) and delete the work folder; errors are
    logged, never raised."""
    for release in releases:
        try:
            release()
        except Exception as exc:  # NOTE: a third-party fetcher's failure must not stop cleanup
            log.warning("could not release a download", error=str(exc))
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
