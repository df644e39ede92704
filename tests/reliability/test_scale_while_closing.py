"""Regression: scaling a node of a workflow that is being unregistered or replaced.

Found by test_races.py: ``scale`` on a closing executor looped forever starting collector
threads (each exits at once when the executor is stopping), so the management call never
answered; and a worker loaded while ``close`` deleted the workflow's files failed with a 500.
Now both answer ``Unavailable`` (503) at once, and no thread outlives the executor."""

import threading
import time

import pytest

from tests.executor_fakes import make_executor
from tests.executor_fakes import per_row
from wfserve.kernel.errors import RegistrationFailed
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WfserveError

SPEC = "models:\n  m: {url: m.mar, max-workers: 1}\ndag:\n  pre: [m]\n"


def test_scale_after_close_is_unavailable_at_once_and_starts_no_thread(tmp_path):
    before = set(threading.enumerate())
    ex, _ = make_executor(tmp_path, SPEC, {"pre": per_row(lambda r: r["body"]),
                                           "m": per_row(lambda r: r["body"])})
    ex.close(5)
    result: list[object] = []

    def scale():
        try:
            result.append(ex.scale("m", min_workers=3, max_workers=3))
        except Unavailable as exc:
            result.append(exc)

    started = time.monotonic()
    t = threading.Thread(target=scale, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "scale on a closed executor never returned"
    assert time.monotonic() - started < 1
    (exc,) = result
    assert isinstance(exc, Unavailable) and exc.message == "Workflow wf is shutting down"
    time.sleep(0.1)
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_a_worker_load_failing_because_close_began_is_unavailable(tmp_path):
    gate, loading = threading.Event(), threading.Event()
    ex, _ = make_executor(tmp_path, SPEC, {"pre": per_row(lambda r: r["body"]),
                                           "m": per_row(lambda r: r["body"])})
    real_load = ex.load_worker

    def load(node):
        loading.set()
        gate.wait(5)
        if ex.closing:
            raise RegistrationFailed("m.pt does not exist")  # what a real handler load hits
        return real_load(node)

    ex.load_worker = load
    errors: list[BaseException] = []

    def scale():
        try:
            ex.scale("m", min_workers=2, max_workers=2)
        except WfserveError as exc:
            errors.append(exc)

    t = threading.Thread(target=scale, daemon=True)
    t.start()
    assert loading.wait(5)
    closer = threading.Thread(target=ex.close, args=(5,), daemon=True)
    closer.start()
    time.sleep(0.1)
    gate.set()
    t.join(5)
    closer.join(10)
    assert not t.is_alive(), "scale never returned"
    assert not closer.is_alive(), "close never returned"
    (exc,) = errors
    assert isinstance(exc, Unavailable)
    with pytest.raises(Unavailable):
        ex.scale("m", min_workers=1)
