"""The threaded engine's inline seam (plugins/executors/threaded/inline.py) and the API's one
door to it (plugins/api/inline.py): under an offer, the request's nodes run on the offering
thread, after ``submit`` returned its future; without one, elsewhere; anything between the
API and the executor sees an ordinary ``submit``."""

import concurrent.futures
import threading

import prometheus_client
import pytest

from tests.executor_fakes import make_executor
from tests.executor_fakes import request
from wfserve.kernel.errors import Unavailable
from wfserve.plugins.api import inline as api_inline
from wfserve.plugins.api.rescue import RESCUE_KEY
from wfserve.plugins.executors.threaded.inline import Offer
from wfserve.plugins.executors.threaded.inline import current
from wfserve.plugins.executors.threaded.inline import offered
from wfserve.plugins.metrics.executor import InstrumentedExecutor
from wfserve.plugins.metrics.instruments import Metrics

CHAIN = "models:\n  m: {url: m.mar}\ndag:\n  pre: [m]\n"


@pytest.fixture
def chain(tmp_path):
    """A two-node chain whose handlers record the thread they ran on."""
    threads = []

    def factory(index):
        def handler(batch, meta):
            threads.append(threading.get_ident())
            return [row["body"] + b"!" for row in batch]

        return handler

    ex, _ = make_executor(tmp_path, CHAIN, {"pre": factory, "m": factory})
    yield ex, threads
    ex.close(5)


def test_under_an_offer_the_nodes_run_on_this_thread_after_submit_returned(chain):
    ex, threads = chain
    with offered() as offer:
        future = ex.submit(request(b"x"))
        assert not future.done() and threads == []  # nothing ran inside submit
        assert not offer.free
        assert offer.run() is True
    assert future.result(5).outputs == {"m": b"x!!"}
    assert threads == [threading.get_ident()] * 2


def test_without_an_offer_the_nodes_run_elsewhere(chain):
    ex, threads = chain
    assert current() is None
    assert ex.submit(request(b"x")).result(5).outputs == {"m": b"x!!"}
    assert threading.get_ident() not in threads and len(threads) == 2


def test_an_offer_takes_one_request_and_ends_with_its_block():
    offer, ran = Offer(), []
    assert offer.run() is False
    offer.take(lambda: ran.append(1))
    with pytest.raises(RuntimeError):
        offer.take(lambda: ran.append(2))
    with offered() as inner:
        assert current() is inner
        inner.take(lambda: ran.append(3))
    assert current() is None and ran == [3]  # left work runs when the block ends
    assert offer.run() is True and ran == [3, 1]


def test_a_busy_root_is_not_left_to_the_offer(chain):
    ex, _ = chain
    with offered() as first:
        held = ex.submit(request(b"a"))  # holds the root's only worker until run()
        with offered() as second:
            other = ex.submit(request(b"b"))
            assert second.free  # the root's worker is taken: the request is queued
        first.run()
    assert held.result(5).outputs == {"m": b"a!!"}
    assert other.result(5).outputs == {"m": b"b!!"}


def test_the_metrics_proxy_counts_a_request_run_inline(chain):
    ex, _ = chain
    metrics = Metrics(lambda: [])
    proxy = InstrumentedExecutor(ex, "wf", "1.0", metrics)
    with offered() as offer:
        future = proxy.submit(request(b"x"))
        offer.run()
    assert future.result(5).outputs == {"m": b"x!!"}
    text = prometheus_client.generate_latest(metrics.registry).decode()
    assert 'wfserve_workflow_requests_total{workflow="wf"} 1.0' in text


class Ignoring:
    """An executor that knows nothing of offers."""

    def __init__(self):
        self.render = lambda result: b""

    def submit(self, req):
        future = concurrent.futures.Future()
        future.set_result("elsewhere")
        return future


def test_the_api_lends_its_thread_only_with_a_socket_writer(chain):
    ex, threads = chain
    writes = []
    environ = {RESCUE_KEY: lambda *answer: writes.append(answer)}
    future, answered = api_inline.submit(ex, request(b"x"), environ, 1000)
    assert answered is None and future.done() and threads == [threading.get_ident()] * 2
    threads.clear()
    future, answered = api_inline.submit(ex, request(b"y"), {}, 1000)
    assert answered is None and future.result(5).outputs == {"m": b"y!!"}
    assert threading.get_ident() not in threads
    future, answered = api_inline.submit(Ignoring(), request(b"z"), environ, 1000)
    assert (future.result(), answered, writes) == ("elsewhere", None, [])


def test_a_refused_submit_under_an_offer_leaves_nothing_behind(chain):
    ex, _ = chain
    ex.close(5)
    with offered() as offer, pytest.raises(Unavailable):
        ex.submit(request(b"x"))
    assert offer.free
