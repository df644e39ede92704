"""Per-hop overhead of the threaded executor: chains of 1, 2, 4, 8 trivial function nodes.

Each node is a batch-size-1 function node with an in-process handler that returns its input;
requests are sent one at a time from one client thread (latency, not throughput). Prints
microseconds per request and per extra hop (the slope between chain lengths).

    python bench/hop_cost.py [requests-per-chain]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.executor_fakes import make_executor  # noqa: E402
from tests.executor_fakes import request  # noqa: E402


def chain_spec(length: int) -> str:
    lines = ["models:", "  retry-attempts: 1", "dag:"]
    for i in range(length):
        nxt = f"[f{i + 1}]" if i + 1 < length else "[]"
        lines.append(f"  f{i}: {nxt}")
    return "\n".join(lines) + "\n"


def identity(index):
    return lambda batch, meta: [row.get("body") for row in batch]


def measure(length: int, count: int, typed: bool) -> float:
    spec = chain_spec(length)
    if typed:
        spec = spec.replace("models:\n", "models:\n  typed: true\n")
    with tempfile.TemporaryDirectory() as tmp:
        ex, _ = make_executor(Path(tmp), spec, {f"f{i}": identity for i in range(length)})
        try:
            for _ in range(200):  # warm up
                ex.submit(request(b"x")).result(5)
            rounds = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(count // 5):
                    ex.submit(request(b"x")).result(5)
                rounds.append((time.perf_counter() - start) / (count // 5))
        finally:
            ex.close(5)
    return statistics.median(rounds) * 1e6


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    for typed in (False, True):
        mode = "typed" if typed else "compatibility"
        results = {n: measure(n, count, typed) for n in (1, 2, 4, 8)}
        print(f"{mode} mode, {count} sequential requests per chain:")
        for n, us in results.items():
            print(f"  chain of {n}: {us:8.1f} us/request")
        slope = (results[8] - results[1]) / 7
        print(f"  per extra hop (8 vs 1): {slope:.1f} us")


if __name__ == "__main__":
    main()
