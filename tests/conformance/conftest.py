"""Clients of the module's own ``server`` fixture (each conformance module starts its own)."""

import httpx
import pytest


@pytest.fixture(scope="module")
def inf(server):
    """An HTTP client of the inference API."""
    with httpx.Client(base_url=server.inference, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def mgmt(server):
    """An HTTP client of the management API."""
    with httpx.Client(base_url=server.management, timeout=60) as client:
        yield client
