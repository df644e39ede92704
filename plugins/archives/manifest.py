"""``WAR-INF/MANIFEST.json`` and ``MAR-INF/MANIFEST.json``: read, validate, turn into an Archive.

Validation follows TorchServe 0.12.0 (``WorkflowArchive.validate``, ``ModelArchive.validate``)
with its messages; a ``modelVersion`` that is absent becomes ``"1.0"`` as the server does.
Unlike TorchServe, every file name the manifest states must be a plain relative name (no
``..``, not absolute), so that ``Archive.path()`` never leaves the archive's folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from pathlib import PurePosixPath
from typing import Any

from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import ArchiveKind
from wfserve.kernel.errors import BadArchive
from wfserve.kernel.errors import InvalidWorkflow
from wfserve.kernel.redact import clip

WAR_MANIFEST = "WAR-INF/MANIFEST.json"
MAR_MANIFEST = "MAR-INF/MANIFEST.json"
MANIFESTS: dict[ArchiveKind, str] = {"war": WAR_MANIFEST, "mar": MAR_MANIFEST}


def find_root(folder: Path) -> Path | None:
    """The folder holding a manifest: ``folder`` itself, or its only sub-folder (TorchServe)."""
    if any((folder / m).is_file() for m in MANIFESTS.values()):
        return folder
    children = [c for c in folder.iterdir() if c.name not in ("__MACOSX",)]
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        inner = children[0]
        if any((inner / m).is_file() for m in MANIFESTS.values()):
            return inner
    return None


def kind_of(root: Path) -> ArchiveKind | None:
    """``"war"`` or ``"mar"`` by the manifest ``root`` holds, or None if it holds neither."""
    if (root / WAR_MANIFEST).is_file():
        return "war"
    if (root / MAR_MANIFEST).is_file():
        return "mar"
    return None


def read_manifest(root: Path, kind: ArchiveKind, source: Path) -> dict[str, Any]:
    """The parsed manifest of ``kind`` under ``root``.

    :raises BadArchive: the manifest is missing, unreadable, not JSON or not a JSON object.
    """
    name = MANIFESTS[kind]
    path = root / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadArchive(f"{source.name}: no {name} in the archive", path=str(source),
                         reason=f"missing {name}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadArchive(f"{source.name}: cannot read {name} ({clip(exc)})", path=str(source),
                         reason=f"unreadable {name}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadArchive(f"{source.name}: {name} is not valid JSON ({clip(exc)})", path=str(source),
                         reason=f"{name} is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise BadArchive(f"{source.name}: {name} is not a JSON object", path=str(source),
                         reason=f"{name} is not a JSON object")
    return manifest


def _file(section: Mapping[str, Any], key: str, source: Path) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadArchive(f"{source.name}: manifest field {key} is not a string",
                         path=str(source), reason=f"bad {key}")
    file_part = value.split(":", 1)[0]
    parts = PurePosixPath(file_part).parts
    if file_part.startswith(("/", "\\")) or ".." in parts or "\\" in file_part:
        raise BadArchive(
            f"{source.name}: manifest field {key} names an unsafe path {clip(value)!r}",
            path=str(source), reason=f"unsafe {key}")
    return value


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def war_archive(root: Path, manifest: dict[str, Any], source: Path) -> Archive:
    """Validate a workflow manifest as TorchServe does and build the :class:`Archive`.

    :raises InvalidWorkflow: TorchServe's messages ("Workflow name is not defined." ...).
    :raises BadArchive: the spec file the manifest names is absent, or a name is unsafe.
    """
    workflow = manifest.get("workflow")
    if not isinstance(workflow, dict):
        raise InvalidWorkflow("Missing Workflow entry in manifest file.", path=str(source))
    if not _text(workflow.get("workflowName")):
        raise InvalidWorkflow("Workflow name is not defined.", path=str(source))
    if not _text(manifest.get("archiverVersion")):
        raise InvalidWorkflow("Workflow archive version is not defined.", path=str(source))
    if not _text(manifest.get("createdOn")):
        raise InvalidWorkflow("Workflow archive createdOn is not defined.", path=str(source))
    spec_file = _file(workflow, "specFile", source)
    if spec_file is None or not (root / spec_file).is_file():
        raise BadArchive(f"{source.name}: spec file {spec_file!r} is not in the archive",
                         path=str(source), reason="missing spec file")
    return Archive(
        kind="war", source=source, root=root, manifest=manifest,
        name=str(workflow["workflowName"]), handler=_file(workflow, "handler", source),
        spec_file=spec_file, version=_text(manifest.get("version")),
    )


def mar_archive(root: Path, manifest: dict[str, Any], source: Path) -> Archive:
    """Validate a model manifest as TorchServe does and build the :class:`Archive`.

    :raises BadArchive: no ``model`` object, no model name, no runtime, an unsafe file name.
    """
    model = manifest.get("model")
    if not isinstance(model, dict):
        raise BadArchive(f"{source.name}: Missing Model entry in manifest file.",
                         path=str(source), reason="missing model entry")
    if not _text(model.get("modelName")):
        raise BadArchive(f"{source.name}: Model name is not defined.", path=str(source),
                         reason="missing modelName")
    if not _text(manifest.get("runtime")):
        raise BadArchive(f"{source.name}: Runtime is not defined or invalid.",
                         path=str(source), reason="missing runtime")
    return Archive(
        kind="mar", source=source, root=root, manifest=manifest,
        name=str(model["modelName"]),
        handler=_file(model, "handler", source),
        serialized_file=_file(model, "serializedFile", source),
        model_file=_file(model, "modelFile", source),
        requirements_file=_file(model, "requirementsFile", source),
        config_file=_file(model, "configFile", source),
        version=_text(model.get("modelVersion")) or "1.0",
    )


def to_archive(root: Path, kind: ArchiveKind, source: Path) -> Archive:
    """Read and validate the manifest of ``kind`` under ``root``."""
    manifest = read_manifest(root, kind, source)
    build = war_archive if kind == "war" else mar_archive
    return build(root, manifest, source)
