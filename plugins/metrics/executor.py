"""An executor proxy that records every request's outcome, latency and node timings.

Built by the metrics plugin's ``wfserve_make_executor`` wrapper around whatever executor the
chosen plugin returned; everything else is delegated unchanged. Recording happens in a
callback of the executor's own future; ``render`` (on the request thread) fills the request's
``Server-Timing`` observation.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import TYPE_CHECKING
from typing import Any

from wfserve.kernel.contracts import NodeTiming
from wfserve.kernel.contracts import PredictResult
from wfserve.kernel.errors import NodeFailed
from wfserve.kernel.errors import Timeout
from wfserve.plugins.metrics.timing import current

if TYPE_CHECKING:
    from wfserve.kernel.contracts import Executor
    from wfserve.kernel.contracts import ExecutorState
    from wfserve.kernel.contracts import NodeState
    from wfserve.kernel.contracts import PredictRequest
    from wfserve.plugins.metrics.instruments import Metrics


class InstrumentedExecutor:
    """Delegates to ``executor``; records each request in ``metrics``."""

    def __init__(self, executor: Executor, workflow: str, version: str,
                 metrics: Metrics) -> None:
        self.inner = executor
        self.workflow = workflow
        self.version = version
        self.metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start(self) -> None:
        self.inner.start()

    def submit(self, request: PredictRequest) -> concurrent.futures.Future[PredictResult]:
        started = self._started()
        return self._watch(self.inner.submit(request), None, started)

    def submit_node(self, node: str, request: PredictRequest) -> concurrent.futures.Future[Any]:
        started = self._started()
        return self._watch(self.inner.submit_node(node, request), node, started)

    def render(self, result: PredictResult) -> bytes:
        """Render, and fill this request's ``Server-Timing`` observation (request thread)."""
        observation = current()
        if observation is not None and observation.started is not None:
            observation.timings = list(result.timings)
            observation.total = time.monotonic() - observation.started
        return self.inner.render(result)

    def describe(self) -> ExecutorState:
        return self.inner.describe()

    def scale(self, node: str, *, min_workers: int | None = None,
              max_workers: int | None = None, batch_size: int | None = None,
              max_batch_delay: int | None = None) -> NodeState:
        return self.inner.scale(node, min_workers=min_workers, max_workers=max_workers,
                                batch_size=batch_size, max_batch_delay=max_batch_delay)

    def close(self, timeout: float = 30.0) -> None:
        self.inner.close(timeout)

    # --- recording ---------------------------------------------------------------------------

    @staticmethod
    def _started() -> float:
        """Now, also recorded as the start of this request's ``Server-Timing`` total (taken
        before the inner submit)."""
        started = time.monotonic()
        observation = current()
        if observation is not None:
            observation.started = started
        return started

    def _watch(self, inner: concurrent.futures.Future[Any], node: str | None, started: float
               ) -> concurrent.futures.Future[Any]:
        """Record the request when it settles, on the thread that settles it.

        PERF: a callback on the executor's own future, not a second future to forward through;
        ``Server-Timing`` is filled by :meth:`render` on the request thread instead.
        """
        inner.add_done_callback(
            lambda done: self._record(done, node, time.monotonic() - started))
        return inner

    def _record(self, done: concurrent.futures.Future[Any], node: str | None,
                elapsed: float) -> None:
        m, wf = self.metrics, self.workflow
        if done.cancelled():
            return
        exc = done.exception()
        m.requests.labels(wf).inc()
        m.duration.labels(wf).observe(elapsed)
        timings: list[NodeTiming] = []
        if exc is None:
            result = done.result()
            if isinstance(result, PredictResult):
                timings = list(result.timings)
            elif node is not None:
                timings = [NodeTiming(node, 0.0, elapsed)]
        else:
            m.errors.labels(wf, type(exc).__name__).inc()
            self._record_failure(exc)
        for t in timings:
            m.node_queue.labels(wf, t.node).observe(t.queued)
            if t.attempts > 1:
                m.retries.labels(wf, t.node).inc(t.attempts - 1)
            m.torchserve.add(f"{wf}__{t.node}", self.version, 1, t.run * 1e6, t.queued * 1e6)

    def _record_failure(self, exc: BaseException) -> None:
        m, wf = self.metrics, self.workflow
        if isinstance(exc, NodeFailed):
            fields = exc.fields
            failed = str(fields.get("node", ""))
            attempts = int(fields.get("attempts", 1) or 1)
            if attempts > 1:
                m.retries.labels(wf, failed).inc(attempts - 1)
            if str(fields.get("cause", "")).startswith("timed out"):
                m.node_timeouts.labels(wf, failed).inc()
        elif isinstance(exc, Timeout):
            m.request_timeouts.labels(wf).inc()

