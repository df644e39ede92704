"""The Ray executor on a simulated two-node cluster (``ray.cluster_utils.Cluster``): placement
by custom resource, a killed actor replaced without a failed request, a timed-out attempt
stopped on the cluster."""

import json
import os
import signal
import textwrap
import time

import pytest

from tests.helpers import wait_for
from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import PredictRequest
from wfserve.kernel.contracts import Workflow
from wfserve.kernel.core import Kernel
from wfserve.kernel.errors import Timeout
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings
from wfserve.kernel.spec import parse_spec

pytestmark = [pytest.mark.integration, pytest.mark.ray_cluster]
BUILTIN = ("wfserve.plugins.serializers", "wfserve.plugins.batching",
           "wfserve.plugins.executors.ray")

HANDLER = '''
import json, os, time
import ray

def handle(data, context):
    if data is None:
        return None
    out = []
    node = context.model_name.split("__")[-1]
    for row in data:
        body = row.get("body")
        msg = json.loads(body.decode() if isinstance(body, (bytes, bytearray)) else body)
        if msg.get("log"):  # which nodes' handlers ran, for call counts
            with open(msg["log"], "a") as calls:
                calls.write(node + "\\n")
        if msg.get("at") == node:  # misbehave at this node only
            once = msg.get("hang_once")
            if once and not os.path.exists(once):
                open(once, "w").close()
                time.sleep(msg["sleep"])
                open(msg["marker"], "w").close()  # reached only if the attempt was not stopped
            elif not once:
                time.sleep(msg["sleep"])
        hop = {"node": node, "ray_node": ray.get_runtime_context().get_node_id(),
               "pid": os.getpid()}
        msg["hops"] = msg.get("hops", []) + [hop]
        out.append(json.dumps(msg))
    return out
'''
WAR_HANDLER = '''
def pre(data, context):
    if data is None:
        return None
    return [row.get("body") for row in data]
'''
SPEC = """
models:
  min-workers: 1
  max-workers: 1
  batch-size: 1
  max-batch-delay: 0
  retry-attempts: 2
  timeout-ms: 10000
  pinned:
    url: m.mar
    ray: {num_cpus: 0, resources: {gpu_node: 0.1}}
  timed:
    url: m.mar
    timeout-ms: 1500
    max-workers: 2
    ray: {num_cpus: 0, resources: {cpu_node: 0.1}}
dag:
  pre: [pinned]
  pinned: [timed]
"""


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 1, "resources": {"cpu_node": 1},
                                "include_dashboard": False})
    worker = c.add_node(num_cpus=1, resources={"gpu_node": 1})
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c, worker.node_id
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture
def executor(cluster, tmp_path):
    war, mar = tmp_path / "war", tmp_path / "mar"
    war.mkdir()
    mar.mkdir()
    (war / "wf_handler.py").write_text(textwrap.dedent(WAR_HANDLER))
    (mar / "h.py").write_text(textwrap.dedent(HANDLER))
    settings = Settings(executor="ray")
    pm = make_plugin_manager(settings, builtin=BUILTIN,
                             env={"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    kernel = Kernel.create(settings, pm=pm)
    spec = parse_spec(SPEC, sections=kernel.hooks.spec_sections())
    archive = Archive(kind="war", source=tmp_path / "wf.war", root=war, manifest={}, name="wf",
                      handler="wf_handler.py")
    models = {n.name: Archive(kind="mar", source=tmp_path / "m.mar", root=mar, manifest={},
                              name=n.name, handler="h.py") for n in spec.models}
    ex = kernel.hooks.make_executor(Workflow("wf", "wf.war", spec, spec.dag(), archive, models),
                                    kernel)
    ex.start()
    yield ex
    ex.close(timeout=5)


def predict(ex, msg, timeout=30):
    body = json.dumps(msg).encode()
    result = ex.submit(PredictRequest({"body": body}, {}, "r")).result(timeout)
    return json.loads(result.outputs["timed"])


def worker(ex, node):
    (only,) = ex.describe().nodes[node].workers
    return only


def test_a_node_pinned_by_resource_runs_on_the_node_that_has_it(cluster, executor):
    _, gpu_node = cluster
    hops = predict(executor, {"x": 1})["hops"]
    assert [h["node"] for h in hops] == ["pinned", "timed"]
    assert hops[0]["ray_node"] == gpu_node
    assert hops[1]["ray_node"] != gpu_node
    assert worker(executor, "pinned").host == gpu_node


def test_a_killed_actor_is_replaced_without_a_failed_request(executor):
    before = worker(executor, "pinned")
    body = json.dumps({"at": "pinned", "sleep": 1.0}).encode()
    future = executor.submit(PredictRequest({"body": body}, {}, "k"))
    time.sleep(0.4)  # the first attempt is running on the actor
    os.kill(before.pid, signal.SIGKILL)
    hops = json.loads(future.result(30).outputs["timed"])["hops"]
    after = worker(executor, "pinned")
    assert hops[0]["pid"] == after.pid != before.pid
    assert executor.describe().nodes["pinned"].replaced_workers == 1
    assert predict(executor, {"x": 2})["x"] == 2


def test_a_timed_out_attempt_is_cancelled_and_retried_on_another_actor(executor, tmp_path):
    pids = {w.pid for w in executor.describe().nodes["timed"].workers}
    assert len(pids) == 2
    marker = tmp_path / "finished"
    msg = {"at": "timed", "hang_once": str(tmp_path / "once"), "sleep": 5.0, "marker": str(marker)}
    started = time.monotonic()
    hops = predict(executor, msg)["hops"]
    assert 1.5 <= time.monotonic() - started < 4.0  # timed out at 1.5 s, retried at once
    assert (tmp_path / "once").exists()
    assert hops[1]["pid"] in pids  # the other actor, already loaded
    timed = executor.describe().nodes["timed"]
    assert timed.replaced_workers == 1
    time.sleep(max(0.0, 5.5 - (time.monotonic() - started)))
    assert not marker.exists()  # the timed-out attempt was stopped, not left running
    assert len({w.pid for w in timed.workers} - pids) <= 1


def test_inputs_past_their_deadline_are_dropped_unrun_and_cost_no_actor(executor, tmp_path):
    """Issue 21 on Ray: three requests with a 1 s deadline meet ``pinned`` (one actor, 2.5 s a
    call): all fail with ``Timeout``; the two behind the first are dropped before reaching an
    actor, ``timed`` never runs, and no actor is replaced for a request's deadline."""
    log = tmp_path / "calls"
    body = json.dumps({"at": "pinned", "sleep": 2.5, "log": str(log)}).encode()
    deadline = time.monotonic() + 1.0
    futures = [executor.submit(PredictRequest({"body": body}, {}, f"d{i}", deadline))
               for i in range(3)]
    for future in futures:
        with pytest.raises(Timeout):
            future.result(30)

    def drops():
        return sum(n.deadline_drops for n in executor.describe().nodes.values())

    wait_for(lambda: drops() >= 2, 15)
    assert drops() == 2
    assert log.read_text().split() == ["pinned"]
    assert executor.describe().nodes["pinned"].replaced_workers == 0
