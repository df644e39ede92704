"""``python -m bench.dag_features``: what conditional edges and deadlines save, in one run.

1. **Route vs run-everything.** ``classify -> [dog, cat]`` where each branch burns
   ``--work-ms`` of CPU: with ``edges:`` only the branch the condition picks runs; without, both
   run (TorchServe's semantics). Same archives' handler, same server, two registrations;
   p50 at 1 client and rps at 8 clients for each.
2. **Map into a batched model.** ``detect -> m1`` over a ``map`` edge: ``detect`` returns
   ``--crops`` items per request, each goes through ``m1``'s batcher (batch-size 8,
   max-batch-delay 5 ms); p50 at 1 client, rps at 8 clients, and the batch size ``m1`` saw
   (from ``wfserve_node_batch_size``).
3. **Deadline.** ``slow -> post`` where ``slow`` sleeps ``--slow-ms`` per call (batch 1, one
   worker): 16 clients send requests with ``X-Request-Timeout-Ms: --deadline-ms``. Reported:
   how the requests were answered (408 at the deadline), their latency, and the handler calls
   saved: inputs dropped before a handler (``wfserve_node_deadline_drops_total``) against the
   calls made.

Loopback only; every phase bounded in time and requests. Prints Markdown (the machine named).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.load import run_load
from tests.archives import Stores
from tests.archives import build_peer_stores
from tests.archives import build_war
from tests.helpers import WfserveServer

HANDLER = '''
import json
import time


def _burn(ms):
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


def _rows(data):
    values = [r.get("data") or r.get("body") for r in data]
    return [v if isinstance(v, dict) else json.loads(v) for v in values]


def classify(data, context):
    return None if data is None else [{"label": r["label"]} for r in _rows(data)]


def dog(data, context):
    if data is None:
        return None
    _burn(WORK_MS)
    return [{"breed": "beagle"} for _ in data]


def cat(data, context):
    if data is None:
        return None
    _burn(WORK_MS)
    return [{"breed": "siamese"} for _ in data]


def slow(data, context):
    if data is None:
        return None
    time.sleep(SLOW_MS / 1000)
    return [r.get("data") or r.get("body") for r in data]


def detect(data, context):
    if data is None:
        return None
    return [[{"input": [0.1 * i, 0.2, 0.3, 0.4]} for i in range(CROPS)] for _ in data]


def post(data, context):
    return None if data is None else [{"done": True} for _ in data]
'''

ROUTED = """
models: {}
dag:
  classify: [dog, cat]
edges:
  classify -> dog: {when: "label == 'dog'"}
  classify -> cat: {when: "label == 'cat'"}
"""
EVERYTHING = """
models: {}
dag:
  classify: [dog, cat]
"""
MAPPED = """
models:
  batch-size: 8
  max-batch-delay: 5
  m1: {url: m1.mar}
dag:
  detect: [m1]
edges:
  detect -> m1: {map: true}
"""
SLOW = """
models: {}
dag:
  slow: [post]
"""
BODY = b'{"label": "dog"}'


def build(root: Path, work_ms: float, slow_ms: float, crops: int) -> Stores:
    """The four ``.war`` files (one handler file) and ``m1.mar`` under ``root``."""
    stores = build_peer_stores(root / "peer")
    handler = root / "dag_handler.py"
    handler.write_text(textwrap.dedent(HANDLER).replace("WORK_MS", repr(work_ms))
                       .replace("SLOW_MS", repr(slow_ms)).replace("CROPS", repr(crops)))
    store = stores.workflow_store
    for name, spec in (("routed", ROUTED), ("everything", EVERYTHING), ("slowwf", SLOW),
                       ("mapped", MAPPED)):
        path = root / f"{name}.yaml"
        path.write_text(spec)
        build_war(store, name, spec_file=path, handler=handler)
    return stores


def sample(metrics: str, name: str, workflow: str, node: str) -> float:
    """One node's sample ``name`` from a Prometheus scrape (0 when absent)."""
    for family in text_string_to_metric_families(metrics):
        for found in family.samples:
            if (found.name == name and found.labels.get("workflow") == workflow
                    and found.labels.get("node") == node):
                return float(found.value)
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dag_features",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--work-ms", type=float, default=2.0)
    parser.add_argument("--slow-ms", type=float, default=100.0)
    parser.add_argument("--deadline-ms", type=int, default=150)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--crops", type=int, default=8)
    args = parser.parse_args(argv)
    out = [f"Machine: {platform.node()}, {os.cpu_count()} CPUs, Python "
           f"{platform.python_version()}; loopback; one run.", ""]
    with tempfile.TemporaryDirectory(prefix="wfserve-dagbench-") as tmp:
        root = Path(tmp)
        stores = build(root, args.work_ms, args.slow_ms, args.crops)
        work = root / "server"
        work.mkdir()
        with WfserveServer(work, "--workflow-store", str(stores.workflow_store),
                           "--model-store", str(stores.model_store), "--no-snapshot",
                           "--workflows", "routed.war", "everything.war", "slowwf.war",
                           "mapped.war") as server:
            out += ["| workflow | p50 ms, 1 client | rps, 8 clients | answers |",
                    "|---|---|---|---|"]
            for name in ("routed", "everything"):
                probe = httpx.post(f"{server.inference}/wfpredict/{name}", content=BODY,
                                   headers={"Content-Type": "application/json"}, timeout=30)
                if probe.status_code != 200:
                    raise RuntimeError(f"{name}: {probe.status_code} {probe.text}")
                one = run_load(server.inference, f"/wfpredict/{name}", body=BODY,
                               headers={"Content-Type": "application/json"}, concurrency=1,
                               max_requests=args.requests, duration=60)
                many = run_load(server.inference, f"/wfpredict/{name}", body=BODY,
                                headers={"Content-Type": "application/json"}, concurrency=8,
                                duration=args.duration)
                answers = {k: one.statuses.get(k, 0) + many.statuses.get(k, 0)
                           for k in {*one.statuses, *many.statuses}}
                out.append(f"| {name} ({args.work_ms} ms CPU per branch) | {one.p50:.2f} | "
                           f"{many.rps:.0f} | {answers} |")
            mapped_one = run_load(server.inference, "/wfpredict/mapped", body=BODY,
                                  headers={"Content-Type": "application/json"}, concurrency=1,
                                  max_requests=args.requests, duration=60)
            before = httpx.get(f"{server.metrics}/metrics", timeout=30).text
            mapped_many = run_load(server.inference, "/wfpredict/mapped", body=BODY,
                                   headers={"Content-Type": "application/json"}, concurrency=8,
                                   duration=args.duration)
            after = httpx.get(f"{server.metrics}/metrics", timeout=30).text
            deadline = run_load(server.inference, "/wfpredict/slowwf", body=BODY,
                                headers={"Content-Type": "application/json",
                                         "X-Request-Timeout-Ms": str(args.deadline_ms)},
                                concurrency=16, duration=args.duration, warmup=0, expect=408,
                                processes=False)
            metrics = httpx.get(f"{server.metrics}/metrics", timeout=30).text
        batches = (sample(after, "wfserve_node_batch_size_count", "mapped", "m1")
                   - sample(before, "wfserve_node_batch_size_count", "mapped", "m1"))
        items = (sample(after, "wfserve_node_batch_size_sum", "mapped", "m1")
                 - sample(before, "wfserve_node_batch_size_sum", "mapped", "m1"))
        out += ["", f"Map: `detect` returns {args.crops} crops per request, each through `m1`'s "
                "batcher (batch-size 8, max-batch-delay 5 ms).", "",
                "| p50 ms, 1 client | rps, 8 clients (crops/s) | mean m1 batch at 8 clients |",
                "|---|---|---|",
                f"| {mapped_one.p50:.2f} | {mapped_many.rps:.0f} "
                f"({mapped_many.rps * args.crops:.0f}) | "
                f"{items / batches if batches else float('nan'):.2f} |"]
        dropped = sample(metrics, "wfserve_node_deadline_drops_total", "slowwf", "slow")
        ran = sample(metrics, "wfserve_node_requests_total", "slowwf", "slow")
        out += ["", f"Deadline workload: `slow` sleeps {args.slow_ms:.0f} ms per call (1 worker, "
                f"batch 1), 16 clients, `X-Request-Timeout-Ms: {args.deadline_ms}`, "
                f"{args.duration:.0f} s.", "",
                "| answers | 408 latency p50 / p99 ms | slow handler calls | inputs dropped "
                "before a handler |", "|---|---|---|---|",
                f"| {deadline.statuses} | {deadline.p50:.0f} / {deadline.p99:.0f} | {ran:.0f} | "
                f"{dropped:.0f} |"]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
