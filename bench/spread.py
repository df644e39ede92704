"""``python -m bench.spread``: wfserve N = 1 against N = 2 with a light load generator.

The matrix's load generator runs one client process per connection; at 32 clients on two
cores those 32 processes compete with the server processes for the CPU. This one runs 32
keep-alive connections as threads of one process (its CPU share is reported), alternates
N = 1 and N = 2 over ``--rounds`` rounds (so the machine's drift hits both alike) and reports,
per path, the rate at 32 clients and how the answers spread over the server processes
(``X-Wfserve-Process``), and seq_wf's p50 at 1 client (``--requests`` requests on one
connection). Loopback only; every phase is bounded.

    python -m bench.spread --rounds 3 --record
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from bench.servers import Wfserve
from bench.workloads import build_workloads

PAYLOAD = b'{"input": [0.1, 0.2, 0.3, 0.4]}'
PATHS = {"/ping": None, "/wfpredict/seq_wf": PAYLOAD, "/wfpredict/par_wf": PAYLOAD}
HERE = Path(__file__).parent


def phase(base: str, path: str, body: bytes | None, clients: int, seconds: float
          ) -> tuple[float, Counter[str], float]:
    """``clients`` keep-alive connections for ``seconds``: (rps, answers per process, the
    generator's CPU share of all cores)."""
    url = urlsplit(base)
    stop = time.monotonic() + seconds
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    failures: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        mine: Counter[str] = Counter()
        headers = {"Content-Type": "application/json"} if body else {}
        while time.monotonic() < stop:
            conn.request("POST" if body else "GET", path, body=body, headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                failures.append(str(answer.status))
                break
            mine[answer.getheader("X-Wfserve-Process") or "-"] += 1
        conn.close()
        with lock:
            counts.update(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    cpu, wall = time.process_time(), time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    if failures:
        raise RuntimeError(f"{path}: answers other than 200: {failures[:3]}")
    return sum(counts.values()) / wall, counts, cpu / wall / (os.cpu_count() or 1)


def one_client_p50(base: str, path: str, body: bytes, requests: int) -> float:
    """p50 (ms) of ``requests`` requests one after another on one keep-alive connection,
    after 50 uncounted ones."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    took = []
    for i in range(requests + 50):
        start = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{path}: {answer.status}")
        if i >= 50:
            took.append((time.perf_counter() - start) * 1000)
    conn.close()
    return statistics.median(took)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spread", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per phase")
    parser.add_argument("--requests", type=int, default=500, help="1-client seq_wf requests")
    parser.add_argument("--record", action="store_true", help="add the table to RESULTS.md")
    args = parser.parse_args(argv)
    rates: dict[tuple[int, str], list[float]] = {}
    shares: dict[tuple[int, str], list[float]] = {}
    spread: dict[tuple[int, str], list[str]] = {}
    p50s: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="wfserve-spread-") as tmp:
        stores = build_workloads(Path(tmp) / "stores")
        for round_ in range(args.rounds):
            for workers in ((1, 2) if round_ % 2 == 0 else (2, 1)):
                workdir = Path(tmp) / f"run-{round_}-{workers}"
                workdir.mkdir()
                server = Wfserve(stores.model_store, stores.workflow_store, workdir,
                                 workers=workers)
                server.start(PAYLOAD)
                try:
                    p50s[workers].append(one_client_p50(server.inference, "/wfpredict/seq_wf",
                                                        PAYLOAD, args.requests))
                    print(f"round {round_ + 1} N={workers} seq_wf p50 at 1 client: "
                          f"{p50s[workers][-1]:.3f} ms", flush=True)
                    for path, body in PATHS.items():
                        rps, counts, share = phase(server.inference, path, body,
                                                   args.clients, args.duration)
                        rates.setdefault((workers, path), []).append(rps)
                        shares.setdefault((workers, path), []).append(share)
                        split = sorted(counts.values(), reverse=True)
                        spread.setdefault((workers, path), []).append(
                            "/".join(f"{c / sum(split):.0%}" for c in split))
                        print(f"round {round_ + 1} N={workers} {path}: {rps:.0f} rps, "
                              f"answers {split}, generator CPU {share:.0%}", flush=True)
                finally:
                    server.stop()
    lines = [f"Machine: {platform.node()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}; {args.clients} keep-alive connections from one "
             f"threaded client process, {args.duration:g} s per phase, {args.rounds} rounds "
             "alternating N = 1 and N = 2.", "",
             "| path | N=1 rps (rounds) | N=2 rps (rounds) | N=2 / N=1 (medians) "
             "| N=2 answers per process | generator CPU (N=1 / N=2) |",
             "|---|---|---|---|---|---|"]
    for path in PATHS:
        one, two = rates[(1, path)], rates[(2, path)]
        lines.append(
            f"| {path} | {', '.join(f'{v:.0f}' for v in one)} | "
            f"{', '.join(f'{v:.0f}' for v in two)} | "
            f"{statistics.median(two) / statistics.median(one):.2f}x | "
            f"{', '.join(spread[(2, path)])} | "
            f"{statistics.median(shares[(1, path)]):.0%} / "
            f"{statistics.median(shares[(2, path)]):.0%} |")
    lines += ["", "seq_wf p50 at 1 client (ms, one connection, "
              f"{args.requests} requests per round):", "",
              "| N | rounds | median | spread |", "|---|---|---|---|"]
    for workers, values in p50s.items():
        lines.append(f"| {workers} | {', '.join(f'{v:.3f}' for v in values)} | "
                     f"{statistics.median(values):.3f} | {max(values) - min(values):.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        results = HERE / "RESULTS.md"
        head, _, rest = results.read_text().partition("\n## DAG features")
        section = ("\n### The same N = 1 / N = 2 comparison with a threaded load generator\n\n"
                   f"`python -m bench.spread --rounds {args.rounds} --record` "
                   f"({time.strftime('%Y-%m-%d %H:%M')}):\n\n{text}")
        results.write_text(head.rstrip("\n") + "\n" + section + "\n## DAG features" + rest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
