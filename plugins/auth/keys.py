"""TorchServe's token keys: a management key, an inference key and the API key, in a key file.

The file has TorchServe 0.12's layout (``TokenAuthorization.java``)::

    {"management": {"key": "...", "expiration time": "2025-01-01T12:00:00.000Z"},
     "inference":  {"key": "...", "expiration time": "..."},
     "API":        {"key": "..."}}

and is written with mode 0600, replaced atomically. The inference and management keys expire
``token_expiration_min`` after they are made; the API key (which rotates the other two through
``/token``) never does. Keys are compared in constant time.

The file is the keys' source of truth for every server process: the keys are made once, before
the processes are forked, and a process reads the file again whenever it changed (a ``stat``
per check), so a key rotated through one process is the key of all of them once ``/token``
has answered.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from pathlib import Path

#: the kinds of key, as TorchServe names them in the file and in ``/token?type=``
MANAGEMENT, INFERENCE, API = "management", "inference", "API"
ROTATABLE = (MANAGEMENT, INFERENCE)


def new_key() -> str:
    """A fresh random key (TorchServe's are 8 characters; these are longer, same alphabet)."""
    return secrets.token_urlsafe(24)


def _instant(epoch: float) -> str:
    """Java's ``Instant.toString()`` shape, to the millisecond: ``2025-01-01T12:00:00.000Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _epoch(instant: str) -> float:
    """The epoch seconds of an :func:`_instant` string."""
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp()


class KeyStore:
    """The three keys of one server and their key file. Thread-safe."""

    def __init__(self, path: Path, expiration_min: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.lifetime = expiration_min * 60.0
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}
        self._expires: dict[str, float] = {}
        self._seen: tuple[int, int, int] | None = None
        self._keys[API] = new_key()
        for kind in ROTATABLE:
            self._make(kind)
        self.write()

    def _make(self, kind: str) -> None:
        self._keys[kind] = new_key()
        self._expires[kind] = self.clock() + self.lifetime

    def rotate(self, kind: str) -> None:
        """Replace the ``management`` or ``inference`` key (new expiry) and rewrite the file.

        :raises ValueError: for any other kind (TorchServe answers InvalidKeyException).
        """
        if kind not in ROTATABLE:
            raise ValueError(f"not a rotatable key type: {kind!r}")
        with self._lock:
            self._make(kind)
            self._write_locked()

    def check(self, token: str | None, kind: str) -> bool:
        """True when ``token`` is the current, unexpired key of ``kind``."""
        if not token:
            return False
        self.refresh()
        with self._lock:
            key = self._keys.get(kind)
            expires = self._expires.get(kind)
        if key is None or not hmac.compare_digest(token.encode(), key.encode()):
            return False
        return expires is None or self.clock() < expires

    def key(self, kind: str) -> str:
        """The current key of ``kind`` (tests and the client)."""
        self.refresh()
        with self._lock:
            return self._keys[kind]

    def refresh(self) -> None:
        """Take the keys from the key file when it changed since this process last wrote or
        read it (another server process rotated a key); an unreadable file changes nothing."""
        try:
            stat = self.path.stat()
        except OSError:
            return
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        try:
            data = json.loads(self.path.read_text())
            keys = {kind: str(data[kind]["key"]) for kind in (*ROTATABLE, API)}
            expires = {kind: _epoch(data[kind]["expiration time"]) for kind in ROTATABLE}
        except (OSError, ValueError, KeyError, TypeError):
            return
        with self._lock:
            self._keys.update(keys)
            self._expires.update(expires)
            self._seen = seen

    def as_json(self) -> dict[str, dict[str, str]]:
        """The key file's content."""
        return {
            MANAGEMENT: {"key": self._keys[MANAGEMENT],
                         "expiration time": _instant(self._expires[MANAGEMENT])},
            INFERENCE: {"key": self._keys[INFERENCE],
                        "expiration time": _instant(self._expires[INFERENCE])},
            API: {"key": self._keys[API]},
        }

    def write(self) -> None:
        """Write the key file (0600), replacing any previous one atomically."""
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)  # a leftover temporary file keeps its own mode otherwise
        with os.fdopen(fd, "w") as f:
            json.dump(self.as_json(), f, indent=2)
        tmp.replace(self.path)
        stat = self.path.stat()
        self._seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def read_key(path: Path, kind: str) -> str | None:
    """A key from a key file, or None when the file or the key is absent or unreadable."""
    try:
        data = json.loads(path.read_text())
        key = data[kind]["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) else None
