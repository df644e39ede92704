"""Recognising a zip or a tar by its first bytes, reading at most one 512-byte tar header.

``tarfile.is_tarfile`` opens the file and reads its first member, long name included, before
any cap applies; sniffing here never does. A zip starts with a local file header
(``PK\\x03\\x04``) or, when empty, an end record (``PK\\x05\\x06``); a gzip stream with
``1f 8b`` (taken as a tar.gz, as before); a bzip2 or xz stream (``BZh``, ``fd 37 7a 58 5a 00``)
is a tar when its first 512 decompressed bytes are a tar header; so is a plain file whose
first 512 bytes are one (``ustar`` at offset 257, or a valid header checksum for old tars).
"""

from __future__ import annotations

import bz2
import lzma
from pathlib import Path
from typing import Literal

_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP = b"\x1f\x8b"
_BZIP2 = b"BZh"
_XZ = b"\xfd7zXZ\x00"
_BLOCK = 512


def sniff(path: Path) -> Literal["zip", "tar"] | None:
    """``"zip"`` or ``"tar"`` by the content of ``path``, or None (unreadable, or neither)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_BLOCK)
    except OSError:
        return None
    if head.startswith(_ZIP):
        return "zip"
    if head.startswith(_GZIP):
        return "tar"
    if head.startswith((_BZIP2, _XZ)):
        return "tar" if is_tar_header(_first_block(path, head)) else None
    return "tar" if is_tar_header(head) else None


def _first_block(path: Path, head: bytes) -> bytes:
    """The first 512 decompressed bytes (decompressors bound their output by what is asked)."""
    opener = bz2.open if head.startswith(_BZIP2) else lzma.open
    try:
        with opener(path, "rb") as f:
            return f.read(_BLOCK)
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return b""


def is_tar_header(block: bytes) -> bool:
    """True when ``block`` is a 512-byte tar header: ``ustar`` magic or a matching checksum."""
    if len(block) != _BLOCK or block.count(0) == _BLOCK:
        return False
    if block[257:262] == b"ustar":
        return True
    try:
        stored = int(block[148:156].replace(b"\0", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    unsigned = 256 + sum(block[:148]) + sum(block[156:])
    signed = 256 + sum(b - 256 if b > 127 else b for b in block[:148] + block[156:])
    return stored in (unsigned, signed)
