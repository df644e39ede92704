"""Process-tree memory and CPU sampling from /proc (RSS every tick, PSS from smaps_rollup)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / TICKS


def tree_memory(pid: int) -> dict[str, float]:
    """Current RSS and PSS of the tree, in MB, and its process count."""
    pids = tree(pid)
    return {"rss_mb": sum(_rss(p) for p in pids) / 2**20,
            "pss_mb": sum(_pss(p) for p in pids) / 2**20, "processes": len(pids)}


class TreeMonitor(threading.Thread):
    """Samples the tree of ``pid`` every ``interval`` seconds until :meth:`stop`: RSS each time,
    PSS every ``pss_every`` samples (reading smaps_rollup walks every mapping of every process:
    for TorchServe's ~40 processes that costs a noticeable share of a core each time)."""

    def __init__(self, pid: int, interval: float = 1.0, pss_every: int = 5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.pss_every = pss_every
        self.peak_rss_mb = 0.0
        self.peak_pss_mb = 0.0
        self.processes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        count = 0
        while not self._stop_event.wait(self.interval):
            count += 1
            pids = tree(self.pid)
            self.peak_rss_mb = max(self.peak_rss_mb, sum(_rss(p) for p in pids) / 2**20)
            if count % self.pss_every == 1 or self.pss_every == 1:
                self.peak_pss_mb = max(self.peak_pss_mb, sum(_pss(p) for p in pids) / 2**20)
            self.processes = max(self.processes, len(pids))

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        self.join(5)
        return {"peak_rss_mb": round(self.peak_rss_mb, 1),
                "peak_pss_mb": round(self.peak_pss_mb, 1), "processes": self.processes}


def wait_until(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
