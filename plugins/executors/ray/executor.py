"""The Ray executor: the same workflow, spec and semantics, with each node a pool of Ray actors.

Where workers live is all this module adds to the executor core
(:mod:`wfserve.plugins.executors.core`): ``start`` connects to the cluster (:mod:`.cluster`), ships
each archive folder once through the object store, creates ``max-workers`` actors per node
with the node's ``ray:`` placement and waits until every one has loaded its handler. Threads
in this process: one collector per actor, the core's watchdog (request deadlines); closing
joins them and kills the actors.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog

from wfserve.kernel.contracts import Batcher
from wfserve.kernel.spec import NodeSpec
from wfserve.plugins.executors.core.executor import ExecutorCore
from wfserve.plugins.executors.ray import cluster
from wfserve.plugins.executors.ray.actor import actor_options
from wfserve.plugins.executors.ray.actor import pack_archive
from wfserve.plugins.executors.ray.actor import remote_class
from wfserve.plugins.executors.ray.engine import Engine
from wfserve.plugins.executors.ray.nodes import DEAD
from wfserve.plugins.executors.ray.nodes import READY
from wfserve.plugins.executors.ray.nodes import ActorWorker
from wfserve.plugins.executors.ray.nodes import RayNode
from wfserve.plugins.executors.ray.settings import RaySettings

log = structlog.get_logger(__name__)


class RayExecutor(ExecutorCore):
    """Runs one workflow on a Ray cluster (see the module docstring).

    ``plugins: {ray: {start_timeout_s: 300}}`` bounds how long actors may take to be placed
    and load their handlers (a node whose resources no cluster node has fails registration).
    """

    ENGINE = "ray"

    def new_engine(self) -> Engine:
        """The Ray engine; also this executor's own state."""
        self.start_timeout = float(self.settings.plugin("ray").get("start_timeout_s", 300))
        self._packed: dict[str, Any] = {}  # archive root -> object-store reference
        self._threads: list[threading.Thread] = []
        self._ray = Engine(self.name, self.nodes, self.dag.leaves, self._replace, self._report)
        return self._ray

    def start(self) -> None:
        """Connect to the cluster, then start as every executor does (raises
        ``RegistrationFailed``, or ``UsageError``: Ray missing or a malformed ``ray_address``)."""
        self.kernel.stash.setdefault(cluster.CONNECTION, cluster.Connection).connect(
            self.settings)
        super().start()

    def watch_model_call(self) -> bool:
        """A model call's deadline is its attempt's: the wait on its actor's call."""
        return False

    def state_extra(self) -> dict[str, Any]:
        """The cluster address this process is connected with."""
        return {"address": self.settings.of(RaySettings).ray_address}

    # --- actors ------------------------------------------------------------------------------

    def new_node(self, spec: NodeSpec, parents: list[str], children: list[str],
                 batcher: Batcher) -> RayNode:
        """A node with its ``ray:`` placement, its ``max-workers`` actors created (not yet
        ready)."""
        node = RayNode(spec, parents, children, batcher, actor_options(spec))
        node.workers.extend(self._spawn(node) for _ in range(node.target))
        return node

    def start_workers(self) -> dict[str, str]:
        """Wait until every actor has loaded its handler."""
        import ray

        waiting = {w.handle.ready.remote(): (node, w) for node in self.nodes.values()
                   for w in node.workers}
        return self._await_ready(ray, waiting)

    def _spawn(self, node: RayNode) -> ActorWorker:
        """Create (not wait for) one actor of ``node``."""
        import ray

        archive = self.archive_of(node.spec)
        key = str(archive.root)
        if key not in self._packed:
            self._packed[key] = ray.put(pack_archive(archive.root))
        index = node.take_index()
        handle = remote_class().options(**node.options).remote(
            node.spec, archive, self._packed[key], self.load_context(node, archive, index))
        return ActorWorker(index, handle)

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

    def serve(self) -> None:
        """One collector thread per actor."""
        for node in self.nodes.values():
            for worker in node.workers:
                self._start_collector(node, worker)

    def _start_collector(self, node: RayNode, worker: ActorWorker) -> None:
        thread = threading.Thread(target=self._ray.collect, args=(node, worker), daemon=True,
                                  name=f"{self.name}__{node.name}-ray-{worker.index}")
        worker.thread = thread
        self._threads.append(thread)
        thread.start()

    def _report(self, node: str, rows: int, seconds: float, error: str | None) -> None:
        """A handler call ran on an actor: tell the plugins (``wfserve_handler_ran``), as the
        server's handler wrappers do not apply there."""
        self.kernel.hooks.handler_ran(workflow=self.name, node=node, rows=rows, seconds=seconds,
                                      error=error)

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
        if not (self.closing or self.engine.stopping):
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
            if not self.engine.stopping:
                self._ray.collect(node, worker)

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

    def rescale(self, node: RayNode) -> None:
        """New actors are ready before this returns; surplus ones leave after their current
        batch."""
        live = node.live()
        if len(live) < node.target:
            self._add_workers(node, node.target - len(live), wait=True)
        for worker in live[node.target:]:
            self._retire(node, worker)

    def _retire(self, node: RayNode, worker: ActorWorker) -> None:
        with node.lock:
            worker.retired = True
            if worker in node.workers:
                node.workers.remove(worker)
        # queued after any batch in flight: the actor leaves once its current batch is done
        worker.handle.__ray_terminate__.remote()

    def stop_workers(self, end: float) -> None:
        """Join the threads and kill the actors (the Ray connection stays for other
        workflows; it is closed at server shutdown)."""
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(5.0)
        self._kill_all()

    def threads(self) -> list[threading.Thread]:
        """Every thread this executor started that is still alive."""
        found = list(self._threads)
        if self.watchdog is not None and self.watchdog.thread is not None:
            found.append(self.watchdog.thread)
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
