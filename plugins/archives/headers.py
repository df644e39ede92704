"""Reading tar headers with caps that apply before ``tarfile`` reads what a header announces.

``tarfile`` reads a GNU long name or long link (typeflags ``L``/``K``) and a pax header
(``x``/``g``/``X``) whole into memory as soon as it meets one, at whatever size the header
claims; a GNU sparse map it reads entry by entry from the data. A 400 KB ``.tar.gz`` can so
claim a 400 MiB name, before any entry or size cap can see a member (security finding 6).

:func:`open_tar` opens a tar (plain, gzip, bzip2 or xz, as ``tarfile.open(..., "r:*")``) whose
members are read through :class:`GuardedTarInfo`. Its ``_proc_member`` is the extension point
``tarfile`` names for subclasses: it runs for every 512-byte header right after the header is
parsed and before the header's own data is read, and it is called again for each header that
follows an extended one. There :class:`HeaderGuard` refuses:

- an extended header larger than :data:`EXTENDED_HEADER_MAX` (``TooLarge``), or extended
  headers summing to more than :data:`EXTENDED_TOTAL_MAX` over the archive (``TooLarge``);
- more than :data:`EXTENDED_CHAIN_MAX` extended headers in a row (``BadArchive``);
- a negative size, in a header or set by a pax record (``BadArchive``);
- sparse members, GNU (``S``) or pax ``GNU.sparse.*`` (``BadArchive``): archivers never
  write them, and ``tarfile`` reads their maps without a bound.

Memory is so bounded by the caps, whatever the headers claim.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from typing import cast

from wfserve.kernel.errors import BadArchive
from wfserve.kernel.redact import clip
from wfserve.plugins.archives.refuse import bad
from wfserve.plugins.archives.refuse import too_large

#: the largest one GNU long-name/long-link or pax header may be (a path is under 4 KiB)
EXTENDED_HEADER_MAX = 64 * 1024
#: the most bytes all extended headers of one archive may hold together
EXTENDED_TOTAL_MAX = 8 * 1024 * 1024
#: the most extended headers before one member (pax global + pax + long name + long link)
EXTENDED_CHAIN_MAX = 4

_EXTENDED = frozenset({tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                       tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE})


class HeaderGuard:
    """The caps one archive's headers are read under (see the module docstring)."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.chain = 0
        self.total = 0

    def restart(self) -> None:
        """Forget what was counted: ``"r:*"`` reads the first header again per compression."""
        self.chain = 0
        self.total = 0

    def header(self, info: tarfile.TarInfo) -> None:
        """Check one header before ``tarfile`` reads anything it announces.

        :raises TooLarge: an extended header, or all of them together, past the caps.
        :raises BadArchive: a negative size, a sparse member, too many extended headers in a row.
        """
        self.size(info)
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise self.sparse(info.name)
        if info.type not in _EXTENDED:
            self.chain = 0
            return
        self.chain += 1
        if self.chain > EXTENDED_CHAIN_MAX:
            raise bad(self.source, f"more than {EXTENDED_CHAIN_MAX} extended headers in a row")
        if info.size > EXTENDED_HEADER_MAX:
            raise too_large(
                self.source,
                f"has an extended header of {info.size} bytes (more than {EXTENDED_HEADER_MAX})",
                reason="extended header over the limit", limit=EXTENDED_HEADER_MAX)
        self.total += info.size
        if self.total > EXTENDED_TOTAL_MAX:
            raise too_large(
                self.source, f"has more than {EXTENDED_TOTAL_MAX} bytes of extended headers",
                reason="extended headers over the limit", limit=EXTENDED_TOTAL_MAX)

    def size(self, info: tarfile.TarInfo) -> None:
        """Refuse a negative size (base-256 sizes can be negative; so can a pax ``size``)."""
        if info.size < 0:
            raise bad(self.source, f"entry {clip(info.name)!r} has a negative size")

    def sparse(self, name: str) -> BadArchive:
        """The refusal of a sparse member called ``name``."""
        return bad(self.source, f"sparse entry {clip(name)!r} is not supported")


class GuardedTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` whose headers pass a :class:`HeaderGuard` before their data is read."""

    __slots__ = ("_guard",)

    def _proc_member(self, tar: GuardedTarFile) -> tarfile.TarInfo:
        guard = tar.guard
        self._guard = guard
        guard.header(self)
        member = super()._proc_member(tar)  # type: ignore[misc]  # private: not in typeshed
        guard.size(member)  # a pax header may have replaced the size
        return member

    # pax GNU.sparse maps (formats 0.0, 0.1, 1.0): refused before any is parsed or read.
    def _proc_gnusparse_00(self, member: tarfile.TarInfo, *args: Any) -> None:
        raise self._guard.sparse(member.name)

    def _proc_gnusparse_01(self, member: tarfile.TarInfo, *args: Any) -> None:
        raise self._guard.sparse(member.name)

    def _proc_gnusparse_10(self, member: tarfile.TarInfo, *args: Any) -> None:
        raise self._guard.sparse(member.name)


class GuardedTarFile(tarfile.TarFile):
    """A ``TarFile`` reading its members as :class:`GuardedTarInfo` under ``guard``."""

    tarinfo = GuardedTarInfo

    def __init__(self, *args: Any, guard: HeaderGuard, **kwargs: Any) -> None:
        guard.restart()
        self.guard = guard
        super().__init__(*args, **kwargs)


def open_tar(source: Path) -> tarfile.TarFile:
    """Open ``source`` (plain, gzip, bzip2 or xz) for reading, its headers guarded.

    :raises tarfile.TarError: not a tar, as ``tarfile.open`` does.
    :raises TooLarge: an extended header past the caps (see the module docstring).
    :raises BadArchive: a header the guard refuses.
    """
    # NOTE: TarFile.open hands extra keywords (guard) on to the class; typeshed lists none
    opener = cast("Callable[..., tarfile.TarFile]", GuardedTarFile.open)
    return opener(source, "r:*", guard=HeaderGuard(source))
