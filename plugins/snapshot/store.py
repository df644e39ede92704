"""Snapshot files: the registry's state as JSON, written atomically, read back fully validated.

A snapshot is ``<dir>/snapshot-<20-digit ns timestamp>.json``::

    {"format": "wfserve-snapshot", "version": 1, "created": 1700000000.0,
     "workflows": [{"name": "seq_wf", "version": "1.0", "url": "seq_wf.war", "default": true,
                    "scale": {"m1": {"min_workers": 2}}, "fetched": {"": [url, path]}}]}

Snapshot files are 0600 in a 0700 folder, and hold URLs with their credentials redacted
(``https://***@host/...``). It is written to a hidden temporary file in the same folder,
flushed to disk, then renamed over its final name (``os.replace``), so a reader sees a whole
snapshot or none. :func:`load` checks every field before returning anything; a file that
fails is :class:`CorruptSnapshot`.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from wfserve.kernel.names import is_valid_name

FORMAT = "wfserve-snapshot"
VERSION = 1
PATTERN = re.compile(r"^snapshot-(\d{20})\.json$")
SCALE_KEYS = frozenset({"min_workers", "max_workers", "batch_size", "max_batch_delay"})


class CorruptSnapshot(ValueError):
    """A snapshot file that cannot be read or fails validation (the message says why)."""


@dataclass(frozen=True)
class Entry:
    """One workflow version in a snapshot."""

    name: str
    version: str
    url: str
    default: bool
    scale: dict[str, dict[str, int]] = field(default_factory=dict)
    fetched: dict[str, tuple[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "url": self.url,
                "default": self.default, "scale": self.scale,
                "fetched": {k: list(v) for k, v in self.fetched.items()}}


def files(folder: Path) -> list[Path]:
    """Snapshot files in ``folder``, newest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if PATTERN.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=lambda p: p.name, reverse=True)


def write(folder: Path, entries: list[Entry], *, keep: int, after: int = 0) -> tuple[Path, int]:
    """Write one snapshot atomically; delete all but the ``keep`` newest files.

    :param after: the previous snapshot's timestamp; the new one is always later, so the
        newest file is always the last state written.
    :returns: the file written and its timestamp.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(folder.stat().st_mode) & 0o077:
        folder.chmod(0o700)  # snapshots name URLs and local paths: for the server's user only
    stamp = max(time.time_ns(), after + 1)
    final = folder / f"snapshot-{stamp:020d}.json"
    temp = folder / f".{final.name}.tmp"
    body = {"format": FORMAT, "version": VERSION, "created": stamp / 1e9,
            "workflows": [e.to_json() for e in entries]}
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(body, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        temp.replace(final)  # atomic rename (os.replace)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    for old in files(folder)[max(keep, 1):]:
        old.unlink(missing_ok=True)
    return final, stamp


def load(path: Path) -> list[Entry]:
    """Read and validate one snapshot completely.

    :raises CorruptSnapshot: unreadable, not JSON, or any field missing or of the wrong type;
        two defaults (or none) for one name; the same name and version twice.
    """
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptSnapshot(f"{path.name}: cannot be read as JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CorruptSnapshot(f"{path.name}: not a wfserve snapshot")
    if body.get("version") != VERSION:
        raise CorruptSnapshot(f"{path.name}: unknown snapshot version {body.get('version')!r}")
    items = body.get("workflows")
    if not isinstance(items, list):
        raise CorruptSnapshot(f"{path.name}: 'workflows' is not a list")
    entries = [_entry(path, i, item) for i, item in enumerate(items)]
    seen: set[tuple[str, str]] = set()
    defaults: dict[str, int] = {}
    for e in entries:
        if (e.name, e.version) in seen:
            raise CorruptSnapshot(f"{path.name}: {e.name} version {e.version} appears twice")
        seen.add((e.name, e.version))
        defaults[e.name] = defaults.get(e.name, 0) + int(e.default)
    for name, count in defaults.items():
        if count != 1:
            raise CorruptSnapshot(f"{path.name}: workflow {name} has {count} default versions")
    return entries


def _entry(path: Path, index: int, item: Any) -> Entry:
    where = f"{path.name}: workflows[{index}]"
    if not isinstance(item, dict):
        raise CorruptSnapshot(f"{where} is not an object")
    for key in ("name", "version"):
        if not isinstance(item.get(key), str) or not is_valid_name(item[key]):
            raise CorruptSnapshot(f"{where}.{key} is missing or invalid")
    if not isinstance(item.get("url"), str) or not item["url"]:
        raise CorruptSnapshot(f"{where}.url is missing or invalid")
    if not isinstance(item.get("default"), bool):
        raise CorruptSnapshot(f"{where}.default is not a boolean")
    scale = item.get("scale", {})
    if not isinstance(scale, dict) or not all(
        isinstance(node, str) and isinstance(values, dict)
        and all(k in SCALE_KEYS and type(v) is int and v >= 0 for k, v in values.items())
        for node, values in scale.items()
    ):
        raise CorruptSnapshot(f"{where}.scale is invalid")
    fetched = item.get("fetched", {})
    if not isinstance(fetched, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and len(v) == 2
        and all(isinstance(x, str) for x in v)
        for k, v in fetched.items()
    ):
        raise CorruptSnapshot(f"{where}.fetched is invalid")
    return Entry(item["name"], item["version"], item["url"], item["default"],
                 {n: dict(v) for n, v in scale.items()},
                 {k: (v[0], v[1]) for k, v in fetched.items()})
