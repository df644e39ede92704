"""The Ray executor: the same workflow, spec and semantics, with each node a pool of Ray actors.

Lifecycle (start, scale, describe, close) lives here; the request path in :mod:`.engine`.
``start`` connects to the cluster (:mod:`.cluster`), ships each archive folder once through
the object store, creates ``max-workers`` actors per node with the node's ``ray:`` placement
and waits until every one has loaded its handler. Threads in this process: one collector per
actor, one deadline watchdog; ``close`` joins them and kills the actors.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING
from typing import Any

import structlog

from kernel.contracts import Archive
from kernel.contracts import LoadContext
from kernel.contracts import PredictRequest
from kernel.contracts import PredictResult
from kernel.contracts import Workflow
from kernel.errors import ModelNotFound
from kernel.errors import RegistrationFailed
from kernel.errors import Unavailable
from kernel.errors import WfserveError
from kernel.settings import Settings
from plugins.executors.ray import cluster
from plugins.executors.ray.actor import actor_options
from plugins.executors.ray.actor import pack_archive
from plugins.executors.ray.actor import remote_class
from plugins.executors.ray.engine import Deadlines
from plugins.executors.ray.engine import Engine
from plugins.executors.ray.nodes import DEAD
from plugins.executors.ray.nodes import READY
from plugins.executors.ray.nodes import ActorWorker
from plugins.executors.ray.nodes import RayNode
from plugins.executors.ray.nodes import Req
from plugins.executors.response import render_response

if TYPE_CHECKING:
    from kernel.core import Kernel

log = structlog.get_logger(__name__)


class RayExecutor:
    """Runs one workflow on a Ray cluster (see the module docstring).

    ``plugins: {ray: {start_timeout_s: 300}}`` bounds how long actors may take to be placed
    and load their handlers (a node whose resources no cluster node has fails registration).
    """

    def __init__(self, workflow: Workflow, settings: Settings, kernel: Kernel) -> None:
        self.workflow = workflow
        self.settings = settings
        self.kernel = kernel
        self.name = workflow.name
        self.dag = workflow.dag
        self.nodes: dict[str, RayNode] = {}
        self.start_timeout = float(settings.plugin("ray").get("start_timeout_s", 300))
        self._packed: dict[str, Any] = {}  # archive root -> object-store reference
        self._engine = Engine(self.name, self.nodes, self.dag.leaves, self._replace)
        self._deadlines = Deadlines(self.name, self._engine.request_deadline)
        self._closing = False
        self._started = False
        self._threads: list[threading.Thread] = []

    # --- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Create every node's actors and wait for their handlers; raises
        ``RegistrationFailed`` (TorchServe's message, one failure per node) or ``UsageError``
        (Ray missing or a malformed ``ray_address``)."""
        ray = cluster.connect(self.settings)
        failures: dict[str, str] = {}
        for name in self.dag.order:
            spec = self.workflow.spec.nodes[name]
            try:
                options = actor_options(spec)
                batcher = self.kernel.hooks.make_batcher(spec)
                node = RayNode(spec, self.dag.parents(name), self.dag.children(name), batcher,
                               options)
                self.nodes[name] = node
                node.workers.extend(self._spawn(node) for _ in range(node.target))
            except Exception as exc:
                failures[name] = exc.message if isinstance(exc, WfserveError) else str(exc)
        waiting = {w.handle.ready.remote(): (node, w) for node in self.nodes.values()
                   for w in node.workers if node.name not in failures}
        not_started = self._await_ready(ray, waiting)
        for name, reason in not_started.items():
            log.error("workers failed to start", workflow=self.name, node=name, reason=reason)
        if failures or not_started:
            self._kill_all()
            for node in self.nodes.values():
                node.batcher.close()
            self.nodes.clear()
            messages = [f"Workflow Node {self.name}__{n} failed to register. Details: {d}"
                        for n, d in failures.items()]
            messages += [self._start_failure(n) for n in not_started]
            raise RegistrationFailed(
                f"Workflow {self.name} has failed to register. Failures: [{', '.join(messages)}]",
                workflow=self.name, failures=messages,
            )
        self._deadlines.start()
        for node in self.nodes.values():
            for worker in node.workers:
                self._start_collector(node, worker)
        self._started = True

    def _archive(self, node: RayNode) -> Archive:
        if node.spec.kind == "model":
            archive = self.workflow.node_archives.get(node.name)
            if archive is None:
                raise WfserveError(f"no model archive was opened for node {node.name}")
            return archive
        return self.workflow.archive

    def _spawn(self, node: RayNode) -> ActorWorker:
        """Create (not wait for) one actor of ``node``."""
        import ray

        archive = self._archive(node)
        key = str(archive.root)
        if key not in self._packed:
            self._packed[key] = ray.put(pack_archive(archive.root))
        index = node.take_index()
        context = LoadContext(workflow=self.name, model_name=f"{self.name}__{node.name}",
                              model_dir=archive.root, settings=self.settings, worker_index=index)
        handle = remote_class().options(**node.options).remote(
            node.spec, archive, self._packed[key], context, self.workflow.spec.typed
        )
        return ActorWorker(index, handle)

    def _start_failure(self, name: str) -> str:
        """TorchServe's message for a node whose workers (actors) failed to start."""
        spec = self.workflow.spec.nodes[name]
        archive = self.workflow.node_archives.get(name)
        version = (archive.version if spec.kind == "model" and archive else None) or "1.0"
        return f"Failed to start workers for model {self.name}__{name} version: {version}"

    def _await_ready(self, ray: Any, waiting: dict[Any, tuple[RayNode, ActorWorker]]
                     ) -> dict[str, str]:
        """Wait for actors' ``ready``; returns ``{node: reason}`` for those that failed."""
        failures: dict[str, str] = {}
        end = time.monotonic() + self.start_timeout
        pending = list(waiting)
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending),
                                     timeout=max(0.0, end - time.monotonic()))
            for ref in done:
                node, worker = waiting[ref]
                try:
                    info = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    failures.setdefault(node.name, _cause(exc))
                    worker.state = DEAD
                    continue
                worker.node_id, worker.pid, worker.state = info["node_id"], info["pid"], READY
            if pending and time.monotonic() >= end:
                for ref in pending:
                    node, worker = waiting[ref]
                    failures.setdefault(node.name, (
                        f"its actors were not ready within {self.start_timeout:g} s (no Ray "
                        f"node offers {node.options} free?)"))
                break
        return failures

    def _start_collector(self, node: RayNode, worker: ActorWorker) -> None:
        thread = threading.Thread(target=self._engine.collect, args=(node, worker), daemon=True,
                                  name=f"{self.name}__{node.name}-ray-{worker.index}")
        worker.thread = thread
        self._threads.append(thread)
        thread.start()

    def _replace(self, node: RayNode, worker: ActorWorker, reason: str) -> None:
        """Kill ``worker``'s actor (timed out or dead) and bring up a replacement."""
        import ray

        with node.lock:
            if worker.state == DEAD:
                return
            worker.state = DEAD
            worker.retired = True
            node.workers.remove(worker)
            node.replaced += 1
        log.warning("ray actor replaced", workflow=self.name, node=node.name,
                    worker=worker.index, reason=reason)
        ray.kill(worker.handle, no_restart=True)
        if not (self._closing or self._engine.stopping):
            self._add_workers(node, 1, wait=False)

    def _add_workers(self, node: RayNode, count: int, wait: bool) -> None:
        """Start ``count`` actors; each gets its collector once its handler is loaded."""
        import ray

        fresh = [self._spawn(node) for _ in range(count)]
        with node.lock:
            node.workers.extend(fresh)

        def bring_up(worker: ActorWorker) -> None:
            failed = self._await_ready(ray, {worker.handle.ready.remote(): (node, worker)})
            if failed:
                log.error("ray actor failed to start", workflow=self.name, node=node.name,
                          reason=failed[node.name])
                with node.lock:
                    if worker in node.workers:
                        node.workers.remove(worker)
                return
            if not self._engine.stopping:
                self._engine.collect(node, worker)

        for worker in fresh:
            thread = threading.Thread(target=bring_up, args=(worker,), daemon=True,
                                      name=f"{self.name}__{node.name}-ray-{worker.index}")
            worker.thread = thread
            self._threads.append(thread)
            thread.start()
        if wait:
            end = time.monotonic() + self.start_timeout
            while any(w.state not in (READY, DEAD) for w in fresh) and time.monotonic() < end:
                time.sleep(0.05)

    # --- requests ----------------------------------------------------------------------------

    def submit(self, request: PredictRequest) -> concurrent.futures.Future[PredictResult]:
        """Start one request (see :meth:`ThreadedExecutor.submit`: same errors and result)."""
        return self._submit(request, self.dag.root, single=False)

    def submit_node(self, node: str, request: PredictRequest) -> concurrent.futures.Future[Any]:
        """Run one node alone on ``request.row``, once (see
        :meth:`ThreadedExecutor.submit_node`: same semantics and errors)."""
        if node not in self.nodes:
            raise ModelNotFound(f"Model not found: {self.name}__{node}", node=node)
        return self._submit(request, node, single=True)

    def render(self, result: PredictResult) -> bytes:
        """The response body, exactly as the threaded executor renders it."""
        return render_response(result, lambda obj: self.kernel.hooks.serializer("", obj))

    def _submit(self, request: PredictRequest, start: str,
                single: bool) -> concurrent.futures.Future[Any]:
        engine = self._engine
        if not self._started or self._closing:
            raise Unavailable(f"Workflow {self.name} is not accepting requests", workflow=self.name)
        pending = {n: len(node.parents) for n, node in self.nodes.items()}
        req = Req(request, pending, len(self.dag.leaves), single)
        with engine.lock:
            engine.inflight[id(req)] = req
        if request.deadline is not None and not single:  # a model call's attempt has it
            self._deadlines.track(req, request.deadline)
        try:
            engine.dispatch(req, self.nodes[start], request.row, 0)
        except WfserveError:
            with engine.lock:
                req.done = True
                engine.inflight.pop(id(req), None)
            raise
        return req.future

    # --- management --------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Live per-node configuration, actors (with their Ray node) and queue lengths."""
        return {
            "workflow": self.name,
            "executor": "ray",
            "rayAddress": self.settings.ray_address,
            "typed": self.workflow.spec.typed,
            "accepting": self._started and not self._closing,
            "inflight": len(self._engine.inflight),
            "nodes": {name: node.describe() for name, node in self.nodes.items()},
        }

    def scale(self, node: str, *, min_workers: int | None = None,
              max_workers: int | None = None, batch_size: int | None = None,
              max_batch_delay: int | None = None) -> dict[str, Any]:
        """Change one node's actors or batching without dropping in-flight requests.

        New actors are ready before this returns; surplus ones leave after their current
        batch. Returns the node's new :meth:`describe` entry. Raises ``ModelNotFound`` or
        ``BadRequest``.
        """
        runtime = self.nodes.get(node)
        if runtime is None:
            raise ModelNotFound(f"Model not found: {self.name}__{node}", node=node)
        runtime.apply_scale(min_workers, max_workers, batch_size, max_batch_delay)
        live = runtime.live()
        if len(live) < runtime.target:
            self._add_workers(runtime, runtime.target - len(live), wait=True)
        for worker in live[runtime.target:]:
            self._retire(runtime, worker)
        return runtime.describe()

    def _retire(self, node: RayNode, worker: ActorWorker) -> None:
        with node.lock:
            worker.retired = True
            if worker in node.workers:
                node.workers.remove(worker)
        # queued after any batch in flight: the actor leaves once its current batch is done
        worker.handle.__ray_terminate__.remote()

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, let in-flight ones finish within ``timeout``, fail the rest
        with ``Unavailable``, join the threads and kill the actors (the Ray connection stays
        for other workflows; it is closed at server shutdown)."""
        self._closing = True
        engine = self._engine
        with engine.idle_cond:
            engine.idle_cond.wait_for(lambda: not engine.inflight, timeout)
            left = list(engine.inflight.values())
        for req in left:
            engine.fail(req, Unavailable(f"Workflow {self.name} is shutting down",
                                         workflow=self.name))
        engine.stopping = True
        for node in self.nodes.values():
            node.batcher.close()
        self._deadlines.stop()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(5.0)
        self._kill_all()

    def threads(self) -> list[threading.Thread]:
        """Every thread this executor started that is still alive."""
        found = [*self._threads, self._deadlines.thread]
        return [t for t in found if t.is_alive()]

    def _kill_all(self) -> None:
        try:
            import ray
        except ImportError:
            return
        if not ray.is_initialized():
            return
        for node in self.nodes.values():
            with node.lock:
                workers, node.workers = list(node.workers), []
            for worker in workers:
                ray.kill(worker.handle, no_restart=True)
        self._packed.clear()


def _cause(exc: BaseException) -> str:
    """The handler's own error out of a Ray actor-creation failure."""
    text = str(exc)
    for line in reversed(text.splitlines()):
        line = line.strip()
        if "Error" in line and ":" in line and not line.startswith(("File ", "ray.")):
            return line
    return text.splitlines()[0] if text else type(exc).__name__
