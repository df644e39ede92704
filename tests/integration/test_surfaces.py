"""Surfaces are told apart by the address a connection came in on, not by its port alone:
inference on 127.0.0.2:P and management on 127.0.0.1:P (same P) must not serve each other's
routes (Linux routes all of 127/8 to the loopback interface, so 127.0.0.2 can be bound)."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.helpers import WfserveServer
from tests.helpers import unused_port

pytestmark = pytest.mark.integration
TIMEOUT = 30.0  # seconds per call: a hang fails the test instead of holding the run


def shared_port() -> int:
    """A port free on both 127.0.0.1 and 127.0.0.2."""
    while True:
        port = unused_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.2", port))
            except OSError:
                continue
        return port


class SharedPortServer(WfserveServer):
    """Inference on 127.0.0.2:P, management on 127.0.0.1:P, metrics on 127.0.0.1:Q."""

    @property
    def inference(self) -> str:
        return f"http://127.0.0.2:{self.ports['inference']}"

    def start(self, attempts: int = 3) -> SharedPortServer:
        for _ in range(attempts):
            port = shared_port()
            self.ports = {"inference": port, "management": port, "metrics": unused_port()}
            if self._start_once():
                return self
        raise RuntimeError(f"wfserve did not start; log:\n{self.log()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("surfaces")
    with SharedPortServer(root, "--model-store", str(root / "model_store"), "--no-snapshot",
                          auth=True) as srv:
        yield srv


def test_same_port_different_addresses_serve_their_own_surface(server):
    assert server.inference.rsplit(":", 1)[1] == server.management.rsplit(":", 1)[1]
    management = server.bearer("management")
    with httpx.Client(timeout=TIMEOUT) as c:
        on_inference = c.get(f"{server.inference}/workflows", headers=management)
        assert on_inference.status_code == 404, on_inference.text
        assert on_inference.json()["type"] == "ResourceNotFoundException"
        assert c.get(f"{server.management}/workflows", headers=management).status_code == 200
        assert c.get(f"{server.inference}/ping").status_code == 200
        register = c.post(f"{server.inference}/workflows", params={"url": "x.war"},
                          headers=management)
        assert register.status_code == 404, register.text
        predict = c.post(f"{server.management}/wfpredict/x", content=b"{}",
                         headers=server.bearer("inference"))
        assert predict.status_code == 404, predict.text


def test_api_descriptions_follow_the_address(server):
    with httpx.Client(timeout=TIMEOUT) as c:
        inference = c.get(f"{server.inference}/api-description").json()
        management = c.get(f"{server.management}/api-description").json()
    assert "/workflows" not in inference["paths"] and "/wfpredict/{name}" in inference["paths"]
    assert "/workflows" in management["paths"] and "/wfpredict/{name}" not in management["paths"]
