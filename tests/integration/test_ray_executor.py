"""``--executor ray``: the same archives and REST API on a real local Ray cluster (2 CPUs),
answering exactly what the threaded executor answers, with the same per-node metrics."""

import concurrent.futures
import json
import shutil

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.archives import ASSETS
from tests.archives import SAMPLE
from tests.archives import build_war
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
JSON = {"Content-Type": "application/json"}
CONTRACT = ASSETS / "contract"
BAD = ASSETS / "bad"
#: the per-node series a handler call records, by the same plugin on either executor
HANDLER_SERIES = ("wfserve_node_requests_total", "wfserve_node_batch_size_count",
                  "wfserve_node_batch_size_sum", "wfserve_node_duration_seconds_count",
                  "wfserve_node_errors_total")
INPUTS = [SAMPLE, [1.0, -2.0, 0.5, 3.25], *([i / 10, 0.2, -i / 7, 1.0] for i in range(22))]


@pytest.fixture(scope="module")
def stores(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_stores")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    build_war(root / "wf_store", "failnode_wf", spec_file=BAD / "failnode_workflow.yaml",
              handler=BAD / "failnode_handler.py")
    return root


def serve(stores, workdir, *args):
    workdir.mkdir()
    return WfserveServer(workdir, "--model-store", str(stores / "model_store"),
                         "--workflow-store", str(stores / "wf_store"), "--no-snapshot",
                         "--workflows", "seq_wf.war", "par=par_wf.war", "failnode_wf.war", *args)


def answers(server):
    """Every input to both workflows, 8 clients at a time: ``{(workflow, x): (status, body)}``."""

    def one(job):
        name, x = job
        r = httpx.post(f"{server.inference}/wfpredict/{name}",
                       content=json.dumps({"input": x}).encode(), headers=JSON, timeout=60)
        return job[0], tuple(x), r.status_code, r.content

    jobs = [(name, x) for name in ("seq_wf", "par") for x in INPUTS]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return {(n, x): (status, body) for n, x, status, body in pool.map(one, jobs)}


def handler_metrics(server):
    """One request to failnode_wf (its node ``boom`` raises ``RuntimeError``, retried once),
    then the per-node handler series scraped from ``/metrics``: ``{(sample, labels): value}``."""
    r = httpx.post(f"{server.inference}/wfpredict/failnode_wf",
                   content=json.dumps({"input": SAMPLE}).encode(), headers=JSON, timeout=60)
    assert r.status_code == 500, r.text
    text = httpx.get(f"{server.metrics}/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name in HANDLER_SERIES}


def node(workflow, name, **labels):
    return tuple(sorted({"workflow": workflow, "node": name, **labels}.items()))


def failing_at_load_is_torchserves_500(server, stores):
    """A function node whose ``fn(None, context)`` raises in its actor fails the registration
    with TorchServe's message, as on the threaded executor."""
    build_war(stores / "wf_store", "crash_wf", spec_file=CONTRACT / "crash_workflow.yaml",
              handler=CONTRACT / "entry_handler.py")
    r = httpx.post(f"{server.management}/workflows", params={"url": "crash_wf.war"}, timeout=60)
    assert (r.status_code, r.json()["message"]) == (500, (
        "Workflow crash_wf has failed to register. Failures: [Failed to start workers for "
        "model crash_wf__crash version: 1.0]")), r.text
    assert httpx.get(f"{server.management}/workflows/crash_wf").status_code == 404


def test_ray_executor_answers_as_the_threaded_one_over_http(stores, tmp_path):
    with serve(stores, tmp_path / "threaded") as threaded:
        reference = answers(threaded)
        reference_metrics = handler_metrics(threaded)
    assert len(reference) == 48
    for name in ("pre", "m1", "m2", "post"):  # batch-size 1: one call per row
        assert reference_metrics["wfserve_node_requests_total", node("seq_wf", name)] == 24
        assert reference_metrics["wfserve_node_batch_size_count", node("seq_wf", name)] == 24
    assert reference_metrics["wfserve_node_requests_total", node("failnode_wf", "boom")] == 2
    assert reference_metrics["wfserve_node_errors_total",
                             node("failnode_wf", "boom", type="RuntimeError")] == 2
    assert all(status == 200 for status, _ in reference.values())
    with serve(stores, tmp_path / "ray", "--executor", "ray", "--ray-num-cpus", "2") as ray_srv:
        assert answers(ray_srv) == reference
        assert handler_metrics(ray_srv) == reference_metrics  # the actors' calls, counted
        failing_at_load_is_torchserves_500(ray_srv, stores)
        described = httpx.get(f"{ray_srv.management}/workflows/seq_wf", timeout=30)
        assert described.status_code == 200, described.text
        nodes = described.json()[0]["nodes"]
        assert list(nodes) == ["pre", "m1", "m2", "post"]
        assert [w["status"] for n in nodes.values() for w in n["workers"]] == ["READY"] * 4
    log = ray_srv.log()
    assert "connecting to Ray" in log
    assert "SIGTERM received" not in log  # the server's graceful stop stayed in charge
