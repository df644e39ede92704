"""The lifecycle every engine shares: start (nodes, registration failures), requests in and
results out, describe, scale, close.

An engine subclasses :class:`ExecutorCore` with its :class:`~.engine.EngineCore` and its node
class, and fills in where workers live: :meth:`~ExecutorCore.new_node`,
:meth:`~ExecutorCore.start_workers` (with :meth:`~ExecutorCore.load_context` and
:meth:`~ExecutorCore.archive_of` to load them), :meth:`~ExecutorCore.serve`,
:meth:`~ExecutorCore.rescale`, :meth:`~ExecutorCore.stop_workers`. The result is an
:class:`~wfserve.kernel.contracts.Executor`.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

import structlog

from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import Batcher
from wfserve.kernel.contracts import ExecutorState
from wfserve.kernel.contracts import LoadContext
from wfserve.kernel.contracts import NodeState
from wfserve.kernel.contracts import PredictRequest
from wfserve.kernel.contracts import PredictResult
from wfserve.kernel.contracts import Workflow
from wfserve.kernel.errors import ModelNotFound
from wfserve.kernel.errors import RegistrationFailed
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.settings import Settings
from wfserve.kernel.spec import NodeSpec
from wfserve.plugins.executors.core.engine import EngineCore
from wfserve.plugins.executors.core.engine import Routing
from wfserve.plugins.executors.core.nodes import NodeBase
from wfserve.plugins.executors.core.records import RUNNING
from wfserve.plugins.executors.core.records import Attempt
from wfserve.plugins.executors.core.records import Req
from wfserve.plugins.executors.core.watchdog import Watchdog
from wfserve.plugins.executors.response import render_response

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

log = structlog.get_logger(__name__)


class ExecutorCore:
    """One workflow on one engine (see the module docstring).

    :param engine: the engine's request path, built over :attr:`nodes` (filled at start).
    """

    #: the engine's name, as ``describe`` reports it
    ENGINE: ClassVar[str] = ""

    def __init__(self, workflow: Workflow, settings: Settings, kernel: Kernel) -> None:
        self.workflow = workflow
        self.settings = settings
        self.kernel = kernel
        self.name = workflow.name
        self.dag = workflow.dag
        self.nodes: dict[str, Any] = {}
        self.engine: EngineCore = self.new_engine()
        self.engine.routing = Routing.of(workflow.spec, settings.max_map_items)
        self.watchdog: Watchdog | None = None
        self.closing = False
        self.started = False

    # --- what an engine fills in -----------------------------------------------------------

    def new_engine(self) -> EngineCore:
        """The engine's request path over :attr:`nodes`."""
        raise NotImplementedError

    def new_node(self, spec: NodeSpec, parents: list[str], children: list[str],
                 batcher: Batcher) -> NodeBase:
        """The engine's live node for ``spec``; raising fails the node's registration."""
        raise NotImplementedError

    def start_workers(self) -> dict[str, str]:
        """Load every node's workers; the nodes whose workers failed to start, with why (for
        the log: the answer gives TorchServe's message only)."""
        raise NotImplementedError

    def serve(self) -> None:
        """Start serving every node's batcher (registration succeeded)."""
        raise NotImplementedError

    def rescale(self, node: Any) -> None:
        """Bring ``node``'s workers to its new :attr:`~NodeBase.target` (more are loaded
        before this returns; surplus ones leave after their current batch)."""
        raise NotImplementedError

    def stop_workers(self, end: float) -> None:
        """Stop every worker and thread (``end``: a ``time.monotonic()`` to join by); also
        called when a registration fails."""
        raise NotImplementedError

    def threads(self) -> list[threading.Thread]:
        """Every thread this executor started that is still alive."""
        raise NotImplementedError

    def watch_model_call(self) -> bool:
        """Whether the watchdog enforces a model call's deadline (else its worker does)."""
        return True

    def state_extra(self) -> dict[str, Any]:
        """Engine-specific :class:`ExecutorState` fields (``address``)."""
        return {}

    # --- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Build every node and load its workers; raises ``RegistrationFailed``.

        A node that cannot be built fails with "Workflow Node <wf>__<node> failed to register";
        one whose workers fail to start (its handler fails to import, to be found or to
        initialize, ``MemoryError`` included) with TorchServe's "Failed to start workers for
        model <wf>__<node> version: <v>", the cause logged. Messages come in DAG order.
        """
        broken: dict[str, str] = {}
        for name in self.dag.order:
            spec = self.workflow.spec.nodes[name]
            try:
                batcher = self.kernel.hooks.make_batcher(spec)
                self.nodes[name] = self.new_node(
                    spec, self.dag.parents(name), self.dag.children(name), batcher)
            except Exception as exc:
                detail = exc.message if isinstance(exc, WfserveError) else str(exc) or repr(exc)
                broken[name] = (f"Workflow Node {self.name}__{name} failed to register. "
                                f"Details: {detail}")
        for name, reason in self.start_workers().items():
            log.error("workers failed to start", workflow=self.name, node=name, reason=reason)
            broken[name] = self.start_failure(name)
        if broken:
            self.stop_workers(time.monotonic())
            for node in self.nodes.values():
                node.batcher.close()
            self.nodes.clear()
            failures = [broken[n] for n in self.dag.order if n in broken]
            raise RegistrationFailed(
                f"Workflow {self.name} has failed to register. Failures: [{', '.join(failures)}]",
                workflow=self.name, failures=failures,
            )
        self.watchdog = Watchdog(self.name, list(self.nodes.values()), self.expire,
                                 self.deadline)
        self.engine.hint = self.watchdog.hint
        self.watchdog.start()
        self.serve()
        self.started = True

    def start_failure(self, name: str) -> str:
        """TorchServe's message for a node whose workers failed to start."""
        spec = self.workflow.spec.nodes[name]
        archive = self.workflow.node_archives.get(name)
        version = (archive.version if spec.kind == "model" and archive else None) or "1.0"
        return f"Failed to start workers for model {self.name}__{name} version: {version}"

    def archive_of(self, spec: NodeSpec) -> Archive:
        """Where ``spec``'s handler comes from: its ``.mar``, or the workflow's ``.war``."""
        if spec.kind != "model":
            return self.workflow.archive
        archive = self.workflow.node_archives.get(spec.name)
        if archive is None:
            raise WfserveError(f"no model archive was opened for node {spec.name}")
        return archive

    def load_context(self, node: NodeBase, archive: Archive, index: int) -> LoadContext:
        """The :class:`LoadContext` of worker ``index`` of ``node``."""
        return LoadContext(
            workflow=self.name, model_name=f"{self.name}__{node.name}",
            model_dir=archive.root, settings=self.settings, worker_index=index,
            typed=self.workflow.spec.typed,
        )

    # --- requests ----------------------------------------------------------------------------

    def submit(self, request: PredictRequest) -> concurrent.futures.Future[PredictResult]:
        """Start one request; raises ``Unavailable`` at once when closing or the root's queue
        is full. The future fails with ``NodeFailed``, ``Timeout`` or ``Unavailable``."""
        return self.begin(request, self.dag.root, single=False)

    def submit_node(self, node: str, request: PredictRequest) -> concurrent.futures.Future[Any]:
        """Run one node alone (TorchServe's ``/predictions/<wf>__<node>``) with ``request.row``
        as its input row, through its batcher and workers, once: no retries and no
        ``timeout-ms``, only the request's deadline (a running handler that overruns it fails
        the call with "Worker died." and its worker is replaced). The future holds the node's
        output (bytes in compatibility mode), or fails with ``PredictionFailed`` carrying
        TorchServe's status and message. Raises ``ModelNotFound``."""
        if node not in self.nodes:
            raise ModelNotFound(f"Model not found: {self.name}__{node}", node=node)
        return self.begin(request, node, single=True)

    def render(self, result: PredictResult) -> bytes:
        """The response body of ``result``
        (:func:`wfserve.plugins.executors.response.render_response`
        with this kernel's serializers)."""
        return render_response(result, lambda obj: self.kernel.hooks.serializer("", obj))

    def begin(self, request: PredictRequest, start: str, single: bool, **how: Any
              ) -> concurrent.futures.Future[Any]:
        """Admit ``request`` and dispatch its first node (``how``: the engine's dispatch
        keywords); the request record's future. Raises ``Unavailable``."""
        return self.admit(request, start, single, **how)[0].future

    def admit(self, request: PredictRequest, start: str, single: bool, **how: Any
              ) -> tuple[Req, Any]:
        """:meth:`begin`, also returning what the engine's first dispatch returned."""
        engine = self.engine
        if not self.started or self.closing:
            raise Unavailable(f"Workflow {self.name} is not accepting requests", workflow=self.name)
        req = engine.admit(request, single)
        if request.deadline is not None and self.watchdog is not None and (
                not single or self.watch_model_call()):
            self.watchdog.track_request(req, request.deadline)
        try:
            first = engine.dispatch(req, self.nodes[start], request.row, 0, **how)
        except WfserveError:
            engine.abort(req)
            raise
        return req, first

    def deadline(self, req: Req) -> None:
        """The watchdog's: ``req``'s own deadline passed. A model call whose handler is still
        running fails as TorchServe's response timeout does ("Worker died.", the worker
        replaced); anything else fails with ``Timeout``."""
        if req.attempt is not None and req.attempt.state == RUNNING:
            self.expire(req.attempt)
        self.engine.request_deadline(req)

    def expire(self, att: Attempt) -> None:
        """The watchdog's: ``att`` overran its deadline (the engine replaces a stuck worker)."""
        worker = self.engine.expire(att)
        if worker is not None:
            self.stuck(att.node, worker)

    def stuck(self, node: Any, worker: Any) -> None:
        """``worker`` of ``node`` is presumed stuck in a handler that overran its deadline."""

    # --- management --------------------------------------------------------------------------

    def describe(self) -> ExecutorState:
        """Live per-node configuration, worker states and queue lengths."""
        return ExecutorState(
            workflow=self.name, engine=self.ENGINE, typed=self.workflow.spec.typed,
            accepting=self.started and not self.closing, inflight=len(self.engine.inflight),
            nodes={name: node.state() for name, node in self.nodes.items()},
            **self.state_extra(),
        )

    def scale(self, node: str, *, min_workers: int | None = None,
              max_workers: int | None = None, batch_size: int | None = None,
              max_batch_delay: int | None = None) -> NodeState:
        """Change one node's workers or batching without dropping in-flight requests.

        New workers are loaded before this returns; surplus ones retire after their current
        batch. Returns the node's new state. Raises ``ModelNotFound`` or ``BadRequest``, and
        ``Unavailable`` when the workflow is closing (unregistered or replaced meanwhile).
        """
        runtime = self.nodes.get(node)
        if runtime is None:
            raise ModelNotFound(f"Model not found: {self.name}__{node}", node=node)
        self.refuse_if_closing()
        runtime.apply_scale(min_workers, max_workers, batch_size, max_batch_delay)
        self.rescale(runtime)
        self.refuse_if_closing()
        return runtime.state()

    def refuse_if_closing(self) -> None:
        """:raises Unavailable: the workflow is closing."""
        if self.closing:
            raise Unavailable(f"Workflow {self.name} is shutting down", workflow=self.name)

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, let in-flight ones finish within ``timeout``, fail the rest
        with ``Unavailable``, stop every worker and join every thread."""
        self.closing = True
        end = time.monotonic() + timeout
        self.engine.drain(timeout)
        for node in self.nodes.values():
            node.batcher.close()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.stop_workers(end)
