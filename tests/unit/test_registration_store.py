"""The registration store (SQLite), the store edits' rules, and the process-count default."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from types import SimpleNamespace

import pytest

from wfserve.kernel.errors import BadRequest
from wfserve.kernel.errors import Conflict
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WorkflowNotFound
from wfserve.kernel.store import Member
from wfserve.kernel.store import Record
from wfserve.kernel.sync import alive
from wfserve.kernel.sync import edit_with
from wfserve.plugins.api.settings import gpu_visible
from wfserve.plugins.auth.keys import INFERENCE
from wfserve.plugins.auth.keys import KeyStore
from wfserve.plugins.store.sqlite import SqliteStore


def record(name="wf", version="1.0", default=True, uid=None, **kw):
    return Record(uid or f"{name}-{version}", name, version, f"{name}.war", default, **kw)


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "state" / "registrations.sqlite")
    s.begin_run()
    return s


def test_changes_bump_the_revision_and_read_back_whole(store):
    first = store.revision()
    rec = record(scale={"m1": {"min_workers": 2}}, fetched={"": ("wf.war", "/x/wf.war")})
    assert store.change(lambda records: [*records, rec]) == first + 1
    assert store.read() == (first + 1, [rec])
    assert store.change(lambda records: records) == first + 1  # no change, same revision


def test_a_failing_edit_changes_nothing(store):
    store.change(lambda records: [record()])
    before = store.read()

    def edit(records):
        records.append(record("other"))
        raise Conflict("no")

    with pytest.raises(Conflict):
        store.change(edit)
    assert store.read() == before


def test_the_file_is_private_and_a_new_run_forgets_records_and_members(store, tmp_path):
    store.change(lambda records: [record()])
    store.report(Member(123, 1, 0.0))
    mode = stat.S_IMODE(store.path.stat().st_mode)
    assert mode == 0o600 and stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    revision = store.revision()
    store.begin_run()
    assert store.read() == (revision + 1, []) and store.members() == []


def _add_many(path, name, count):
    s = SqliteStore(path)
    for i in range(count):
        s.change(lambda records, i=i: [*records, record(name, f"{i}.0", uid=f"{name}{i}")])


def test_changes_from_several_processes_are_serialised(store):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_many, args=(store.path, n, 20)) for n in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    _, records = store.read()
    assert len(records) == 40 and len({r.uid for r in records}) == 40


def test_the_first_start_is_done_once_per_run(store):
    with store.first_start() as first:
        assert first
    with store.first_start() as first:
        assert not first
    store.begin_run()
    with pytest.raises(RuntimeError), store.first_start() as first:
        assert first
        raise RuntimeError("start-up failed")
    with store.first_start() as first:
        assert first  # a failed start-up is left for the next process


def test_first_start_excludes_other_threads(store):
    inside, overlap = [], []

    def run():
        with store.first_start():
            inside.append(1)
            overlap.append(len(inside))
            inside.pop()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert overlap == [1, 1, 1, 1]


def kernel(limit=100, versions=10):
    return SimpleNamespace(settings=SimpleNamespace(max_workflows=limit,
                                                    max_versions_per_workflow=versions))


def test_store_edits_apply_the_registry_rules_to_every_process_records():
    records = [record("a"), record("b")]
    add = edit_with(kernel(limit=2), lambda reg: (reg.check_room("c", "1.0"),
                                                  reg.add(SimpleNamespace(record=record("c")))))
    with pytest.raises(Unavailable):
        add(records)
    again = edit_with(kernel(), lambda reg: reg.check_room("a", "1.0"))
    with pytest.raises(Conflict, match="Workflow a is already registered."):
        again(records)
    gone = edit_with(kernel(), lambda reg: reg.remove("x"))
    with pytest.raises(WorkflowNotFound, match="Workflow not found: x"):
        gone(records)
    two = [record("a"), record("a", "2.0", default=False)]
    with pytest.raises(BadRequest):
        edit_with(kernel(), lambda reg: reg.remove("a", "1.0"))(two)
    switched = edit_with(kernel(), lambda reg: reg.set_default("a", "2.0"))(two)
    assert [(r.version, r.default) for r in switched] == [("1.0", False), ("2.0", True)]


def test_a_member_is_alive_only_while_its_process_runs_and_reports():
    import time

    assert alive(Member(os.getpid(), 1, time.time()))
    assert not alive(Member(os.getpid(), 1, time.time() - 60))  # silent too long
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=int)
    child.start()
    child.join(timeout=30)
    assert not alive(Member(child.pid, 1, time.time()))


def test_gpu_visible_reads_the_driver_and_cuda_visible_devices(tmp_path):
    assert not gpu_visible({}, tmp_path)
    gpus = tmp_path / "proc" / "driver" / "nvidia" / "gpus"
    (gpus / "0000:00:1e.0").mkdir(parents=True)
    assert gpu_visible({}, tmp_path)
    assert not gpu_visible({"CUDA_VISIBLE_DEVICES": ""}, tmp_path)
    assert not gpu_visible({"CUDA_VISIBLE_DEVICES": "-1"}, tmp_path)


def test_a_key_rotated_by_another_process_is_taken_from_the_file(tmp_path):
    path = tmp_path / "key_file.json"
    here = KeyStore(path, 60)
    ctx = multiprocessing.get_context("fork")
    old = here.key(INFERENCE)
    child = ctx.Process(target=here.rotate, args=(INFERENCE,))  # forked: the same keys
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    new = here.key(INFERENCE)
    assert new != old
    assert here.check(new, INFERENCE) and not here.check(old, INFERENCE)


def test_the_ray_executor_refuses_several_server_processes():
    from wfserve.kernel.errors import UsageError
    from wfserve.kernel.settings import load_settings
    from wfserve.plugins.api.settings import ApiSettings
    from wfserve.plugins.executors import ray
    from wfserve.plugins.executors.ray.settings import RaySettings

    def kernel_with(**cli):
        return SimpleNamespace(settings=load_settings(cli=cli, env={},
                                                      sections=[ApiSettings, RaySettings]))

    with pytest.raises(UsageError, match="set workers to 1"):
        ray.wfserve_preload(kernel_with(executor="ray", workers=2))
    ray.wfserve_preload(kernel_with(executor="ray", workers=1))  # one process: allowed
    ray.wfserve_preload(kernel_with(executor="threaded", workers=2))
