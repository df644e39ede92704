"""Flame graph of the wfserve worker under load: ``python -m bench.profile [--phase seq_c32]``.

Starts wfserve with the benchmark's archives, drives one phase of the matrix with the load
generator and records the gunicorn worker with py-spy (``pip install py-spy``) in ``--gil``
mode (only the thread holding the GIL is sampled, so the graph shows where Python time goes).
Writes ``bench/profile-<phase>.svg``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.__main__ import JSON
from bench.__main__ import PAYLOAD
from bench.__main__ import matrix
from bench.load import run_load
from bench.procmon import tree
from bench.servers import Wfserve
from bench.workloads import build_workloads

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--phase", default="seq_c32", help="a phase of the matrix")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.stderr.write("py-spy is not installed: pip install py-spy\n")
        return 2
    phases = {name: (method, path, clients) for name, method, path, clients in matrix()}
    method, path, clients = phases[args.phase]
    out = HERE / f"profile-{args.phase}.svg"
    with tempfile.TemporaryDirectory(prefix="wfserve-profile-") as tmp:
        root = Path(tmp)
        loads = build_workloads(root / "stores")
        (root / "w").mkdir()
        server = Wfserve(loads.model_store, loads.workflow_store, root / "w")
        server.start(PAYLOAD)
        try:
            for war in ("batch1_wf.war", "batch8_wf.war", "hop1_wf.war", "hop2_wf.war",
                        "hop4_wf.war", "hop8_wf.war"):
                if war.split("_")[0] in path:
                    server.register(war)
            assert server.pid is not None
            worker = next(p for p in tree(server.pid) if p != server.pid)
            recorder = subprocess.Popen(
                [spy, "record", "--gil", "-r", "250", "-d", str(int(args.seconds)), "-p",
                 str(worker), "-f", "flamegraph", "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result = run_load(server.inference, path, method=method, body=PAYLOAD, headers=JSON,
                              concurrency=clients, duration=args.seconds, warmup=20)
            recorder.wait(args.seconds + 30)
        finally:
            server.stop()
    sys.stdout.write(f"{args.phase}: p50 {result.p50} ms, {result.rps} rps while profiled; "
                     f"flame graph: {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
