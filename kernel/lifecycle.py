"""Registering and unregistering workflows: fetch, open, parse, build, start, publish.

All work goes through hooks; the order and the outcomes are TorchServe 0.12.0's
(``WorkflowManager.registerWorkflow``): a missing ``url`` is 400 "Parameter url is required.",
a name already taken is 409, a node whose model cannot be found or loaded fails the whole
registration with "Workflow <wf> has failed to register. Failures: [...]". Unlike TorchServe a
failed registration leaves nothing behind: no downloaded file, no extracted folder, no name.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kernel.contracts import Archive
from kernel.contracts import Workflow
from kernel.errors import BadRequest
from kernel.errors import InvalidWorkflow
from kernel.errors import RegistrationFailed
from kernel.errors import SpecError
from kernel.errors import WfserveError
from kernel.registry import Registered
from kernel.spec import parse_spec

if TYPE_CHECKING:
    from kernel.core import Kernel
    from kernel.spec import NodeSpec

log = structlog.get_logger(__name__)
#: the archivers' name rule; also keeps names safe in URLs and file names
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
DRAIN_SECONDS = 30.0
#: fetchers download into <store>/.downloads/<unique>/<file> so downloads never collide
DOWNLOADS = ".downloads"


def is_remote(url: str) -> bool:
    """A URL with a scheme is downloaded into the store (and deleted on unregister)."""
    return "://" in url


def register_workflow(kernel: Kernel, url: str | None, name: str | None = None) -> Registered:
    """Register the workflow archive at ``url`` (under ``name`` when given) and start it.

    :raises BadRequest: no url, or an invalid name.
    :raises Conflict: the name is registered or being registered.
    :raises WfserveError: whatever fetching, opening, parsing or loading raised; nothing of
        the attempt is left behind.
    """
    if not url:
        raise BadRequest("Parameter url is required.")
    if name is not None and not NAME.match(name):
        raise BadRequest(f"Invalid workflow name: {name}", workflow=name)
    workdir = Path(tempfile.mkdtemp(prefix="wfserve-"))
    downloaded: list[Path] = []
    try:
        war = kernel.hooks.fetch(url, kernel.settings.workflow_store_path)
        if is_remote(url):
            downloaded.append(war)
        archive = kernel.hooks.open_archive(war, workdir / "war")
        wf_name = _workflow_name(archive, name)
        with kernel.registry.reserving(wf_name):
            workflow = _build(kernel, wf_name, url, archive, workdir, downloaded)
            executor = kernel.hooks.make_executor(workflow, kernel)
            executor.start()
            entry = Registered(workflow, executor)
            try:
                kernel.registry.add(entry)
            except BaseException:
                executor.close(timeout=0)
                raise
    except BaseException:
        _discard(workdir, downloaded)
        raise
    log.info("workflow registered", workflow=wf_name, url=url, nodes=len(workflow.dag))
    kernel.hooks.workflow_event(kernel, "registered", workflow)
    return entry


def unregister_workflow(kernel: Kernel, name: str, drain: float = DRAIN_SECONDS) -> Registered:
    """Take ``name`` out of service, let in-flight requests finish, free everything.

    :raises WorkflowNotFound: TorchServe's 404 when ``name`` is not registered.
    """
    entry = kernel.registry.remove(name)
    try:
        entry.executor.close(timeout=drain)
    finally:
        _discard(entry.workflow.workdir, entry.workflow.downloaded)
    log.info("workflow unregistered", workflow=name)
    kernel.hooks.workflow_event(kernel, "unregistered", entry.workflow)
    return entry


def _workflow_name(archive: Archive, override: str | None) -> str:
    if archive.kind != "war":
        raise InvalidWorkflow(f"{archive.source.name} is a model archive, not a workflow archive")
    name = override or archive.name
    if not name:
        raise InvalidWorkflow("Workflow name is not defined.")
    if not NAME.match(name):
        raise InvalidWorkflow(f"Invalid workflow name: {name}", workflow=name)
    return name


def _build(
    kernel: Kernel, name: str, url: str, archive: Archive, workdir: Path, downloaded: list[Path]
) -> Workflow:
    if not archive.spec_file:
        raise InvalidWorkflow("Workflow spec file is not defined.", workflow=name)
    try:
        text = archive.path(archive.spec_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"Cannot read spec {archive.spec_file}: {exc}", workflow=name) from None
    spec = parse_spec(text, source=archive.spec_file)
    dag = spec.dag()
    node_archives: dict[str, Archive] = {}
    failures: list[str] = []
    for node in spec.models:
        try:
            node_archives[node.name] = _open_model(kernel, node, workdir, downloaded)
        except WfserveError as exc:
            failures.append(
                f"Workflow Node {name}__{node.name} failed to register. Details: {exc.message}"
            )
    if failures:
        raise RegistrationFailed(
            f"Workflow {name} has failed to register. Failures: [{', '.join(failures)}]",
            workflow=name,
        )
    return Workflow(name=name, url=url, spec=spec, dag=dag, archive=archive,
                    node_archives=node_archives, downloaded=downloaded, workdir=workdir)


def _open_model(kernel: Kernel, node: NodeSpec, workdir: Path, downloaded: list[Path]) -> Archive:
    assert node.url is not None
    path = kernel.hooks.fetch(node.url, kernel.settings.model_store_path)
    if is_remote(node.url):
        downloaded.append(path)
    archive = kernel.hooks.open_archive(path, workdir / "models" / node.name)
    if archive.kind != "mar":
        raise InvalidWorkflow(f"{node.url} is not a model archive", node=node.name)
    return archive


def _discard(workdir: Path | None, downloaded: list[Path]) -> None:
    for path in downloaded:
        try:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            if path.parent.parent.name == DOWNLOADS:  # the download's own unique folder
                path.parent.rmdir()
        except OSError as exc:
            log.warning("could not delete a downloaded archive", path=str(path), error=str(exc))
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
