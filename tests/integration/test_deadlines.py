"""Issue 21's deadline budget on a real server: ``deadline-ms`` in the spec, the
``X-Request-Timeout-Ms`` header, TorchServe's 408 at the deadline, late inputs dropped unrun
(counted by the metrics), the handler of the next node never called for them."""

import concurrent.futures
import re
import textwrap

import httpx
import pytest

from tests.archives import build_war
from tests.helpers import WfserveServer
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

SPEC = """\
deadline-ms: 300   # wfserve extension: the workflow's default deadline
models: {}
dag:
  slow: [post]
"""
HANDLER = '''\
import time


def slow(data, context):
    if data is None:
        return None
    time.sleep(0.6)
    return [b"ok" for _ in data]


def post(data, context):
    if data is None:
        return None
    return [{"done": True} for _ in data]
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("deadlines")
    (root / "model_store").mkdir()
    spec, handler = root / "spec.yaml", root / "deadline_handler.py"
    spec.write_text(SPEC)
    handler.write_text(textwrap.dedent(HANDLER))
    build_war(root / "wf_store", "dl", spec_file=spec, handler=handler)
    with WfserveServer(root, "--model-store", str(root / "model_store"), "--workflow-store",
                       str(root / "wf_store"), "--workflows", "dl.war") as srv:
        yield srv


def predict(server, **headers):
    """``curl -X POST .../wfpredict/dl -d x`` (a form, as the README's example sends)."""
    return httpx.post(f"{server.inference}/wfpredict/dl", content=b"x", timeout=30, headers={
        "Content-Type": "application/x-www-form-urlencoded", **headers})


def metric(server, name, node):
    text = httpx.get(f"{server.address('metrics')}/metrics", timeout=10).text
    found = re.search(rf'^{name}{{node="{node}",workflow="dl"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_late_inputs_are_answered_408_and_never_run(server):
    """Three requests meet a slow first node under the spec's 300 ms: each gets TorchServe's
    408; the two still queued at ``slow`` are dropped unrun and ``post`` never runs."""
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: predict(server), range(3)))
    for r in answers:
        assert r.status_code == 408, r.text
        assert r.json()["code"] == 408
        assert r.json()["type"] == "RequestTimeoutException"
        assert r.json()["message"] == "Workflow dl request timed out"  # as the README shows
    wait_for(lambda: metric(server, "wfserve_node_deadline_drops_total", "slow") >= 2, 10)
    assert metric(server, "wfserve_node_deadline_drops_total", "slow") == 2
    assert metric(server, "wfserve_node_requests_total", "slow") == 1
    assert metric(server, "wfserve_node_requests_total", "post") == 0


def test_the_header_gives_a_request_its_own_deadline(server):
    r = predict(server, **{"X-Request-Timeout-Ms": "5000"})
    assert (r.status_code, r.text) == (200, '{\n  "done": true\n}')  # as the README shows


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_a_bad_header_is_a_400(server, value):
    r = predict(server, **{"X-Request-Timeout-Ms": value})
    assert r.status_code == 400
    assert r.json()["type"] == "BadRequestException"
    assert "X-Request-Timeout-Ms" in r.json()["message"]
