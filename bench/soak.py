"""Soak: many clients for minutes over seq, par and a batched diamond, every answer checked.

    python -m bench.soak --minutes 10            # the published run (RELIABILITY.md)
    python -m bench.soak --minutes 1 --clients 8

Builds the archives with the official archivers, starts a real server (gunicorn, loopback),
registers ``seq_wf``, ``par_wf`` and ``diamond_wf`` and runs ``clients`` closed-loop clients
(one process each, client ``i`` on workflow ``i % 3`` with inputs of its own), after a short
warm-up. Every answer is checked against its input (:mod:`bench.checked`). It reports requests,
ok, wrong, errors, lost, stalls, p50/p99/max, the server's tree RSS and the worker's threads
and file descriptors at the start and the end (and every ``--sample`` seconds between), and
the server's own counters of retries, node timeouts and request timeouts (a response lost
inside the server and retried shows there). The figures go to stdout and, as JSON, to
``--out`` (default ``bench/results/soak-<minutes>m.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.checked import run_clients
from bench.procmon import tree_memory
from tests.helpers import WfserveServer
from tests.reliability.procs import counts
from tests.reliability.procs import settle
from tests.reliability.procs import worker_pid
from tests.reliability.workflows import SOAK_WORKFLOWS
from tests.reliability.workflows import build_stores
from tests.reliability.workflows import plans

WARMUP_S = 3.0
COUNTERS = ("wfserve_node_retries_total", "wfserve_node_timeouts_total",
            "wfserve_request_timeouts_total", "wfserve_workflow_errors_total")


def server_counters(metrics_base: str) -> dict[str, float]:
    """The server's own failure counters, summed over workflows and nodes."""
    text = httpx.get(f"{metrics_base}/metrics", timeout=10).text
    found = dict.fromkeys(COUNTERS, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name] += sample.value
    return found


class Sampler(threading.Thread):
    """RSS of the server tree, threads and fds of the worker, every ``every`` seconds."""

    def __init__(self, master: int, worker: int, every: float) -> None:
        super().__init__(daemon=True)
        self.master, self.worker, self.every = master, worker, every
        self.samples: list[dict[str, float]] = []
        self.stop_event = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            threads, fds = counts(self.worker)
            self.samples.append({"t_s": round(time.monotonic() - self.started, 1),
                                 "rss_mb": round(tree_memory(self.master)["rss_mb"], 1),
                                 "threads": threads, "fds": fds})

    def stop(self) -> list[dict[str, float]]:
        self.stop_event.set()
        self.join(10)
        return self.samples


def run_soak(stores: Path, workdir: Path, *, seconds: float, clients: int = 32,
             sample_every: float = 10.0, processes: bool = True) -> dict[str, Any]:
    """Start a server on ``stores`` (``model_store``, ``wf_store``) in ``workdir``, soak it for
    ``seconds`` and return the figures (JSON-ready)."""
    args = ["--model-store", str(stores / "model_store"), "--workflow-store",
            str(stores / "wf_store"), "--snapshot-dir", str(workdir / "snapshots"),
            "--log-level", "warning", "--workflows", *(f"{w}.war" for w in SOAK_WORKFLOWS)]
    srv = WfserveServer(workdir, *args).start()
    try:
        master = srv.process.pid
        worker = worker_pid(master)
        load_plans = plans(SOAK_WORKFLOWS, clients)
        warm, warm_s = run_clients(srv.inference, load_plans, WARMUP_S, processes=processes)
        start_counts = settle(worker, counts(worker), seconds=2)
        rss_start = tree_memory(master)["rss_mb"]
        before = server_counters(srv.metrics)
        sampler = Sampler(master, worker, sample_every)
        sampler.start()
        tally, elapsed = run_clients(srv.inference, load_plans, seconds, processes=processes)
        samples = sampler.stop()
        rss_end = tree_memory(master)["rss_mb"]
        end_counts = settle(worker, start_counts, seconds=15)
        after = server_counters(srv.metrics)
        same_worker = worker_pid(master) == worker
    finally:
        srv.stop()
    summary = tally.summary(elapsed)
    return {
        "clients": clients, "seconds": seconds, "workflows": list(SOAK_WORKFLOWS),
        "warmup": warm.summary(warm_s) | {"samples": warm.samples},
        "load": summary,
        "server": {
            "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1),
            "rss_growth_mb": round(rss_end - rss_start, 1),
            "threads_start": start_counts[0], "threads_end": end_counts[0],
            "fds_start": start_counts[1], "fds_end": end_counts[1],
            "worker_restarted": not same_worker,
            "counters": {k.removeprefix("wfserve_").removesuffix("_total"): after[k] - before[k]
                         for k in COUNTERS},
            "samples": samples,
        },
    }


def verdict(result: dict[str, Any]) -> list[str]:
    """What is wrong with a soak's figures (empty: nothing lost, nothing leaked)."""
    load, server = result["load"], result["server"]
    problems = []
    for phase in ("warmup", "load"):
        p = result[phase]
        if p["lost"] or p["wrong"] or p["errors"] or p["ok"] != p["requests"]:
            problems.append(f"{phase}: {p['requests']} requests, {p['ok']} ok, {p['wrong']} "
                            f"wrong, {p['errors']} errors, {p['lost']} lost: {p['samples']}")
    if any(server["counters"].values()):
        problems.append(f"server counted failures: {server['counters']}")
    if server["threads_end"] > server["threads_start"] or server["fds_end"] > server["fds_start"]:
        problems.append(f"threads {server['threads_start']} -> {server['threads_end']}, fds "
                        f"{server['fds_start']} -> {server['fds_end']}")
    if server["worker_restarted"]:
        problems.append("the worker process was restarted")
    if load["ok"] == 0:
        problems.append("no request succeeded")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path("bench/results") / f"soak-{args.minutes:g}m.json"
    with tempfile.TemporaryDirectory(prefix="wfserve-soak-") as tmp:
        root = Path(tmp)
        build_stores(root / "stores")
        (root / "server").mkdir()
        result = run_soak(root / "stores", root / "server", seconds=args.minutes * 60,
                          clients=args.clients, sample_every=args.sample)
    result["problems"] = verdict(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    load, server = result["load"], result["server"]
    print(f"soak: {args.clients} clients x {args.minutes:g} min over {', '.join(SOAK_WORKFLOWS)}")
    print(f"  requests {load['requests']}  ok {load['ok']}  wrong {load['wrong']}  errors "
          f"{load['errors']}  lost {load['lost']}  stalls(>1s) {load['stalls']}")
    print(f"  rps {load['rps']}  p50 {load['p50_ms']} ms  p99 {load['p99_ms']} ms  max "
          f"{load['max_ms']} ms")
    print(f"  server RSS {server['rss_start_mb']} -> {server['rss_end_mb']} MB; worker threads "
          f"{server['threads_start']} -> {server['threads_end']}, fds {server['fds_start']} -> "
          f"{server['fds_end']}; counters {server['counters']}")
    print(f"  verdict: {'PASS' if not result['problems'] else result['problems']}  ({out})")
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
