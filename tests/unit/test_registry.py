"""The registry: reservations, conflicts, limits, lookups, TorchServe pagination."""

import threading

import pytest

from kernel.errors import Conflict
from kernel.errors import Unavailable
from kernel.errors import WorkflowNotFound
from kernel.registry import Registered
from kernel.registry import Registry


class FakeWorkflow:
    def __init__(self, name):
        self.name = name


def entry(name):
    return Registered(FakeWorkflow(name), executor=object())


def register(registry, name):
    with registry.reserving(name):
        registry.add(entry(name))


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
