"""The request path every engine shares: attempts, running a batch, advancing the DAG,
retrying, failing and finishing requests.

An engine subclasses :class:`EngineCore` and plugs in how a batch runs on one of its workers
(:meth:`EngineCore.run_on_worker`); where its workers live, and how batches reach them, stay
its own. Everything else happens here, for every engine alike:

- an attempt of a node is dispatched (:meth:`~EngineCore.dispatch`) with ``timeout-ms`` from
  its dispatch, and settled once, under :attr:`~EngineCore.lock`: ``QUEUED -> RUNNING -> DONE``,
  or ``ABANDONED`` by the watchdog, after which it never delivers;
- a batch's outputs are paired with its attempts by identity; a node's output goes to its
  children (TorchServe's input shapes, :func:`advance`), to those whose edge holds when the
  spec makes some edges conditional (:class:`Routing`; a node no edge reaches is skipped);
- over a map edge (``map: true``) the child gets one attempt per item of its parent's list
  output, each through the child's batcher (items of one request and of concurrent requests
  batch together); once every item is done their outputs are gathered in item order into the
  child's one output, which goes on to its children (:mod:`.mapping`; :meth:`~EngineCore.store`
  keeps it where the engine keeps outputs). A request over ``max_map_items`` items fails with
  ``TooLarge`` (413), one whose output is not a list, or one of whose items fails after its
  retries, with ``MapFailed`` (naming the node, the edge and the item). Items count against
  the child's queue (``job_queue_size``): a request whose items do not fit fails with
  ``Unavailable`` (503). A handler that raises fails its whole batch (every item in it);
- an attempt lasts at most the earlier of its ``timeout-ms`` and what is left of its
  request's deadline: at the deadline the request fails with ``Timeout`` (the watchdog) and
  the attempt's output is discarded, but its worker is stopped or replaced only for
  ``timeout-ms`` (a deadline a client chose never costs a worker); a batch taken from a node's
  batcher first drops the attempts whose request is past its deadline
  (:meth:`~EngineCore.due`): they never reach a handler, the request fails with ``Timeout``
  and the node counts them (:attr:`NodeBase.deadline_drops`);
- a failed attempt is retried up to ``retry-attempts`` times (never past its request's
  deadline: the request then fails with ``Timeout``), then its request fails with
  ``NodeFailed`` and its other branches stop; a node run alone (a model call) runs once and
  fails with TorchServe's status and message (:mod:`wfserve.plugins.executors.failures`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import structlog

from wfserve.kernel.conditions import Condition
from wfserve.kernel.conditions import ConditionError
from wfserve.kernel.contracts import NodeTiming
from wfserve.kernel.contracts import PredictRequest
from wfserve.kernel.contracts import PredictResult
from wfserve.kernel.errors import ConditionFailed
from wfserve.kernel.errors import MapFailed
from wfserve.kernel.errors import NodeFailed
from wfserve.kernel.errors import NoLeafRan
from wfserve.kernel.errors import Timeout
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.errors import Unavailable
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.spec import Edge
from wfserve.kernel.spec import WorkflowSpec
from wfserve.kernel.spec import edge_name
from wfserve.plugins.executors.core.mapping import MapError
from wfserve.plugins.executors.core.mapping import MapState
from wfserve.plugins.executors.core.mapping import gather
from wfserve.plugins.executors.core.mapping import split
from wfserve.plugins.executors.core.nodes import NodeBase
from wfserve.plugins.executors.core.records import ABANDONED
from wfserve.plugins.executors.core.records import DONE
from wfserve.plugins.executors.core.records import QUEUED
from wfserve.plugins.executors.core.records import RUNNING
from wfserve.plugins.executors.core.records import Attempt
from wfserve.plugins.executors.core.records import Req
from wfserve.plugins.executors.failures import WORKER_DIED
from wfserve.plugins.executors.failures import classify
from wfserve.plugins.executors.failures import prediction_failed

log = structlog.get_logger(__name__)
#: children made ready by a node's output: ``(request, child, its input row)``
Ready = list[tuple[Req, NodeBase, dict[str, Any]]]


class HandlerFailed(Exception):
    """:meth:`EngineCore.run_on_worker`: the handler failed, in a process that classified it.

    :param reason: what happened, for logs and ``NodeFailed.cause``.
    :param failure: TorchServe's ``(status, message)`` for it.
    """

    def __init__(self, reason: str, failure: tuple[int, str] | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure


class WorkerLost(Exception):
    """:meth:`EngineCore.run_on_worker`: the worker died under the batch (the engine replaces
    it); each attempt fails with ``reason`` and is retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WorkerTimedOut(WorkerLost):
    """:meth:`EngineCore.run_on_worker`: the batch overran the earliest deadline among its
    attempts and the engine stopped its worker; attempts past their deadline fail, the others
    are dispatched again (the same attempt number)."""


def advance(req: Req, node: NodeBase, out: Any, timing: NodeTiming,
            nodes: Mapping[str, NodeBase], ready: Ready,
            holds: Mapping[str, bool] | None = None) -> bool:
    """Record ``node``'s output for ``req`` and queue the children it makes ready.

    A child runs once all its parents are settled (ran or skipped) if at least one of its
    incoming edges held, and is skipped otherwise, which settles its own children in turn. The
    child's row has one entry per parent whose edge held, in DAG order, keyed by the parent's
    name (TorchServe's join), or ``{"body": out}`` when only one did (TorchServe's shape for
    a single parent). Without conditions every edge holds, so a child with one parent gets
    ``{"body": out}`` at once and a join every parent's output once the last is done, exactly
    as TorchServe. Call under the engine's lock.

    :param holds: per child of ``node``, whether the edge to it holds for this output (a child
        not in it: it holds); None: every edge holds.
    :returns: True when ``req`` has settled all its leaves (ran or skipped).
    """
    req.timings.append(timing)
    if req.single:  # a node run alone: its output is the answer, whatever its place
        req.outputs[node.name] = out
        req.done = True
        return True
    if node.is_leaf:
        req.outputs[node.name] = out
        return _leaf_settled(req)
    finished = False
    for name in node.children:
        delivered = holds is None or holds.get(name, True)
        finished = _settle(req, node.name, nodes[name], out, delivered, nodes, ready) or finished
    return finished


def _leaf_settled(req: Req) -> bool:
    req.leaves_left -= 1
    if req.leaves_left == 0:
        req.done = True
        return True
    return False


def _settle(req: Req, parent: str, child: NodeBase, out: Any, delivered: bool,
            nodes: Mapping[str, NodeBase], ready: Ready) -> bool:
    """``parent`` is settled for ``child``: it delivered ``out`` (its edge held) or not (it
    was skipped, or its edge did not hold). Runs or skips ``child`` once its last parent is
    settled, a skip settling its own children in turn (a work list, not recursion: a long
    skipped chain is fine); True when that settled ``req``'s last leaf."""
    finished = False
    work = [(parent, child, out, delivered)]
    while work:
        parent, child, out, delivered = work.pop()
        left = req.pending[child.name] - 1
        req.pending[child.name] = left
        if delivered and len(child.parents) == 1:  # TorchServe's shape, without gathering
            ready.append((req, child, {"body": out}))
            continue
        if delivered:
            req.inputs.setdefault(child.name, {})[parent] = out
        if left > 0:
            continue
        gathered = req.inputs.pop(child.name, {})
        if len(gathered) > 1:
            ready.append((req, child, {p: gathered[p] for p in child.parents if p in gathered}))
        elif gathered:
            ready.append((req, child, {"body": next(iter(gathered.values()))}))
        elif child.is_leaf:  # skipped
            finished = _leaf_settled(req) or finished
        else:
            work.extend((child.name, nodes[n], None, False) for n in reversed(child.children))
    return finished


class Routing:
    """A workflow's conditional and map edges (the spec's ``edges:``), for every engine.

    :param conditions: ``(parent, child) -> condition``; an edge not in it always holds.
    :param typed: outputs are objects (``typed: true``), else bytes to JSON-decode.
    :param maps: the map edges (each child has that one parent).
    :param max_items: the most items one request may send over one map edge.
    """

    def __init__(self, conditions: Mapping[tuple[str, str], Condition], typed: bool,
                 maps: Iterable[Edge] = (), max_items: int = 1000) -> None:
        self.typed = typed
        self.max_items = max_items
        self._map_parent: dict[str, str] = {child: parent for parent, child in maps}
        self._by_parent: dict[str, dict[str, Condition]] = {}
        for (parent, child), condition in conditions.items():
            self._by_parent.setdefault(parent, {})[child] = condition

    @classmethod
    def of(cls, spec: WorkflowSpec, max_items: int = 1000) -> Routing:
        """The routing of ``spec`` (``max_items``: the ``max_map_items`` setting)."""
        return cls(spec.conditions, spec.typed, spec.maps, max_items)

    def mapped(self, node: str) -> str | None:
        """The parent of the map edge into ``node``, None when no map edge leads to it."""
        return self._map_parent.get(node)

    def conditional(self, node: str) -> bool:
        """Whether some edge out of ``node`` has a condition."""
        return node in self._by_parent

    def holds(self, workflow: str, node: str, output: Any) -> dict[str, bool]:
        """Per conditional child of ``node``, whether its edge holds over ``output``.

        :raises ConditionFailed: a condition could not be evaluated (names the edge).
        """
        decided: dict[str, bool] = {}
        for child, condition in self._by_parent.get(node, {}).items():
            edge = edge_name((node, child))
            try:
                decided[child] = condition.holds(output, self.typed)
            except ConditionError as exc:
                raise ConditionFailed(
                    f"Workflow {workflow}: the condition of edge '{edge}' "
                    f"({condition.source}) failed: {exc}",
                    workflow=workflow, node=node, edge=edge, cause=str(exc)) from None
        return decided


class EngineCore:
    """Moves requests through one workflow's DAG (see the module docstring).

    :param workflow: the workflow's name, for messages.
    :param nodes: the live nodes by name (the executor's own dict: it fills it at start).
    :param leaves: the leaf node names, in the order results list them.
    :param watch_attempts: register each attempt with the watchdog (:attr:`NodeBase.timers`);
        an engine whose workers bound their own calls passes False.
    """

    def __init__(self, workflow: str, nodes: Mapping[str, NodeBase], leaves: list[str],
                 watch_attempts: bool = True) -> None:
        self.workflow = workflow
        self.nodes = nodes
        self.leaves = leaves
        self.watch_attempts = watch_attempts
        self.lock = threading.Lock()
        self.idle_cond = threading.Condition(self.lock)
        self.inflight: dict[int, Req] = {}
        self.stopping = False
        #: the watchdog's: called with each new attempt deadline
        self.hint: Callable[[float], None] = lambda deadline: None
        #: the conditional edges (the executor sets the spec's; by default none)
        self.routing = Routing({}, typed=False)

    # --- what an engine plugs in ---------------------------------------------------------------

    def run_on_worker(self, node: NodeBase, worker: Any, live: list[Attempt]
                      ) -> tuple[list[Any], float | None]:
        """Run the rows of ``live`` as one batch on ``worker``.

        :returns: one output per attempt, in order (checked: see :mod:`.outputs`), and the
            seconds the handler ran (None: the time this call took).
        :raises HandlerFailed: the handler failed where it ran.
        :raises WorkerLost: the worker died or was stopped (see :class:`WorkerTimedOut`).
        :raises Exception: anything else the handler raised, classified here.
        """
        raise NotImplementedError

    def values(self, outputs: list[Any]) -> list[Any]:
        """The values of a batch's outputs, for the conditions of a node's edges (outside the
        lock). An engine holding references fetches them here."""
        return outputs

    def store(self, value: Any) -> Any:
        """Where a gathered map output is kept, as :meth:`execute` keeps outputs (an engine
        holding references stores the value and returns one); called outside the lock."""
        return value

    def release(self, node: NodeBase, worker: Any) -> None:
        """``worker`` is done with a batch (before its requests are finished)."""

    def result(self, req: Req) -> Any:
        """What ``req``'s future gets: the node's output for a model call, else the
        :class:`PredictResult` of the outputs of the leaves that ran (conditional edges may
        skip some), in leaf order. An engine holding references fetches the values here."""
        if req.single:
            (output,) = req.outputs.values()
            return output
        ran = [leaf for leaf in self.leaves if leaf in req.outputs]
        return PredictResult({leaf: req.outputs[leaf] for leaf in ran}, req.timings)

    # --- admitting and dispatching ---------------------------------------------------------------

    def admit(self, request: PredictRequest, single: bool) -> Req:
        """A new request record, in flight."""
        pending = {n: len(node.parents) for n, node in self.nodes.items()}
        req = Req(request, pending, len(self.leaves), single)
        with self.lock:
            self.inflight[id(req)] = req
        return req

    def abort(self, req: Req) -> None:
        """Forget ``req``, whose first dispatch was refused (the caller raises)."""
        with self.lock:
            req.done = True
            self.inflight.pop(id(req), None)

    def new_attempt(self, req: Req, node: NodeBase, row: dict[str, Any], number: int,
                    avoid: Any = None) -> Attempt:
        """Attempt ``number`` of ``node`` for ``req``, registered with the watchdog."""
        att = Attempt(req, node, row, number, time.monotonic(), avoid)
        if self.watch_attempts and not req.single:
            node.timers.append(att)
            self.hint(att.deadline)
        return att

    def dispatch(self, req: Req, node: NodeBase, row: dict[str, Any], number: int, *,
                 avoid: Any = None) -> Any:
        """Start attempt ``number`` of ``node`` for ``req``: queue it in the node's batcher.

        :raises Unavailable: the node's queue is full or closed.
        """
        node.batcher.put(self.new_attempt(req, node, row, number, avoid))
        return None

    def dispatch_or_fail(self, req: Req, node: NodeBase, row: dict[str, Any], number: int,
                         **how: Any) -> Any:
        """:meth:`dispatch` (``how``: its keywords), failing the request instead of raising."""
        try:
            return self.dispatch(req, node, row, number, **how)
        except WfserveError as exc:
            self.fail(req, exc)
            return None

    def dispatch_ready(self, ready: Ready) -> None:
        """Dispatch each child made ready, skipping requests settled meanwhile."""
        for req, child, row in ready:
            if not req.done:  # a sibling branch failed: stop scheduling this request
                self.dispatch_or_fail(req, child, row, 0)

    # --- running a batch -----------------------------------------------------------------------

    def due(self, node: NodeBase, batch: list[Attempt]) -> list[Attempt]:
        """The attempts of ``batch`` (just taken from ``node``'s batcher) whose request is not
        past its deadline; call before any of them runs.

        The others are abandoned unrun and counted in ``node.deadline_drops``; a request of
        theirs not yet settled fails with ``Timeout`` (the watchdog may not have woken yet).
        A model call's attempt is left to its own rules (kept: its request's deadline is its
        attempt's, enforced as TorchServe does).
        """
        now = time.monotonic()
        late: list[Attempt] = []
        with self.lock:
            for att in batch:
                deadline = att.req.request.deadline
                if (att.state == QUEUED and not att.req.single and deadline is not None
                        and deadline <= now):
                    att.state = ABANDONED
                    late.append(att)
            node.deadline_drops += len(late)
        if not late:
            return batch
        for att in late:
            log.info("late input dropped", request_id=att.req.request.request_id,
                     workflow=self.workflow, node=node.name)
            self.request_deadline(att.req)
        return [a for a in batch if a.state != ABANDONED]

    def execute(self, node: NodeBase, worker: Any, batch: list[Attempt]) -> Ready:
        """Run ``batch`` on ``worker`` and settle its attempts; the children made ready.

        Attempts of requests past their deadline are dropped first (:meth:`due`)."""
        batch = self.due(node, batch)
        started = time.monotonic()
        with self.lock:
            live = [a for a in batch if a.state == QUEUED and not a.req.done]
            for att in live:
                att.state = RUNNING
                att.worker = worker
        if not live:
            self.release(node, worker)
            return []
        outputs, items, ran, failed = self._run(node, worker, live, started)
        routes = self._route(node, live, outputs) if failed is None else None
        ready: Ready = []
        finished: list[Req] = []
        broken: list[tuple[Req, WfserveError]] = []
        gathers: list[tuple[Req, MapState]] = []
        with self.lock:
            kept = [a for a in live if a.state == RUNNING]
            for att in kept:
                att.state = DONE
            if failed is None:
                for i, (att, out) in enumerate(zip(live, outputs, strict=True)):
                    if att.state != DONE or att.req.done:
                        continue
                    timing = NodeTiming(node.name, started - att.enqueued, ran, att.number + 1)
                    state = None if att.req.single else att.req.maps.get(node.name)
                    if state is not None and state.index(att.row) is not None:
                        if state.put(att.row, items[i], timing):
                            gathers.append((att.req, state))
                        continue
                    holds = None if routes is None else routes[i]
                    if isinstance(holds, WfserveError):
                        broken.append((att.req, holds))
                    elif advance(att.req, node, out, timing, self.nodes, ready, holds):
                        finished.append(att.req)
        self.release(node, worker)
        for req, state in gathers:
            self._gathered(req, node, state, ready)
        for req in finished:
            self._finish(req)
        for req, error in broken:
            self.fail(req, error)
        if failed is not None:
            self._batch_failed(worker, kept, failed)
        return self._expand(ready)

    # --- map edges -----------------------------------------------------------------------------

    def _item(self, att: Attempt) -> int | None:
        """The item index of ``att`` when it runs one item of a map, else None."""
        state = None if att.req.single else att.req.maps.get(att.node.name)
        return None if state is None else state.index(att.row)

    def _map_edge(self, node: NodeBase) -> str:
        return edge_name((self.routing.mapped(node.name) or "?", node.name))

    def _map_failed(self, node: NodeBase, why: str, cause: str, item: int | None = None,
                    **fields: Any) -> MapFailed:
        edge = self._map_edge(node)
        where = "" if item is None else f" (item {item})"
        return MapFailed(f"Workflow {self.workflow}: map edge '{edge}'{where}: {why}",
                         workflow=self.workflow, node=node.name, edge=edge, item=item,
                         cause=cause, **fields)

    def _expand(self, ready: Ready) -> Ready:
        """``ready`` less the children of map edges, whose items are dispatched instead (one
        attempt per item, through the child's batcher; call outside the lock).

        An empty list is gathered at once (its children made ready are expanded in turn). A
        request fails with ``TooLarge`` beyond :attr:`Routing.max_items` items, with
        ``MapFailed`` when the parent's output is not a list.
        """
        out: Ready = []
        todo = list(reversed(ready))
        while todo:
            req, child, row = todo.pop()
            if req.single or req.done or self.routing.mapped(child.name) is None:
                out.append((req, child, row))
                continue
            try:
                (value,) = self.values([row["body"]])
                bodies, was_tensor = split(value, self.routing.typed)
            except MapError as exc:
                self.fail(req, self._map_failed(child, f"cannot split the output: {exc}",
                                                str(exc)))
                continue
            except Exception as exc:  # NOTE: an engine's fetch; it fails this request only
                cause = f"{type(exc).__name__}: {exc}"
                self.fail(req, self._map_failed(child, f"cannot fetch the output: {cause}",
                                                cause))
                continue
            cap = self.routing.max_items
            if len(bodies) > cap:
                edge = self._map_edge(child)
                self.fail(req, TooLarge(
                    f"Workflow {self.workflow}: map edge '{edge}' has {len(bodies)} items, more "
                    f"than max_map_items ({cap})", workflow=self.workflow, node=child.name,
                    edge=edge, items=len(bodies), limit=cap))
                continue
            state = MapState([{"body": body} for body in bodies], was_tensor)
            if not state.rows:
                more: Ready = []
                self._gathered(req, child, state, more)
                todo.extend(reversed(more))
                continue
            with self.lock:
                req.maps[child.name] = state
            for item_row in state.rows:
                if req.done:
                    break
                self.dispatch_or_fail(req, child, item_row, 0)
        return out

    def _gathered(self, req: Req, node: NodeBase, state: MapState, ready: Ready) -> None:
        """Every item of ``node``'s map for ``req`` is done: gather their outputs into the
        node's output and advance the DAG with it (``ready`` gets the children it makes
        ready); call outside the lock. Fails ``req`` when an output cannot be gathered or a
        condition out of ``node`` cannot be evaluated."""
        try:
            value = gather(state.outputs, self.routing.typed, state.was_tensor)
            holds = (self.routing.holds(self.workflow, node.name, value)
                     if self.routing.conditional(node.name) else None)
            stored = self.store(value)
        except MapError as exc:
            self.fail(req, self._map_failed(node, f"cannot gather the outputs: {exc}",
                                            str(exc), exc.item))
            return
        except WfserveError as exc:
            self.fail(req, exc)
            return
        except Exception as exc:  # NOTE: an engine's store; it fails this request only
            cause = f"{type(exc).__name__}: {exc}"
            self.fail(req, self._map_failed(node, f"cannot store the output: {cause}", cause))
            return
        with self.lock:
            if req.done:
                return
            finished = advance(req, node, stored, state.timing(node.name), self.nodes, ready,
                               holds)
        if finished:
            self._finish(req)

    def _run(self, node: NodeBase, worker: Any, live: list[Attempt], started: float
             ) -> tuple[list[Any], list[Any], float, Exception | None]:
        """:meth:`run_on_worker`: the outputs, their values where some attempt runs an item of
        a map (else the outputs again), the seconds the handler ran, and what failed the
        batch (None when nothing did)."""
        failed: Exception | None = None
        ran: float | None
        try:
            outputs, ran = self.run_on_worker(node, worker, live)
        except Exception as exc:
            failed, outputs, ran = exc, [], None
        items = outputs
        if failed is None and any(self._item(a) is not None for a in live):
            try:  # an item's output is gathered as a value (an engine fetches it here)
                items = self.values(outputs)
            except Exception as exc:  # NOTE: an engine's fetch: the batch fails, and retries
                failed = exc
        return outputs, items, time.monotonic() - started if ran is None else ran, failed

    def _route(self, node: NodeBase, live: list[Attempt], outputs: list[Any]
               ) -> list[dict[str, bool] | WfserveError] | None:
        """Per attempt of ``live``, which conditional edges out of ``node`` its output holds,
        or the error failing its request (an empty dict for a model call: its output is the
        answer); None when no edge out of ``node`` is conditional."""
        if not self.routing.conditional(node.name) or all(a.req.single for a in live):
            return None
        try:
            values = self.values(outputs)
        except Exception as exc:  # NOTE: an engine's fetch; it fails these requests only
            cause = f"{type(exc).__name__}: {exc}"
            error = ConditionFailed(
                f"Workflow {self.workflow}: the output of {node.name} could not be fetched "
                f"for its edges' conditions: {cause}", workflow=self.workflow, node=node.name,
                cause=cause)
            return [error for _ in live]
        routes: list[dict[str, bool] | WfserveError] = []
        for att, value in zip(live, values, strict=True):
            if att.req.single or self._item(att) is not None:  # an item: routed when gathered
                routes.append({})
                continue
            try:
                routes.append(self.routing.holds(self.workflow, node.name, value))
            except ConditionFailed as exc:
                routes.append(exc)
        return routes

    def _batch_failed(self, worker: Any, kept: list[Attempt], exc: Exception) -> None:
        if isinstance(exc, WorkerTimedOut):
            now = time.monotonic()
            for att in kept:
                if att.deadline <= now:
                    self.attempt_failed(att, exc.reason)
                elif not att.req.done:
                    self.dispatch_or_fail(att.req, att.node, att.row, att.number)
            return
        if isinstance(exc, WorkerLost):
            reason, failure, avoid = exc.reason, None, None
        elif isinstance(exc, HandlerFailed):
            reason, failure, avoid = exc.reason, exc.failure, worker
        else:
            reason, failure, avoid = f"{type(exc).__name__}: {exc}", classify(exc), worker
        for att in kept:
            self.attempt_failed(att, reason, failure=failure, avoid=avoid)

    # --- settling requests -------------------------------------------------------------------

    def attempt_failed(self, att: Attempt, reason: str, *,
                       failure: tuple[int, str] | None = None, avoid: Any = None) -> None:
        """Retry ``att`` (away from ``avoid``, where the engine can) or fail its request.

        A single-node run (a model call) is never retried: it fails with ``failure``
        (TorchServe's status and message for what the handler did), or "Worker died." when
        there is none (it timed out, or its worker died).
        """
        node, req = att.node, att.req
        log.warning("node attempt failed", request_id=req.request.request_id,
                    workflow=self.workflow, node=node.name, attempt=att.number + 1, reason=reason)
        if req.done:
            return
        if req.single:
            status, message = failure or (500, WORKER_DIED)
            self.fail(req, prediction_failed(status, message, workflow=self.workflow,
                                             node=node.name, cause=reason))
            return
        deadline = req.request.deadline
        if deadline is not None and deadline <= time.monotonic():
            self.request_deadline(req)  # no budget left for a retry: the client's 408
            return
        if att.number < node.retry_attempts:
            self.dispatch_or_fail(req, node, att.row, att.number + 1, avoid=avoid)
            return
        item = self._item(att)
        if item is not None:
            self.fail(req, self._map_failed(node, f"Error executing {node.name}", reason, item,
                                            attempts=att.number + 1))
            return
        self.fail(req, NodeFailed(
            f"Error executing {node.name}", workflow=self.workflow, node=node.name,
            attempts=att.number + 1, cause=reason,
        ))

    def expire(self, att: Attempt) -> Any:
        """The watchdog's: abandon ``att`` if unsettled; returns the worker it ran on (now
        presumed stuck), or None when it was not running."""
        with self.lock:
            if att.state >= DONE or att.req.done:
                return None
            was_running = att.state == RUNNING
            att.state = ABANDONED
        reason = ("no answer within the response timeout" if att.req.single
                  else f"timed out after {att.node.timeout_ms} ms")
        self.attempt_failed(att, reason)
        return att.worker if was_running else None

    def request_deadline(self, req: Req) -> None:
        """The watchdog's: the request's own deadline passed."""
        self.fail(req, Timeout(f"Workflow {self.workflow} request timed out",
                               workflow=self.workflow, request_id=req.request.request_id))

    def fail(self, req: Req, exc: WfserveError) -> None:
        """Settle ``req`` with ``exc`` unless it is settled already."""
        with self.lock:
            if req.done:
                return
            req.done = True
        self._finish(req, exc)

    def _finish(self, req: Req, exc: WfserveError | None = None) -> None:
        with self.lock:
            self.inflight.pop(id(req), None)
            if self.stopping or not self.inflight:
                self.idle_cond.notify_all()
        if exc is None and not req.single and not req.outputs:
            skipped = ", ".join(self.leaves)
            exc = NoLeafRan(f"Workflow {self.workflow}: no leaf node ran for this request (the "
                            f"conditions of its edges skipped every leaf: {skipped})",
                            workflow=self.workflow, skipped=list(self.leaves))
        if exc is not None:
            req.future.set_exception(exc)
            return
        try:
            result = self.result(req)
        except Exception as failure:
            req.future.set_exception(WfserveError(
                f"Workflow {self.workflow}: fetching the result failed: "
                f"{type(failure).__name__}", workflow=self.workflow))
            return
        req.future.set_result(result)

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the requests in flight, fail the rest with
        ``Unavailable``, and stop (workers leave after their current batch)."""
        with self.idle_cond:
            self.idle_cond.wait_for(lambda: not self.inflight, timeout)
            left = list(self.inflight.values())
        for req in left:
            self.fail(req, Unavailable(f"Workflow {self.workflow} is shutting down",
                                       workflow=self.workflow))
        self.stopping = True
