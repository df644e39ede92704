"""The threaded executor: the default :class:`~kernel.contracts.Executor`.

Lifecycle (start, scale, describe, close) lives here; the request path in :mod:`.engine`.
Threads per workflow: one collector per worker of each node, elastic runner threads (busy
ones bounded by the number of workers), one watchdog. ``close`` joins them all, except a
handler that never returns, whose thread is left behind (daemon) and logged.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING
from typing import Any

import structlog

from kernel.contracts import LoadContext
from kernel.contracts import PredictRequest
from kernel.contracts import PredictResult
from kernel.contracts import Workflow
from kernel.errors import ModelNotFound
from kernel.errors import RegistrationFailed
from kernel.errors import Unavailable
from kernel.errors import WfserveError
from kernel.settings import Settings
from plugins.executors.response import render_response
from plugins.executors.threaded.engine import Engine
from plugins.executors.threaded.nodes import NodeRuntime
from plugins.executors.threaded.nodes import Worker
from plugins.executors.threaded.pool import RunnerPool
from plugins.executors.threaded.state import RUNNING
from plugins.executors.threaded.state import Attempt
from plugins.executors.threaded.state import Req
from plugins.executors.threaded.watchdog import Watchdog

if TYPE_CHECKING:
    from kernel.core import Kernel

log = structlog.get_logger(__name__)
#: seconds ``close`` waits for threads to exit even when its drain timeout is spent
JOIN_GRACE_S = 2.0


class ThreadedExecutor:
    """Runs one workflow on threads of this process (see the module docstring)."""

    def __init__(self, workflow: Workflow, settings: Settings, kernel: Kernel) -> None:
        self.workflow = workflow
        self.settings = settings
        self.kernel = kernel
        self.name = workflow.name
        self.dag = workflow.dag
        self.nodes: dict[str, NodeRuntime] = {}
        self._pool = RunnerPool(self.name)
        self._engine: Engine | None = None
        self._watchdog: Watchdog | None = None
        self._closing = False
        self._started = False

    # --- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Load every node's workers and start threads; raises ``RegistrationFailed``.

        A node whose workers fail to start (its handler fails to import, to be found or to
        initialize, ``MemoryError`` included) fails with TorchServe's "Failed to start workers
        for model <wf>__<node> version: <v>"; the cause is logged.
        """
        failures: list[str] = []
        for name in self.dag.order:
            spec = self.workflow.spec.nodes[name]
            try:
                batcher = self.kernel.hooks.make_batcher(spec)
                node = NodeRuntime(spec, self.dag.parents(name), self.dag.children(name), batcher)
                self.nodes[name] = node
            except Exception as exc:
                detail = exc.message if isinstance(exc, WfserveError) else str(exc) or repr(exc)
                failures.append(
                    f"Workflow Node {self.name}__{name} failed to register. Details: {detail}"
                )
                continue
            try:
                for _ in range(node.target):
                    node.add(self._load_worker(node))
            except Exception as exc:
                failures.append(self._start_failure(node, exc))
        if failures:
            for node in self.nodes.values():
                node.batcher.close()
            self.nodes.clear()
            raise RegistrationFailed(
                f"Workflow {self.name} has failed to register. Failures: [{', '.join(failures)}]",
                workflow=self.name, failures=failures,
            )
        engine = Engine(
            self.name, self.nodes, self.workflow.spec.typed,
            lambda obj: self.kernel.hooks.serializer("", obj), self._pool, self.dag.leaves,
        )
        self._engine = engine
        self._watchdog = Watchdog(
            self.name, list(self.nodes.values()), self._expire, self._deadline
        )
        engine.hint = self._watchdog.hint
        self._watchdog.start()
        for node in self.nodes.values():
            for _ in range(node.target):
                self._start_collector(node)
        self._started = True

    def _start_failure(self, node: NodeRuntime, exc: Exception) -> str:
        """Log why ``node``'s workers failed to start; TorchServe's message for it."""
        log.error("workers failed to start", workflow=self.name, node=node.name,
                  reason=exc.message if isinstance(exc, WfserveError) else repr(exc))
        archive = self.workflow.node_archives.get(node.name)
        version = (archive.version if node.spec.kind == "model" and archive else None) or "1.0"
        return f"Failed to start workers for model {self.name}__{node.name} version: {version}"

    def _load_worker(self, node: NodeRuntime) -> Worker:
        spec = node.spec
        if spec.kind == "model":
            archive = self.workflow.node_archives.get(spec.name)
            if archive is None:
                raise WfserveError(f"no model archive was opened for node {spec.name}")
        else:
            archive = self.workflow.archive
        index = node.take_index()
        context = LoadContext(
            workflow=self.name, model_name=f"{self.name}__{spec.name}",
            model_dir=archive.root, settings=self.settings, worker_index=index,
            typed=self.workflow.spec.typed,
        )
        handler = self.kernel.hooks.load_handler(node=spec, archive=archive, context=context)
        return Worker(index, handler)

    def _start_collector(self, node: NodeRuntime) -> None:
        assert self._engine is not None
        with node.lock:
            node.collectors += 1
            node.threads = [t for t in node.threads if t.is_alive()]
            thread = threading.Thread(
                target=self._engine.collect, args=(node,), daemon=True,
                name=f"{self.name}__{node.name}-collector-{len(node.threads)}",
            )
            node.threads.append(thread)
        thread.start()

    # --- requests ----------------------------------------------------------------------------

    def submit(self, request: PredictRequest) -> concurrent.futures.Future[PredictResult]:
        """Start one request; raises ``Unavailable`` at once when closing or the root's queue
        is full. The future fails with ``NodeFailed``, ``Timeout`` or ``Unavailable``.

        With ``request.run_here``, the root and each first ready child run on this thread
        while their worker is idle and nothing is queued (siblings go to runner threads), so
        a request can be answered with no thread handoff; a node attempt that times out here
        is retried or failed by the watchdog like any other, settling the future elsewhere.
        """
        return self._submit(request, self.dag.root, single=False)

    def submit_node(self, node: str, request: PredictRequest) -> concurrent.futures.Future[Any]:
        """Run one node alone (TorchServe's ``/predictions/<wf>__<node>``) with ``request.row``
        as its input row, through its batcher and workers, once: no retries and no
        ``timeout-ms``, only the request's deadline (a running handler that overruns it fails
        the call with "Worker died." and its worker is replaced). The future holds the node's
        output (bytes in compatibility mode), or fails with ``PredictionFailed`` carrying
        TorchServe's status and message. Raises ``ModelNotFound``."""
        if node not in self.nodes:
            raise ModelNotFound(f"Model not found: {self.name}__{node}", node=node)
        return self._submit(request, node, single=True)

    def render(self, result: PredictResult) -> bytes:
        """The response body of ``result`` (:func:`plugins.executors.response.render_response`
        with this kernel's serializers)."""
        return render_response(result, lambda obj: self.kernel.hooks.serializer("", obj))

    def _submit(
        self, request: PredictRequest, start: str, single: bool
    ) -> concurrent.futures.Future[Any]:
        engine = self._engine
        if engine is None or self._closing:
            raise Unavailable(f"Workflow {self.name} is not accepting requests", workflow=self.name)
        pending = {n: len(node.parents) for n, node in self.nodes.items()}
        req = Req(request, pending, len(engine.leaves), single)
        with engine.lock:
            engine.inflight[id(req)] = req
        if request.deadline is not None and self._watchdog is not None:
            self._watchdog.track_request(req, request.deadline)
        here = request.run_here and not single
        if here and request.on_future is not None:
            request.on_future(req.future)
        try:
            cont = engine.dispatch(req, self.nodes[start], request.row, 0, here=here)
        except WfserveError:
            with engine.lock:
                req.done = True
                engine.inflight.pop(id(req), None)
            raise
        if cont is not None:  # PERF: the chain on this thread, no handoff (run_here)
            engine.run_task(*cont)
        return req.future

    def _deadline(self, req: Req) -> None:
        """The watchdog's: ``req``'s own deadline passed. A model call whose handler is still
        running fails as TorchServe's response timeout does ("Worker died.", the worker
        replaced); anything else fails with ``Timeout``."""
        assert self._engine is not None
        if req.attempt is not None and req.attempt.state == RUNNING:
            self._expire(req.attempt)
        self._engine.request_deadline(req)

    def _expire(self, att: Attempt) -> None:
        assert self._engine is not None
        stuck = self._engine.expire(att)
        if stuck is None:
            return
        node, worker = stuck
        marked = node.mark_stuck(worker)
        if marked is None:
            return
        replace_worker, replace_collector = marked
        log.warning(
            "worker presumed stuck", workflow=self.name, node=node.name, worker=worker.index,
            stuck=node.stuck, replaced=replace_worker,
        )
        if replace_worker:
            try:
                self._pool.submit(self._replace, node)
            except Unavailable:
                return
        if replace_collector:
            self._start_collector(node)

    def _replace(self, node: NodeRuntime) -> None:
        try:
            node.add(self._load_worker(node))
        except Exception as exc:
            log.error("replacement worker failed to load", workflow=self.name, node=node.name,
                      reason=repr(exc))

    # --- management --------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Live per-node configuration, worker states and queue lengths, JSON-able."""
        engine = self._engine
        return {
            "workflow": self.name,
            "executor": "threaded",
            "typed": self.workflow.spec.typed,
            "accepting": self._started and not self._closing,
            "inflight": len(engine.inflight) if engine else 0,
            "nodes": {name: node.describe() for name, node in self.nodes.items()},
        }

    def scale(
        self,
        node: str,
        *,
        min_workers: int | None = None,
        max_workers: int | None = None,
        batch_size: int | None = None,
        max_batch_delay: int | None = None,
    ) -> dict[str, Any]:
        """Change one node's workers or batching without dropping in-flight requests.

        New workers are loaded before this returns; surplus ones retire when idle. Returns the
        node's new :meth:`describe` entry. Raises ``ModelNotFound`` or ``BadRequest``, and
        ``Unavailable`` when the workflow is closing (unregistered or replaced meanwhile).
        """
        runtime = self.nodes.get(node)
        if runtime is None:
            raise ModelNotFound(f"Model not found: {self.name}__{node}", node=node)
        self._refuse_if_closing()
        runtime.apply_scale(min_workers, max_workers, batch_size, max_batch_delay)
        # NOTE: both loops re-check ``_closing``. A closing executor's collectors exit as soon
        # as they start, so without it the second loop spins forever starting threads; and a
        # closing workflow's files are being deleted, so loading a worker fails.
        try:
            while len(runtime.workers) < runtime.target and not self._closing:
                runtime.add(self._load_worker(runtime))
        except WfserveError:
            self._refuse_if_closing()
            raise
        runtime.retire_extra()
        while runtime.collectors - runtime.stuck_collectors < runtime.target:
            self._refuse_if_closing()
            self._start_collector(runtime)
        self._refuse_if_closing()
        return runtime.describe()

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise Unavailable(f"Workflow {self.name} is shutting down", workflow=self.name)

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, let in-flight ones finish within ``timeout``, fail the rest
        with ``Unavailable``, stop and join every thread."""
        self._closing = True
        engine = self._engine
        end = time.monotonic() + timeout
        if engine is not None:
            with engine.idle_cond:
                engine.idle_cond.wait_for(lambda: not engine.inflight, timeout)
                left = list(engine.inflight.values())
            for req in left:
                engine.fail(req, Unavailable(
                    f"Workflow {self.name} is shutting down", workflow=self.name
                ))
            engine.stopping = True
        for node in self.nodes.values():
            node.batcher.close()
            with node.cond:
                node.cond.notify_all()
        if self._watchdog is not None:
            self._watchdog.stop()
        self._pool.stop()
        self._join(end)

    def threads(self) -> list[threading.Thread]:
        """Every thread this executor started that is still alive."""
        found = [t for n in self.nodes.values() for t in n.threads]
        found += list(self._pool.threads)
        if self._watchdog is not None and self._watchdog.thread is not None:
            found.append(self._watchdog.thread)
        return [t for t in found if t.is_alive()]

    def _join(self, end: float) -> None:
        end = max(end, time.monotonic() + JOIN_GRACE_S)
        for thread in self.threads():
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))
        left = [t.name for t in self.threads()]
        if left:
            log.warning("threads still running after close (stuck handlers)",
                        workflow=self.name, threads=left)
