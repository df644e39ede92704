"""In-process floors: what a request costs below wfserve's own code, on this machine.

Measured in a process of their own (``python -m bench.floors``, started by the benchmark
between the servers' runs, on the same archives), so the matrix can say which
part of a ``seq_wf`` request is HTTP, which is the handlers' own work, which is the one thread
handoff the executor needs, and which is wfserve's bookkeeping:

- ``handoff``: one round trip to another Python thread and back (a queue and a future) in a
  tight loop, what running nodes off the HTTP thread costs at least (the inference API runs
  them on it: ``plugins/api/rescue.py`` keeps hung handlers answered at their deadline);
- ``torch_threads``: CPU per call of the peer's model handler (tiny TorchScript model) when 1, 2
  or 4 threads call it at once. PyTorch releases the GIL around every op, so concurrent callers
  hand the GIL back and forth; this is what pipelined model nodes cost in one process;
- ``seq_chain``: ``seq_wf`` loaded in this process through the kernel: its node handlers
  called directly in DAG order with TorchServe's byte conversions (the work a request must
  do), against the executor's submit, wait and render with the nodes run on the calling
  thread (as the inference API runs them) and handed off to a runner thread (as they ran
  before): the difference to the direct calls is wfserve's bookkeeping (attempts, timers,
  metrics, retries), the difference between the two is one handoff in real use.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROUNDS = 3000


def _timed(fn: Callable[[], Any], rounds: int = ROUNDS, warmup: int = 200) -> dict[str, float]:
    """Median-free, plain mean: wall and process CPU microseconds per call of ``fn``."""
    for _ in range(warmup):
        fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        fn()
    return {"wall_us": round((time.perf_counter() - wall) / rounds * 1e6, 1),
            "cpu_us": round((time.process_time() - cpu) / rounds * 1e6, 1)}


def handoff() -> dict[str, float]:
    """One round trip to a waiting thread and back."""
    tasks: queue.SimpleQueue[concurrent.futures.Future[int] | None] = queue.SimpleQueue()

    def serve() -> None:
        while (future := tasks.get()) is not None:
            future.set_result(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def round_trip() -> None:
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        tasks.put(future)
        future.result()

    try:
        return _timed(round_trip)
    finally:
        tasks.put(None)
        thread.join(5)


def torch_threads(model_path: Path) -> dict[str, float]:
    """CPU microseconds per handler call with 1, 2 and 4 threads calling at once."""
    import torch

    with warnings.catch_warnings():  # NOTE: torch 2.13 deprecates jit.load; the peer uses it
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(model_path), map_location="cpu").eval()

    def handle() -> list[dict[str, Any]]:  # the peer's model handler, minus its JSON parsing
        xs = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float32)
        with torch.inference_mode():
            ys = model(xs)
        return [{"output": [round(v, 6) for v in y.tolist()]} for y in ys]

    out: dict[str, float] = {}
    for count in (1, 2, 4):
        calls = ROUNDS // count

        def loop(calls: int = calls) -> None:
            for _ in range(calls):
                handle()

        threads = [threading.Thread(target=loop) for _ in range(count)]
        cpu = time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out[f"threads_{count}_cpu_us"] = round((time.process_time() - cpu) / (calls * count)
                                               * 1e6, 1)
    return out


def seq_chain(model_store: Path, workflow_store: Path, payload: bytes) -> dict[str, Any]:
    """``seq_wf``'s handlers called directly vs through the executor, in this process."""
    from wfserve.kernel.contracts import PredictRequest
    from wfserve.kernel.contracts import RowMeta
    from wfserve.kernel.core import Kernel
    from wfserve.kernel.lifecycle import register_workflow
    from wfserve.kernel.lifecycle import unregister_workflow
    from wfserve.kernel.logs import configure_logging
    from wfserve.kernel.settings import Settings
    from wfserve.plugins.api.decoding import build_row
    from wfserve.plugins.auth.settings import AuthSettings
    from wfserve.plugins.executors.core.outputs import to_wire
    from wfserve.plugins.executors.threaded.inline import offered
    from wfserve.plugins.snapshot.settings import SnapshotSettings

    with tempfile.TemporaryDirectory(prefix="wfserve-floor-") as tmp:
        settings = Settings(model_store=str(model_store), workflow_store=str(workflow_store),
                            run_dir=tmp).with_section(SnapshotSettings(snapshot=False)
                                                      ).with_section(AuthSettings(True))
        with open(Path(tmp) / "floor.log", "w") as log_file:
            configure_logging(settings, log_file)
            kernel = Kernel.create(settings, env={"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"})
            kernel.hooks.startup(kernel)  # the prepare phase only: metrics, as served
            register_workflow(kernel, "seq_wf.war", None)
            try:
                executor = kernel.registry.get("seq_wf", None).executor
                # NOTE: the threaded executor's own handler instances (instrumented, as served)
                # and its byte conversion; a benchmark may look inside, the server never does
                threaded = executor.inner
                handlers = {n: node.workers[0].handler for n, node in threaded.nodes.items()}
                lookup = threaded.engine.lookup
                order = threaded.dag.order
                decode = kernel.hooks.serializer("application/json", payload).deserialize
                meta = [RowMeta("floor", {})]

                def request() -> PredictRequest:
                    row = build_row("application/json", payload, lambda ct, d: decode(d))
                    return PredictRequest(row=row, headers={}, request_id="floor",
                                          deadline=time.monotonic() + 60)

                def direct() -> None:
                    row = request().row
                    for name in order:
                        row = {"body": to_wire(handlers[name]([row], meta), lookup)[0]}

                def handed_off() -> None:
                    executor.render(executor.submit(request()).result())

                def here() -> None:
                    with offered() as offer:
                        ran = executor.submit(request())
                        offer.run()
                    executor.render(ran.result())

                found = {"direct": _timed(direct), "executor_here": _timed(here),
                         "executor_handoff": _timed(handed_off)}
            finally:
                unregister_workflow(kernel, "seq_wf", drain=5.0, keep_downloads=False)
        configure_logging(settings)
    found["bookkeeping_us"] = round(
        found["executor_here"]["wall_us"] - found["direct"]["wall_us"], 1)
    found["handoff_us"] = round(
        found["executor_handoff"]["wall_us"] - found["executor_here"]["wall_us"], 1)
    return found


def measure(model_store: Path, workflow_store: Path, model_path: Path, payload: bytes
            ) -> dict[str, Any]:
    """Every floor, in the order above."""
    return {"pid": os.getpid(), "handoff": handoff(), "torch_threads": torch_threads(model_path),
            "seq_chain": seq_chain(model_store, workflow_store, payload)}


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.floors MODEL_STORE WORKFLOW_STORE MODEL_PT``: the floors as JSON."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        sys.stderr.write(main.__doc__ + "\n")
        return 2
    from bench.__main__ import PAYLOAD

    found = measure(Path(args[0]), Path(args[1]), Path(args[2]), PAYLOAD)
    sys.stdout.write(json.dumps(found) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
