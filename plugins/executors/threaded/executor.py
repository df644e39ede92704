"""The threaded executor: the default :class:`~wfserve.kernel.contracts.Executor`.

Node workers are handler instances in this process; where they live is all this module adds
to the executor core (:mod:`wfserve.plugins.executors.core`). Threads per workflow: one collector
per worker of each node, elastic runner threads (busy ones bounded by the number of workers), the
core's watchdog. ``close`` joins them all, except a handler that never returns, whose thread is
left behind (daemon) and logged.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time

import structlog

from wfserve.kernel.contracts import Batcher
from wfserve.kernel.contracts import PredictRequest
from wfserve.kernel.contracts import PredictResult
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.spec import NodeSpec
from wfserve.plugins.executors.core.executor import ExecutorCore
from wfserve.plugins.executors.threaded import inline
from wfserve.plugins.executors.threaded.engine import Engine
from wfserve.plugins.executors.threaded.nodes import NodeRuntime
from wfserve.plugins.executors.threaded.nodes import Worker
from wfserve.plugins.executors.threaded.pool import RunnerPool

log = structlog.get_logger(__name__)
#: seconds ``close`` waits for threads to exit even when its drain timeout is spent
JOIN_GRACE_S = 2.0


class ThreadedExecutor(ExecutorCore):
    """Runs one workflow on threads of this process (see the module docstring)."""

    ENGINE = "threaded"

    def new_engine(self) -> Engine:
        """The threaded engine, with this executor's runner pool."""
        self.pool = RunnerPool(self.name)
        self._threaded = Engine(self.name, self.nodes, self.dag.leaves,
                                self.workflow.spec.typed,
                                lambda obj: self.kernel.hooks.serializer("", obj), self.pool)
        return self._threaded

    def new_node(self, spec: NodeSpec, parents: list[str], children: list[str],
                 batcher: Batcher) -> NodeRuntime:
        """A node whose workers are handler instances of this process."""
        return NodeRuntime(spec, parents, children, batcher)

    # --- workers -----------------------------------------------------------------------------

    def start_workers(self) -> dict[str, str]:
        """Load ``max-workers`` handler instances per node."""
        failed: dict[str, str] = {}
        for node in self.nodes.values():
            try:
                for _ in range(node.target):
                    node.add(self.load_worker(node))
            except Exception as exc:
                failed[node.name] = exc.message if isinstance(exc, WfserveError) else repr(exc)
        return failed

    def load_worker(self, node: NodeRuntime) -> Worker:
        """One handler instance of ``node``, through ``wfserve_load_handler``."""
        archive = self.archive_of(node.spec)
        index = node.take_index()
        handler = self.kernel.hooks.load_handler(
            node=node.spec, archive=archive, context=self.load_context(node, archive, index))
        return Worker(index, handler)

    def serve(self) -> None:
        """One collector thread per worker."""
        for node in self.nodes.values():
            for _ in range(node.target):
                self._start_collector(node)

    def _start_collector(self, node: NodeRuntime) -> None:
        with node.lock:
            node.collectors += 1
            node.threads = [t for t in node.threads if t.is_alive()]
            thread = threading.Thread(
                target=self._threaded.collect, args=(node,), daemon=True,
                name=f"{self.name}__{node.name}-collector-{len(node.threads)}",
            )
            node.threads.append(thread)
        thread.start()

    def stuck(self, node: NodeRuntime, worker: Worker) -> None:
        """Retire a worker presumed stuck; load a replacement (at most ``max-workers`` stuck
        at a time) and a collector if one is stuck with it."""
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
                self.pool.submit(self._replace, node)
            except Unavailable:
                return
        if replace_collector:
            self._start_collector(node)

    def _replace(self, node: NodeRuntime) -> None:
        try:
            node.add(self.load_worker(node))
        except Exception as exc:
            log.error("replacement worker failed to load", workflow=self.name, node=node.name,
                      reason=repr(exc))

    def rescale(self, node: NodeRuntime) -> None:
        """Load workers up to the target, retire surplus ones, match the collectors."""
        # NOTE: both loops re-check ``closing``. A closing executor's collectors exit as soon
        # as they start, so without it the second loop spins forever starting threads; and a
        # closing workflow's files are being deleted, so loading a worker fails.
        try:
            while len(node.workers) < node.target and not self.closing:
                node.add(self.load_worker(node))
        except WfserveError:
            self.refuse_if_closing()
            raise
        node.retire_extra()
        while node.collectors - node.stuck_collectors < node.target:
            self.refuse_if_closing()
            self._start_collector(node)

    # --- requests ----------------------------------------------------------------------------

    def submit(self, request: PredictRequest) -> concurrent.futures.Future[PredictResult]:
        """Start one request (see :meth:`ExecutorCore.submit`).

        Under an :func:`.inline.offered` offer, the root's first batch is left to the offering
        thread when its worker is idle and nothing is queued (each first ready child then
        continues there; siblings go to runner threads); the future comes back before any
        node ran (see :mod:`.inline`).
        """
        offer = inline.current()
        if offer is None or not offer.free:
            return self.begin(request, self.dag.root, single=False)
        req, cont = self.admit(request, self.dag.root, single=False, here=True)
        if cont is not None:  # PERF: the chain on the offering thread, no handoff
            offer.take(functools.partial(self._threaded.run_task, *cont))
        return req.future

    # --- stopping ----------------------------------------------------------------------------

    def stop_workers(self, end: float) -> None:
        """Wake every waiting collector, stop the runners, join every thread by ``end``."""
        for node in self.nodes.values():
            with node.cond:
                node.cond.notify_all()
        self.pool.stop()
        end = max(end, time.monotonic() + JOIN_GRACE_S)
        for thread in self.threads():
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))
        left = [t.name for t in self.threads()]
        if left:
            log.warning("threads still running after close (stuck handlers)",
                        workflow=self.name, threads=left)

    def threads(self) -> list[threading.Thread]:
        """Every thread this executor started that is still alive."""
        found: list[threading.Thread] = [t for n in self.nodes.values() for t in n.threads]
        found += list(self.pool.threads)
        if self.watchdog is not None and self.watchdog.thread is not None:
            found.append(self.watchdog.thread)
        return [t for t in found if t.is_alive()]

