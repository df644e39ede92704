"""``python -m bench``: the benchmark matrix against wfserve at N server processes, and
TorchServe side by side, in one run.

    python -m bench --workers 1,2 --peer torchserve   # the whole run (issue 20)
    python -m bench                                   # wfserve N = 1 and 2 only (says so)
    python -m bench --quick                           # a short smoke run (2 s phases)
    python -m bench --ray                             # executor ray vs Ray Serve (ray_bench.py)

One invocation measures, in this order:

1. floors: gunicorn with a bare echo app, WSGI (gthread) and, when uvicorn and httptools are
   importable, ASGI (uvicorn's worker class, httptools, Falcon ASGI), at each N of
   ``--workers``, 1 and 32 clients; then the in-process floors (:mod:`bench.floors`);
2. for each N of ``--workers``, ``wfserve serve --workers N`` with every benchmark workflow
   registered at start (``--workflows``), then TorchServe 0.12.0 (``--peer torchserve``):
   every process warmed up, then ``/ping``, the plain model (``/predictions/seq_wf__m1``), the
   plain one-model workflow (``one_wf``), ``seq_wf`` and ``par_wf`` at 1, 8 and 32 clients,
   the batching and hop workloads, and the image pipeline (JPEG -> ResNet-18 -> top 5) at 1
   and 16 clients;
3. memory: the server tree's PSS after the warm-up, wfserve at each N of ``--memory-workers``.

Each phase reports rps, p50/p99 and the load generator's CPU share (its CPU time over the
phase's wall time and the machine's cores: it runs on the same cores). Every server process
runs with ``OMP_NUM_THREADS=1`` (one intra-op torch thread per process, so N processes do not
oversubscribe the cores; TorchServe's workers inherit it) and the ResNet-18 and heavy model
handlers also call ``torch.set_num_threads(1)``.

Writes ``bench/results/<timestamp>.json``, ``.md`` and ``.png``; ``--record`` also puts the
Markdown at the top of ``bench/RESULTS.md`` with the targets of issue 20 judged from the
measured numbers. Everything targets 127.0.0.1 and every phase is bounded in time and
requests. The peer needs the venv of ``python -m bench.peer_venv`` (``VENV``, default
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
from bench.load import warm_processes
from bench.procmon import TreeMonitor
from bench.procmon import cpu_seconds
from bench.procmon import tree
from bench.procmon import tree_memory
from bench.report import plot
from bench.report import record_section
from bench.report import record_top
from bench.report import workers_markdown
from bench.servers import EchoFloor
from bench.servers import Server
from bench.servers import TorchServe
from bench.servers import Wfserve
from bench.workloads import BATCHES
from bench.workloads import HOPS
from bench.workloads import WORKFLOWS
from bench.workloads import Workloads
from bench.workloads import build_workloads

HERE = Path(__file__).resolve().parent
PAYLOAD = json.dumps({"input": [0.1, 0.2, 0.3, 0.4]}).encode()
JSON = {"Content-Type": "application/json"}
JPEG = {"Content-Type": "image/jpeg"}
IMAGE_PATH = "/wfpredict/image_wf"
IMAGE_CLIENTS = (1, 16)


def matrix() -> list[tuple[str, str, str, int]]:
    """(phase, method, path, clients), in run order (the image phases follow: image_phases)."""
    phases = [(f"ping_c{c}", "GET", "/ping", c) for c in (1, 8, 32)]
    for name, path in (("plain", "/predictions/seq_wf__m1"), ("one", "/wfpredict/one_wf"),
                       ("seq", "/wfpredict/seq_wf"), ("par", "/wfpredict/par_wf")):
        phases += [(f"{name}_c{c}", "POST", path, c) for c in (1, 8, 32)]
    phases += [(f"batch{b}_c32", "POST", f"/wfpredict/batch{b}_wf", 32) for b in BATCHES]
    phases += [(f"hop{h}_c1", "POST", f"/wfpredict/hop{h}_wf", 1) for h in HOPS]
    return phases


def image_phases() -> list[tuple[str, str, str, int]]:
    """The image pipeline's phases: a JPEG body, 1 and 16 clients."""
    return [(f"image_c{c}", "POST", IMAGE_PATH, c) for c in IMAGE_CLIENTS]


def hop_slope_us(phases: dict[str, Any]) -> float | None:
    """Least-squares slope of p50 over the chain length, in microseconds per hop."""
    points = [(h, phases[f"hop{h}_c1"]["p50"]) for h in HOPS if f"hop{h}_c1" in phases]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return round(slope * 1000, 1)


def _load_args(name: str, clients: int, loads: Workloads, args: argparse.Namespace
               ) -> dict[str, Any]:
    """run_load's keyword arguments for one phase (body, headers, bounds)."""
    image = name.startswith("image_")
    # NOTE: the image phases' warm-up is short: warm_up() ran the pipeline already
    kw: dict[str, Any] = {"body": loads.jpeg if image else PAYLOAD,
                          "headers": JPEG if image else JSON, "concurrency": clients,
                          "warmup": min(args.warmup, 4) if image else args.warmup}
    if clients == 1:
        kw.update(duration=args.duration * 3,
                  max_requests=args.image_requests if image else args.requests)
    else:
        kw.update(duration=args.duration)
    return kw


def warm_up(server: Server, loads: Workloads, args: argparse.Namespace) -> dict[str, Any]:
    """Every path of the matrix answered by every server process (``warm_processes``), then the
    image pipeline at its full concurrency for a while (the classifier's batch shapes)."""
    seen: dict[str, Any] = {}
    paths = {path: method for _, method, path, _ in matrix() + image_phases()}
    for path, method in paths.items():
        image = path == IMAGE_PATH
        seen[path] = warm_processes(server.inference, path, method=method,
                                    body=loads.jpeg if image else PAYLOAD,
                                    headers=JPEG if image else JSON,
                                    processes=server.processes,
                                    per_process=5 if image else 10, timeout=120)
    run_load(server.inference, IMAGE_PATH, body=loads.jpeg, headers=JPEG,
             concurrency=max(IMAGE_CLIENTS), duration=args.image_warm, warmup=0)
    return seen


def bench_server(server: Server, loads: Workloads, args: argparse.Namespace) -> dict[str, Any]:
    sys.stderr.write(f"== {server.name}: starting\n")
    server.start(PAYLOAD)
    assert server.pid is not None
    time.sleep(1.0)
    idle = tree_memory(server.pid)
    seen = warm_up(server, loads, args)
    time.sleep(1.0)
    warm = tree_memory(server.pid)
    sys.stderr.write(f"   warmed up: PSS {warm['pss_mb']:.0f} MB, {warm['processes']} "
                     f"processes; answers per process: {next(iter(seen.values()))}\n")
    monitor = TreeMonitor(server.pid)
    monitor.start()
    phases: dict[str, Any] = {}
    try:
        for name, method, path, clients in matrix() + image_phases():
            cpu0 = cpu_seconds(tree(server.pid))
            result = run_load(server.inference, path, method=method,
                              **_load_args(name, clients, loads, args))
            phases[name] = result.as_dict()
            cpu = cpu_seconds(tree(server.pid)) - cpu0
            phases[name]["server_cpu_ms_per_req"] = round(cpu * 1000 / max(result.ok, 1), 3)
            sys.stderr.write(f"   {name:12s} ok={result.ok:6d} err={result.errors} "
                             f"p50={result.p50:8.3f} p99={result.p99:8.3f} rps={result.rps} "
                             f"gen_cpu={result.client_cpu_share:.0%}\n")
    finally:
        memory = monitor.stop()
        server.stop()
    b1, b8 = phases.get("batch1_c32", {}).get("rps"), phases.get("batch8_c32", {}).get("rps")
    return {
        "workers": server.processes if isinstance(server, Wfserve) else None,
        "cold_start_s": server.cold_start_s,
        "idle_rss_mb": round(idle["rss_mb"], 1),
        "idle_pss_mb": round(idle["pss_mb"], 1),
        "warm_memory": {"pss_mb": round(warm["pss_mb"], 1), "rss_mb": round(warm["rss_mb"], 1),
                        "processes": int(warm["processes"])},
        "warm_answers": seen,
        "memory": memory,
        "phases": phases,
        "hop_us": hop_slope_us(phases),
        "batching_gain": round(b8 / b1, 2) if b1 and b8 else None,
        "stalls": sum(p["stalls"] for p in phases.values()),
        "errors": sum(p["errors"] for p in phases.values()),
    }


def measure_memory(loads: Workloads, root: Path, args: argparse.Namespace,
                   servers: dict[str, Any]) -> dict[str, Any]:
    """The server tree's PSS after the warm-up, wfserve at each N of ``--memory-workers``: from
    the matrix's own server where it ran that N, else from one started for this alone."""
    out: dict[str, Any] = {}
    for n in args.memory_workers:
        measured = servers.get(f"wfserve-n{n}", {}).get("warm_memory")
        if measured:
            out[str(n)] = {**measured, "source": "matrix server, after its warm-up"}
            continue
        workdir = root / f"memory-n{n}"
        workdir.mkdir()
        server = Wfserve(loads.model_store, loads.workflow_store, workdir, workers=n,
                         workflows=WORKFLOWS)
        sys.stderr.write(f"== memory: {server.name}\n")
        server.start(PAYLOAD)
        try:
            assert server.pid is not None
            warm_up(server, loads, args)
            time.sleep(1.0)
            warm = tree_memory(server.pid)
        finally:
            server.stop()
        out[str(n)] = {"pss_mb": round(warm["pss_mb"], 1), "rss_mb": round(warm["rss_mb"], 1),
                       "processes": int(warm["processes"]),
                       "source": "started for this, same warm-up"}
        sys.stderr.write(f"   PSS {warm['pss_mb']:.0f} MB\n")
    return out


def measure_floor(loads: Workloads, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """gunicorn's own ceiling on this machine: a bare echo app, WSGI (gthread) and ASGI
    (uvicorn worker, httptools), at each N of ``--workers``, 1 and 32 clients."""
    kinds = ["gthread"] + (["uvicorn"] if EchoFloor.asgi_available() else [])
    out: dict[str, Any] = {}
    for kind in kinds:
        for n in args.workers:
            workdir = root / f"floor-{kind}-n{n}"
            workdir.mkdir()
            floor = EchoFloor(loads.model_store, loads.workflow_store, workdir, workers=n,
                              kind=kind)
            floor.start(PAYLOAD)
            assert floor.pid is not None
            phases: dict[str, Any] = {}
            try:
                warm_processes(floor.inference, "/", body=PAYLOAD, headers=JSON, processes=1)
                for clients in (1, 32):
                    cpu0 = cpu_seconds(tree(floor.pid))
                    result = run_load(floor.inference, "/", body=PAYLOAD, headers=JSON,
                                      concurrency=clients, duration=args.duration,
                                      max_requests=args.requests * 10 if clients == 1 else None,
                                      warmup=args.warmup)
                    phases[f"echo_c{clients}"] = result.as_dict()
                    cpu = cpu_seconds(tree(floor.pid)) - cpu0
                    phases[f"echo_c{clients}"]["server_cpu_ms_per_req"] = round(
                        cpu * 1000 / max(result.ok, 1), 3)
                    sys.stderr.write(f"   {floor.name:11s} c{clients:<3d} p50={result.p50:8.3f} "
                                     f"rps={result.rps} gen_cpu={result.client_cpu_share:.0%}\n")
            finally:
                floor.stop()
            out[floor.name] = {"kind": kind, "workers": n, "phases": phases}
    if len(kinds) == 1:
        out["note"] = "uvicorn/httptools not importable: the ASGI floor was not measured"
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


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", choices=["torchserve"], help="also run TorchServe 0.12.0")
    parser.add_argument("--workers", type=_ints, default=[1, 2],
                        help="wfserve server processes to measure, e.g. 1,2 (default)")
    parser.add_argument("--memory-workers", type=_ints, default=[1, 2, 4],
                        help="wfserve server processes whose PSS is measured (default 1,2,4)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    parser.add_argument("--requests", type=int, default=300, help="requests per 1-client phase")
    parser.add_argument("--image-requests", type=int, default=50,
                        help="requests in the image pipeline's 1-client phase")
    parser.add_argument("--image-warm", type=float, default=3.0,
                        help="seconds of uncounted 16-client image load after the warm-up")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted requests per phase")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 s phases, 50 requests (20 images), warm-up 5")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--record", action="store_true",
                        help="also put the Markdown at the top of bench/RESULTS.md")
    parser.add_argument("--ray", action="store_true",
                        help="the Ray executor against threaded and Ray Serve (needs ray[serve])")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.requests, args.image_requests = 2.0, 50, 20
        args.image_warm, args.warmup = 1.0, 5
    started = time.strftime("%Y-%m-%dT%H-%M-%S")
    run: dict[str, Any] = {"started": started, "machine": machine(),
                           "command": "python -m bench " + " ".join(argv or sys.argv[1:]),
                           "workers": args.workers, "servers": {}, "notes": []}
    if args.ray:
        return ray_main(args, run)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wfserve-bench-") as tmp:
        root = Path(tmp)
        sys.stderr.write("building archives with the official archivers...\n")
        loads = build_workloads(root / "stores")
        servers: list[tuple[str, Any]] = [
            (f"wfserve-n{n}", lambda w, n=n: Wfserve(loads.model_store, loads.workflow_store, w,
                                                     workers=n, workflows=WORKFLOWS))
            for n in args.workers]
        if args.peer == "torchserve":
            if TorchServe.available():
                servers.append(("torchserve", lambda w: TorchServe(
                    loads.model_store, loads.workflow_store, w, workflows=WORKFLOWS)))
            else:
                run["notes"].append("TorchServe peer requested but not available (no venv at "
                                    "$VENV or no java): wfserve alone was measured.")
        else:
            run["notes"].append("No peer: wfserve alone (add --peer torchserve for the side by "
                                "side).")
        sys.stderr.write("floors: gunicorn echo apps...\n")
        run["floor"] = measure_floor(loads, root, args)
        sys.stderr.write("in-process floors (handoff, torch threads, seq_wf chain)...\n")
        run["floors"] = measure_floors(loads)
        for name, make in servers:
            workdir = root / name
            workdir.mkdir()
            try:
                run["servers"][name] = bench_server(make(workdir), loads, args)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                if name != "torchserve":
                    raise
                run["notes"].append(f"The {name} peer failed and was left out: {exc}")
                sys.stderr.write(run["notes"][-1] + "\n")
        run["memory"] = measure_memory(loads, root, args, run["servers"])
    run["wall_s"] = round(time.monotonic() - began, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / started
    base.with_suffix(".json").write_text(json.dumps(run, indent=2))
    text = workers_markdown(run)
    png = plot(run, base.with_suffix(".png"))
    figure = "\n![latency and throughput per phase]({})\n"
    base.with_suffix(".md").write_text(text + (figure.format(png.name) if png else ""))
    if args.record:
        if png:
            shutil.copyfile(png, HERE / "RESULTS-workers.png")
        record_top(HERE / "RESULTS.md",
                   text + (figure.format("RESULTS-workers.png") if png else ""))
    sys.stdout.write(text + "\n")
    sys.stderr.write(f"done in {run['wall_s']:.0f} s\n")
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
