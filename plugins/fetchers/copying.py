"""Copies bounded by size and time: what ``file://`` URLs are copied with.

Only regular files and folders of regular files are copied; a device (``/dev/zero``), a FIFO,
a socket or a symlink inside a folder is refused before a byte is read. Sources are opened
without following a final link and without blocking (a FIFO cannot hold the open), targets are
created exclusively (:func:`~wfserve.plugins.fetchers.common.create_exclusive`). One :class:`Budget`
counts every byte and entry of one copy and its deadline.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from wfserve.plugins.fetchers.common import create_exclusive

_CHUNK = 1024 * 1024


class CopyRefused(Exception):
    """The source is not a regular file or folder, or the copy went past its budget; the
    message says which (``too_large`` tells a size refusal from the others)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass
class Budget:
    """What one copy may take: ``max_bytes`` in all, ``max_entries`` files and folders, until
    ``deadline`` (``time.monotonic()`` seconds)."""

    max_bytes: int
    max_entries: int
    deadline: float
    used_bytes: int = field(default=0)
    used_entries: int = field(default=0)

    @classmethod
    def lasting(cls, max_bytes: int, max_entries: int, seconds: float) -> Budget:
        """A budget whose deadline is ``seconds`` from now."""
        return cls(max_bytes, max_entries, time.monotonic() + seconds)

    def entry(self) -> None:
        self.used_entries += 1
        if self.used_entries > self.max_entries:
            raise CopyRefused(f"more than {self.max_entries} entries", too_large=True)

    def spend(self, size: int) -> None:
        self.used_bytes += size
        if self.used_bytes > self.max_bytes:
            raise CopyRefused(f"larger than {self.max_bytes} bytes", too_large=True)
        if time.monotonic() > self.deadline:
            raise CopyRefused("timed out")


def _open_regular(source: Path) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(source, flags)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the final component is a link
            raise CopyRefused(f"{source.name} is a symlink") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CopyRefused(f"{source.name} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def copy_file(source: Path, target: Path, budget: Budget) -> None:
    """Copy the regular file ``source`` to the new file ``target`` within ``budget``.

    :raises CopyRefused: not a regular file, or past the budget.
    :raises OSError: unreadable source, or ``target`` exists or cannot be written.
    """
    budget.entry()
    src = _open_regular(source)
    try:
        dst = create_exclusive(target)
        try:
            while chunk := os.read(src, _CHUNK):
                budget.spend(len(chunk))
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _raise(exc: OSError) -> None:
    raise exc


def copy_tree(source: Path, target: Path, budget: Budget) -> None:
    """Copy the folder ``source`` to the new folder ``target``: folders and regular files
    only, within ``budget``.

    :raises CopyRefused: a link or special file inside, or past the budget.
    :raises OSError: unreadable source, or ``target`` exists.
    """
    target.mkdir(mode=0o700)
    budget.entry()
    for folder, dirs, files in os.walk(source, followlinks=False, onerror=_raise):
        here = Path(folder)
        rel = here.relative_to(source)
        for name in sorted(dirs):
            if (here / name).is_symlink():
                raise CopyRefused(f"{(rel / name).as_posix()} is a symlink")
            budget.entry()
            (target / rel / name).mkdir(mode=0o700)
        for name in sorted(files):
            mode = (here / name).lstat().st_mode
            if not stat.S_ISREG(mode):
                kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
                raise CopyRefused(f"{(rel / name).as_posix()} is {kind}")
            copy_file(here / name, target / rel / name, budget)
