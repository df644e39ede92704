"""Default handler loader: TorchServe handlers (functions, classes, built-ins) as NodeHandlers.

Function nodes call ``<node name>(data, context)`` from the ``.war``'s handler file; model
nodes load the ``.mar``'s handler (``module[:function]``, a handler class, or a TorchServe
built-in: with ``wfserve[ts]`` installed TorchServe's own, without it ``base_handler`` is
:class:`~wfserve.plugins.handlers.native.NativeBaseHandler` and the others a clear error). Every
call
imports a fresh copy of the handler module (:mod:`wfserve.plugins.handlers.importer`), so workers
and workflows never share module state, and initializes it once, as TorchServe's loader does.
"""

from __future__ import annotations

import structlog

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import LoadContext
from wfserve.kernel.contracts import NodeHandler
from wfserve.kernel.spec import NodeSpec
from wfserve.plugins.handlers.context import Context
from wfserve.plugins.handlers.context import build_context
from wfserve.plugins.handlers.entry import TsHandler
from wfserve.plugins.handlers.entry import load_entry
from wfserve.plugins.handlers.importer import HandlerError
from wfserve.plugins.handlers.settings import HandlerSettings

log = structlog.get_logger(__name__)

__all__ = ["Context", "HandlerError", "TsHandler", "load_handler"]


def load_handler(node: NodeSpec, archive: Archive, context: LoadContext) -> TsHandler:
    """Load one worker's handler for ``node`` (see the module docstring).

    :raises HandlerError: the handler file, function or class is missing or invalid, its
        import or initialization raised, or it needs ``wfserve[ts]``; the message names the
        node and the file.
    """
    ts_context = build_context(node, archive, context)
    where = f"node {node.name} ({archive.source.name}: {archive.handler})"
    function = node.name if node.kind == "function" else None
    try:
        entry = load_entry(archive, function, ts_context, where)
    except HandlerError as exc:
        if not exc.message.startswith(where):
            exc.message = f"{where}: {exc.message}"
            exc.args = (exc.message,)
        exc.fields.setdefault("node", node.name)
        exc.fields.setdefault("workflow", context.workflow)
        raise
    log.debug("handler loaded", workflow=context.workflow, node=node.name,
              worker=context.worker_index, handler=archive.handler)
    return TsHandler(entry, ts_context, node.name, typed=context.typed)


@hookimpl
def wfserve_settings() -> type:
    """:class:`~wfserve.plugins.handlers.settings.HandlerSettings`."""
    return HandlerSettings


@hookimpl
def wfserve_preload() -> None:
    """Import torch before the server processes are forked: its modules are then shared by
    all of them (copy-on-write) instead of being imported by each. Only imported: torch's
    thread pools start in each process, after the fork."""
    import torch  # noqa: F401


@hookimpl(trylast=True)
def wfserve_load_handler(node: NodeSpec, archive: Archive,
                         context: LoadContext) -> NodeHandler | None:
    """Default implementation: TorchServe-style handlers of ``.war`` and ``.mar`` archives."""
    if node.kind == "function" and archive.kind != "war":
        return None
    return load_handler(node, archive, context)
