"""Default archive opener: ``.war`` and ``.mar`` as zip, tar.gz, or an unpacked folder.

The forms are those the official archivers write and TorchServe reads (research §1):
``x.war`` / ``x.mar`` are zip files (deflated or stored); any other archive file is a tar
(``--archive-format tgz`` writes ``<name>.tar.gz`` whose entries sit under ``<name>/``); a
folder is a ``--archive-format no-archive`` model. When the manifest is not at the top, the
only sub-folder is used, as TorchServe does. Extraction is safe
(:mod:`wfserve.plugins.archives.extract`);
a folder is copied under ``workdir`` with the same checks, so handlers never write into it.

The kind (``war``/``mar``) is the manifest the archive holds; a file named ``.war`` must hold
``WAR-INF/MANIFEST.json`` and one named ``.mar`` ``MAR-INF/MANIFEST.json``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

import structlog

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import ArchiveKind
from wfserve.kernel.redact import clip
from wfserve.kernel.settings import Settings
from wfserve.plugins.archives.extract import Limits
from wfserve.plugins.archives.extract import bad
from wfserve.plugins.archives.extract import clear_new
from wfserve.plugins.archives.extract import copy_folder
from wfserve.plugins.archives.extract import extract_tar
from wfserve.plugins.archives.extract import extract_zip
from wfserve.plugins.archives.manifest import MANIFESTS
from wfserve.plugins.archives.manifest import find_root
from wfserve.plugins.archives.manifest import kind_of
from wfserve.plugins.archives.manifest import to_archive
from wfserve.plugins.archives.sniff import sniff

log = structlog.get_logger(__name__)

Format = Literal["zip", "tar", "folder"]
_ZIP_SUFFIXES = (".war", ".mar", ".zip")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".gz")


def detect_format(path: Path) -> Format | None:
    """How ``path`` is stored, or None when it is not an archive this plugin knows.

    ``.war``/``.mar``/``.zip`` are zip by name (whatever their bytes); ``.tar.gz``, ``.tgz``,
    ``.tar`` are tar by name; any other file is recognised by its first bytes
    (:func:`wfserve.plugins.archives.sniff.sniff`: magic numbers and at most one tar header, never
    ``tarfile``, which would read a long name before any cap).
    """
    if path.is_dir():
        return "folder" if find_root(path) is not None else None
    name = path.name.lower()
    if name.endswith(_ZIP_SUFFIXES):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    return sniff(path)


def _check_file(path: Path, fmt: Format) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise bad(path, f"cannot be read ({clip(exc.strerror or exc)})") from None
    if size == 0:
        raise bad(path, "empty file")
    if fmt == "zip" and not zipfile.is_zipfile(path):
        raise bad(path, "not a zip file")


def open_archive(path: Path, workdir: Path, limits: Limits | None = None) -> Archive | None:
    """Extract (or copy) ``path`` under ``workdir`` and read its manifest.

    :param path: a ``.war``/``.mar`` zip, a tar(.gz), or an unpacked folder.
    :param workdir: the caller's folder; created if absent; nothing is written outside it.
    :param limits: size and entry caps (default: the settings' defaults).
    :returns: the opened :class:`Archive`, or None when ``path`` is not an archive at all.
    :raises BadArchive: corrupt, truncated, empty, unsafe, or a wrong/missing manifest (what
        was extracted is removed again).
    :raises TooLarge: past ``limits``.
    :raises InvalidWorkflow: a workflow manifest TorchServe would refuse, with its message.
    """
    fmt = detect_format(path)
    if fmt is None:
        return None
    limits = limits or Limits()
    if fmt != "folder":
        _check_file(path, fmt)
    workdir.mkdir(parents=True, exist_ok=True)
    before = {c.name for c in workdir.iterdir()}
    try:
        if fmt == "zip":
            extract_zip(path, workdir, limits)
        elif fmt == "tar":
            extract_tar(path, workdir, limits)
        else:
            copy_folder(find_root(path) or path, workdir, limits)
        archive = _read(path, workdir)
    except BaseException:
        clear_new(workdir, before)
        raise
    log.debug("archive opened", path=str(path), kind=archive.kind, name=clip(archive.name),
              format=fmt)
    return archive


#: the archive a file suffix promises
_KINDS: dict[str, ArchiveKind] = {".war": "war", ".mar": "mar"}


def _read(source: Path, extracted: Path) -> Archive:
    expected = _KINDS.get(source.suffix.lower())
    root = find_root(extracted) or extracted
    kind = kind_of(root)
    if kind is None or (expected is not None and kind != expected):
        want = MANIFESTS[expected] if expected else " or ".join(MANIFESTS.values())
        raise bad(source, f"no {want} in the archive")
    return to_archive(root, kind, source)


@hookimpl(trylast=True)
def wfserve_open_archive(path: Path, workdir: Path, settings: Settings) -> Archive | None:
    """Default implementation: zip, tar(.gz) and folders; None for anything else."""
    return open_archive(Path(path), Path(workdir), Limits.from_settings(settings))
