"""Counting a server worker's threads and file descriptors from /proc, before and after; and
finding tracebacks in its log."""

from __future__ import annotations

import time
from pathlib import Path


def children(pid: int) -> set[int]:
    """The direct children of ``pid``."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found |= {int(p) for p in task.read_text().split()}
        except OSError:
            continue
    return found


def worker_pid(master: int, seconds: float = 30.0, not_pid: int | None = None) -> int:
    """The gunicorn worker of ``master`` (one worker), other than ``not_pid``; waits for it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kids = children(master) - {not_pid}
        if len(kids) == 1:
            return kids.pop()
        time.sleep(0.05)
    raise AssertionError(f"no single worker under {master} in {seconds} s: {children(master)}")


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads: line for {pid}")


def fds(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def counts(pid: int) -> tuple[int, int]:
    """(threads, open file descriptors) of ``pid``."""
    return threads(pid), fds(pid)


def settle(pid: int, baseline: tuple[int, int], seconds: float = 15.0) -> tuple[int, int]:
    """Poll until ``pid`` holds no more threads and fds than ``baseline`` (or ``seconds`` pass);
    returns the last counts: closing sockets and finishing threads take a moment."""
    deadline = time.monotonic() + seconds
    now = counts(pid)
    while time.monotonic() < deadline:
        now = counts(pid)
        if now[0] <= baseline[0] and now[1] <= baseline[1]:
            break
        time.sleep(0.1)
    return now


def within(now: tuple[int, int], baseline: tuple[int, int]) -> bool:
    """No more threads and no more fds than ``baseline`` (each compared on its own)."""
    return now[0] <= baseline[0] and now[1] <= baseline[1]


def server_tracebacks(log: str) -> list[str]:
    """Log lines with a traceback, other than a handler's own error quoted in a node-failure
    line (TorchScript's messages say "Traceback of TorchScript")."""
    return [line for line in log.splitlines() if "Traceback" in line
            and '"node attempt failed"' not in line and '"request failed"' not in line]
