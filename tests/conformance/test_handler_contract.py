"""What handlers receive, as TorchServe 0.12.0 hands it to them (``ts/protocol/
otf_message_handler.py``, ``ts/service.py``, ``ts/context.py``, ``ts/model_loader.py``,
``ts/metrics/``), over HTTP against a real wfserve, with archives from the official archivers.

The handlers of ``tests/assets/contract/`` answer reports of their inputs and context; the
deliberate differences are listed in ``tests/conformance/README.md`` ("The handler contract").
"""

import json
import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.archives import ASSETS
from tests.archives import build_mar
from tests.archives import build_war
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
CONTRACT = ASSETS / "contract"
HANDLER = CONTRACT / "contract_handler.py"
ENTRY = CONTRACT / "entry_handler.py"
DASHED_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PNG = b"\x89PNG\r\n\x1a\n\x00\xff"


def pretty(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    models, wars, tmp = root / "model_store", root / "wf_store", root / "tmp"
    for folder in (models, wars, tmp):
        folder.mkdir()
    build_mar(models, "mprobe", handler=CONTRACT / "contract_model.py")
    for name in ("root", "chain", "typed", "model"):
        build_war(wars, f"{name}_wf", spec_file=CONTRACT / f"{name}_workflow.yaml",
                  handler=HANDLER)
    for name in ("crash", "oom", "inert", "fallback"):
        build_war(wars, f"{name}_wf", spec_file=CONTRACT / f"{name}_workflow.yaml",
                  handler=ENTRY)
    with WfserveServer(root, "--model-store", str(models), "--workflow-store", str(wars),
                       env={"TMPDIR": str(tmp)}) as srv:
        for name in ("root", "chain", "typed", "model"):
            r = httpx.post(f"{srv.management}/workflows", params={"url": f"{name}_wf.war"},
                           timeout=60)
            assert r.status_code == 200, r.text
        yield srv


def probe(inf, method="POST", **kwargs) -> dict:
    """The root's report (``root_wf``: probe -> relay)."""
    r = inf.request(method, "/wfpredict/root_wf", **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def raw(text: str) -> dict:
    return {"type": "bytearray", "text": text}


# --- bytearray for everything the server does not decode -------------------------------------


@pytest.mark.parametrize(("kwargs", "inputs"), [
    ({"content": b"\x00\x01raw", "headers": {"Content-Type": "application/octet-stream"}},
     {"body": raw("\x00\x01raw")}),
    ({"content": b"no type"}, {"body": raw("no type")}),
    ({"content": b"{not json", "headers": {"Content-Type": "application/json"}},
     {"body": raw("{not json")}),
    ({"content": b"\xff\xfe", "headers": {"Content-Type": "text/plain"}},
     {"body": raw("\xff\xfe")}),
    ({"content": b'{"a": 1}', "headers": {"Content-Type": "application/ld+json"}},
     {"body": raw('{"a": 1}')}),
    ({"content": b'{"a": 1}', "headers": {"Content-Type": "application/problem+json"}},
     {"body": raw('{"a": 1}')}),
    ({"content": b"PK\x03\x04", "headers": {"Content-Type": "application/x-torch"}},
     {"body": raw("PK\x03\x04")}),
    ({"data": {"a": "1", "b": "é"}}, {"a": raw("1"), "b": raw("é".encode().decode("latin-1"))}),
    ({"data": {"plain": "v"}, "files": {
        "img": ("x.png", PNG, "image/png"),
        "doc": ("d.json", b'{"k": [1]}', "application/json"),
        "bad": ("b.json", b"{oops", "application/json"),
        "note": ("n.txt", "héllo".encode(), "text/plain; charset=utf-8")}},
     {"plain": raw("v"), "img": raw(PNG.decode("latin-1")), "doc": {"type": "dict",
      "value": {"k": [1]}}, "bad": raw("{oops"), "note": {"type": "str", "value": "héllo"}}),
], ids=["octet-stream", "no-content-type", "bad-json", "bad-utf8-text", "ld+json",
        "problem+json", "x-torch", "urlencoded", "multipart"])
def test_inputs_the_server_does_not_decode_are_bytearray(inf, kwargs, inputs):
    """Raw, undecodable, ``+json`` and other bodies, url-encoded fields, multipart plain fields
    and non-JSON/text file parts reach the root as ``bytearray``; a body that does not decode
    is passed on raw (TorchServe logs it and goes on), never a 400."""
    assert probe(inf, **kwargs)["inputs"] == inputs


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_the_empty_body_of_a_get_or_delete_is_an_empty_bytearray(inf, method):
    assert probe(inf, method)["inputs"] == {"body": raw("")}


DECODED = [
    ("application/json", b'{"a": [1, 2]}', {"type": "dict", "value": {"a": [1, 2]}}),
    ("application/json; charset=utf-8", b"[1]", {"type": "list", "value": [1]}),
    ("Application/JSON", b"3", {"type": "int", "value": 3}),
    ("text/plain", "héllo".encode(), {"type": "str", "value": "héllo"}),
    ("text/csv", b"a,b", {"type": "str", "value": "a,b"}),
    ("text/plain", b"", {"type": "str", "value": ""}),
    ("application/json", b"", raw("")),
    ("application/vnd.api+json", b"[1]", raw("[1]")),
]


def test_only_json_and_text_bodies_are_decoded(inf):
    """``application/json`` is parsed, ``text/*`` becomes a ``str`` (the empty body too: ``""``
    decodes), every other type stays raw; an empty JSON body does not parse: raw."""
    for content_type, body, value in DECODED:
        r = probe(inf, content=body, headers={"Content-Type": content_type})
        assert r["inputs"] == {"body": value}, content_type


def test_only_multipart_framing_errors_are_400(inf):
    """A part that does not decode is passed on raw; a body whose framing cannot be parsed
    stays a 400."""
    r = probe(inf, files={"bad": ("b.json", b"{oops", "application/json")})
    assert r["inputs"] == {"bad": raw("{oops")}
    r = inf.post("/wfpredict/root_wf", content=b"--zz\r\ngarbage",
                 headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert (r.status_code, r.json()["type"]) == (400, "BadRequestException")


def test_values_a_node_passes_to_its_children_are_bytearray(inf):
    """Whatever a node returns (bytes, str, dict, bytearray), its children get a bytearray."""
    r = inf.post("/wfpredict/chain_wf", content=b"x")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["kid"]["kid"]["inputs"] == {"body": {
        "type": "bytearray", "text": json.dumps(answer["kid"]["parent"])}}
    assert answer["kid"]["parent"]["inputs"] == {"body": raw("x")}
    join = answer["join"]["inputs"]
    assert {k: v["type"] for k, v in join.items()} == {
        "kid": "bytearray", "left": "bytearray", "right": "bytearray"}
    assert join["left"]["text"] == '{"left": true}'
    assert join["right"]["text"] == '{"right": true}'
    assert json.loads(join["kid"]["text"]) == answer["kid"]


def test_typed_workflows_keep_objects(inf):
    """``typed: true`` (a wfserve extension) passes objects as they are: the probe's bytes stay
    bytes, the kid's dict a dict, left's str a str."""
    r = inf.post("/wfpredict/typed_wf", content=b"x")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["kid"]["kid"]["inputs"]["body"]["type"] == "bytes"
    assert answer["kid"]["parent"]["inputs"] == {"body": raw("x")}
    join = answer["join"]["inputs"]
    assert {k: v["type"] for k, v in join.items()} == {
        "kid": "dict", "left": "str", "right": "bytearray"}


# --- headers and request ids -------------------------------------------------------------------


def test_the_context_shows_request_headers_and_parameter_content_types(inf):
    r = inf.post("/wfpredict/chain_wf", content=b'{"a": 1}', headers={
        "Content-Type": "application/json; charset=utf-8", "x-custom": "c1"})
    assert r.status_code == 200, r.text
    answer = r.json()
    root, kid, join = answer["kid"]["parent"], answer["kid"]["kid"], answer["join"]
    headers = root["headers"]
    assert headers["body"] == {"content-type": "application/json"}
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["X-Custom"] == "c1"
    assert headers["Content-Length"] == "8"
    assert "content-length" not in headers
    assert root["x_custom"] == "c1"  # get_request_header is case-insensitive
    # every node sees the request's headers; a non-root node's parameters have no type
    assert kid["headers"] == {**{k: v for k, v in headers.items() if k != "body"},
                              "body": {"content-type": ""}}
    assert {k: v for k, v in join["headers"].items() if isinstance(v, dict)} == {
        "kid": {"content-type": ""}, "left": {"content-type": ""},
        "right": {"content-type": ""}}
    assert join["x_custom"] == "c1"


def test_form_parameters_have_their_content_types(inf):
    form = probe(inf, data={"a": "1"})["headers"]
    assert form["a"] == {"content-type": ""}
    assert form["Content-Type"] == "application/x-www-form-urlencoded"
    parts = probe(inf, data={"plain": "v"}, files={
        "img": ("x.png", PNG, "image/png"),
        "note": ("n.txt", b"t", "text/plain; charset=utf-8")})["headers"]
    assert parts["plain"] == {"content-type": ""}
    assert parts["img"] == {"content-type": "image/png"}
    assert parts["note"] == {"content-type": "text/plain"}
    assert probe(inf, content=b"x")["headers"]["body"] == {"content-type": ""}


def test_a_header_named_like_a_parameter_wins(inf):
    headers = probe(inf, content=b"x", headers={"Body": "header", "Content-Type": "text/plain"})
    assert headers["headers"]["Body"] == "header"
    assert "body" not in headers["headers"]
    assert headers["inputs"] == {"body": {"type": "str", "value": "x"}}


def test_a_request_without_content_length_gets_a_lowercase_one(inf):
    def chunks():
        yield b"ab"
        yield b"cd"

    headers = probe(inf, content=chunks(), headers={"Content-Type": "text/plain"})["headers"]
    assert headers["content-length"] == "4"
    assert "Content-Length" not in headers and "Transfer-Encoding" not in headers
    assert probe(inf, "GET")["headers"]["content-length"] == "0"


def test_handlers_see_a_dashed_uuid_and_responses_keep_their_request_id(inf):
    given = uuid.uuid4().hex
    r = inf.post("/wfpredict/root_wf", content=b"x", headers={"X-Request-ID": given})
    assert r.headers["X-Request-ID"] == given
    assert r.json()["request_id"] == str(uuid.UUID(hex=given))
    r = inf.post("/wfpredict/root_wf", content=b"x", headers={"X-Request-ID": "client-id.7"})
    assert r.headers["X-Request-ID"] == "client-id.7"
    assert DASHED_UUID.fullmatch(r.json()["request_id"])
    r = inf.post("/wfpredict/root_wf", content=b"x")
    assert DASHED_UUID.fullmatch(r.json()["request_id"])
    assert r.json()["request_id"] == str(uuid.UUID(hex=r.headers["X-Request-ID"]))


# --- the rest of ts.context.Context ------------------------------------------------------------


def test_the_context_surface_handlers_use(inf):
    r = inf.post("/wfpredict/root_wf", content=b"x", headers={"X-Surface": "1"})
    # what a node sets for its answer is ignored inside a workflow, as in TorchServe
    assert (r.status_code, r.headers["content-type"]) == (200, "application/json")
    assert "X-Probe" not in r.headers
    surface = r.json()["surface"]
    assert surface["system_properties"] == ["batch_size", "gpu_id", "limit_max_image_pixels",
                                            "model_dir", "server_name", "server_version"]
    assert (surface["batch_size"], surface["server_name"]) == (1, "MMS")
    assert surface["manifest"] is None  # a function node has no .mar manifest
    assert surface["processor_headers"] is True
    assert surface["status"] == [201, "Made"]
    assert surface["response_headers"] == {"content-type": "text/x-probe", "X-Probe": "yes"}
    assert surface["metrics"] == {
        "add_time": "None", "add_counter": "None", "add_size": "None", "add_percent": "None",
        "add_metric": "None",
        "counter": ["ContractCount", "Count", "counter"],
        "gauge": ["ContractTime", "Milliseconds", "gauge"],
        "handler_time": ["Milliseconds", ["ModelName", "Level"]],
        "missing": "MetricsCacheKeyError",
        "bad_unit": "MetricsCacheValueError",
    }


def test_what_a_handler_sets_answers_its_node_called_as_a_model(inf):
    """The status, phrase and headers a handler sets are copied from its context for each
    row; ``/predictions/{wf}__{node}`` answers with them (inside a workflow they are ignored)."""
    r = inf.post("/predictions/root_wf__probe", content=b"x", headers={"X-Surface": "1"})
    assert (r.status_code, r.reason_phrase) == (201, "Made")
    assert (r.headers["content-type"], r.headers["X-Probe"]) == ("text/x-probe", "yes")
    assert r.json()["surface"]["status"] == [201, "Made"]


def test_a_model_node_sees_its_manifest(inf):
    r = inf.post("/wfpredict/model_wf", content=b"x", headers={"X-Custom": "m"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == ["mprobe", "1.0", "contract_model.py"]
    assert answer["body_type"] == "bytearray"
    assert answer["headers"]["body"] == {"content-type": ""}
    assert answer["headers"]["X-Custom"] == "m"


# --- loading ------------------------------------------------------------------------------------


def _leftovers(server) -> list[Path]:
    return sorted(p for p in (Path(server.workdir) / "tmp").iterdir()
                  if p.name.startswith("wfserve-"))


@pytest.mark.parametrize("node", ["crash", "oom", "inert"])
def test_an_entry_point_failing_at_load_fails_the_registration(server, mgmt, node):
    """``fn(None, context)`` raising (MemoryError included), or an attribute named like the
    node that is not callable, fails the node's workers: TorchServe's 500, nothing kept."""
    before = _leftovers(server)
    assert before  # the registered workflows' folders: the check below can see a leftover
    r = mgmt.post("/workflows", params={"url": f"{node}_wf.war"})
    body = {"code": 500, "type": "WorkflowException",
            "message": f"Workflow {node}_wf has failed to register. Failures: [Failed to start "
                       f"workers for model {node}_wf__{node} version: 1.0]"}
    assert (r.status_code, r.json()) == (500, body)
    assert r.text == pretty(body)
    names = [w["workflowName"] for w in mgmt.get("/workflows").json()["workflows"]]
    assert f"{node}_wf" not in names
    assert mgmt.get(f"/models/{node}_wf__start").status_code == 404
    assert mgmt.get(f"/models/{node}_wf__{node}").status_code == 404
    assert _leftovers(server) == before


def test_a_missing_entry_point_falls_back_to_the_only_class(server, mgmt, inf):
    """Only when the module has no attribute named like the node does the loader take its only
    class; a non-callable attribute of that name is no fallback."""
    r = mgmt.post("/workflows", params={"url": "inert_wf.war"})
    assert r.status_code == 500
    r = mgmt.post("/workflows", params={"url": "fallback_wf.war"})
    assert r.status_code == 200, r.text
    assert inf.post("/wfpredict/fallback_wf", content=b"z").content == b"fallback:z"
    assert mgmt.delete("/workflows/fallback_wf").status_code == 200
