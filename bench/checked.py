"""A closed-loop load generator that checks every answer against its input (loopback only).

Each client owns one keep-alive connection and a list of :class:`Case` (a path, a body and the
answer that body must get). It sends its cases round-robin until its stop time, its quota or a
stop event, and files every request under exactly one outcome:

- ``ok``: HTTP 200 whose JSON equals the case's ``expected`` (floats within
  :data:`TOLERANCE`: a batched matmul may differ from a single-row one in the last digit);
- ``wrong``: HTTP 200 with any other body (an answer for another input is caught here);
- ``errors``: any other HTTP status, counted by status;
- ``lost``: no HTTP answer at all (connection reset, refused, or no answer within
  ``timeout`` seconds). A server that drops or hangs a request shows up here; ``hung`` counts
  the lost requests that got no answer within ``timeout`` (a subset of ``lost``).

``sent == ok + wrong + sum(errors) + lost`` always holds. Latencies are kept for ``ok`` only;
``stalls`` counts those slower than :data:`STALL_SECONDS`.
"""

from __future__ import annotations

import http.client
import json
import math
import multiprocessing
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from bench.load import check_loopback

STALL_SECONDS = 1.0
REQUEST_TIMEOUT = 30.0
JSON_HEADERS = {"Content-Type": "application/json"}
SAMPLES_KEPT = 5
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Case:
    """One request and the only answer it may get."""

    path: str
    body: bytes
    expected: Any
    also: tuple[Any, ...] = ()  # other acceptable answers (a workflow updated meanwhile)


@dataclass
class Tally:
    """Outcomes of some requests (mergeable across clients)."""

    sent: int = 0
    ok: int = 0
    wrong: int = 0
    lost: int = 0
    hung: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.wrong += other.wrong
        self.lost += other.lost
        self.hung += other.hung
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        self.latencies.extend(other.latencies)
        self.samples.extend(other.samples[: max(SAMPLES_KEPT - len(self.samples), 0)])

    def note(self, text: str) -> None:
        if len(self.samples) < SAMPLES_KEPT:
            self.samples.append(text[:300])

    def summary(self, elapsed: float) -> dict[str, Any]:
        """Counts and latency figures (milliseconds) as a JSON-ready dict."""
        lat = sorted(x * 1000 for x in self.latencies)

        def pct(q: float) -> float:
            if not lat:
                return float("nan")
            return round(lat[min(len(lat) - 1, max(0, math.ceil(q / 100 * len(lat)) - 1))], 2)

        return {
            "requests": self.sent, "ok": self.ok, "wrong": self.wrong, "lost": self.lost,
            "hung": self.hung, "errors": sum(self.errors.values()),
            "errors_by_status": dict(self.errors),
            "stalls": sum(1 for x in lat if x > STALL_SECONDS * 1000),
            "elapsed_s": round(elapsed, 2), "rps": round(self.ok / elapsed, 1) if elapsed else 0.0,
            "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": round(lat[-1], 2) if lat else None,
            "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
            "samples": list(self.samples),
        }


def client_loop(base: str, cases: Sequence[Case], stop_at: float,
                stop: threading.Event | None = None, quota: int | None = None,
                timeout: float = REQUEST_TIMEOUT) -> Tally:
    """Send ``cases`` round-robin on one keep-alive connection until ``stop_at`` (monotonic),
    ``stop`` is set or ``quota`` requests were sent; check every answer."""
    host, port = check_loopback(base)
    tally = Tally()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    i = 0
    try:
        while time.monotonic() < stop_at and not (stop is not None and stop.is_set()):
            if quota is not None and tally.sent >= quota:
                break
            case = cases[i % len(cases)]
            i += 1
            tally.sent += 1
            started = time.perf_counter()
            try:
                conn.request("POST", case.path, body=case.body, headers=JSON_HEADERS)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                tally.lost += 1
                tally.hung += isinstance(exc, TimeoutError)
                tally.note(f"lost {case.path}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
                continue
            took = time.perf_counter() - started
            _file(tally, case, response.status, data, took)
    finally:
        conn.close()
    return tally


def _file(tally: Tally, case: Case, status: int, data: bytes, took: float) -> None:
    if status != 200:
        tally.errors[str(status)] = tally.errors.get(str(status), 0) + 1
        tally.note(f"{status} {case.path}: {data[:200]!r}")
        return
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if any(same(answer, e) for e in (case.expected, *case.also)):
        tally.ok += 1
        tally.latencies.append(took)
    else:
        tally.wrong += 1
        tally.note(f"wrong {case.path}: {data[:200]!r}")


def same(answer: Any, expected: Any) -> bool:
    """``answer == expected``, with floats equal within :data:`TOLERANCE`."""
    if isinstance(expected, float) and isinstance(answer, (int, float)):
        return abs(answer - expected) <= TOLERANCE
    if isinstance(expected, dict):
        return (isinstance(answer, dict) and answer.keys() == expected.keys()
                and all(same(answer[k], v) for k, v in expected.items()))
    if isinstance(expected, list):
        return (isinstance(answer, list) and len(answer) == len(expected)
                and all(same(a, e) for a, e in zip(answer, expected, strict=True)))
    return type(answer) is type(expected) and answer == expected


def run_clients(base: str, plans: Sequence[Sequence[Case]], duration: float, *,
                processes: bool = True, timeout: float = REQUEST_TIMEOUT) -> tuple[Tally, float]:
    """One client per plan for ``duration`` seconds; returns the merged tally and the elapsed
    time. ``processes`` runs each client in its own forked process (no GIL between clients)."""
    stop_at = time.monotonic() + duration
    started = time.monotonic()
    total = Tally()
    limit = duration + timeout + 30
    if processes and len(plans) > 1:
        with multiprocessing.get_context("fork").Pool(len(plans)) as pool:
            jobs = [pool.apply_async(client_loop, (base, plan, stop_at, None, None, timeout))
                    for plan in plans]
            for job in jobs:
                total.add(job.get(limit))
        return total, time.monotonic() - started
    tallies: list[Tally] = []
    lock = threading.Lock()

    def one(plan: Sequence[Case]) -> None:
        tally = client_loop(base, plan, stop_at, timeout=timeout)
        with lock:
            tallies.append(tally)

    threads = [threading.Thread(target=one, args=(plan,), daemon=True) for plan in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(limit)
    for tally in tallies:
        total.add(tally)
    missing = len(plans) - len(tallies)
    if missing:  # a client thread that never returned: its requests count as lost
        total.lost += missing
        total.note(f"{missing} client threads did not finish")
    return total, time.monotonic() - started


class Background:
    """Checking clients in threads until :meth:`stop` (or ``seconds``): load while a test
    injects a fault. Use as a context manager; the tally is in :attr:`tally` afterwards."""

    def __init__(self, base: str, plans: Sequence[Sequence[Case]], seconds: float = 60.0,
                 timeout: float = REQUEST_TIMEOUT) -> None:
        self.base, self.plans, self.timeout = base, plans, timeout
        self.stop_at = time.monotonic() + seconds
        self.event = threading.Event()
        self.tally = Tally()
        self._lock = threading.Lock()
        self._done = 0
        self._threads = [threading.Thread(target=self._one, args=(p,), daemon=True)
                         for p in plans]

    def _one(self, plan: Sequence[Case]) -> None:
        tally = client_loop(self.base, plan, self.stop_at, self.event, timeout=self.timeout)
        with self._lock:
            self.tally.add(tally)
            self._done += 1

    def __enter__(self) -> Background:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> Tally:
        self.event.set()
        for t in self._threads:
            t.join(self.timeout + 10)
        missing = len(self._threads) - self._done
        if missing:
            self.tally.lost += missing
            self.tally.note(f"{missing} client threads did not finish")
        return self.tally

    def __exit__(self, *exc: object) -> None:
        self.stop()
