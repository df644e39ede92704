"""Default batching plugin: one :class:`DynamicBatcher` per node (batch-size, max-batch-delay).

The queue of each node is bounded by the ``job_queue_size`` setting; a full queue answers
``Unavailable`` (503) at once instead of queueing forever.
"""

from __future__ import annotations

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Batcher
from wfserve.kernel.settings import Settings
from wfserve.kernel.spec import NodeSpec
from wfserve.plugins.batching.dynamic import DynamicBatcher

__all__ = ["DynamicBatcher", "wfserve_make_batcher"]


@hookimpl(trylast=True)
def wfserve_make_batcher(node: NodeSpec, settings: Settings) -> Batcher:
    """Default implementation: a dynamic batcher with the node's batch-size and delay."""
    return DynamicBatcher(
        batch_size=node.config.batch_size,
        max_batch_delay_ms=node.config.max_batch_delay,
        capacity=settings.job_queue_size,
        name=node.name,
    )
