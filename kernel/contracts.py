"""The shapes that cross the hook boundary: what plugins return and what the kernel hands them.

Plain data (``Archive``, ``Workflow``, ``PredictRequest``, ``PredictResult``, ``LoadContext``,
the ``describe`` records ``ExecutorState``/``NodeState``/``WorkerState``) is a dataclass the
kernel owns; behaviour a plugin supplies (``Executor``, ``Batcher``, ``Serializer``,
``NodeHandler``) is a ``Protocol``, so a plugin needs no kernel base class.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal
from typing import Protocol
from typing import runtime_checkable

if TYPE_CHECKING:
    from wfserve.kernel.dag import Dag
    from wfserve.kernel.settings import Settings
    from wfserve.kernel.spec import WorkflowSpec

#: what a fetch is for: a workflow archive or a model archive
ArchiveKind = Literal["war", "mar"]


@dataclass(frozen=True)
class Archive:
    """An opened ``.war`` or ``.mar``: its manifest and where its files were extracted.

    File fields hold names relative to ``root``, exactly as the manifest states them (the
    ``handler`` keeps a ``:function`` suffix when the archiver wrote one).
    """

    kind: ArchiveKind
    source: Path
    root: Path
    manifest: Mapping[str, Any]
    name: str | None
    handler: str | None = None
    spec_file: str | None = None
    serialized_file: str | None = None
    model_file: str | None = None
    requirements_file: str | None = None
    config_file: str | None = None
    version: str | None = None

    def path(self, relative: str) -> Path:
        """The absolute path of a file named in the manifest."""
        return self.root / relative


@dataclass(frozen=True)
class Fetched:
    """What a fetcher resolved a URL to (``wfserve_fetch``).

    ``release`` deletes what the fetcher made for this URL (a download) when the registration
    fails or is unregistered; None when there is nothing to delete (the store's own file).
    ``keep`` is recorded (in a snapshot) and handed back to the fetcher as ``reuse`` on a later
    start, so it may return the same download instead of fetching again; None: not reusable.
    """

    path: Path
    release: Callable[[], None] | None = None
    keep: str | None = None


@dataclass
class Workflow:
    """A workflow being registered or registered: everything an executor needs to run it."""

    name: str
    url: str
    spec: WorkflowSpec
    dag: Dag
    archive: Archive
    node_archives: dict[str, Archive] = field(default_factory=dict)
    version: str = "1.0"
    #: what deletes this workflow's downloads (``Fetched.release`` of each), on unregister
    releases: list[Callable[[], None]] = field(default_factory=list)
    workdir: Path | None = None


@dataclass(frozen=True)
class LoadContext:
    """What a handler loader knows about the worker it loads a handler for."""

    workflow: str
    model_name: str
    model_dir: Path
    settings: Settings
    worker_index: int = 0
    gpu_id: int | None = None
    #: the workflow passes node outputs on as objects (``typed: true``), not as bytes
    typed: bool = False


class InputRow(dict[str, Any]):
    """A root input row as the API decoded it, ``{parameter: value}``, which also knows each
    parameter's content type as TorchServe hands it to its backend (``content_types``: the
    request's media type for ``body``, ``""`` for a form field, a file part's own type).

    A handler sees a plain ``dict``; the types reach it through its context's request headers.
    A row an executor builds for a child node is a plain ``dict``: its parameters have no type.
    """

    def __init__(self, values: Mapping[str, Any] | None = None,
                 content_types: Mapping[str, str] | None = None) -> None:
        super().__init__(values or {})
        self.content_types: dict[str, str] = dict(content_types or {})


@dataclass
class ResponseMeta:
    """What a handler set for one row's answer through its ``context``
    (``set_response_status``, ``set_response_content_type``, ``set_response_header``).

    Read by the API for a node called alone (``/predictions/{wf}__{node}``), where TorchServe
    answers with them; inside a workflow they are ignored, as in TorchServe. ``headers``
    keeps the names as the handler wrote them.
    """

    status: int | None = None
    phrase: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class PredictRequest:
    """One inference request as the executor receives it.

    ``row`` is the root node's input row exactly as a TorchServe handler sees it (``{"body":
    ...}`` or one entry per form field; an :class:`InputRow` when the API decoded it);
    ``headers`` are the request's, as handlers see them; ``deadline`` is a
    ``time.monotonic()`` instant or None: past it the request fails with ``Timeout``, no
    node attempt of it is waited for or retried, and its inputs still queued are dropped before
    they reach a handler.
    """

    row: dict[str, Any]
    headers: Mapping[str, str]
    request_id: str
    deadline: float | None = None
    #: what the handlers set for the answer (executors hand it to every RowMeta they make)
    response: ResponseMeta = field(default_factory=ResponseMeta)


@dataclass
class NodeTiming:
    """Time one node spent on one request, in seconds."""

    node: str
    queued: float
    run: float
    attempts: int = 1


@dataclass
class PredictResult:
    """The leaf outputs of one request, keyed by leaf node name, plus per-node timings."""

    outputs: dict[str, Any]
    timings: list[NodeTiming] = field(default_factory=list)


@dataclass(frozen=True)
class RowMeta:
    """Per-row request data a handler may read through TorchServe's ``context``, and the
    :class:`ResponseMeta` it may fill (shared with the request that made the row)."""

    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    response: ResponseMeta = field(default_factory=ResponseMeta)


@runtime_checkable
class NodeHandler(Protocol):
    """A node's code for one worker.

    Called with one batch (a list of input rows, each a dict such as ``{"body": ...}``) and the
    matching list of :class:`RowMeta`; returns exactly one output per row, in order. Raising
    fails the whole batch (each request in it is retried or failed by the executor).
    """

    def __call__(self, batch: list[dict[str, Any]], meta: list[RowMeta]) -> Sequence[Any]: ...


@runtime_checkable
class Batcher(Protocol):
    """Collects requests for one node into batches (batch-size, max-batch-delay, bounded queue).

    Every method is required: executors call them all (``configure`` on a scale call,
    ``len`` for describe and metrics).
    """

    def put(self, item: Any) -> None:
        """Queue one item; raises ``Unavailable`` at once when the queue is full or closed."""

    def next_batch(self, timeout: float | None = None) -> list[Any]:
        """Block for the next batch; an empty list means ``timeout`` passed or it was closed."""

    def configure(self, *, batch_size: int | None = None,
                  max_batch_delay_ms: float | None = None) -> None:
        """Change batch-size and/or max-batch-delay (None keeps one); queued items are kept."""

    def __len__(self) -> int:
        """How many items are queued now."""

    def close(self) -> None:
        """Refuse new items and wake every waiting worker."""


@dataclass(frozen=True)
class WorkerState:
    """One worker of a node as ``describe`` reports it.

    ``status`` is TorchServe's word (``READY``, ``BUSY``, ``UNRESPONSIVE``, ``LOADING``);
    ``state`` the engine's own; ``start_time`` TorchServe's ``startTime`` text; ``host`` where
    the worker runs when that is not this process (a Ray node id), else None.
    """

    id: int
    status: str
    state: str
    start_time: str
    pid: int | None = None
    host: str | None = None


@dataclass(frozen=True)
class NodeState:
    """One node's live configuration, workers and queue, as ``describe`` and ``scale`` report.

    ``stuck_workers``: workers presumed stuck in a handler (retired, not yet back);
    ``replaced_workers``: workers an engine replaced (killed after a timeout, or dead);
    ``placement``: engine-specific placement from the spec (a Ray node's ``ray:`` section);
    ``deadline_drops``: inputs dropped unrun since the node started, their request being past
    its deadline.
    """

    kind: str
    min_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay: int
    retry_attempts: int
    timeout_ms: int
    workers: tuple[WorkerState, ...] = ()
    queued: int = 0
    stuck_workers: int = 0
    replaced_workers: int = 0
    placement: Mapping[str, Any] = field(default_factory=dict)
    deadline_drops: int = 0


@dataclass(frozen=True)
class ExecutorState:
    """One workflow's executor as ``describe`` reports it; ``nodes`` in DAG order.

    ``engine`` names where workers run (``threaded``, ``ray``...); ``address`` the cluster it
    is connected to, when it has one.
    """

    workflow: str
    engine: str
    typed: bool
    accepting: bool
    inflight: int
    nodes: Mapping[str, NodeState] = field(default_factory=dict)
    address: str | None = None


@runtime_checkable
class Executor(Protocol):
    """Runs one workflow: owns its nodes' workers and batchers."""

    def start(self) -> None:
        """Load every node's handler and start workers; raises ``RegistrationFailed``."""

    def submit(self, request: PredictRequest) -> concurrent.futures.Future[PredictResult]:
        """Start one request; the future fails with a ``WfserveError`` (``NodeFailed``...)."""

    def submit_node(self, node: str, request: PredictRequest) -> concurrent.futures.Future[Any]:
        """Run one node alone on ``request.row`` (TorchServe's ``/predictions/<wf>__<node>``)."""

    def render(self, result: PredictResult) -> bytes:
        """The response body: one leaf's bytes as they are, several leaves merged as JSON."""

    def describe(self) -> ExecutorState:
        """Live state: per node its configuration, workers and queue length."""

    def scale(self, node: str, *, min_workers: int | None = None, max_workers: int | None = None,
              batch_size: int | None = None, max_batch_delay: int | None = None) -> NodeState:
        """Change one node's workers or batching without dropping in-flight requests; returns
        the node's new state. Raises ``ModelNotFound``, ``BadRequest``, ``Unavailable``."""

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, let in-flight ones finish within ``timeout``, free resources."""


@runtime_checkable
class Serializer(Protocol):
    """Encodes objects to bytes of one content type and decodes them back."""

    content_type: str

    def serialize(self, obj: Any) -> bytes: ...

    def deserialize(self, data: bytes) -> Any: ...
