"""The benchmark's seq and par pipelines written as a Ray Serve application, the way a Ray Serve
user composes them: one deployment per step, composed through ``DeploymentHandle`` calls.

Same models (the TorchScript m1/m2 of ``tests/archives.py``) and the same pre/post/aggregate
code (``tests/assets/workflow_handler.py``), JSON bytes between steps as in the workflow's
compatibility mode. Also ``hop<N>``: a chain of N pass-through deployments, for the per-hop
cost. ``deploy(port, model_dir)`` starts Serve on 127.0.0.1:port with routes ``/seq``,
``/par`` and ``/hop<N>``; call it after ``ray.init``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ray import serve

HANDLERS = Path(__file__).resolve().parents[1] / "tests" / "assets" / "workflow_handler.py"


def _functions():
    spec = importlib.util.spec_from_file_location("bench_wf_handler", HANDLERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Step:
    """One function node (pre, post or aggregate): JSON bytes in, JSON bytes out."""

    def __init__(self, name: str) -> None:
        self.fn = getattr(_functions(), name)

    def __call__(self, row: dict) -> bytes:
        return json.dumps(self.fn([row], None)[0]).encode()


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Model:
    """One TorchScript model, as model_handler.py runs it."""

    def __init__(self, path: str) -> None:
        import torch

        self.torch = torch
        self.model = torch.jit.load(path, map_location="cpu").eval()

    def __call__(self, body: bytes) -> bytes:
        data = json.loads(body)
        xs = self.torch.tensor([data.get("input", data.get("output"))], dtype=self.torch.float32)
        with self.torch.inference_mode():
            ys = self.model(xs)
        return json.dumps({"output": [round(v, 6) for v in ys[0].tolist()]}).encode()


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Seq:
    """pre -> m1 -> m2 -> post; responses passed on without awaiting (Serve's composition)."""

    def __init__(self, pre, m1, m2, post) -> None:
        self.pre, self.m1, self.m2, self.post = pre, m1, m2, post

    async def __call__(self, request) -> bytes:
        body = await request.body()
        x = self.pre.remote({"body": body})
        y = await self.m2.remote(self.m1.remote(x))  # only top-level responses are resolved
        return await self.post.remote({"body": y})


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Par:
    """pre -> [m1, m2] -> aggregate."""

    def __init__(self, pre, m1, m2, aggregate) -> None:
        self.pre, self.m1, self.m2, self.aggregate = pre, m1, m2, aggregate

    async def __call__(self, request) -> bytes:
        body = await request.body()
        x = await self.pre.remote({"body": body})
        a, b = self.m1.remote(x), self.m2.remote(x)
        return await self.aggregate.remote({"m1": await a, "m2": await b})


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Hop:
    """A pass-through step."""

    def __call__(self, body: bytes) -> bytes:
        return body


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Chain:
    """N pass-through deployments in a row."""

    def __init__(self, *hops) -> None:
        self.hops = hops

    async def __call__(self, request) -> bytes:
        body = await request.body()
        for hop in self.hops:
            body = await hop.remote(body)
        return body


def deploy(port: int, model_dir: Path, hops: tuple[int, ...]) -> None:
    """Start Serve on 127.0.0.1:``port`` with /seq, /par and /hop<N> (m1.pt, m2.pt in
    ``model_dir``)."""
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    m1, m2 = (Model.options(name=f"{n}").bind(str(model_dir / f"{n}.pt")) for n in ("m1", "m2"))
    steps = {n: Step.options(name=n).bind(n) for n in ("pre", "post", "aggregate")}
    serve.run(Seq.bind(steps["pre"], m1, m2, steps["post"]), name="seq", route_prefix="/seq")
    m1b, m2b = (Model.options(name=f"{n}").bind(str(model_dir / f"{n}.pt")) for n in ("m1", "m2"))
    pre = Step.options(name="pre").bind("pre")
    serve.run(Par.bind(pre, m1b, m2b, steps["aggregate"]), name="par", route_prefix="/par")
    for n in hops:
        chain = Chain.bind(*(Hop.options(name=f"h{i}").bind() for i in range(n)))
        serve.run(chain, name=f"hop{n}", route_prefix=f"/hop{n}")


def main() -> None:
    """``python -m bench.ray_serve_app PORT MODEL_DIR HOPS``: a local 2-CPU Ray, the app,
    then wait until killed."""
    import sys
    import time

    import ray

    port, model_dir, hops = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    deploy(port, model_dir, tuple(int(h) for h in hops.split(",")))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
