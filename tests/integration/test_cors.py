"""CORS as TorchServe sends it: the three configured values, verbatim, on every answer of
every surface, set from a TorchServe ``config.properties``."""

import httpx
import pytest

from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
EXPECTED = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, POST, PUT, OPTIONS",
    "access-control-allow-headers": "X-Custom-Header,Authorization",  # a continued line
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("cors")
    (root / "model_store").mkdir()
    config = root / "config.properties"
    config.write_text("cors_allowed_origin=*\n"
                      "cors_allowed_methods=GET, POST, PUT, OPTIONS\n"
                      "cors_allowed_headers=X-Custom-Header,\\\n    Authorization\n")
    with WfserveServer(root, "--ts-config", str(config), "--model-store",
                       str(root / "model_store")) as srv:
        yield srv


def cors(response):
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


@pytest.mark.parametrize(("method", "surface", "path", "status"), [
    ("GET", "inference", "/ping", 200),
    ("OPTIONS", "inference", "/", 200),
    ("POST", "inference", "/wfpredict/absent", 404),
    ("GET", "management", "/workflows", 200),
    ("GET", "management", "/nowhere", 404),
    ("GET", "metrics", "/metrics", 200),
])
def test_every_answer_carries_the_configured_headers(server, method, surface, path, status):
    r = httpx.request(method, getattr(server, surface) + path, timeout=30)
    assert r.status_code == status, r.text
    assert cors(r) == EXPECTED


def test_without_configuration_no_cors_header(tmp_path):
    (tmp_path / "model_store").mkdir()
    with WfserveServer(tmp_path, "--model-store", str(tmp_path / "model_store")) as srv:
        assert cors(httpx.get(f"{srv.inference}/ping", timeout=30)) == {}
