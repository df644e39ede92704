"""Safe extraction of zip and tar archives, and safe copies of unpacked folders.

Every entry is checked before a byte is written: its name must be relative, free of ``..``
and of drive letters; only regular files and folders are accepted (no symlinks, hard links,
devices or FIFOs); the entry count and the total uncompressed size are capped, and the size is
counted again while copying so that a lying header cannot exceed it. Files are created with
``open(..., "xb")`` under the target folder only, never through ``extractall``.

Headers are capped before the libraries read what they announce: a zip's central directory is
checked first (:mod:`wfserve.plugins.archives.zipdir`), a tar's extended headers as they come
(:mod:`wfserve.plugins.archives.headers`). Entry names and exception texts are clipped in messages.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from pathlib import PurePosixPath
from typing import IO

from wfserve.kernel.redact import clip
from wfserve.kernel.settings import Settings
from wfserve.plugins.archives.headers import open_tar
from wfserve.plugins.archives.refuse import bad
from wfserve.plugins.archives.refuse import too_large
from wfserve.plugins.archives.zipdir import check_zip

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Caps on one archive: total uncompressed bytes and number of entries."""

    max_size: int = Settings.max_archive_size
    max_entries: int = Settings.max_archive_entries

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits a server runs with (``max_archive_size``, ``max_archive_entries``)."""
        return cls(settings.max_archive_size, settings.max_archive_entries)


class _Budget:
    """Counts entries and bytes against :class:`Limits`; raises ``TooLarge`` past either."""

    def __init__(self, source: Path, limits: Limits) -> None:
        self.source = source
        self.limits = limits
        self.entries = 0
        self.size = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise too_large(self.source, f"has more than {self.limits.max_entries} entries",
                            reason="too many entries", limit=self.limits.max_entries)

    def add(self, size: int) -> None:
        self.size += size
        if self.size > self.limits.max_size:
            raise too_large(self.source, f"expands to more than {self.limits.max_size} bytes",
                            reason="uncompressed size over the limit", limit=self.limits.max_size)


def safe_target(root: Path, name: str, source: Path) -> Path:
    """The path an entry called ``name`` may be written to under ``root``; refuses unsafe names.

    :raises BadArchive: an absolute name, a drive letter, a ``..`` component, a backslash
        path or an empty name.
    """
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise bad(source, f"unsafe entry {clip(name)!r}: absolute path")
    if "\\" in name:
        raise bad(source, f"unsafe entry {clip(name)!r}: backslash in path")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise bad(source, f"unsafe entry {clip(name)!r}: path contains '..'")
    target = root.joinpath(*[p for p in parts if p != "."]) if parts else root
    resolved_root = root.resolve()
    if not target.resolve().is_relative_to(resolved_root):  # a symlinked parent, whatever
        raise bad(source, f"unsafe entry {clip(name)!r}: escapes the target folder")
    return target


def _copy_stream(src: IO[bytes], target: Path, budget: _Budget, declared: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    budget.add(declared)
    written = 0
    with open(target, "xb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > declared:  # a header that lies about the size
                budget.add(written - declared)
                declared = written
            out.write(chunk)


def extract_zip(source: Path, root: Path, limits: Limits) -> None:
    """Extract the zip file ``source`` into ``root`` safely (see the module docstring).

    :raises BadArchive: not a zip, truncated or corrupt, or an unsafe entry.
    :raises TooLarge: past ``limits`` (the entry count before ``ZipFile`` reads the directory).
    """
    declared = _Budget(source, limits)
    budget = _Budget(source, limits)
    try:
        check_zip(source, limits.max_entries)
        with zipfile.ZipFile(source) as zf:
            infos = zf.infolist()
            for info in infos:  # every check before the first byte is written
                declared.entry()
                declared.add(info.file_size)
                mode = info.external_attr >> 16  # Unix mode; its type bits may be 0
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    kind = "symlink" if stat.S_ISLNK(mode) else "special file"
                    raise bad(source, f"unsafe entry {clip(info.filename)!r}: {kind}")
                safe_target(root, info.filename, source)
            for info in infos:
                target = safe_target(root, info.filename, source)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                with zf.open(info) as src:
                    _copy_stream(src, target, budget, info.file_size)
    except zipfile.BadZipFile as exc:
        raise bad(source, f"not a valid zip file ({clip(exc)})") from None
    except FileExistsError as exc:
        raise bad(source, f"duplicate entry {clip(Path(exc.filename or '').name)!r}") from None
    except (OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise bad(source, f"cannot be read ({clip(exc)})") from None


def _tar_members(tf: tarfile.TarFile, budget: _Budget, source: Path) -> Iterator[tarfile.TarInfo]:
    for member in tf:
        budget.entry()
        if not (member.isfile() or member.isdir()):
            kind = "symlink" if member.issym() else "link" if member.islnk() else "special file"
            raise bad(source, f"unsafe entry {clip(member.name)!r}: {kind}")
        yield member


def extract_tar(source: Path, root: Path, limits: Limits) -> None:
    """Extract the tar (gzip, bzip2, xz or plain) file ``source`` into ``root`` safely.

    Members are checked one by one as the stream is read, so a huge or hostile archive is
    refused before it is fully read; extended headers (long names, pax) are capped before
    they are read (:mod:`wfserve.plugins.archives.headers`).

    :raises BadArchive: not a tar, truncated or corrupt, or an unsafe entry.
    :raises TooLarge: past ``limits``.
    """
    budget = _Budget(source, limits)
    try:
        with open_tar(source) as tf:
            for member in _tar_members(tf, budget, source):
                target = safe_target(root, member.name, source)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                src = tf.extractfile(member)
                if src is None:  # pragma: no cover - isfile() members always have data
                    raise bad(source, f"entry {clip(member.name)!r} has no data")
                with src:
                    _copy_stream(src, target, budget, member.size)
    except tarfile.TarError as exc:
        raise bad(source, f"not a valid tar.gz file ({clip(exc)})") from None
    except FileExistsError as exc:
        raise bad(source, f"duplicate entry {clip(Path(exc.filename or '').name)!r}") from None
    except (OSError, EOFError) as exc:
        raise bad(source, f"cannot be read ({clip(exc)})") from None


def copy_folder(source: Path, root: Path, limits: Limits) -> None:
    """Copy an unpacked archive folder into ``root`` with the same checks as extraction.

    :raises BadArchive: the folder holds a symlink or a special file, or cannot be read.
    :raises TooLarge: past ``limits``.
    """
    budget = _Budget(source, limits)
    try:
        for path in sorted(source.rglob("*")):
            budget.entry()
            relative = path.relative_to(source).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                (root / relative).mkdir(parents=True, exist_ok=True)
            elif stat.S_ISREG(mode):
                with open(path, "rb") as src:
                    _copy_stream(src, root / relative, budget, path.stat().st_size)
            else:
                kind = "symlink" if stat.S_ISLNK(mode) else "special file"
                raise bad(source, f"unsafe entry {clip(relative)!r}: {kind}")
    except OSError as exc:
        raise bad(source, f"cannot be read ({clip(exc.strerror or exc)})") from None


def clear_new(workdir: Path, before: set[str]) -> None:
    """Remove what was created in ``workdir`` since ``before`` (its entry names then)."""
    for child in workdir.iterdir():
        if child.name in before:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
