"""A node handler proxy: times each batch call, counts rows and errors, binds log context;
and :class:`HandlerCalls`, which records a call, wherever the handler ran.

While the handler runs, ``workflow``, ``node``, ``worker`` and the batch's request id(s) are
set in :data:`wfserve.kernel.logs.NODE_CONTEXT`, so lines the handler logs carry them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from wfserve.kernel.logs import NODE_CONTEXT

if TYPE_CHECKING:
    from wfserve.kernel.contracts import NodeHandler
    from wfserve.kernel.contracts import RowMeta
    from wfserve.plugins.metrics.instruments import Metrics


class HandlerCalls:
    """The per-node handler series of one node: the one place a handler call is recorded.

    Recorded for a handler wrapped in this process (:class:`InstrumentedHandler`) and for one
    that ran elsewhere and was reported through ``wfserve_handler_ran`` (a Ray actor's).
    """

    __slots__ = ("batch_size", "duration", "errors", "labels", "rows")

    def __init__(self, metrics: Metrics, workflow: str, node: str) -> None:
        self.labels = (workflow, node)
        self.rows = metrics.node_requests.labels(workflow, node)
        self.duration = metrics.node_duration.labels(workflow, node)
        self.batch_size = metrics.batch_size.labels(workflow, node)
        self.errors = metrics.node_errors

    def record(self, rows: int, seconds: float, error: str | None) -> None:
        """One handler call over ``rows`` rows that took ``seconds``; ``error``: the class
        name of what it raised, or None."""
        if error is not None:
            self.errors.labels(*self.labels, error).inc()
        self.duration.observe(seconds)
        self.batch_size.observe(rows)
        self.rows.inc(rows)


class InstrumentedHandler:
    """Delegates to ``handler``; records each call in ``metrics``."""

    __slots__ = ("calls", "handler", "labels", "worker")

    def __init__(self, handler: NodeHandler, workflow: str, node: str, worker: int,
                 metrics: Metrics) -> None:
        self.handler = handler
        self.labels = (workflow, node)
        self.worker = worker
        self.calls = HandlerCalls(metrics, workflow, node)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)

    def __call__(self, batch: list[dict[str, Any]], meta: list[RowMeta]) -> Sequence[Any]:
        workflow, node = self.labels
        ids = [m.request_id for m in meta]
        context: dict[str, Any] = {"workflow": workflow, "node": node, "worker": self.worker}
        if len(ids) == 1:
            context["request_id"] = ids[0]
        else:
            context["request_ids"] = ids
        token = NODE_CONTEXT.set(context)
        error = None
        started = time.monotonic()
        try:
            return self.handler(batch, meta)
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            self.calls.record(len(batch), time.monotonic() - started, error)
            NODE_CONTEXT.reset(token)
