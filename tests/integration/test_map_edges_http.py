"""Map edges (``edges: {a -> b: {map: true}}``, issue 21) on a real server with archives from the
official archivers: each item of ``detect``'s list goes through the model's batcher, the
answers are gathered in item order, concurrent requests each get their own; the Ray engine
answers alike (the feature lives in the executor core)."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.archives import build_war
from tests.archives import run_model
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration

SPEC = """\
models:
  batch-size: 4
  max-batch-delay: 20
  m1:
    url: m1.mar
dag:
  detect: [m1]
edges:
  detect -> m1: {map: true}
"""

HANDLER = '''\
def detect(data, context):
    if data is None:
        return None
    return [[{"input": crop} for crop in (row.get("data") or row.get("body"))["crops"]]
            for row in data]
'''


@pytest.fixture(scope="module")
def stores(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("map")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    (root / "map.yaml").write_text(SPEC)
    (root / "map_handler.py").write_text(HANDLER)
    build_war(root / "wf_store", "mapwf", spec_file=root / "map.yaml",
              handler=root / "map_handler.py")
    return root


def serve(root, name, *args):
    (root / name).mkdir()
    return WfserveServer(root / name, "--model-store", str(root / "model_store"),
                         "--workflow-store", str(root / "wf_store"), "--no-snapshot",
                         "--workflows", "mapwf.war", *args)


def crops(seed, n):
    return [[round(0.1 * (seed + i + k), 3) for k in range(4)] for i in range(n)]


def expected(items):
    return [{"output": [round(v, 6) for v in out]} for out in run_model("m1", items)] \
        if items else []


def outputs(answer):
    """``(status, [[floats] per item])`` of an answer, for a comparison with a tolerance
    (a batch of several items rounds the last digit differently from a batch of one)."""
    status, body = answer
    return status, [item["output"] for item in body]


def same(answers, cases):
    """Each answer is its own case's items, in order, to 1e-5."""
    assert len(answers) == len(cases)
    for answer, items in zip(answers, cases, strict=True):
        status, got = outputs(answer)
        want = [item["output"] for item in expected(items)]
        assert status == 200 and len(got) == len(want), (answer, items)
        assert [v for row in got for v in row] == pytest.approx(
            [v for row in want for v in row], abs=1e-5)


def predict(server, items):
    r = httpx.post(f"{server.inference}/wfpredict/mapwf", content=json.dumps({"crops": items}),
                   headers={"Content-Type": "application/json"}, timeout=60)
    return r.status_code, r.json()


def test_items_are_answered_in_order_and_each_request_gets_its_own(stores):
    cases = [crops(seed, n) for seed, n in enumerate([3, 1, 0, 5, 2, 4, 3, 6] * 4)]
    with serve(stores, "threaded") as server:
        assert predict(server, cases[0]) == (200, expected(cases[0]))
        assert predict(server, []) == (200, [])
        with ThreadPoolExecutor(max_workers=len(cases)) as pool:
            answers = list(pool.map(lambda items: predict(server, items), cases))
        same(answers, cases)
        metrics = httpx.get(f"{server.metrics}/metrics", timeout=30).text
        described = httpx.get(f"{server.management}/workflows/mapwf", timeout=30).json()[0]
    assert described["edges"] == {"detect -> m1": {"map": True}}
    rows = next(float(line.split()[-1]) for line in metrics.splitlines()
                if line.startswith('wfserve_node_requests_total{node="m1",workflow="mapwf"}'))
    assert rows == sum(len(items) for items in cases) + len(cases[0])  # one call row per item


def test_the_ray_engine_maps_as_the_threaded_one(stores):
    pytest.importorskip("ray")
    cases = [crops(seed, n) for seed, n in enumerate([3, 0, 2])]
    with serve(stores, "ray", "--executor", "ray", "--ray-num-cpus", "2") as server:
        same([predict(server, items) for items in cases], cases)
