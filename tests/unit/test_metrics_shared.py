"""Several server processes, one scrape: each process's instruments write through its own
multiprocess files, and any process's registry shows the whole server (issue 20)."""

import os
import stat
from types import SimpleNamespace

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from wfserve.kernel.contracts import ExecutorState
from wfserve.kernel.core import Kernel
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings
from wfserve.plugins.api.settings import ApiSettings
from wfserve.plugins.metrics import FOLDER
from wfserve.plugins.metrics import METRICS
from wfserve.plugins.metrics.instruments import Metrics
from wfserve.plugins.metrics.shared import ProcessFiles
from wfserve.plugins.metrics.shared import prepare_folder
from wfserve.plugins.metrics.shared import process_ended


def state(workers, queued=0, drops=0):
    """An executor's state: one workflow ``wf``, one node ``n`` with these worker statuses."""
    node = SimpleNamespace(workers=[SimpleNamespace(status=s) for s in workers],
                           queued=queued, deadline_drops=drops)
    return [("wf", ExecutorState("wf", "threaded", True, True, 0, {"n": node}))]


@pytest.fixture
def files(tmp_path):
    """``files(pid)``: a process's files in one shared folder; closed at the test's end."""
    folder = prepare_folder(tmp_path / "metrics")
    made = []

    def make(pid):
        made.append(ProcessFiles(folder, pid))
        return made[-1]

    make.folder = folder
    yield make
    for f in made:
        f.close()


def scrape(metrics):
    text = prometheus_client.generate_latest(metrics.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(family, name=None):
    return {tuple(sorted((k, v) for k, v in s.labels.items() if k != "hostname")): s.value
            for s in family.samples if name is None or s.name == name}


def record(metrics, n=1):
    for _ in range(n):
        metrics.requests.labels("wf").inc()
        metrics.duration.labels("wf").observe(0.003)
        metrics.torchserve.add("wf__n", "1.0", 1, 10.0, 2.0)


def test_the_folder_is_emptied_and_private(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_1.db").write_bytes(b"old")
    folder = prepare_folder(tmp_path / "metrics")
    assert list(folder.iterdir()) == []
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_any_process_shows_the_sums_and_each_process_gauges(files):
    a = Metrics(lambda: state(["READY", "BUSY"], queued=3, drops=1), files(11))
    b = Metrics(lambda: state(["READY"], drops=2), files(22))
    record(a, 2)
    record(b, 3)
    b.publisher.publish()
    for metrics in (a, b):
        families = scrape(metrics)
        assert values(families["wfserve_workflow_requests"]) == {(("workflow", "wf"),): 5.0}
        duration = families["wfserve_workflow_duration_seconds"]
        assert values(duration, "wfserve_workflow_duration_seconds_count") == {
            (("workflow", "wf"),): 5.0}
        assert values(families["ts_inference_requests_total"]) == {
            (("model_name", "wf__n"), ("model_version", "1.0")): 5.0}
        assert values(families["wfserve_node_deadline_drops"]) == {
            (("node", "n"), ("workflow", "wf")): 3.0}
        workers = values(families["wfserve_node_workers"])
        assert workers[(("node", "n"), ("pid", "11"), ("status", "BUSY"), ("workflow", "wf"))] == 1
        assert workers[(("node", "n"), ("pid", "22"), ("status", "READY"), ("workflow", "wf"))] == 1
        assert values(families["wfserve_node_queue_length"]) == {
            (("node", "n"), ("pid", "11"), ("workflow", "wf")): 3.0,
            (("node", "n"), ("pid", "22"), ("workflow", "wf")): 0.0}
        assert "process_cpu_seconds" not in families
        assert "wfserve_node_errors" in families  # no sample yet, still described


def test_an_ended_process_keeps_its_counts_but_not_its_gauges(files):
    a = Metrics(lambda: state(["READY"]), files(11))
    b = Metrics(lambda: state(["READY"]), files(22))
    record(a, 2)
    record(b, 1)
    a.publisher.publish()
    process_ended(files.folder, 11)
    families = scrape(b)
    assert values(families["wfserve_workflow_requests"]) == {(("workflow", "wf"),): 3.0}
    pids = {dict(k)["pid"] for k in values(families["wfserve_node_workers"])}
    assert pids == {"22"}


def test_a_reused_pid_counts_on_from_what_its_files_hold(files):
    first = files(11)
    record(Metrics(list, first), 2)
    first.close()
    again = Metrics(list, files(11))
    record(again, 1)
    families = scrape(again)
    assert values(families["wfserve_workflow_requests"]) == {(("workflow", "wf"),): 3.0}
    assert values(families["ts_inference_requests_total"]) == {
        (("model_name", "wf__n"), ("model_version", "1.0")): 3.0}
    duration = families["wfserve_workflow_duration_seconds"]
    assert values(duration, "wfserve_workflow_duration_seconds_sum") == {
        (("workflow", "wf"),): pytest.approx(0.009)}


def test_a_restricted_scrape_finds_merged_families(files):
    a = Metrics(list, files(11))
    record(Metrics(list, files(22)), 2)
    text = prometheus_client.generate_latest(
        a.registry.restricted_registry(["wfserve_workflow_requests_total"])).decode()
    assert [s.value for f in text_string_to_metric_families(text) for s in f.samples] == [2.0]


def kernel_with(tmp_path, workers):
    settings = Settings(run_dir=str(tmp_path / "run")).with_section(ApiSettings(workers=workers))
    pm = make_plugin_manager(settings, builtin=("wfserve.plugins.metrics",),
                             env={"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    return Kernel.create(settings, pm=pm)


def test_one_process_keeps_its_own_registry(tmp_path):
    kernel = kernel_with(tmp_path, 1)
    kernel.hooks.preload(kernel)
    kernel.hooks.startup(kernel)
    assert FOLDER not in kernel.stash
    assert not (tmp_path / "run" / "metrics").exists()
    metrics = kernel.stash[METRICS].metrics
    assert metrics.files is None and metrics.publisher is None
    assert "process_cpu_seconds" in scrape(metrics)


def test_the_parent_makes_the_folder_and_forgets_the_gauges_of_an_ended_process(tmp_path):
    kernel = kernel_with(tmp_path, 2)
    (tmp_path / "run" / "metrics").mkdir(parents=True)
    (tmp_path / "run" / "metrics" / "counter_1.db").write_bytes(b"an earlier run")
    kernel.hooks.preload(kernel)
    folder = kernel.stash[FOLDER]
    assert folder == (tmp_path / "run" / "metrics").absolute()
    assert list(folder.iterdir()) == []
    kernel.hooks.startup(kernel)  # as a forked server process would
    metrics = kernel.stash[METRICS].metrics
    pid = os.getpid()
    try:
        kernel.hooks.ready(kernel)
        assert (folder / f"gauge_liveall_{pid}.db").exists()
    finally:
        kernel.hooks.shutdown(kernel)  # the process ends...
        metrics.files.close()
    kernel.hooks.process_exited(kernel, pid)  # ...and the parent sees it
    assert not (folder / f"gauge_liveall_{pid}.db").exists()
    assert (folder / f"counter_{pid}.db").exists()
