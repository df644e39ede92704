"""The Ray executor plugin: ``executor: ray`` runs every workflow on a Ray cluster.

Same ``.war``, same spec, same REST API: each DAG node becomes a pool of Ray actors
(``max-workers`` of them, each loading the node's handler once from the archive shipped
through the object store), fed whole batches by the node's usual batcher; outputs pass
between nodes as object-store references. A model may add placement that TorchServe ignores::

    m1:
      url: m1.mar
      ray: {num_cpus: 1, num_gpus: 1, resources: {gpu_node: 1}}

Settings: ``executor: ray``, ``ray_address`` (``local`` | ``auto`` | ``ray://host:port``),
``ray_num_cpus`` (local only), and ``plugins: {ray: {init: {...}, start_timeout_s: 300}}``.
Needs the ``ray`` extra (``pip install 'wfserve[ray]'``); without it choosing this executor is
a ``UsageError`` naming the extra. Importing this module does not import Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Executor
from wfserve.kernel.contracts import Workflow
from wfserve.kernel.settings import Settings
from wfserve.plugins.executors.ray import cluster
from wfserve.plugins.executors.ray.settings import RaySettings

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

__all__ = ["wfserve_make_executor", "wfserve_preload", "wfserve_settings", "wfserve_shutdown",
           "wfserve_spec_sections"]


@hookimpl
def wfserve_spec_sections() -> dict[str, Callable[[Any], Any]]:
    """A model's ``ray:`` placement, checked when the spec is parsed."""
    from wfserve.plugins.executors.ray.actor import placement_options

    def check(value: Any) -> dict[str, Any]:
        placement_options(value)
        return dict(value)

    return {"ray": check}


@hookimpl
def wfserve_settings() -> type:
    """:class:`~wfserve.plugins.executors.ray.settings.RaySettings`."""
    return RaySettings


@hookimpl(trylast=True)
def wfserve_make_executor(
    workflow: Workflow, settings: Settings, kernel: Kernel
) -> Executor | None:
    """The Ray executor when ``settings.executor`` is ray; raises ``UsageError`` naming the
    ``ray`` extra when Ray is not installed."""
    if settings.executor != "ray":
        return None
    cluster.require_ray()
    from wfserve.plugins.executors.ray.executor import RayExecutor

    return RayExecutor(workflow, settings, kernel)


@hookimpl
def wfserve_preload(kernel: Kernel) -> None:
    """Refuse several server processes with ``executor: ray``: each would start or join Ray
    and make its own actors for every node; one server process already spreads the nodes
    over the cluster's cores."""
    from wfserve.kernel.errors import UsageError
    from wfserve.plugins.api.settings import server_processes

    workers = server_processes(kernel.settings)
    if kernel.settings.executor == "ray" and workers > 1:
        raise UsageError(f"executor: ray runs one server process (workers is {workers}): Ray "
                         "actors already use every core of the cluster; set workers to 1")


@hookimpl(trylast=True)
def wfserve_shutdown(kernel: Kernel) -> None:
    """Disconnect from Ray after the workflows were drained (if this server connected)."""
    connection = kernel.stash.get(cluster.CONNECTION)
    if connection is not None:
        connection.disconnect()
