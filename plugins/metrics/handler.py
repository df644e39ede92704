"""A node handler proxy: times each batch call, counts rows and errors, binds log context.

While the handler runs, ``workflow``, ``node``, ``worker`` and the batch's request id(s) are
set in :data:`kernel.logs.NODE_CONTEXT`, so lines the handler logs carry them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from kernel.logs import NODE_CONTEXT

if TYPE_CHECKING:
    from kernel.contracts import NodeHandler
    from kernel.contracts import RowMeta
    from plugins.metrics.instruments import Metrics


class InstrumentedHandler:
    """Delegates to ``handler``; records each call in ``metrics``."""

    __slots__ = ("batch_size", "duration", "errors", "handler", "labels", "metrics", "rows",
                 "worker")

    def __init__(self, handler: NodeHandler, workflow: str, node: str, worker: int,
                 metrics: Metrics) -> None:
        self.handler = handler
        self.metrics = metrics
        self.labels = (workflow, node)
        self.worker = worker
        self.rows = metrics.node_requests.labels(workflow, node)
        self.duration = metrics.node_duration.labels(workflow, node)
        self.batch_size = metrics.batch_size.labels(workflow, node)

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
        started = time.monotonic()
        try:
            return self.handler(batch, meta)
        except BaseException as exc:
            self.metrics.node_errors.labels(workflow, node,
                               type(exc).__name__).inc()
            raise
        finally:
            self.duration.observe(time.monotonic() - started)
            self.batch_size.observe(len(batch))
            self.rows.inc(len(batch))
            NODE_CONTEXT.reset(token)


