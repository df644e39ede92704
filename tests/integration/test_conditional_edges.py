"""Conditional edges (``edges:``, issue 21) on a real server, with archives from the official
archivers: which branch runs, joins, skipped leaves, evaluation errors, Server-Timing,
describe, and a bad condition refused at registration."""

import json
import re
import shutil
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.archives import SAMPLE
from tests.archives import build_war
from tests.archives import run_model
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"

SPEC = """\
models:
  max-batch-delay: 0
  m1:
    url: m1.mar
dag:
  classify: [dog_breed, cat_breed, m1]
  dog_breed: [report]
  cat_breed: [report]
edges:
  classify -> dog_breed: {when: "label == 'dog' || label == 'both'"}
  classify -> cat_breed: {when: "label == 'cat' || label == 'both'"}
  classify -> m1: {when: "input"}
"""

HANDLER = '''\
import json


def classify(data, context):
    if data is None:
        return None
    return [row.get("data") or row.get("body") for row in data]


def dog_breed(data, context):
    return None if data is None else [{"breed": "beagle"} for _ in data]


def cat_breed(data, context):
    return None if data is None else [{"breed": "siamese"} for _ in data]


def report(data, context):
    if data is None:
        return None
    return [{"keys": sorted(row), "breeds": sorted(json.loads(v)["breed"] for v in row.values())}
            for row in data]
'''


@pytest.fixture(scope="module")
def stores(peer_stores, tmp_path_factory):
    """A model store with m1.mar and a workflow store with cond.war, bad.war, readme.war."""
    root = tmp_path_factory.mktemp("conditional")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    src = root / "src"
    src.mkdir()
    (src / "cond.yaml").write_text(SPEC)
    (src / "cond_handler.py").write_text(HANDLER)
    build_war(root / "wf_store", "cond", spec_file=src / "cond.yaml",
              handler=src / "cond_handler.py")
    (src / "bad.yaml").write_text(SPEC.replace("label == 'dog' ||", "label == 'dog' |||"))
    build_war(root / "wf_store", "bad", spec_file=src / "bad.yaml",
              handler=src / "cond_handler.py")
    yaml_block, python_block = readme_example()
    (src / "readme.yaml").write_text(yaml_block)
    (src / "readme_handler.py").write_text(python_block)
    build_war(root / "wf_store", "readme", spec_file=src / "readme.yaml",
              handler=src / "readme_handler.py")
    return root


def serve(root, workdir, *args):
    workdir.mkdir()
    return WfserveServer(workdir, "--model-store", str(root / "model_store"), "--workflow-store",
                         str(root / "wf_store"), "--no-snapshot", "--workflows", "cond.war",
                         *args)


@pytest.fixture(scope="module")
def server(stores):
    with serve(stores, stores / "threaded") as srv:
        yield srv


def readme_example():
    """The spec and the handler of the README's worked example."""
    section = re.split(r"\n##+ ", README.read_text().split("### Conditional edges", 1)[1])[0]
    (yaml_block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    (python_block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return yaml_block, python_block


def predict(server, body, name="cond"):
    return httpx.post(f"{server.inference}/wfpredict/{name}", content=json.dumps(body).encode(),
                      headers={"Content-Type": "application/json"}, timeout=60)


def timed_nodes(response):
    names = [p.split(";")[0].strip() for p in response.headers["Server-Timing"].split(",")]
    return [n for n in names if not n.endswith("-queue") and n != "total"]


def test_only_the_branch_whose_condition_holds_runs(server):
    r = predict(server, {"label": "dog"})
    assert r.status_code == 200, r.text
    assert r.json() == {"keys": ["body"], "breeds": ["beagle"]}  # the join left with one parent
    assert sorted(timed_nodes(r)) == ["classify", "dog_breed", "report"]


def test_a_join_gets_the_parent_named_keys_of_the_parents_that_ran(server):
    r = predict(server, {"label": "both"})
    assert r.status_code == 200, r.text
    assert r.json() == {"keys": ["cat_breed", "dog_breed"], "breeds": ["beagle", "siamese"]}
    assert sorted(timed_nodes(r)) == ["cat_breed", "classify", "dog_breed", "report"]


def test_a_real_model_runs_on_its_branch_and_leaves_merge(server):
    r = predict(server, {"label": "cat", "input": SAMPLE})
    assert r.status_code == 200, r.text
    m1 = [round(v, 6) for v in run_model("m1", [SAMPLE])[0]]
    assert r.json() == {"report": {"keys": ["body"], "breeds": ["siamese"]},
                        "m1": {"output": m1}}
    assert "m1" in timed_nodes(r) and "dog_breed" not in timed_nodes(r)


def test_a_lone_leaf_that_ran_is_the_answer(server):
    r = predict(server, {"label": "fish", "input": SAMPLE})
    assert r.status_code == 200, r.text
    assert r.json() == {"output": [round(v, 6) for v in run_model("m1", [SAMPLE])[0]]}
    assert sorted(timed_nodes(r)) == ["classify", "m1"]


def test_no_leaf_ran_is_a_torchserve_style_error(server):
    r = predict(server, {"label": "bird"})
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"code", "type", "message"}
    assert body["code"] == 500 and body["type"] == "InternalServerException"
    assert "no leaf node ran" in body["message"] and "every leaf: m1, report" in body["message"]


def test_an_evaluation_error_is_a_500_naming_the_edge(server):
    r = httpx.post(f"{server.inference}/wfpredict/cond", content=b"plain text",
                   headers={"Content-Type": "text/plain"}, timeout=60)
    assert r.status_code == 500
    assert "edge 'classify -> dog_breed'" in r.json()["message"]
    assert "not JSON" in r.json()["message"]


def test_describe_shows_the_conditions_after_torchserves_fields(server):
    (described,) = httpx.get(f"{server.management}/workflows/cond").json()
    assert list(described)[:7] == ["workflowName", "workflowUrl", "minWorkers", "maxWorkers",
                                   "batchSize", "maxBatchDelay", "workflowDag"]
    assert described["workflowDag"] == (
        "{classify=[dog_breed, cat_breed, m1], dog_breed=[report], cat_breed=[report]}")
    assert described["edges"] == {
        "classify -> dog_breed": {"when": "label == 'dog' || label == 'both'"},
        "classify -> cat_breed": {"when": "label == 'cat' || label == 'both'"},
        "classify -> m1": {"when": "input"},
    }


def test_a_bad_condition_fails_the_registration_naming_the_edge(server):
    r = httpx.post(f"{server.management}/workflows", params={"url": "bad.war"}, timeout=60)
    assert r.status_code == 500
    message = r.json()["message"]
    assert "edges: 'classify -> dog_breed': bad condition" in message, message
    names = [w["workflowName"] for w in
             httpx.get(f"{server.management}/workflows").json()["workflows"]]
    assert "bad" not in names


def test_wfserve_check_validates_the_edges(tmp_path):
    from tests.unit.test_cli import run

    spec = tmp_path / "wf.yaml"
    spec.write_text(textwrap.dedent(SPEC))
    result = run("check", str(spec))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "classify: function -> dog_breed [when label == 'dog' || label == 'both'], "
        "cat_breed [when label == 'cat' || label == 'both'], m1 [when input]  "
        "{'min-workers': 1, 'max-workers': 1, 'batch-size': 1, 'max-batch-delay': 0, "
        "'retry-attempts': 1, 'timeout-ms': 10000}")
    spec.write_text(SPEC.replace("classify -> m1", "dog_breed -> m1"))
    result = run("check", str(spec))
    assert result.returncode == 1
    assert "edges: 'dog_breed -> m1' is not an edge of the dag" in result.stderr


def test_the_readme_example_answers_as_written(server):
    r = httpx.post(f"{server.management}/workflows", params={"url": "readme.war"}, timeout=60)
    assert r.status_code == 200, r.text
    r = predict(server, {"label": "dog"}, name="readme")
    assert r.json() == {"breed": "beagle"}
    assert timed_nodes(r) == ["classify", "dog_breed"]
    r = predict(server, {"label": "bird"}, name="readme")
    assert r.json() == {"code": 500, "type": "InternalServerException", "message": (
        "Workflow readme: no leaf node ran for this request (the conditions of its edges "
        "skipped every leaf: dog_breed, cat_breed)")}


RAY_CASES = [{"label": "dog"}, {"label": "both"}, {"label": "cat", "input": SAMPLE},
             {"label": "fish", "input": SAMPLE}, {"label": "bird"}, "plain text"]


def answer(server, case):
    body = case.encode() if isinstance(case, str) else json.dumps(case).encode()
    r = httpx.post(f"{server.inference}/wfpredict/cond", content=body,
                   headers={"Content-Type": "application/json"}, timeout=60)
    return r.status_code, r.json(), sorted(timed_nodes(r)) if r.status_code == 200 else None


def test_the_ray_executor_routes_as_the_threaded_one(server, stores):
    """The rules live in the executor core: the Ray engine answers every case alike (its
    outputs stay in the object store; a conditional parent's are fetched for its edges)."""
    pytest.importorskip("ray")
    reference = [answer(server, case) for case in RAY_CASES]
    assert [status for status, _, _ in reference] == [200, 200, 200, 200, 500, 500]
    with serve(stores, stores / "ray", "--executor", "ray", "--ray-num-cpus", "2") as ray_srv:
        assert [answer(ray_srv, case) for case in RAY_CASES] == reference
