"""``python -m bench --ray``: the Ray executor against the threaded executor and against the same
pipelines written as a Ray Serve application, in one run on this machine.

Three targets, each on loopback HTTP with the same payload: wfserve (threaded), wfserve
(``executor: ray``, local Ray with 2 CPUs), Ray Serve (:mod:`bench.ray_serve_app`, local Ray
with 2 CPUs). Phases: seq and par at 1 and 8 clients, chains of 1, 2, 4, 8 pass-through steps
at 1 client (per-hop cost = least-squares slope of p50 over the chain length).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.load import run_load
from bench.servers import Wfserve
from bench.servers import WfserveRay
from bench.servers import free_port
from bench.workloads import HOPS

PAYLOAD = json.dumps({"input": [0.1, 0.2, 0.3, 0.4]}).encode()
JSON = {"Content-Type": "application/json"}
CLIENTS = (1, 8)


def phases(prefix: str, names: dict[str, str]) -> list[tuple[str, str, int]]:
    """(phase, path, clients) for one target; ``names`` maps seq/par/hopN to its paths."""
    out = [(f"{w}_c{c}", prefix + names[w], c) for w in ("seq", "par") for c in CLIENTS]
    out += [(f"hop{h}_c1", prefix + names[f"hop{h}"], 1) for h in HOPS]
    return out


def measure(base: str, plan: list[tuple[str, str, int]], args: argparse.Namespace
            ) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, path, clients in plan:
        r = run_load(base, path, method="POST", body=PAYLOAD, headers=JSON, concurrency=clients,
                     duration=args.duration, max_requests=args.requests if clients == 1 else None,
                     warmup=args.warmup)
        results[name] = r.as_dict()
        sys.stderr.write(f"   {name:10s} ok={r.ok:6d} err={r.errors} p50={r.p50:8.3f} "
                         f"rps={r.rps}\n")
    return results


def hop_slope_ms(results: dict[str, Any]) -> float | None:
    points = [(h, results[f"hop{h}_c1"]["p50"]) for h in HOPS if f"hop{h}_c1" in results]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def wfserve(kind: type[Wfserve], loads: Any, root: Path, args: argparse.Namespace
            ) -> dict[str, Any]:
    workdir = root / kind.name
    workdir.mkdir()
    server = kind(loads.model_store, loads.workflow_store, workdir)
    sys.stderr.write(f"== {kind.name}: starting\n")
    server.start(PAYLOAD)
    try:
        for h in HOPS:
            server.register(f"hop{h}_wf.war")
        names = {"seq": "seq_wf", "par": "par_wf", **{f"hop{h}": f"hop{h}_wf" for h in HOPS}}
        results = measure(server.inference, phases("/wfpredict/", names), args)
    finally:
        server.stop()
    return {"cold_start_s": server.cold_start_s, "phases": results}


def ray_serve(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tests.archives import save_torchscript

    models = root / "ray_serve_models"
    models.mkdir()
    for name in ("m1", "m2"):
        save_torchscript(name, models)
    port = free_port()
    sys.stderr.write("== ray-serve: starting\n")
    started = time.monotonic()
    log = open(root / "ray_serve.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen([sys.executable, "-m", "bench.ray_serve_app", str(port), str(models),
                             ",".join(map(str, HOPS))], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.post(base + "/par", content=PAYLOAD, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Ray Serve app did not start; see " + str(log.name))
            time.sleep(0.5)
        cold = round(time.monotonic() - started, 3)
        names = {"seq": "seq", "par": "par", **{f"hop{h}": f"hop{h}" for h in HOPS}}
        results = measure(base, phases("/", names), args)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return {"cold_start_s": cold, "phases": results}


def run(loads: Any, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Measure the three targets; ``{"targets": {name: {...}}}``."""
    targets = {"wfserve (threaded)": wfserve(Wfserve, loads, root, args),
               "wfserve (executor: ray)": wfserve(WfserveRay, loads, root, args),
               "Ray Serve (DeploymentHandle)": ray_serve(root, args)}
    return {"targets": targets}


def markdown(run_: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    """The "Ray executor" section of RESULTS.md."""
    targets = run_["targets"]
    names = list(targets)
    rows = [("seq p50, 1 client (ms)", "seq_c1", "p50"),
            ("par p50, 1 client (ms)", "par_c1", "p50"),
            ("seq rps, 8 clients", "seq_c8", "rps"), ("par rps, 8 clients", "par_c8", "rps"),
            ("seq p50, 8 clients (ms)", "seq_c8", "p50"),
            ("par p50, 8 clients (ms)", "par_c8", "p50")]
    rows += [(f"{h}-step chain p50, 1 client (ms)", f"hop{h}_c1", "p50") for h in HOPS]
    lines = ["## Ray executor", "",
             f"`{command}` on {machine['cpu']}, {machine['cores']} cores, Python "
             f"{machine['python']}, torch {machine['torch']}; Ray clusters local with 2 CPUs, "
             "all on one machine shared with the load generator (loopback HTTP). "
             "Same seq/par models and pre/post code in all three.", "",
             "| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, phase, key in rows:
        cells = [targets[n]["phases"].get(phase, {}).get(key) for n in names]
        lines.append(f"| {label} | " + " | ".join(_fmt(c) for c in cells) + " |")
    slopes = [hop_slope_ms(targets[n]["phases"]) for n in names]
    lines.append("| per-hop cost (ms, slope of p50 over chain length) | "
                 + " | ".join(_fmt(s) for s in slopes) + " |")
    lines.append("| cold start (s) | " + " | ".join(_fmt(targets[n]["cold_start_s"])
                                                   for n in names) + " |")
    errors = [sum(p["errors"] for p in targets[n]["phases"].values()) for n in names]
    lines.append("| errors | " + " | ".join(str(e) for e in errors) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


