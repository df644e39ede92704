"""Checking a zip's central directory before ``zipfile.ZipFile`` parses it.

``ZipFile()`` reads the whole central directory into memory and builds one ``ZipInfo`` per
record, however many the file holds; the end record's entry count is not even consulted. So
:func:`check_zip` finds the end record as ``zipfile`` does (the last 22 bytes, else the last
64 KiB + 22; a zip64 end record when its locator sits just before), then refuses:

- an entry count over ``max_entries`` (``TooLarge``);
- a directory larger than the file, than :data:`DIRECTORY_MAX`, or than the count of records
  could fill (``entries * (46 + 3 * 65535)``) (``TooLarge`` / ``BadArchive``);
- more than ``max_entries`` records in the directory itself, counted by walking it the way
  ``zipfile`` will, one record header at a time, in constant memory (``TooLarge``).

A file with no end record is left to ``zipfile`` (it says "File is not a zip file").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from wfserve.kernel.errors import TooLarge
from wfserve.plugins.archives.refuse import bad
from wfserve.plugins.archives.refuse import too_large

#: the largest central directory accepted (10 000 entries with long names take about 3 MiB)
DIRECTORY_MAX = 64 * 1024 * 1024

_END = struct.Struct("<4s4H2LH")  # signature, disks, entry counts, size, offset, comment
_END_SIG = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, zip64 end offset, disks
_LOCATOR_SIG = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ2H2L4Q")  # signature, size, versions, disks, counts, size, offset
_END64_SIG = b"PK\x06\x06"
_RECORD = struct.Struct("<4s4B4HL2L5H2L")  # one central directory record header
_RECORD_SIG = b"PK\x01\x02"
_RECORD_MAX = _RECORD.size + 3 * 0xFFFF  # a header plus name, extra and comment at most


@dataclass(frozen=True)
class Directory:
    """Where the central directory is and what the end record claims about it."""

    entries: int
    size: int
    start: int


def end_record(f: IO[bytes], file_size: int) -> Directory | None:
    """The central directory as ``zipfile`` will locate it, or None with no end record."""
    if file_size < _END.size:
        return None
    f.seek(file_size - _END.size)
    data = f.read(_END.size)
    if data[:4] == _END_SIG and data[-2:] == b"\0\0":
        at = file_size - _END.size
    else:
        first = max(file_size - 0x10000 - _END.size, 0)
        f.seek(first)
        data = f.read()  # at most 64 KiB + 22 bytes
        found = data.rfind(_END_SIG)
        if found < 0 or len(data) - found < _END.size:
            return None
        at = first + found
        data = data[found:found + _END.size]
    _, _, _, on_disk, total, size, _, _ = _END.unpack(data)
    entries = max(on_disk, total)
    start = at - size  # where zipfile reads it from, whatever the stored offset says
    zip64 = _zip64(f, at)
    if zip64 is not None:
        entries, size = zip64
        start = at - _LOCATOR.size - _END64.size - size
    return Directory(entries=entries, size=size, start=start)


def _zip64(f: IO[bytes], at: int) -> tuple[int, int] | None:
    """Entries and size from a zip64 end record just before ``at``, as zipfile reads them."""
    if at < _LOCATOR.size + _END64.size:
        return None
    f.seek(at - _LOCATOR.size)
    if _LOCATOR.unpack(f.read(_LOCATOR.size))[0] != _LOCATOR_SIG:
        return None
    f.seek(at - _LOCATOR.size - _END64.size)
    fields = _END64.unpack(f.read(_END64.size))
    if fields[0] != _END64_SIG:
        return None
    return max(fields[6], fields[7]), fields[8]


def check_zip(source: Path, max_entries: int) -> None:
    """Refuse ``source`` when its central directory is past the caps (module docstring).

    :raises TooLarge: more than ``max_entries`` entries (claimed or found), or a directory
        over :data:`DIRECTORY_MAX`.
    :raises BadArchive: a directory larger than the file or than its entries could fill,
        or records that do not chain up as ``zipfile`` will read them.
    """
    with open(source, "rb") as f:
        file_size = f.seek(0, 2)
        directory = end_record(f, file_size)
        if directory is None:
            return
        _check_claim(source, directory, file_size, max_entries)
        _count_records(source, f, directory, max_entries)


def _too_many(source: Path, max_entries: int) -> TooLarge:
    return too_large(source, f"has more than {max_entries} entries",
                     reason="too many entries", limit=max_entries)


def _check_claim(source: Path, directory: Directory, file_size: int, max_entries: int) -> None:
    if directory.entries > max_entries:
        raise _too_many(source, max_entries)
    if directory.size > DIRECTORY_MAX:
        raise too_large(source, f"has a central directory of more than {DIRECTORY_MAX} bytes",
                        reason="central directory over the limit", limit=DIRECTORY_MAX)
    if directory.size > file_size or directory.start < 0:
        raise bad(source, "not a valid zip file (central directory past the file)")
    if directory.size > max(directory.entries, 1) * _RECORD_MAX:
        raise bad(source, "not a valid zip file (central directory larger than its entries)")


def _count_records(source: Path, f: IO[bytes], directory: Directory, max_entries: int) -> None:
    f.seek(directory.start)
    total = records = 0
    while total < directory.size:
        header = f.read(_RECORD.size)
        if len(header) != _RECORD.size:
            raise bad(source, "not a valid zip file (truncated central directory)")
        fields = _RECORD.unpack(header)
        if fields[0] != _RECORD_SIG:
            raise bad(source, "not a valid zip file (bad central directory record)")
        records += 1
        if records > max_entries:
            raise _too_many(source, max_entries)
        name, extra, comment = fields[12], fields[13], fields[14]
        f.seek(name + extra + comment, 1)
        total += _RECORD.size + name + extra + comment
