"""``python -m bench``: the benchmark matrix against wfserve, and TorchServe side by side.

    python -m bench                      # wfserve only (says so)
    python -m bench --peer torchserve    # both servers, same archives, same matrix, one run
    python -m bench --quick              # a short smoke run (3 s phases, 100 requests)
    python -m bench --ray                # executor ray vs threaded vs Ray Serve (ray_bench.py)

Writes ``bench/results/<timestamp>.json``, ``.md`` and ``.png``; ``--record`` also writes the
Markdown to ``bench/RESULTS.md``. Everything targets 127.0.0.1 and every phase is bounded in
time and requests. The peer needs the venv of ``shared/peer/setup.sh`` (``VENV``, default
/tmp/peer-venv) and Java 17.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.load import run_load
from bench.procmon import TreeMonitor
from bench.procmon import cpu_seconds
from bench.procmon import tree
from bench.procmon import tree_memory
from bench.report import markdown
from bench.report import plot
from bench.report import record_section
from bench.servers import EchoFloor
from bench.servers import Server
from bench.servers import TorchServe
from bench.servers import Wfserve
from bench.workloads import BATCHES
from bench.workloads import HOPS
from bench.workloads import build_workloads

HERE = Path(__file__).resolve().parent
PAYLOAD = json.dumps({"input": [0.1, 0.2, 0.3, 0.4]}).encode()
JSON = {"Content-Type": "application/json"}


def matrix() -> list[tuple[str, str, str, int]]:
    """(phase, method, path, clients), in run order."""
    phases = [("ping_c1", "GET", "/ping", 1), ("ping_c32", "GET", "/ping", 32)]
    for name, path in (("plain", "/predictions/seq_wf__m1"), ("seq", "/wfpredict/seq_wf"),
                       ("par", "/wfpredict/par_wf")):
        phases += [(f"{name}_c{c}", "POST", path, c) for c in (1, 8, 32)]
    phases += [(f"batch{b}_c32", "POST", f"/wfpredict/batch{b}_wf", 32) for b in BATCHES]
    phases += [(f"hop{h}_c1", "POST", f"/wfpredict/hop{h}_wf", 1) for h in HOPS]
    return phases


def hop_slope_us(phases: dict[str, Any]) -> float | None:
    """Least-squares slope of p50 over the chain length, in microseconds per hop."""
    points = [(h, phases[f"hop{h}_c1"]["p50"]) for h in HOPS if f"hop{h}_c1" in phases]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return round(slope * 1000, 1)


def bench_server(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    sys.stderr.write(f"== {server.name}: starting\n")
    server.start(PAYLOAD)
    assert server.pid is not None
    time.sleep(1.0)
    idle = tree_memory(server.pid)
    for b in BATCHES:
        server.register(f"batch{b}_wf.war")
    for h in HOPS:
        server.register(f"hop{h}_wf.war")
    monitor = TreeMonitor(server.pid)
    monitor.start()
    phases: dict[str, Any] = {}
    try:
        for name, method, path, clients in matrix():
            cpu0 = cpu_seconds(tree(server.pid))
            if clients == 1:
                result = run_load(server.inference, path, method=method, body=PAYLOAD,
                                  headers=JSON, concurrency=1, duration=args.duration * 3,
                                  max_requests=args.requests, warmup=args.warmup)
            else:
                result = run_load(server.inference, path, method=method, body=PAYLOAD,
                                  headers=JSON, concurrency=clients, duration=args.duration,
                                  warmup=args.warmup)
            phases[name] = result.as_dict()
            cpu = cpu_seconds(tree(server.pid)) - cpu0
            phases[name]["server_cpu_ms_per_req"] = round(cpu * 1000 / max(result.ok, 1), 3)
            sys.stderr.write(f"   {name:12s} ok={result.ok:6d} err={result.errors} "
                             f"p50={result.p50:8.3f} p99={result.p99:8.3f} rps={result.rps}\n")
    finally:
        memory = monitor.stop()
        server.stop()
    b1, b8 = phases.get("batch1_c32", {}).get("rps"), phases.get("batch8_c32", {}).get("rps")
    return {
        "cold_start_s": server.cold_start_s,
        "idle_rss_mb": round(idle["rss_mb"], 1),
        "idle_pss_mb": round(idle["pss_mb"], 1),
        "memory": memory,
        "phases": phases,
        "hop_us": hop_slope_us(phases),
        "batching_gain": round(b8 / b1, 2) if b1 and b8 else None,
        "stalls": sum(p["stalls"] for p in phases.values()),
        "errors": sum(p["errors"] for p in phases.values()),
    }


def measure_floor(loads: Any, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """gunicorn's own per-request cost on this machine: a bare echo app, 1 and 32 clients."""
    workdir = root / "floor"
    workdir.mkdir()
    floor = EchoFloor(loads.model_store, loads.workflow_store, workdir)
    floor.start(PAYLOAD)
    assert floor.pid is not None
    out: dict[str, Any] = {}
    try:
        for clients in (1, 32):
            cpu0 = cpu_seconds(tree(floor.pid))
            result = run_load(floor.inference, "/", body=PAYLOAD, headers=JSON,
                              concurrency=clients, duration=args.duration,
                              max_requests=args.requests if clients == 1 else None,
                              warmup=args.warmup)
            out[f"echo_c{clients}"] = result.as_dict()
            cpu = cpu_seconds(tree(floor.pid)) - cpu0
            out[f"echo_c{clients}"]["server_cpu_ms_per_req"] = round(
                cpu * 1000 / max(result.ok, 1), 3)
            sys.stderr.write(f"   echo_c{clients:<7d} p50={result.p50:8.3f} rps={result.rps}\n")
    finally:
        floor.stop()
    return out


def measure_floors(loads: Any) -> dict[str, Any]:
    """:mod:`bench.floors` in a process of its own (torch and a kernel stay out of this one)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.floors", str(loads.model_store), str(loads.workflow_store),
         str(loads.model_store.parent / "build" / "m1.pt")],
        capture_output=True, text=True, timeout=600, cwd=HERE.parent,
        env={**os.environ, "WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "torch": torch.__version__.split("+")[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", choices=["torchserve"], help="also run TorchServe 0.12.0")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    parser.add_argument("--requests", type=int, default=300, help="requests per 1-client phase")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted requests per phase")
    parser.add_argument("--quick", action="store_true", help="3 s phases, 100 requests")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--record", action="store_true", help="also write bench/RESULTS.md")
    parser.add_argument("--ray", action="store_true",
                        help="the Ray executor against threaded and Ray Serve (needs ray[serve])")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.requests = 3.0, 100
    started = time.strftime("%Y-%m-%dT%H-%M-%S")
    run: dict[str, Any] = {"started": started, "machine": machine(),
                           "command": "python -m bench " + " ".join(argv or sys.argv[1:]),
                           "servers": {}}
    if args.ray:
        return ray_main(args, run)
    with tempfile.TemporaryDirectory(prefix="wfserve-bench-") as tmp:
        root = Path(tmp)
        sys.stderr.write("building archives with the official archivers...\n")
        loads = build_workloads(root / "stores")
        kinds: list[type[Server]] = [Wfserve]
        if args.peer == "torchserve":
            if TorchServe.available():
                kinds.append(TorchServe)
            else:
                run["note"] = ("TorchServe peer requested but not available (no venv at "
                               "$VENV or no java): wfserve alone was measured.")
        else:
            run["note"] = "No peer: wfserve alone (add --peer torchserve for the side by side)."
        run["floor"] = measure_floor(loads, root, args)
        sys.stderr.write("in-process floors (handoff, torch threads, seq_wf chain)...\n")
        run["floors"] = measure_floors(loads)
        for kind in kinds:
            workdir = root / kind.name
            workdir.mkdir()
            server = kind(loads.model_store, loads.workflow_store, workdir)
            try:
                run["servers"][kind.name] = bench_server(server, args)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                if kind is Wfserve:
                    raise
                run["note"] = f"The {kind.name} peer failed and was left out: {exc}"
                sys.stderr.write(run["note"] + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / started
    base.with_suffix(".json").write_text(json.dumps(run, indent=2))
    text = markdown(run)
    png = plot(run, base.with_suffix(".png"))
    if png:
        text += f"\n![latency and throughput per phase]({png.relative_to(HERE)})\n"
    base.with_suffix(".md").write_text(text)
    if args.record:
        recorded = text
        if png:
            shutil.copyfile(png, HERE / "RESULTS.png")
            recorded = recorded.replace(str(png.relative_to(HERE)), "RESULTS.png")
        record_section(HERE / "RESULTS.md", recorded)
    sys.stdout.write(text + "\n")
    return 0


def ray_main(args: argparse.Namespace, run: dict[str, Any]) -> int:
    """``--ray``: :mod:`bench.ray_bench`, its own JSON and its own RESULTS.md section."""
    from bench import ray_bench

    with tempfile.TemporaryDirectory(prefix="wfserve-bench-ray-") as tmp:
        root = Path(tmp)
        sys.stderr.write("building archives with the official archivers...\n")
        loads = build_workloads(root / "stores")
        run.update(ray_bench.run(loads, root, args))
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"{run['started']}-ray"
    base.with_suffix(".json").write_text(json.dumps(run, indent=2))
    text = ray_bench.markdown(run, run["machine"], run["command"])
    base.with_suffix(".md").write_text(text)
    if args.record:
        record_section(HERE / "RESULTS.md", text)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
