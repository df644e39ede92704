"""Write ``.war`` and ``.mar`` zip files that TorchServe and the official archivers' readers accept.

A convenience: ``torch-workflow-archiver`` and ``torch-model-archiver`` remain the reference.
The layout and manifest fields are theirs (research §1.1-1.4): files flat at the root (the
contents of an extra-files folder copied recursively for a ``.mar``), ``WAR-INF/`` or
``MAR-INF/MANIFEST.json`` written last with indent 2, ``createdOn`` as ``%d/%m/%Y %H:%M:%S``,
file names as basenames, a handler's ``:function`` suffix kept, built-in handler names
(``base_handler``...) not copied. The zip is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from importlib import metadata
from pathlib import Path
from typing import Any

from wfserve.kernel.errors import UsageError
from wfserve.kernel.names import NAME_RULE
from wfserve.kernel.names import is_valid_name

#: TorchServe's built-in handler names (the model archiver does not copy these).
TS_BUILTINS = frozenset({
    "base_handler", "image_classifier", "text_classifier", "object_detector",
    "image_segmenter", "dali_image_classifier", "vllm_handler", "trt_llm_handler",
})


def _archiver_version() -> str:
    try:
        return f"wfserve-{metadata.version('wfserve')}"
    except metadata.PackageNotFoundError:
        return "wfserve"


def _created_on() -> str:
    return time.strftime("%d/%m/%Y %H:%M:%S")


@dataclass
class _Contents:
    """Archive name -> source file, in the order they are written."""

    files: dict[str, Path] = field(default_factory=dict)

    def add(self, source: Path, name: str | None = None) -> str:
        if not source.is_file():
            raise UsageError(f"File does not exist: {source}", path=str(source))
        arcname = name or source.name
        self.files[arcname] = source
        return arcname

    def add_extra(self, source: Path, recursive: bool) -> None:
        if source.is_dir() and recursive:
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                self.add(path, path.relative_to(source).as_posix())
        else:
            self.add(source)


def _target(name: str, kind: str, export_path: Path, force: bool) -> Path:
    label = "Workflow" if kind == "war" else "Model"
    if not is_valid_name(name):
        raise UsageError(f"{label} name contains special characters: it must be {NAME_RULE}",
                         name=name)
    if not export_path.is_dir():
        raise UsageError(f"Given export-path {export_path} is not a directory",
                         path=str(export_path))
    target = export_path / f"{name}.{kind}"
    if target.exists() and not force:
        raise UsageError(f"{target} already exists. Please specify --force/-f option to "
                         "overwrite the archive", path=str(target))
    return target


def _write(target: Path, contents: _Contents, manifest_name: str,
           manifest: dict[str, Any]) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for arcname, source in contents.files.items():
                zf.write(source, arcname)
            zf.writestr(manifest_name, json.dumps(manifest, indent=2))
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def build_war(name: str, spec_file: Path, handler: Path, *, extra_files: Iterable[Path] = (),
              export_path: Path = Path(), force: bool = False) -> Path:
    """Write ``<export_path>/<name>.war`` and return its path.

    :raises UsageError: a bad name, a missing file or export path, or an existing archive
        without ``force`` (the official archiver's messages).
    """
    target = _target(name, "war", Path(export_path), force)
    contents = _Contents()
    spec_name = contents.add(Path(spec_file))
    handler_name = contents.add(Path(handler))
    for extra in extra_files:
        contents.add_extra(Path(extra), recursive=False)
    manifest = {
        "createdOn": _created_on(),
        "workflow": {"workflowName": name, "specFile": spec_name, "handler": handler_name},
        "archiverVersion": _archiver_version(),
    }
    return _write(target, contents, "WAR-INF/MANIFEST.json", manifest)


def build_mar(name: str, version: str, handler: str, *, serialized_file: Path | None = None,
              model_file: Path | None = None, extra_files: Iterable[Path] = (),
              requirements_file: Path | None = None, config_file: Path | None = None,
              runtime: str = "python", export_path: Path = Path(),
              force: bool = False) -> Path:
    """Write ``<export_path>/<name>.mar`` and return its path.

    :param handler: a built-in handler name, or ``path/to/file[.py][:function]``.
    :raises UsageError: as :func:`build_war`, or an unknown runtime.
    """
    if runtime not in ("python", "python3", "LSP"):
        raise UsageError(f"Unknown runtime {runtime!r}", runtime=runtime)
    target = _target(name, "mar", Path(export_path), force)
    contents = _Contents()
    model: dict[str, Any] = {"modelName": name}
    if serialized_file is not None:
        model["serializedFile"] = contents.add(Path(serialized_file))
    file_part = handler.partition(":")[0]
    if file_part in TS_BUILTINS:
        model["handler"] = handler
    else:
        source = Path(file_part if file_part.endswith(".py") else f"{file_part}.py")
        contents.add(source)
        model["handler"] = handler.rsplit("/", 1)[-1]
    if model_file is not None:
        model["modelFile"] = contents.add(Path(model_file))
    model["modelVersion"] = version
    if requirements_file is not None:
        model["requirementsFile"] = contents.add(Path(requirements_file))
    if config_file is not None:
        model["configFile"] = contents.add(Path(config_file))
    for extra in extra_files:
        contents.add_extra(Path(extra), recursive=True)
    manifest = {"createdOn": _created_on(), "runtime": runtime, "model": model,
                "archiverVersion": _archiver_version()}
    return _write(target, contents, "MAR-INF/MANIFEST.json", manifest)
