"""``python -m bench.ab A B``: two source trees of wfserve, measured alternately in one run.

A refactor must not cost speed: each round starts wfserve from tree ``A`` then from tree ``B``
(``PYTHONPATH`` = the tree; the same archives, interpreter and installed packages), and
measures ``seq_wf`` at 1 client (p50 of ``--requests`` requests) and at 32 clients (rps over
``--duration`` seconds). Rounds alternate so drift of the machine hits both trees alike; the
spread of each tree's rounds says how much a difference means. Prints a Markdown table (the
machine named) and writes it with ``--out``. Loopback only; every phase is bounded.

    python -m bench.ab /tmp/before . --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from bench.load import run_load
from bench.servers import Wfserve
from bench.workloads import build_workloads

PAYLOAD = b'{"input": [0.1, 0.2, 0.3, 0.4]}'
PATH = "/wfpredict/seq_wf"


class TreeWfserve(Wfserve):
    """wfserve started from the source tree ``source`` (first on ``PYTHONPATH``)."""

    def __init__(self, source: Path, *args: Path) -> None:
        super().__init__(*args, workers=1)  # NOTE: the setting's default is one per core
        self.source = source

    def start(self, payload: bytes) -> None:
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(self.source)
        try:
            super().start(payload)
        finally:
            if previous is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = previous


def measure(source: Path, stores: tuple[Path, Path], workdir: Path, requests: int,
            duration: float) -> tuple[float, float]:
    """One round on one tree: (p50 ms at 1 client, rps at 32 clients)."""
    server = TreeWfserve(source, *stores, workdir)
    server.start(PAYLOAD)
    try:
        one = run_load(server.inference, PATH, body=PAYLOAD, concurrency=1,
                       max_requests=requests, duration=120.0)
        many = run_load(server.inference, PATH, body=PAYLOAD, concurrency=32,
                        duration=duration)
    finally:
        server.stop()
    if one.errors or many.errors:
        raise RuntimeError(f"{source}: errors during the run ({one.errors}, {many.errors})")
    return one.p50, many.rps


def table(results: dict[str, list[tuple[float, float]]]) -> str:
    """The Markdown table: every round, the median and the spread (max - min) per tree."""
    lines = [f"Machine: {platform.node()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}; seq_wf, loopback, rounds alternating.", "",
             "| tree | p50 ms, 1 client (rounds) | median | spread "
             "| rps, 32 clients (rounds) | median | spread |",
             "|---|---|---|---|---|---|---|"]
    for tree, rounds in results.items():
        p50s = [r[0] for r in rounds]
        rps = [r[1] for r in rounds]
        lines.append(
            f"| {tree} | {', '.join(f'{v:.3f}' for v in p50s)} | {statistics.median(p50s):.3f}"
            f" | {max(p50s) - min(p50s):.3f} | {', '.join(f'{v:.0f}' for v in rps)}"
            f" | {statistics.median(rps):.0f} | {max(rps) - min(rps):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs=2, type=Path, help="two source trees (A, B)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=500, help="1-client requests")
    parser.add_argument("--duration", type=float, default=8.0, help="32-client seconds")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in args.trees]
    results: dict[str, list[tuple[float, float]]] = {str(t): [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="wfserve-ab-") as tmp:
        stores = build_workloads(Path(tmp) / "stores")
        for round_ in range(args.rounds):
            for tree in trees if round_ % 2 == 0 else trees[::-1]:
                work = Path(tmp) / f"run-{round_}-{tree.name}"
                work.mkdir()
                results[str(tree)].append(measure(
                    tree, (stores.model_store, stores.workflow_store), work, args.requests,
                    args.duration))
                sys.stderr.write(f"round {round_ + 1} {tree}: {results[str(tree)][-1]}\n")
    text = table(results)
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
