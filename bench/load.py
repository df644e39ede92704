"""A bounded, closed-loop HTTP load generator for loopback targets.

N client threads, each with one keep-alive connection, send the same request back to back
until the duration or the request cap is reached (after a warm-up that is not counted).
Reports min/p50/p90/p99/max latency, throughput, errors, stalls (successes slower than 1 s)
and the generator's own CPU time, since it shares the machine with the server: ``client_cpu_s``
(the client loops' CPU time, user + system, each measured on its own thread, so nothing else
this process does is counted) and ``client_cpu_share`` (that over the phase's wall time and the
machine's cores: 0.25 on 2 cores is half a core).
:func:`warm_processes` warms every process of a multi-process server.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import multiprocessing
import os
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
    client_cpu_share: float
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
    ended: float = 0.0  # time.monotonic() when the loop ended
    cpu_s: float = 0.0  # CPU seconds of the loop's thread during the loop


def _client_loop(host: str, port: int, method: str, path: str, body: bytes,
                 headers: dict[str, str], stop_at: float, budget: _Budget | None,
                 quota: int | None, expect: int, start_at: float = 0.0) -> _Outcome:
    """One keep-alive connection sending requests back to back from ``start_at`` until time or
    budget ends."""
    outcome = _Outcome([], 0, {})
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    cpu0 = time.thread_time()
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
        outcome.ended = time.monotonic()
        outcome.cpu_s = time.thread_time() - cpu0
    return outcome


def _client_ready(barrier: Any) -> None:
    """Pool initializer: wait until every client process (and the parent) is up."""
    barrier.wait(120)


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
    started, outcomes, client_cpu = _run_clients(call, concurrency, duration, max_requests,
                                                  expect, processes)
    elapsed = max((o.ended for o in outcomes), default=started) - started
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
        client_cpu_s=round(client_cpu, 3),
        client_cpu_share=round(client_cpu / elapsed / (os.cpu_count() or 1), 3) if elapsed
        else 0.0,
        statuses=statuses,
    )


def _run_clients(call: tuple[Any, ...], concurrency: int, duration: float,
                 max_requests: int | None, expect: int, processes: bool
                 ) -> tuple[float, list[_Outcome], float]:
    """Run the clients; (the phase's start, their outcomes, their CPU seconds in all)."""
    if processes and concurrency > 1:
        # NOTE: a request cap is split evenly between processes (they share no counter).
        quota = None if max_requests is None else -(-max_requests // concurrency)
        context = multiprocessing.get_context("fork")
        barrier = context.Barrier(concurrency + 1)
        with context.Pool(concurrency, initializer=_client_ready, initargs=(barrier,)) as pool:
            # the phase starts once every client process is up (forking 32 copies of a process
            # holding torch takes a while on a loaded machine), not when the first one is
            barrier.wait(120)
            start_at = time.monotonic() + 0.05
            stop_at = start_at + duration
            jobs = [pool.apply_async(_client_loop, (*call, stop_at, None, quota, expect,
                                                    start_at))
                    for _ in range(concurrency)]
            outcomes = [job.get(duration + REQUEST_TIMEOUT + 10) for job in jobs]
            pool.close()
            pool.join()
            return start_at, outcomes, sum(o.cpu_s for o in outcomes)
    start_at = time.monotonic()
    stop_at = start_at + duration
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
    return start_at, results, sum(o.cpu_s for o in results)


def warm_processes(base: str, path: str, *, body: bytes = b"",
                   headers: dict[str, str] | None = None, method: str = "POST",
                   processes: int = 1, per_process: int = 10, timeout: float = 60.0,
                   expect: int = 200, max_failures: int = 20) -> dict[str, int]:
    """Send requests on fresh connections until each of ``processes`` server processes (told
    apart by wfserve's ``X-Wfserve-Process`` header) has answered ``per_process`` of them, or
    ``timeout`` passes. Several connections at a time, so idle workers share the accepts.

    :returns: good answers per process id ("-" where the server sends no header), and
        "failed": answers other than ``expect`` (TorchServe loses one now and then).
    :raises RuntimeError: no good answer at all, or more than ``max_failures`` bad ones.
    """
    host, port = check_loopback(base)
    seen: dict[str, int] = {}
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def done() -> bool:
        with lock:
            counts = sorted(seen.values(), reverse=True)[:processes]
            return (len(counts) >= processes and min(counts) >= per_process) or len(
                failures) > max_failures

    def client() -> None:
        while not done() and time.monotonic() < deadline:
            conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
            try:
                conn.request(method, path, body=body, headers=dict(headers or {}))
                response = conn.getresponse()
                answer = response.read()
                pid = response.getheader("X-Wfserve-Process") or "-"
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                answer, pid, status = repr(exc).encode(), "-", 0
            finally:
                conn.close()
            with lock:
                if status == expect:
                    seen[pid] = seen.get(pid, 0) + 1
                else:
                    failures.append(f"{path}: {status} {answer[:300]!r}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2 * processes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + REQUEST_TIMEOUT)
    if failures and (not seen or len(failures) > max_failures):
        raise RuntimeError(f"{len(failures)} bad answers; the first: {failures[0]}")
    return {**seen, "failed": len(failures)}
