"""Registration, unregistration, scaling and updates racing with predictions on a live server:
the workflows nobody touches answer every request correctly; requests to the workflow under
churn get a correct answer of the version they ran on, or a TorchServe-style 404 or 503,
never a wrong answer, a 500 or silence; the management calls racing each other get 200, 404,
409 (a name being changed) or 503 (scaling a version being closed), never a 500 or a hang;
and churn leaks no thread or file descriptor."""

import itertools
import threading
import time

import httpx
import pytest

from bench.checked import Background
from bench.checked import Case
from tests.archives import expected_par
from tests.reliability.procs import counts
from tests.reliability.procs import settle
from tests.reliability.procs import within
from tests.reliability.procs import worker_pid
from tests.reliability.workflows import body
from tests.reliability.workflows import case
from tests.reliability.workflows import inputs
from tests.reliability.workflows import plans

pytestmark = pytest.mark.integration
CHURN_SECONDS = 8.0
MAX_CALLS = 400  # per racer thread


def churn_plans(clients, offset):
    """Clients of the workflow ``race``: seq_wf's answer, or par_wf's after an update."""
    return [[Case("/wfpredict/race", body(x), case("seq_wf", x).expected, (expected_par(x),))
             for x in inputs(offset + i, 6)] for i in range(clients)]


class Racer(threading.Thread):
    """Management calls on ``race`` in a loop, bounded in count and time; records statuses."""

    versions = itertools.count(2)

    def __init__(self, srv, steps, stop_at):
        super().__init__(daemon=True)
        self.srv, self.steps, self.stop_at = srv, steps, stop_at
        self.calls: list[tuple[str, int, str]] = []

    def run(self):
        with httpx.Client(base_url=self.srv.management, timeout=60) as client:
            for step in itertools.islice(itertools.cycle(self.steps), MAX_CALLS):
                if time.monotonic() > self.stop_at:
                    return
                method, path, params = step
                if params.get("version") == "next":
                    params = {**params, "version": f"{next(self.versions)}.0"}
                r = client.request(method, path, params=params)
                self.calls.append((f"{method} {path}", r.status_code, r.text))


REGISTER = ("POST", "/workflows", {"url": "seq_wf.war", "workflow_name": "race"})
UNREGISTER = ("DELETE", "/workflows/race", {})
SCALE = ("PUT", "/workflows/race/nodes/m1", {"min_worker": 2, "max_worker": 2, "batch_size": 4,
                                              "max_batch_delay": 2})
SCALE_DOWN = ("PUT", "/workflows/race/nodes/m2", {"min_worker": 1, "max_worker": 1})
UPDATE = ("PUT", "/workflows/race", {"url": "par_wf.war", "version": "next"})
UPDATE_BACK = ("PUT", "/workflows/race", {"url": "seq_wf.war", "version": "next"})


def churn(srv, seconds):
    """Three racers on ``race`` for ``seconds`` while 3 clients use seq_wf/par_wf and 3 use
    ``race``; returns (racer calls, steady tally, churned tally)."""
    stop_at = time.monotonic() + seconds
    racers = [Racer(srv, [REGISTER, SCALE, UPDATE, SCALE_DOWN, UNREGISTER], stop_at),
              Racer(srv, [SCALE, UPDATE_BACK, UNREGISTER, REGISTER, SCALE_DOWN], stop_at),
              Racer(srv, [REGISTER, UPDATE, UNREGISTER], stop_at)]
    with Background(srv.inference, plans(("seq_wf", "par_wf"), 3), seconds=60) as steady, \
            Background(srv.inference, churn_plans(3, offset=10), seconds=60) as churned:
        for r in racers:
            r.start()
        for r in racers:
            r.join(seconds + 60)
        assert not any(r.is_alive() for r in racers), "a management call hung"
    httpx.delete(f"{srv.management}/workflows/race", timeout=60)
    return [c for r in racers for c in r.calls], steady.tally, churned.tally


def test_register_unregister_scale_update_race_with_predictions(make_server):
    srv = make_server("--workflows", "seq_wf.war", "par_wf.war")
    worker = worker_pid(srv.process.pid)
    churn(srv, 2.0)  # warm-up: every path loaded, the HTTP thread pool grown
    baseline = settle(worker, counts(worker), seconds=2)

    calls, s, c = churn(srv, CHURN_SECONDS)
    assert len(calls) > 30
    assert {s for _, s, _ in calls} <= {200, 404, 409, 503}, [x for x in calls if x[1] >= 500
                                                               and x[1] != 503][:3]
    assert sum(1 for _, s, _ in calls if s == 200) > 10
    assert all("Traceback" not in t for _, _, t in calls)
    assert (s.ok, s.lost, s.wrong, s.errors) == (s.sent, 0, 0, {}), s.summary(1)["samples"]
    assert s.sent > 50
    assert (c.lost, c.wrong) == (0, 0), c.summary(1)["samples"]
    assert set(c.errors) <= {"404", "503"}, c.summary(1)["samples"]
    assert c.ok > 10  # the workflow was served between the changes

    listed = httpx.get(f"{srv.management}/workflows", timeout=10).json()["workflows"]
    assert sorted(w["workflowName"] for w in listed) == ["par_wf", "seq_wf"]
    assert within(settle(worker, baseline), baseline), (settle(worker, baseline), baseline)
    assert worker_pid(srv.process.pid) == worker
