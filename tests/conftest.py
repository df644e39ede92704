"""Session-wide fixtures: real archives built once per test session with the official tools."""

import os
import threading

import httpx
import pytest

from tests.archives import Stores
from tests.archives import build_peer_stores

# Servers the tests start run one server process unless a test asks for more
# (tests/integration/test_processes.py): the default, one per core, would load every model
# once per core in every test.
os.environ.setdefault("WFSERVE_WORKERS", "1")


@pytest.fixture(scope="session")
def peer_stores(tmp_path_factory) -> Stores:
    """``m1.mar``, ``m2.mar``, ``seq_wf.war``, ``par_wf.war`` as the peer's setup.sh builds them."""
    return build_peer_stores(tmp_path_factory.mktemp("peer"))


@pytest.fixture
def executors():
    """Executors a test builds (append them); closed at its end, and no thread they started
    may outlive them."""
    before = set(threading.enumerate())
    made = []
    yield made
    for ex in made:
        ex.close(5)
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, left


@pytest.fixture(scope="module")
def inf(server):
    """An HTTP client of the inference API of the module's own ``server`` fixture."""
    with httpx.Client(base_url=server.inference, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def mgmt(server):
    """An HTTP client of the management API of the module's own ``server`` fixture."""
    with httpx.Client(base_url=server.management, timeout=300) as client:
        yield client
