"""A :class:`~wfserve.kernel.store.RegistrationStore` in one SQLite file, for the server
processes of one host.

- Write-ahead logging, so the revision every process polls is read without waiting on a
  writer; a change is one ``BEGIN IMMEDIATE`` transaction (read, edit, write, bump the
  revision), so two processes changing the store at once are serialised by SQLite itself.
- The file (and its ``-wal``/``-shm`` companions) is 0600 in a 0700 folder: it names local
  paths of downloaded archives; URLs in it are redacted by the kernel before they get here.
- One connection per process, opened on first use and shared by its threads under a lock
  (a connection per thread would hold three descriptors in each of the HTTP threads): the
  store object is made in the parent before the server processes are forked, and a SQLite
  connection must not cross a fork.
- :meth:`SqliteStore.first_start` is an exclusive ``flock`` on ``<file>.start.lock``, held
  while one process runs the start-up registrations.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from wfserve.kernel.store import Edit
from wfserve.kernel.store import Member
from wfserve.kernel.store import Record

#: seconds a connection waits for another process's write before failing
BUSY_TIMEOUT_S = 30.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (position INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (pid INTEGER PRIMARY KEY, applied INTEGER NOT NULL,
    seen REAL NOT NULL, failed INTEGER NOT NULL, error TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('started', 0);
"""


class SqliteStore:
    """Registrations and members in the SQLite file ``path`` (made on first use)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._held: tuple[int, sqlite3.Connection] | None = None

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """This process's connection, for this thread alone while the block runs (a forked
        child opens its own)."""
        with self._lock:
            if self._held is None or self._held[0] != os.getpid():
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
                db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                     check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(SCHEMA)
                self._held = (os.getpid(), db)
            yield self._held[1]

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def begin_run(self) -> None:
        """Forget the records and members of an earlier run; the revision keeps growing."""
        with self._write() as db:
            db.execute("DELETE FROM records")
            db.execute("DELETE FROM members")
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")
            db.execute("UPDATE meta SET value = 0 WHERE key = 'started'")
        self.close()  # NOTE: the parent forks next; its children open their own connections

    def close(self) -> None:
        """Close this process's connection (opened again on next use)."""
        with self._lock:
            held, self._held = self._held, None
            if held is not None and held[0] == os.getpid():
                held[1].close()

    def revision(self) -> int:
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0])

    def read(self) -> tuple[int, list[Record]]:
        with self._db() as db:
            db.execute("BEGIN")
            try:
                return self._revision_and_records(db)
            finally:
                db.execute("COMMIT")

    @staticmethod
    def _revision_and_records(db: sqlite3.Connection) -> tuple[int, list[Record]]:
        row = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        bodies = db.execute("SELECT body FROM records ORDER BY position").fetchall()
        return int(row[0]), [Record.from_json(json.loads(b)) for (b,) in bodies]

    def change(self, edit: Edit) -> int:
        with self._write() as db:
            revision, records = self._revision_and_records(db)
            changed = edit(list(records))
            if changed == records:
                return revision
            db.execute("DELETE FROM records")
            db.executemany("INSERT INTO records VALUES (?, ?)",
                           [(i, json.dumps(r.to_json())) for i, r in enumerate(changed)])
            db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (revision + 1,))
            return revision + 1

    @contextlib.contextmanager
    def first_start(self) -> Iterator[bool]:
        lock = self.path.with_name(self.path.name + ".start.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._db() as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'started'").fetchone()
            yield not row[0]
            with self._write() as db:
                db.execute("UPDATE meta SET value = 1 WHERE key = 'started'")
        finally:
            os.close(fd)  # NOTE: closing the descriptor releases the lock

    def report(self, member: Member) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?, ?)",
                       (member.pid, member.applied, member.seen, member.failed, member.error))

    def members(self) -> list[Member]:
        with self._db() as db:
            rows = db.execute(
                "SELECT pid, applied, seen, failed, error FROM members ORDER BY pid").fetchall()
        return [Member(int(p), int(a), float(s), int(f), str(e)) for p, a, s, f, e in rows]

    def leave(self, pid: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM members WHERE pid = ?", (pid,))
