"""Soak: 32 clients over seq, par and the batched diamond, every answer checked against its
input (``bench/soak.py``). The CI run lasts about 30 s; the 10-minute one is marked slow:
``pytest -m slow tests/reliability`` (``WFSERVE_SOAK_MINUTES`` changes its length).

Nothing may be lost, wrong or failed; the server's own retry and timeout counters stay at
zero (a response lost inside the server and retried, TorchServe's failure, would show there);
the worker ends with no more threads or descriptors than it started with and is never
restarted; RSS may not grow by more than a bound."""

import json
import os

import pytest

from bench.soak import run_soak
from bench.soak import verdict

pytestmark = pytest.mark.integration
CI_SECONDS = 30.0
RSS_GROWTH_MB = {"ci": 64.0, "slow": 128.0}


def soak(rel_stores, tmp_path, seconds, kind):
    result = run_soak(rel_stores, tmp_path, seconds=seconds, clients=32,
                      sample_every=min(10.0, seconds / 4))
    print(json.dumps({k: result[k] for k in ("load", "server")}, indent=1))
    assert verdict(result) == []
    assert result["load"]["requests"] > 32 * seconds  # at least 1 request per client-second
    assert result["server"]["rss_growth_mb"] < RSS_GROWTH_MB[kind], result["server"]
    return result


def test_soak_ci(rel_stores, tmp_path):
    soak(rel_stores, tmp_path, CI_SECONDS, "ci")


@pytest.mark.slow
@pytest.mark.timeout(0)  # its length is WFSERVE_SOAK_MINUTES; the soak stops by itself
def test_soak_ten_minutes(rel_stores, tmp_path):
    soak(rel_stores, tmp_path, float(os.environ.get("WFSERVE_SOAK_MINUTES", "10")) * 60, "slow")
