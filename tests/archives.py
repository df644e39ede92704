"""Build real archives for tests with the OFFICIAL archivers, from tiny deterministic models.

Everything here runs ``torch-model-archiver`` / ``torch-workflow-archiver`` (the ``test``
extra) in a subprocess, exactly as ``../shared/peer/setup.sh`` does, with the handler files of
``tests/assets/``. Models are built with fixed seeds, so expected outputs can be computed in
the test with :func:`tiny_models` / :func:`expected`.

Main entry points:

- :func:`build_peer_stores(root)` -> :class:`Stores`: ``m1.mar``, ``m2.mar`` (TorchScript,
  ``model_handler.py``), ``seq_wf.war`` (pre->m1->m2->post) and ``par_wf.war``
  (pre->[m1,m2]->aggregate), in ``root/model_store`` and ``root/wf_store``.
- :func:`build_mar` / :func:`build_war`: one archive, any ``--archive-format``.
- :func:`save_torchscript`, :func:`save_state_dict`: the model files.
- :func:`expected_seq` / :func:`expected_par`: what the two workflows answer for an input.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
MODEL_HANDLER = ASSETS / "model_handler.py"
WORKFLOW_HANDLER = ASSETS / "workflow_handler.py"
CLASS_HANDLER = ASSETS / "class_handler.py"
TINY_MODEL = ASSETS / "tiny_model.py"
SEQ_SPEC = ASSETS / "seq_workflow.yaml"
PAR_SPEC = ASSETS / "par_workflow.yaml"
SAMPLE = [0.1, 0.2, 0.3, 0.4]


def tool(name: str) -> str:
    """The path of an official archiver: next to this Python first, then on ``PATH``."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")


# --- models -------------------------------------------------------------------------------


@functools.cache
def tiny_models() -> dict[str, object]:
    """The peer's two models (``make_models.py``): m1 MLP 4->16->ReLU->4 (seed 0), m2 Linear 4->4
    (seed 1); plus ``tiny`` (:mod:`tests.assets.tiny_model` ``TinyNet`` 4->8->3, seed 2).
    Built once per process (cached): callers only read them."""
    import torch

    torch.manual_seed(0)
    m1 = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
                             torch.nn.Linear(16, 4)).eval()
    torch.manual_seed(1)
    m2 = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    torch.manual_seed(2)
    tiny = _tiny_net_class()().eval()
    return {"m1": m1, "m2": m2, "tiny": tiny}


def _tiny_net_class() -> type:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tests_assets_tiny_model", TINY_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TinyNet


def run_model(name: str, rows: list[list[float]]) -> list[list[float]]:
    """The output of model ``name`` for ``rows`` (one list of floats per row)."""
    import torch

    model = tiny_models()[name]
    with torch.inference_mode():
        return model(torch.tensor(rows, dtype=torch.float32)).tolist()


def save_torchscript(name: str, out_dir: Path) -> Path:
    """Trace model ``name`` and save it as ``<out_dir>/<name>.pt``."""
    import torch

    path = Path(out_dir) / f"{name}.pt"
    with warnings.catch_warnings():  # torch 2.13 deprecates jit.trace; TorchServe needs it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(tiny_models()[name], torch.zeros(1, 4)).save(str(path))
    return path


def save_state_dict(name: str, out_dir: Path) -> Path:
    """Save the state dict of model ``name`` as ``<out_dir>/<name>.pth`` (eager mode)."""
    import torch

    path = Path(out_dir) / f"{name}.pth"
    torch.save(tiny_models()[name].state_dict(), path)
    return path


# --- archives -----------------------------------------------------------------------------


def build_mar(export: Path, name: str, *, handler: str | Path, serialized_file: Path | None = None,
              model_file: Path | None = None, extra_files: Iterable[Path] = (),
              archive_format: str = "default", version: str = "1.0",
              requirements_file: Path | None = None, config_file: Path | None = None) -> Path:
    """Run ``torch-model-archiver``; return ``<name>.mar``, ``<name>.tar.gz`` or ``<name>/``."""
    export = Path(export)
    export.mkdir(parents=True, exist_ok=True)
    cmd = [tool("torch-model-archiver"), "--model-name", name, "--version", version,
           "--handler", str(handler), "--export-path", str(export), "-f",
           "--archive-format", archive_format]
    for flag, value in (("--serialized-file", serialized_file), ("--model-file", model_file),
                        ("--requirements-file", requirements_file),
                        ("--config-file", config_file)):
        if value is not None:
            cmd += [flag, str(value)]
    extras = ",".join(str(p) for p in extra_files)
    if extras:
        cmd += ["--extra-files", extras]
    _run(cmd)
    suffix = {"tgz": ".tar.gz", "no-archive": ""}.get(archive_format, ".mar")
    return export / f"{name}{suffix}"


def build_war(export: Path, name: str, *, spec_file: Path, handler: Path = WORKFLOW_HANDLER,
              extra_files: Iterable[Path] = ()) -> Path:
    """Run ``torch-workflow-archiver``; return ``<export>/<name>.war``."""
    export = Path(export)
    export.mkdir(parents=True, exist_ok=True)
    cmd = [tool("torch-workflow-archiver"), "--workflow-name", name, "--spec-file",
           str(spec_file), "--handler", str(handler), "--export-path", str(export), "-f"]
    extras = ",".join(str(p) for p in extra_files)
    if extras:
        cmd += ["--extra-files", extras]
    _run(cmd)
    return export / f"{name}.war"


@dataclass(frozen=True)
class Stores:
    """The folders :func:`build_peer_stores` fills."""

    root: Path
    model_store: Path
    workflow_store: Path

    @property
    def seq_war(self) -> Path:
        return self.workflow_store / "seq_wf.war"

    @property
    def par_war(self) -> Path:
        return self.workflow_store / "par_wf.war"


def build_peer_stores(root: Path, *, timeout_ms: int = 10000, retry_attempts: int = 1) -> Stores:
    """Build the peer benchmark's stores as ``setup.sh`` does (m1/m2 .mar, seq/par .war).

    :param timeout_ms: written into both specs' ``timeout-ms`` (setup.sh's ``TIMEOUT_MS``).
    :param retry_attempts: written into both specs' ``retry-attempts``.
    """
    root = Path(root)
    build, model_store, wf_store = root / "build", root / "model_store", root / "wf_store"
    for folder in (build, model_store, wf_store):
        folder.mkdir(parents=True, exist_ok=True)
    for name in ("m1", "m2"):
        build_mar(model_store, name, handler=MODEL_HANDLER,
                  serialized_file=save_torchscript(name, build))
    for kind, template in (("seq", SEQ_SPEC), ("par", PAR_SPEC)):
        spec = build / f"{kind}_workflow.yaml"
        text = template.read_text()
        text = text.replace("timeout-ms: 10000", f"timeout-ms: {timeout_ms}")
        text = text.replace("retry-attempts: 1", f"retry-attempts: {retry_attempts}")
        spec.write_text(text)
        build_war(wf_store, f"{kind}_wf", spec_file=spec)
    return Stores(root, model_store, wf_store)


# --- expected answers ---------------------------------------------------------------------


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 6) for v in values]


def expected_seq(x: list[float] = SAMPLE) -> dict[str, object]:
    """What ``seq_wf`` (pre->m1->m2->post) answers for input ``x``."""
    m1 = _rounded(run_model("m1", [x])[0])
    m2 = _rounded(run_model("m2", [m1])[0])
    return {"result": m2, "sum": round(sum(m2), 6)}


def expected_par(x: list[float] = SAMPLE) -> dict[str, object]:
    """What ``par_wf`` (pre->[m1,m2]->aggregate) answers for input ``x``."""
    a = _rounded(run_model("m1", [x])[0])
    b = _rounded(run_model("m2", [x])[0])
    return {"m1": a, "m2": b, "sum": [round(p + q, 6) for p, q in zip(a, b, strict=True)]}


# --- TorchServe's own handlers (tests/integration/test_ts_handlers.py) ----------------------

TS_ASSETS = ASSETS / "ts"
TINY_HANDLER = TS_ASSETS / "tiny_handler.py"  # a ts BaseHandler subclass
RESNET_MODEL = TS_ASSETS / "resnet18_model.py"  # torchvision ResNet-18, 10 classes
INDEX_TO_NAME = TS_ASSETS / "index_to_name.json"
TS_WORKFLOW_HANDLER = TS_ASSETS / "workflow_handler.py"


@functools.cache
def resnet18() -> object:
    """torchvision's ResNet-18 (10 classes) with random weights (seed 3), in eval mode; the
    class of ``resnet18_model.py``, so its state dict loads there. Built once per process."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("tests_assets_resnet18_model", RESNET_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(3)
    return module.ResNet18Classifier().eval()


def save_resnet18(out_dir: Path, *, torchscript: bool) -> Path:
    """:func:`resnet18` as TorchScript (``torch.jit.script`` + ``save``, ``resnet18.pt``) or as
    a state dict for ``--model-file`` (``resnet18.pth``)."""
    import torch

    model = resnet18()
    if not torchscript:
        path = Path(out_dir) / "resnet18.pth"
        torch.save(model.state_dict(), path)
        return path
    path = Path(out_dir) / "resnet18.pt"
    with warnings.catch_warnings():  # torch deprecates TorchScript; TorchServe loads it
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        torch.jit.script(model).save(str(path))
    return path


@dataclass(frozen=True)
class TsStores:
    """What :func:`build_ts_stores` builds: ``tiny_wf.war`` (pre -> [eager, scripted] -> both,
    a ``BaseHandler`` subclass over a ``--model-file`` and a TorchScript model) and
    ``vision_wf.war`` (pre -> [resnet_scripted, resnet_eager] -> classes, TorchServe's built-in
    ``image_classifier``), with their ``.mar`` files in ``model_store``."""

    model_store: Path
    workflow_store: Path


def build_ts_stores(root: Path) -> TsStores:
    """Build the archives of TorchServe's own handlers with the official archivers."""
    root = Path(root)
    build, models, wars = root / "build", root / "model_store", root / "wf_store"
    for folder in (build, models, wars):
        folder.mkdir(parents=True, exist_ok=True)
    build_mar(models, "tiny_eager", handler=TINY_HANDLER, model_file=TINY_MODEL,
              serialized_file=save_state_dict("tiny", build),
              config_file=TS_ASSETS / "profile_config.yaml")
    build_mar(models, "tiny_scripted", handler=TINY_HANDLER,
              serialized_file=save_torchscript("tiny", build))
    build_mar(models, "resnet_scripted", handler="image_classifier",
              serialized_file=save_resnet18(build, torchscript=True),
              extra_files=[INDEX_TO_NAME])
    build_mar(models, "resnet_eager", handler="image_classifier", model_file=RESNET_MODEL,
              serialized_file=save_resnet18(build, torchscript=False),
              extra_files=[INDEX_TO_NAME])
    for name in ("tiny", "vision"):
        build_war(wars, f"{name}_wf", spec_file=TS_ASSETS / f"{name}_workflow.yaml",
                  handler=TS_WORKFLOW_HANDLER)
    return TsStores(models, wars)
