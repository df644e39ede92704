"""Registering and unregistering workflows: fetch, open, parse, build, start, publish.

All work goes through hooks; the order and the outcomes are TorchServe 0.12.0's
(``WorkflowManager.registerWorkflow``): a missing ``url`` is 400 "Parameter url is required.",
a name already taken is 409, a node whose model cannot be found or loaded fails the whole
registration with "Workflow <wf> has failed to register. Failures: [...]". Unlike TorchServe a
failed registration leaves nothing behind: no downloaded file, no extracted folder, no name.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import NodeState
from wfserve.kernel.contracts import Workflow
from wfserve.kernel.downloads import Fetcher
from wfserve.kernel.downloads import Release
from wfserve.kernel.downloads import discard
from wfserve.kernel.errors import BadRequest
from wfserve.kernel.errors import InvalidWorkflow
from wfserve.kernel.errors import ModelNotFound
from wfserve.kernel.errors import RegistrationFailed
from wfserve.kernel.errors import SpecError
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.names import NAME_RULE
from wfserve.kernel.names import is_valid_name
from wfserve.kernel.redact import redact_url
from wfserve.kernel.registry import Registered
from wfserve.kernel.registry import Registry
from wfserve.kernel.spec import parse_spec
from wfserve.kernel.store import Record
from wfserve.kernel.sync import Held
from wfserve.kernel.sync import as_record
from wfserve.kernel.sync import coordinator
from wfserve.kernel.sync import edit_with

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel
    from wfserve.kernel.settings import Settings
    from wfserve.kernel.spec import NodeSpec
    from wfserve.kernel.spec import WorkflowSpec

log = structlog.get_logger(__name__)
DRAIN_SECONDS = 30.0


def register_workflow(
    kernel: Kernel,
    url: str | None,
    name: str | None = None,
    version: str | None = None,
    *,
    reuse: Mapping[str, Sequence[str]] | None = None,
) -> Registered:
    """Register the workflow archive at ``url`` (under ``name`` when given) and start it.

    The version is ``version``, else the war manifest's ``version``, else ``"1.0"``. A new
    version of a registered name is added beside the others (the default does not change);
    the same version again is TorchServe's 409.

    :param reuse: ``fetched`` of a snapshot (key -> ``(redacted url, keep)``), handed to the
        fetcher of the same URL, which may return that download instead of fetching again.
    :raises BadRequest: no url, or an invalid name or version.
    :raises Conflict: that name and version is registered or being registered.
    :raises WfserveError: whatever fetching, opening, parsing or loading raised; nothing of
        the attempt is left behind.
    """
    _check(url, name, version)
    assert url is not None
    entry, _ = _load(kernel, url, name, version, reuse or {}, update=False)
    log.info("workflow registered", workflow=entry.name, version=entry.version,
             url=redact_url(url),
             nodes=len(entry.workflow.dag))
    kernel.hooks.workflow_event(kernel, "registered", entry.workflow)
    return entry


def update_workflow(
    kernel: Kernel, name: str, url: str | None, version: str | None = None,
    drain: float = DRAIN_SECONDS,
) -> tuple[Registered, list[Registered]]:
    """Replace ``name``'s default version by the war at ``url`` without failing a request.

    The new version is loaded and started fully, then becomes the default in one step; the
    replaced versions (the old default, and an older one with the new version's number) are
    drained and freed. A new version that fails to load leaves the old one serving.

    :returns: the new entry and the replaced ones (already closed).
    :raises WorkflowNotFound: ``name`` is not registered.
    :raises Conflict: ``name`` is already being updated.
    :raises WfserveError: the new version failed to load (nothing changed).
    """
    _check(url, name, version)
    assert url is not None
    entry, old = _load(kernel, url, name, version, {}, update=True)
    for gone in old:
        _free(gone, drain, keep_downloads=False)
    log.info("workflow updated", workflow=name, version=entry.version, url=redact_url(url),
             replaced=[g.version for g in old])
    kernel.hooks.workflow_event(kernel, "updated", entry.workflow)
    return entry, old


def unregister_workflow(
    kernel: Kernel, name: str, version: str | None = None, drain: float = DRAIN_SECONDS,
    *, keep_downloads: bool = False,
) -> list[Registered]:
    """Take ``name`` (every version, or only ``version``) out of service, let in-flight
    requests finish, free everything.

    :param keep_downloads: leave downloaded archives in place (a snapshot still needs them).
    :raises WorkflowNotFound: TorchServe's 404 when ``name`` (or the version) is absent.
    :raises BadRequest: ``version`` is the default while other versions remain.
    """
    sync = coordinator(kernel)
    if sync is None:
        gone = kernel.registry.remove(name, version)
    else:
        _, gone = sync.publish(edit_with(kernel, lambda registry: registry.remove(name, version)))
    for entry in gone:
        _free(entry, drain, keep_downloads=keep_downloads)
    log.info("workflow unregistered", workflow=name, versions=[e.version for e in gone])
    for entry in gone:
        kernel.hooks.workflow_event(kernel, "unregistered", entry.workflow)
    return gone


def set_default_version(kernel: Kernel, name: str, version: str) -> Registered:
    """Make ``version`` the one ``/wfpredict/<name>`` serves (atomic)."""
    sync = coordinator(kernel)
    if sync is None:
        kernel.registry.set_default(name, version)
    else:
        sync.publish(edit_with(kernel, lambda registry: registry.set_default(name, version)))
    entry = kernel.registry.get(name, version)
    log.info("default version changed", workflow=name, version=version)
    kernel.hooks.workflow_event(kernel, "updated", entry.workflow)
    return entry


def scale_node(
    kernel: Kernel, name: str, node: str, version: str | None = None, **values: int | None
) -> NodeState:
    """Change one node's workers or batching on a live workflow; returns its new state.

    ``values`` are ``min_workers``, ``max_workers``, ``batch_size``, ``max_batch_delay`` (None
    leaves one as it is). The change is remembered in :attr:`Registered.overrides`.

    :raises WorkflowNotFound: no such workflow or version.
    :raises ModelNotFound: the workflow has no node ``node``.
    :raises BadRequest: the executor refused the values.
    """
    entry = kernel.registry.get(name, version)
    if node not in entry.workflow.spec.nodes:
        raise ModelNotFound(f"Model not found: {name}__{node}", workflow=name, node=node)
    cap = kernel.settings.max_workers_per_node
    for key in ("min_workers", "max_workers"):
        value = values.get(key)
        if value is not None and value > cap:
            raise BadRequest(f"{key} {value} for {name}__{node} is over the limit of {cap} "
                             "workers per node (max_workers_per_node)", workflow=name, node=node)
    live = entry.executor.scale(node, **values)
    scaled = entry.overrides.setdefault(node, {})
    scaled.update({k: v for k, v in values.items() if v is not None})
    sync = coordinator(kernel)
    if sync is not None:

        def change(registry: Registry[Held]) -> None:
            held = registry.get(name, entry.version)
            held.record = replace(held.record, scale={**held.record.scale, node: dict(scaled)})

        sync.publish(edit_with(kernel, change))
    log.info("node scaled", workflow=name, version=entry.version, node=node,
             **{k: v for k, v in values.items() if v is not None})
    kernel.hooks.workflow_event(kernel, "scaled", entry.workflow)
    return live


def check_spec_limits(settings: Settings, name: str, spec: WorkflowSpec) -> None:
    """Refuse a spec over ``max_nodes_per_workflow`` nodes, or with a node whose min or max
    workers exceed ``max_workers_per_node``; runs before any model archive is fetched.

    :raises BadRequest: naming the limit.
    """
    if len(spec.nodes) > settings.max_nodes_per_workflow:
        raise BadRequest(f"Workflow {name} has {len(spec.nodes)} nodes, over the limit of "
                         f"{settings.max_nodes_per_workflow} (max_nodes_per_workflow)",
                         workflow=name)
    cap = settings.max_workers_per_node
    for node in spec.nodes.values():
        workers = max(node.config.min_workers, node.config.max_workers)
        if workers > cap:
            raise BadRequest(f"Node {node.name} of workflow {name} asks for {workers} workers, "
                             f"over the limit of {cap} per node (max_workers_per_node)",
                             workflow=name, node=node.name)


def _check(url: str | None, name: str | None, version: str | None) -> None:
    if url is None:  # NOTE: "" is a url (the store itself), as in TorchServe
        raise BadRequest("Parameter url is required.")
    if name is not None and not is_valid_name(name):
        raise BadRequest(f"Invalid workflow name: {name!r}: a name must be {NAME_RULE}",
                         workflow=name)
    if version is not None and not is_valid_name(version):
        raise BadRequest(f"Invalid workflow version: {version!r}: a version must be "
                         f"{NAME_RULE}", version=version)


def _load(
    kernel: Kernel, url: str, name: str | None, version: str | None,
    reuse: Mapping[str, Sequence[str]], *, update: bool,
) -> tuple[Registered, list[Registered]]:
    """Fetch, open, reserve, build, start and publish; on any failure undo all of it."""
    workdir = Path(tempfile.mkdtemp(prefix="wfserve-"))
    releases: list[Release] = []
    fetch = Fetcher(kernel, reuse, releases, {})
    entry: Registered | None = None
    try:
        if name is not None:  # refuse before downloading anything
            if update:
                kernel.registry.check_updatable(name)
            else:
                kernel.registry.check_room(name, version)
        archive, wf_name, wf_version = _open_war(kernel, url, name, version, workdir, fetch)
        held = (kernel.registry.updating(wf_name) if update
                else kernel.registry.reserving(wf_name, wf_version))
        with held:
            entry = _start(kernel, wf_name, wf_version, url, archive, workdir, fetch)
            old = _publish(kernel, entry, update=update)
    except BaseException:
        if entry is None or not _serves(kernel, entry):  # NOTE: a published one stays
            if entry is not None:
                with contextlib.suppress(Exception):
                    entry.executor.close(timeout=0)
            discard(workdir, releases)
        raise
    return entry, old


def _serves(kernel: Kernel, entry: Registered) -> bool:
    """Whether ``entry`` is in this process's registry (it was published)."""
    return any(held is entry for held, _ in kernel.registry.state())


def load_record(kernel: Kernel, record: Record) -> Registered:
    """Load and start a version another server process registered, from the archives it
    fetched (``record.fetched``): a URL is never fetched again. Not published: the caller
    (:class:`~wfserve.kernel.sync.Coordinator`) installs it.

    :raises WfserveError: the archives are gone or do not load; nothing is left behind.
    """
    workdir = Path(tempfile.mkdtemp(prefix="wfserve-"))
    releases: list[Release] = []
    fetch = Fetcher(kernel, record.fetched, releases, {}, kept_only=True)
    try:
        archive, name, version = _open_war(kernel, record.url, record.name, record.version,
                                           workdir, fetch)
        entry = _start(kernel, name, version, record.url, archive, workdir, fetch)
    except BaseException:
        discard(workdir, releases)
        raise
    entry.uid = record.uid
    return entry


def free_entry(entry: Registered) -> None:
    """Drain and free a version this process no longer serves (another process unregistered
    or replaced it), deleting its downloads."""
    _free(entry, DRAIN_SECONDS, keep_downloads=False)


def retire_all(kernel: Kernel, drain: float, *, keep_downloads: bool) -> None:
    """This process is stopping: drain and free every version it serves. Unlike
    :func:`unregister_workflow` nothing is published: the other server processes keep
    serving, and the registration store keeps the registrations."""
    for name in kernel.registry.names():
        for entry in kernel.registry.install(name, {}, None):
            try:
                _free(entry, drain, keep_downloads=keep_downloads)
            except Exception as exc:  # NOTE: one failing close must not keep the others
                log.warning("shutdown: could not free", workflow=name, error=str(exc))


def _open_war(kernel: Kernel, url: str, name: str | None, version: str | None,
              workdir: Path, fetch: Fetcher) -> tuple[Archive, str, str]:
    """Fetch and open the war; its name (``name`` or the manifest's) and version."""
    war = fetch("", url, kernel.settings.workflow_store_path, "war")
    archive = kernel.hooks.open_archive(war, workdir / "war")
    wf_name = _workflow_name(archive, name)
    wf_version = version or archive.version or "1.0"
    if not is_valid_name(wf_version):
        raise InvalidWorkflow(f"Invalid workflow version: {wf_version!r}: a version must "
                              f"be {NAME_RULE}", workflow=wf_name)
    return archive, wf_name, wf_version


def _start(kernel: Kernel, name: str, version: str, url: str, archive: Archive,
           workdir: Path, fetch: Fetcher) -> Registered:
    """Build the workflow and start its executor (not yet visible)."""
    workflow = _build(kernel, name, url, archive, workdir, fetch)
    workflow.version = version
    executor = kernel.hooks.make_executor(workflow, kernel)
    try:
        executor.start()
    except BaseException:
        with contextlib.suppress(Exception):
            executor.close(timeout=0)
        raise
    return Registered(workflow, executor, fetched=fetch.fetched)


def _publish(kernel: Kernel, entry: Registered, *, update: bool) -> list[Registered]:
    """Make a started entry visible: in the registry, and through the registration store in
    every server process when there is one. Returns the versions an update replaced.

    A registration that another process could not load is taken back out everywhere."""
    sync = coordinator(kernel)
    if sync is None:
        if update:
            return kernel.registry.swap(entry)
        kernel.registry.add(entry)
        return []

    def change(registry: Registry[Held]) -> None:
        if update:
            registry.get(entry.name)
            registry.swap(Held(as_record(entry)))
        else:
            registry.check_room(entry.name, entry.version)
            registry.add(Held(as_record(entry)))

    revision, removed = sync.publish(edit_with(kernel, change), prepared=(entry,), wait=False)
    try:
        sync.wait_all(revision)
    except WfserveError:
        if not update:  # NOTE: an update keeps serving here; the answer says what failed
            sync.publish(lambda records: [r for r in records if r.uid != entry.uid], wait=False)
        raise
    return [gone for gone in removed if gone is not entry]


def _workflow_name(archive: Archive, override: str | None) -> str:
    if archive.kind != "war":
        raise InvalidWorkflow(f"{archive.source.name} is a model archive, not a workflow archive")
    name = override or archive.name
    if not name:
        raise InvalidWorkflow("Workflow name is not defined.")
    if not is_valid_name(name):
        raise InvalidWorkflow(f"Invalid workflow name: {name!r}: a name must be {NAME_RULE}",
                              workflow=name)
    return name


def _build(
    kernel: Kernel, name: str, url: str, archive: Archive, workdir: Path, fetch: Fetcher
) -> Workflow:
    if not archive.spec_file:
        raise InvalidWorkflow("Workflow spec file is not defined.", workflow=name)
    try:
        text = archive.path(archive.spec_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"Cannot read spec {archive.spec_file}: {exc}", workflow=name) from None
    spec = parse_spec(text, source=archive.spec_file, sections=kernel.hooks.spec_sections())
    check_spec_limits(kernel.settings, name, spec)
    dag = spec.dag()
    node_archives: dict[str, Archive] = {}
    failures: list[str] = []
    for node in spec.models:
        try:
            node_archives[node.name] = _open_model(kernel, node, workdir, fetch)
        except WfserveError as exc:
            failures.append(
                f"Workflow Node {name}__{node.name} failed to register. Details: {exc.message}"
            )
    if failures:
        raise RegistrationFailed(
            f"Workflow {name} has failed to register. Failures: [{', '.join(failures)}]",
            workflow=name,
        )
    return Workflow(name=name, url=redact_url(url), spec=spec, dag=dag, archive=archive,
                    node_archives=node_archives, releases=fetch.releases, workdir=workdir)


def _open_model(kernel: Kernel, node: NodeSpec, workdir: Path, fetch: Fetcher) -> Archive:
    assert node.url is not None
    path = fetch(node.name, node.url, kernel.settings.model_store_path, "mar")
    archive = kernel.hooks.open_archive(path, workdir / "models" / node.name)
    if archive.kind != "mar":
        raise InvalidWorkflow(f"{redact_url(node.url)} is not a model archive",
                              node=node.name)
    return archive


def _free(entry: Registered, drain: float, *, keep_downloads: bool) -> None:
    """Drain and close one version's executor, then delete its files."""
    try:
        entry.executor.close(timeout=drain)
    finally:
        workflow = entry.workflow
        discard(workflow.workdir, [] if keep_downloads else workflow.releases)
