"""In-process fake handlers and a builder for threaded executors over a spec (tests only)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import PredictRequest
from wfserve.kernel.contracts import Workflow
from wfserve.kernel.core import Kernel
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings
from wfserve.kernel.spec import parse_spec

BUILTIN = ("wfserve.plugins.serializers", "wfserve.plugins.batching",
           "wfserve.plugins.executors.threaded")
NO_AUTOLOAD = {"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"}
Factory = Callable[[int], Callable[[list[dict], list], list]]


class FakeHandlers:
    """Answers ``wfserve_load_handler`` from ``{node: factory(worker_index) -> handler}``."""

    def __init__(self, factories: dict[str, Factory]) -> None:
        self.factories = factories
        self.loaded: list[tuple[str, int, str]] = []

    @hookimpl
    def wfserve_load_handler(self, node, archive, context):
        self.loaded.append((node.name, context.worker_index, context.model_name))
        return self.factories[node.name](context.worker_index)


def per_row(fn: Callable[[dict], Any], log: list | None = None) -> Factory:
    """A factory of handlers applying ``fn`` to each row (``log`` gets each batch's size)."""

    def factory(index: int) -> Callable[[list[dict], list], list]:
        def handler(batch: list[dict], meta: list) -> list:
            if log is not None:
                log.append(len(batch))
            return [fn(row) for row in batch]

        return handler

    return factory


def make_executor(
    tmp_path: Path,
    spec_text: str,
    factories: dict[str, Factory],
    settings: Settings | None = None,
    start: bool = True,
) -> tuple[Any, FakeHandlers]:
    """Build (and start) a ThreadedExecutor for ``spec_text`` with fake handlers."""
    settings = settings or Settings()
    fakes = FakeHandlers(factories)
    pm = make_plugin_manager(settings, builtin=BUILTIN, env=NO_AUTOLOAD, extra=[("fakes", fakes)])
    kernel = Kernel.create(settings, pm=pm)
    spec = parse_spec(textwrap.dedent(spec_text), sections=kernel.hooks.spec_sections())
    archive = Archive(kind="war", source=tmp_path, root=tmp_path, manifest={}, name="wf")
    node_archives = {
        n.name: Archive(kind="mar", source=tmp_path, root=tmp_path, manifest={}, name=n.name)
        for n in spec.models
    }
    workflow = Workflow("wf", "wf.war", spec, spec.dag(), archive, node_archives)
    executor = kernel.hooks.make_executor(workflow, kernel)
    if start:
        executor.start()
    return executor, fakes


def request(body: Any, request_id: str = "r", deadline: float | None = None) -> PredictRequest:
    """A request whose root row is ``{"body": body}``."""
    return PredictRequest({"body": body}, {"content-type": "text/plain"}, request_id, deadline)
