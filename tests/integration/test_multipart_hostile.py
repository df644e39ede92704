"""Security finding 7 over real HTTP: multipart bodies built to make the parser recurse or
spin (1,200 nested multipart parts, a ``Content-Disposition`` parameter of 1,000 open
parentheses, 120,000 tiny parts) are refused as the client's fault, on ``/wfpredict`` and on
``/predictions``, and never leave a traceback in the server log."""

import json
import shutil

import httpx
import pytest

from tests.archives import SAMPLE
from tests.archives import expected_seq
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
TARGETS = ["/wfpredict/seq_wf", "/predictions/seq_wf__m1"]
CT = "multipart/form-data; boundary=zz"


def nested_parts(levels: int) -> tuple[str, bytes]:
    """A form whose one field holds ``levels`` multipart bodies, each inside the last."""
    part = b'Content-Disposition: form-data; name="a"\r\n\r\nx\r\n'
    for i in range(levels):
        b = f"b{i}".encode()
        part = (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n"
                b'Content-Disposition: form-data; name="a"\r\n\r\n'
                b"--" + b + b"\r\n" + part + b"--" + b + b"--\r\n")
    return "multipart/form-data; boundary=top", b"--top\r\n" + part + b"--top--\r\n"


def open_parens(count: int) -> tuple[str, bytes]:
    """A field whose Content-Disposition has a parameter of ``count`` open parentheses."""
    return CT, (b'--zz\r\nContent-Disposition: form-data; name="a"; x=' + b"(" * count
                + b"\r\n\r\nv\r\n--zz--\r\n")


def many_parts(count: int) -> tuple[str, bytes]:
    """``count`` tiny fields (about 49 bytes each)."""
    one = b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n\r\n'
    return "multipart/form-data; boundary=b", one * count + b"--b--\r\n"


@pytest.fixture(scope="module")
def server(peer_stores, tmp_path_factory):
    """The default limits (``max_request_size`` 6553500, ``max_multipart_parts`` 1000,
    ``max_multipart_depth`` 4): the 6 MB body must reach the parser."""
    root = tmp_path_factory.mktemp("multipart_hostile")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    with WfserveServer(root, "--model-store", str(root / "model_store"), "--workflow-store",
                       str(root / "wf_store"), "--workflows", "seq_wf.war") as srv:
        yield srv


def post(server, target, body: tuple[str, bytes]) -> httpx.Response:
    content_type, data = body
    return httpx.post(server.inference + target, content=data, timeout=120,
                      headers={"Content-Type": content_type})


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("body", [nested_parts(1200), open_parens(1000)],
                         ids=["nested-1200", "parens-1000"])
def test_recursive_bodies_are_400_without_a_traceback(server, target, body):
    r = post(server, target, body)
    assert r.status_code == 400, r.text[:300]
    assert r.json()["type"] == "BadRequestException"
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("target", TARGETS)
def test_too_many_parts_are_refused(server, target):
    content_type, data = many_parts(120_000)
    assert len(data) < 6553500  # under max_request_size: the part count refuses it
    r = post(server, target, (content_type, data))
    assert r.status_code in (400, 413), r.text[:300]
    assert "max_multipart_parts" in r.json()["message"]
    assert "Traceback" not in server.log()


def test_a_valid_form_still_predicts(server):
    body = (b'--zz\r\nContent-Disposition: form-data; name="data"\r\n'
            b"Content-Type: application/json\r\n\r\n" + json.dumps({"input": SAMPLE}).encode()
            + b"\r\n--zz--\r\n")
    r = post(server, "/wfpredict/seq_wf", ("multipart/form-data; boundary=zz", body))
    assert r.status_code == 200, r.text[:300]
    assert r.json() == expected_seq()
