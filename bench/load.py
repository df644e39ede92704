"""A bounded, closed-loop HTTP load generator for loopback targets.

N client threads, each with one keep-alive connection, send the same request back to back
until the duration or the request cap is reached (after a warm-up that is not counted).
Reports min/p50/p90/p99/max latency, throughput, errors, stalls (successes slower than 1 s)
and the generator's own CPU time, since it shares the machine with the server.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import multiprocessing
import resource
import statistics
import threading
import time
from dataclasses import asdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

STALL_SECONDS = 1.0
REQUEST_TIMEOUT = 60.0


@dataclass
class LoadResult:
    """What one load phase measured (latencies in milliseconds)."""

    concurrency: int
    ok: int
    errors: int
    stalls: int
    elapsed_s: float
    rps: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    client_cpu_s: float
    statuses: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    # nearest rank: the smallest value with at least q% of the values at or below it
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def check_loopback(base: str) -> tuple[str, int]:
    """Refuse any target that is not a loopback address: load tests stay on this machine."""
    parts = urlsplit(base)
    host = parts.hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"load tests target loopback only, not {host}")
    return host, parts.port or 80


@dataclass
class _Outcome:
    latencies: list[float]
    errors: int
    statuses: dict[str, int]


def _client_loop(host: str, port: int, method: str, path: str, body: bytes,
                 headers: dict[str, str], stop_at: float, budget: _Budget | None,
                 quota: int | None, expect: int) -> _Outcome:
    """One keep-alive connection sending requests back to back until time or budget ends."""
    outcome = _Outcome([], 0, {})
    conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
    sent = 0
    try:
        while time.monotonic() < stop_at and (budget is None or budget.take()):
            if quota is not None and sent >= quota:
                break
            sent += 1
            started = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
                status = 0
            took = time.perf_counter() - started
            outcome.statuses[str(status)] = outcome.statuses.get(str(status), 0) + 1
            if status == expect:
                outcome.latencies.append(took)
            else:
                outcome.errors += 1
    finally:
        conn.close()
    return outcome


class _Budget:
    """A shared cap on the number of requests across client threads (None: unlimited)."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self.lock = threading.Lock()

    def take(self) -> bool:
        if self.left is None:
            return True
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def run_load(base: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
             method: str = "POST", concurrency: int = 1, duration: float = 10.0,
             max_requests: int | None = None, warmup: int = 20, expect: int = 200,
             processes: bool = True) -> LoadResult:
    """Run one closed-loop phase against ``base + path`` and measure it.

    :param processes: one client process per connection (no GIL contention between clients,
        which otherwise adds its own tail latency at 32 clients); False uses threads.
    """
    host, port = check_loopback(base)
    headers = dict(headers or {})
    call = (host, port, method, path, body, headers)
    if warmup:
        _client_loop(*call, time.monotonic() + 60.0, None, warmup, expect)
    cpu0 = _cpu()
    started = time.monotonic()
    outcomes = _run_clients(call, concurrency, duration, max_requests, expect, processes)
    elapsed = time.monotonic() - started
    latencies = sorted(lat * 1000 for o in outcomes for lat in o.latencies)
    statuses: dict[str, int] = {}
    for o in outcomes:
        for k, v in o.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    return LoadResult(
        concurrency=concurrency,
        ok=len(latencies),
        errors=sum(o.errors for o in outcomes),
        stalls=sum(1 for lat in latencies if lat > STALL_SECONDS * 1000),
        elapsed_s=round(elapsed, 3),
        rps=round(len(latencies) / elapsed, 2) if elapsed else 0.0,
        min=round(latencies[0], 3) if latencies else float("nan"),
        p50=round(_percentile(latencies, 50), 3),
        p90=round(_percentile(latencies, 90), 3),
        p99=round(_percentile(latencies, 99), 3),
        max=round(latencies[-1], 3) if latencies else float("nan"),
        mean=round(statistics.fmean(latencies), 3) if latencies else float("nan"),
        client_cpu_s=round(_cpu() - cpu0, 3),
        statuses=statuses,
    )


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the client processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run_clients(call: tuple[Any, ...], concurrency: int, duration: float,
                 max_requests: int | None, expect: int, processes: bool) -> list[_Outcome]:
    stop_at = time.monotonic() + duration
    if processes and concurrency > 1:
        # NOTE: a request cap is split evenly between processes (they share no counter).
        quota = None if max_requests is None else -(-max_requests // concurrency)
        context = multiprocessing.get_context("fork")
        with context.Pool(concurrency) as pool:
            jobs = [pool.apply_async(_client_loop, (*call, stop_at, None, quota, expect))
                    for _ in range(concurrency)]
            return [job.get(duration + REQUEST_TIMEOUT + 10) for job in jobs]
    budget = _Budget(max_requests)
    results: list[_Outcome] = []
    lock = threading.Lock()

    def client() -> None:
        outcome = _client_loop(*call, stop_at, budget, None, expect)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + REQUEST_TIMEOUT + 5)
    return results
