"""Under concurrency every request gets exactly its own answer; random DAGs match a reference.

TorchServe 0.12.0 loses node responses under load (pairing by queue position); here pairing is
by identity, so none is ever lost, duplicated or swapped.
"""

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from tests.executor_fakes import make_executor
from tests.executor_fakes import request
from wfserve.plugins.serializers import for_object

STRESS_SPEC = """
models:
  retry-attempts: 0
  m1: {url: m1.mar, batch-size: 4, max-batch-delay: 2, max-workers: 2}
  m2: {url: m2.mar, batch-size: 3, max-batch-delay: 1, max-workers: 3}
  post: {url: post.mar, batch-size: 2, max-batch-delay: 1}
dag:
  pre: [m1, m2]
  m1: [post]
  m2: [post]
"""


def jittery(fn, calls):
    """A handler factory: random small delays, one output per row, batch sizes recorded."""

    def factory(index):
        rng = random.Random(index)

        def handler(batch, meta):
            calls.append(len(batch))
            if rng.random() < 0.3:
                time.sleep(rng.random() * 0.002)
            return [fn(row, m) for row, m in zip(batch, meta, strict=True)]

        return handler

    return factory


def test_stress_diamond_every_request_gets_its_own_answer(tmp_path):
    calls = []
    ex, _ = make_executor(tmp_path, STRESS_SPEC, {
        "pre": jittery(lambda r, m: r["body"] + b"|" + m.request_id.encode(), calls),
        "m1": jittery(lambda r, m: r["body"] + b"|m1", calls),
        "m2": jittery(lambda r, m: r["body"][::-1], calls),
        "post": jittery(lambda r, m: {"a": r["m1"].decode(), "b": r["m2"].decode()}, calls),
    })
    threads, per_thread = 32, 200
    seen: dict[str, bytes] = {}
    lock = threading.Lock()

    def client(t):
        for i in range(per_thread):
            rid = f"{t}-{i}"
            body = f"in-{rid}".encode()
            out = ex.submit(request(body, rid)).result(30).outputs["post"]
            with lock:
                assert rid not in seen
                seen[rid] = out

    start = time.monotonic()
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(client, range(threads)))
    finally:
        ex.close(5)
    assert time.monotonic() - start < 40
    assert len(seen) == threads * per_thread
    for rid, out in seen.items():
        base = f"in-{rid}|{rid}"
        assert json.loads(out) == {"a": base + "|m1", "b": base[::-1]}, rid
    assert max(calls) > 1  # batching did happen
    assert ex.describe().inflight == 0


# --- property: random DAGs against a sequential reference ------------------------------------


@st.composite
def dags(draw):
    """A rooted DAG on n0..nk (every non-root node has >= 1 earlier parent) with node configs."""
    n = draw(st.integers(1, 6))
    parents = {0: []}
    for i in range(1, n):
        parents[i] = sorted(draw(st.sets(st.integers(0, i - 1), min_size=1, max_size=min(i, 3))))
    models = {i: draw(st.integers(1, 3)) for i in range(n) if draw(st.booleans())}
    typed = draw(st.booleans())
    kinds = {i: draw(st.sampled_from(["bytes", "str", "dict", "list"])) for i in range(n)}
    return n, parents, models, typed, kinds


def spec_text(n, parents, models, typed):
    lines = ["models:", "  retry-attempts: 1"]
    if typed:
        lines.append("  typed: true")
    lines += [f"  n{i}: {{url: n{i}.mar, batch-size: {b}, max-batch-delay: 1}}"
              for i, b in models.items()]
    lines.append("dag:")
    for i in range(n):
        children = [f"n{c}" for c in range(n) if i in parents[c]]
        lines.append(f"  n{i}: [{', '.join(children)}]")
    return "\n".join(lines) + "\n"


def node_fn(name, kind):
    """A deterministic node function of its input row, returning an output of ``kind``."""

    def fn(row):
        text = name + "(" + ",".join(f"{k}={canon(v)}" for k, v in sorted(row.items())) + ")"
        return {"bytes": text.encode(), "str": text, "dict": {"v": text}, "list": [text]}[kind]

    return fn


def canon(value):
    if isinstance(value, bytes):
        return "b:" + value.hex()
    return "o:" + json.dumps(value, sort_keys=True)


def reference(n, parents, typed, kinds, row):
    """Sequential evaluation with TorchServe's input shapes and conversions."""
    out = {}
    for i in range(n):
        ps = parents[i]
        if not ps:
            inp = row
        elif len(ps) == 1:
            inp = {"body": out[ps[0]]}
        else:
            inp = {f"n{p}": out[p] for p in ps}
        value = node_fn(f"n{i}", kinds[i])(inp)
        out[i] = value if typed else for_object(value).serialize(value)
    leaves = [i for i in range(n) if not any(i in parents[c] for c in range(n))]
    return {f"n{i}": out[i] for i in leaves}


@settings(max_examples=30, deadline=None)
@given(dags(), st.lists(st.binary(max_size=4), min_size=1, max_size=6))
def test_random_dags_match_the_sequential_reference(tmp_path_factory, dag, bodies):
    n, parents, models, typed, kinds = dag
    factories = {}
    for i in range(n):
        fn = node_fn(f"n{i}", kinds[i])
        factories[f"n{i}"] = lambda index, fn=fn: (lambda batch, meta: [fn(r) for r in batch])
    tmp = tmp_path_factory.mktemp("dag")
    ex, _ = make_executor(tmp, spec_text(n, parents, models, typed), factories)
    try:
        futures = [ex.submit(request(b, f"r{k}")) for k, b in enumerate(bodies)]
        results = [f.result(10).outputs for f in futures]
    finally:
        ex.close(5)
    for body, got in zip(bodies, results, strict=True):
        assert got == reference(n, parents, typed, kinds, {"body": body})
