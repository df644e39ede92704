"""The registry: reservations, conflicts, limits, lookups, TorchServe pagination."""

import threading

import pytest

from wfserve.kernel.errors import BadRequest
from wfserve.kernel.errors import Conflict
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WorkflowNotFound
from wfserve.kernel.registry import Registered
from wfserve.kernel.registry import Registry


class FakeWorkflow:
    def __init__(self, name, version="1.0"):
        self.name = name
        self.version = version


def entry(name, version="1.0"):
    return Registered(FakeWorkflow(name, version), executor=object())


def register(registry, name, version="1.0"):
    with registry.reserving(name, version):
        registry.add(entry(name, version))


def test_get_and_remove_unknown_give_torchserve_messages():
    registry = Registry()
    with pytest.raises(WorkflowNotFound, match="^Workflow not found: nope$"):
        registry.get("nope")
    with pytest.raises(WorkflowNotFound, match="^Workflow not found: nope$"):
        registry.remove("nope")


def test_duplicate_name_conflicts_with_torchserve_message():
    registry = Registry()
    register(registry, "seq_wf")
    with pytest.raises(Conflict, match=r"^Workflow seq_wf is already registered\.$"):
        register(registry, "seq_wf")


def test_a_name_being_registered_conflicts_and_is_released_on_failure():
    registry = Registry()
    with pytest.raises(RuntimeError), registry.reserving("a"):
        with pytest.raises(Conflict):
            register(registry, "a")
        raise RuntimeError("load failed")
    assert "a" not in registry
    register(registry, "a")
    assert registry.names() == ["a"]


def test_limit_counts_registered_and_pending():
    registry = Registry(limit=2)
    register(registry, "a")
    with registry.reserving("b"), pytest.raises(Unavailable, match="limit of 2"):
        register(registry, "c")


def test_concurrent_registrations_of_one_name_only_one_wins():
    registry = Registry()
    wins, conflicts = [], []
    barrier = threading.Barrier(8)

    def attempt():
        barrier.wait()
        try:
            register(registry, "same")
            wins.append(1)
        except Conflict:
            conflicts.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(wins), len(conflicts)) == (1, 7)


def test_pagination_follows_the_ground_truth():
    registry = Registry()
    for name in ["seq_wf", "par_wf"]:
        register(registry, name)
    items, token = registry.page(0, 1)
    assert [e.name for e in items] == ["par_wf"] and token == 1
    items, token = registry.page(1, 1)
    assert [e.name for e in items] == ["seq_wf"] and token == 2  # set even on the last page
    items, token = registry.page(0, 100)
    assert [e.name for e in items] == ["par_wf", "seq_wf"] and token is None
    items, token = registry.page(-5, 500)  # clamped to offset 0, limit 100
    assert len(items) == 2 and token is None


def test_versions_default_is_the_first_and_set_default_switches():
    registry = Registry()
    register(registry, "wf", "1.0")
    register(registry, "wf", "10.0")
    register(registry, "wf", "2.0")
    assert registry.get("wf").version == "1.0"
    assert registry.get("wf", "2.0").version == "2.0"
    versions, default = registry.versions("wf")
    assert [e.version for e in versions] == ["1.0", "2.0", "10.0"] and default == "1.0"
    registry.set_default("wf", "10.0")
    assert registry.get("wf").version == "10.0"
    assert registry.names() == ["wf"] and len(registry) == 1
    with pytest.raises(Conflict, match=r"^Workflow wf is already registered\.$"):
        register(registry, "wf", "2.0")
    with pytest.raises(WorkflowNotFound, match="^Workflow version: 3.0 does not exist for "
                                               "workflow: wf$"):
        registry.get("wf", "3.0")
    with pytest.raises(WorkflowNotFound):
        registry.set_default("wf", "3.0")


def test_remove_one_version_refuses_the_default_and_all_removes_the_name():
    registry = Registry()
    register(registry, "wf", "1.0")
    register(registry, "wf", "2.0")
    with pytest.raises(BadRequest, match="default version 1.0"):
        registry.remove("wf", "1.0")
    assert [e.version for e in registry.remove("wf", "2.0")] == ["2.0"]
    assert [e.version for e in registry.remove("wf", "1.0")] == ["1.0"]  # the last one
    assert "wf" not in registry
    register(registry, "wf", "1.0")
    register(registry, "wf", "2.0")
    assert sorted(e.version for e in registry.remove("wf")) == ["1.0", "2.0"]
    assert "wf" not in registry


def test_swap_replaces_the_default_and_the_same_version_atomically():
    registry = Registry()
    register(registry, "wf", "1.0")
    register(registry, "wf", "2.0")
    new = entry("wf", "2.0")
    with registry.updating("wf"):
        with pytest.raises(Conflict):
            register(registry, "wf", "3.0")
        with pytest.raises(Conflict):
            registry.updating("wf").__enter__()
        old = registry.swap(new)
    assert sorted(e.version for e in old) == ["1.0", "2.0"]
    assert registry.get("wf") is new
    assert [e.version for e in registry.versions("wf")[0]] == ["2.0"]
    with pytest.raises(WorkflowNotFound):
        registry.updating("nope").__enter__()


def test_limit_counts_names_not_versions():
    registry = Registry(limit=1)
    register(registry, "a", "1.0")
    register(registry, "a", "2.0")
    with pytest.raises(Unavailable):
        register(registry, "b")


def test_state_lists_every_version_with_its_default_flag():
    registry = Registry()
    register(registry, "b")
    register(registry, "a", "1.0")
    register(registry, "a", "2.0")
    registry.set_default("a", "2.0")
    assert [(e.name, e.version, d) for e, d in registry.state()] == [
        ("a", "1.0", False), ("a", "2.0", True), ("b", "1.0", True)]


def test_versions_per_workflow_are_bounded_registered_and_pending():
    registry = Registry(limit=5, max_versions=2)
    register(registry, "a", "1.0")
    with registry.reserving("a", "2.0"):
        with pytest.raises(Unavailable, match="limit of 2 versions"):
            registry.check_room("a", "3.0")
        with pytest.raises(Unavailable, match="limit of 2 versions"):
            register(registry, "a", "3.0")
    registry.check_room("a", "2.0")  # released: room again


def test_check_room_refuses_before_anything_is_reserved():
    registry = Registry(limit=1)
    register(registry, "a", "1.0")
    with pytest.raises(Conflict):
        registry.check_room("a", "1.0")
    with pytest.raises(Unavailable, match="limit of 1 workflows"):
        registry.check_room("b")
    registry.check_room("a")  # a new version of a registered name needs no new name
    with registry.updating("a"), pytest.raises(Conflict):
        registry.check_room("a", "2.0")
    with pytest.raises(WorkflowNotFound):
        registry.check_updatable("b")
