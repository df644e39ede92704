"""The bundled example workflow, so a fresh ``wfserve serve`` answers at once.

At start-up (setting ``example``, on by default), in the phase that registers defaults
(:mod:`wfserve.kernel.startup`: after the snapshot's restore and the ``workflows`` setting), the
archives ``example.war`` and ``example_classifier.mar`` are built into the stores the first
time, from the handler and spec in ``assets/`` and a tiny seeded TorchScript classifier (4
features -> 3 scores), then the workflow is registered as ``example``, unless that name is
taken::

    curl -X POST http://127.0.0.1:8080/wfpredict/example \\
         -H 'Content-Type: application/json' -d '{"input": [5.1, 3.5, 1.4, 0.2]}'
"""

from __future__ import annotations

import importlib.resources
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from wfserve.kernel import hookimpl
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.lifecycle import register_workflow
from wfserve.kernel.settings import setting

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel

log = structlog.get_logger(__name__)
#: the example's handler, model handler and spec (package data)
ASSETS = Path(str(importlib.resources.files("wfserve.plugins.example") / "assets"))
NAME = "example"
MODEL = "example_classifier"


@dataclass(frozen=True)
class ExampleSettings:
    """Whether the example is registered (``kernel.settings.of(ExampleSettings)``)."""

    example: bool = setting(
        True, "Build (first start) and register the bundled 'example' workflow at start-up."
    )


def save_classifier(path: Path) -> Path:
    """A deterministic TorchScript classifier: Linear(4, 8) -> ReLU -> Linear(8, 3)."""
    import torch

    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with warnings.catch_warnings():  # NOTE: torch deprecates jit.trace with a warning
        warnings.simplefilter("ignore")
        torch.jit.trace(net.eval(), torch.zeros(1, 4)).save(str(path))
    return path


def build_example(model_store: Path, workflow_store: Path) -> Path:
    """Write the example's ``.mar`` and ``.war`` where missing; return the ``.war``."""
    from wfserve.plugins.archives.build import build_mar
    from wfserve.plugins.archives.build import build_war

    model_store.mkdir(parents=True, exist_ok=True)
    workflow_store.mkdir(parents=True, exist_ok=True)
    if not (model_store / f"{MODEL}.mar").exists():
        with tempfile.TemporaryDirectory() as tmp:
            weights = save_classifier(Path(tmp) / "classifier.pt")
            build_mar(MODEL, "1.0", str(ASSETS / "example_classifier.py"),
                      serialized_file=weights, export_path=model_store)
    war = workflow_store / f"{NAME}.war"
    if not war.exists():
        build_war(NAME, ASSETS / "example_workflow.yaml", ASSETS / "example_handler.py",
                  export_path=workflow_store)
    return war


@hookimpl
def wfserve_settings() -> type:
    """:class:`ExampleSettings`."""
    return ExampleSettings


@hookimpl
def wfserve_register_defaults(kernel: Kernel) -> None:
    """Build (first start only) and register the example, unless ``example`` is off or the
    name is taken (restored or configured: start-up phase 4 comes after both)."""
    settings = kernel.settings
    if not settings.of(ExampleSettings).example or NAME in kernel.registry:
        return
    try:
        war = build_example(settings.model_store_path, settings.workflow_store_path)
        register_workflow(kernel, war.name, NAME)
    except WfserveError as exc:
        log.error("the example workflow could not be registered", error=exc.message)
