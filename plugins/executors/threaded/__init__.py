"""The default executor plugin: runs each workflow on threads of the serving process.

See :mod:`.executor` for the lifecycle and :mod:`.engine` for the request path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Executor
from wfserve.kernel.contracts import Workflow
from wfserve.kernel.settings import Settings
from wfserve.plugins.executors.threaded.executor import ThreadedExecutor

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

__all__ = ["ThreadedExecutor", "wfserve_make_executor"]


@hookimpl(trylast=True)
def wfserve_make_executor(
    workflow: Workflow, settings: Settings, kernel: Kernel
) -> Executor | None:
    """Default implementation: the threaded executor, when ``settings.executor`` is threaded."""
    if settings.executor != "threaded":
        return None
    return ThreadedExecutor(workflow, settings, kernel)
