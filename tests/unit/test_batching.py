"""The dynamic batcher: batch-size, max-batch-delay from the first arrival, bounded queue."""

import threading
import time

import pytest

from wfserve.kernel.errors import Unavailable
from wfserve.kernel.settings import Settings
from wfserve.kernel.spec import parse_spec
from wfserve.plugins.batching import DynamicBatcher
from wfserve.plugins.batching import wfserve_make_batcher


def test_full_batches_leave_at_once():
    b = DynamicBatcher(batch_size=4, max_batch_delay_ms=5000, capacity=10)
    for i in range(8):
        b.put(i)
    start = time.monotonic()
    assert b.next_batch(1) == [0, 1, 2, 3]
    assert b.next_batch(1) == [4, 5, 6, 7]
    assert time.monotonic() - start < 1


def test_a_lone_item_leaves_after_the_delay():
    b = DynamicBatcher(batch_size=4, max_batch_delay_ms=100, capacity=10)
    b.put("x")
    start = time.monotonic()
    assert b.next_batch(5) == ["x"]
    assert 0.08 <= time.monotonic() - start < 2


def test_the_delay_counts_from_the_first_arrival_not_from_the_take():
    b = DynamicBatcher(batch_size=4, max_batch_delay_ms=100, capacity=10)
    b.put("x")
    time.sleep(0.15)
    start = time.monotonic()
    assert b.next_batch(5) == ["x"]
    assert time.monotonic() - start < 0.05


def test_a_batch_fills_while_waiting():
    b = DynamicBatcher(batch_size=3, max_batch_delay_ms=3000, capacity=10)
    b.put(1)
    threading.Timer(0.05, lambda: (b.put(2), b.put(3))).start()
    start = time.monotonic()
    assert b.next_batch(5) == [1, 2, 3]
    assert time.monotonic() - start < 2


def test_full_queue_is_refused_promptly():
    b = DynamicBatcher(batch_size=1, capacity=2, name="m1")
    b.put(1)
    b.put(2)
    with pytest.raises(Unavailable, match="m1"):
        b.put(3)
    assert len(b) == 2


def test_timeout_and_close_return_empty_batches():
    b = DynamicBatcher(batch_size=2, max_batch_delay_ms=10)
    assert b.next_batch(0.01) == []
    threading.Timer(0.05, b.close).start()
    start = time.monotonic()
    assert b.next_batch(None) == []
    assert time.monotonic() - start < 2
    with pytest.raises(Unavailable):
        b.put(1)


def test_configure_changes_the_batch_size():
    b = DynamicBatcher(batch_size=1, capacity=10)
    for i in range(3):
        b.put(i)
    b.configure(batch_size=2, max_batch_delay_ms=0)
    assert b.next_batch(1) == [0, 1]
    assert b.drain() == [2]


def test_hook_uses_the_node_config_and_job_queue_size():
    text = "models:\n  m: {url: m.mar, batch-size: 3, max-batch-delay: 7}\ndag:\n  m: []\n"
    spec = parse_spec(text)
    b = wfserve_make_batcher(spec.nodes["m"], Settings(job_queue_size=5))
    assert (b.batch_size, b.max_batch_delay, b.capacity) == (3, 0.007, 5)
