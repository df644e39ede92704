"""``--workers 2``: a scrape of ``/metrics`` shows the whole server, whichever process answers
(issue 20): request counters summed over both processes, worker gauges per process (``pid``),
and a server process killed and replaced by the arbiter takes none of its counts with it."""

import json
import os
import shutil
import signal
import stat

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.archives import SAMPLE
from tests.helpers import WfserveServer
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
PAYLOAD = json.dumps({"input": SAMPLE}).encode()
PROCESS = "X-Wfserve-Process"
DEADLINE = 60.0


@pytest.fixture(scope="module")
def server(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    with WfserveServer(root, "--model-store", str(root / "model_store"), "--workflow-store",
                       str(root / "wf_store"), "--workflows", "seq_wf.war", "--workers", "2",
                       "--no-snapshot") as srv:
        yield srv


class Client:
    """Predictions and scrapes, each on a fresh connection (so either process may answer);
    counts the predictions answered, by the process that answered."""

    def __init__(self, server):
        self.server = server
        self.answered: dict[str, int] = {}

    def predict(self) -> str:
        r = httpx.post(f"{self.server.inference}/wfpredict/seq_wf", content=PAYLOAD,
                       headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 200, r.text
        pid = r.headers[PROCESS]
        self.answered[pid] = self.answered.get(pid, 0) + 1
        return pid

    @property
    def sent(self) -> int:
        return sum(self.answered.values())

    def scrape(self) -> tuple[str, float, set[str]]:
        """(answering pid, ``wfserve_workflow_requests_total`` of seq_wf, pids of the worker
        gauges)."""
        r = httpx.get(f"{self.server.metrics}/metrics", timeout=30)
        assert r.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        requests = [s.value for s in families["wfserve_workflow_requests"].samples
                    if s.labels == {"workflow": "seq_wf"}]
        pids = {s.labels["pid"] for s in families["wfserve_node_workers"].samples}
        return r.headers[PROCESS], (requests or [0.0])[0], pids


def test_every_scrape_counts_every_process_and_a_killed_one_keeps_its_counts(server):
    client = Client(server)
    assert wait_for(lambda: client.predict() and len(client.answered) == 2, DEADLINE, 0)
    both = set(client.answered)
    # NOTE: a request is counted by a callback of its future, which may run just after the
    # answer left; once a scrape shows them all, every later scrape must.
    assert wait_for(lambda: client.scrape()[1] == client.sent, DEADLINE)

    scraped_by: set[str] = set()

    def scrape_matches(pids: set[str]) -> bool:
        by, requests, gauge_pids = client.scrape()
        scraped_by.add(by)
        assert requests == client.sent
        assert gauge_pids == pids
        return scraped_by >= pids

    assert wait_for(lambda: scrape_matches(both), DEADLINE, 0)
    folder = server.workdir / "run" / "metrics"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    killed, kept = sorted(both)
    os.kill(int(killed), signal.SIGKILL)
    before = client.sent

    def replaced() -> bool:
        _, requests, gauge_pids = client.scrape()
        assert requests >= before
        return killed not in gauge_pids and len(gauge_pids) == 2

    assert wait_for(replaced, DEADLINE, 0.05)
    _, requests, gauge_pids = client.scrape()
    assert requests == before
    (new,) = gauge_pids - {kept}
    assert new not in both

    assert wait_for(lambda: client.predict() == new, DEADLINE, 0)
    assert client.sent > before
    assert wait_for(lambda: client.scrape()[1] == client.sent, DEADLINE)
    scraped_by.clear()
    assert wait_for(lambda: scrape_matches({kept, new}), DEADLINE, 0)
