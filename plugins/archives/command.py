"""``wfserve archive war|mar``: build archives from the command line (see :mod:`.build`).

Flags follow the official archivers (``--workflow-name``/``--model-name`` are accepted as
aliases of ``--name``; ``--extra-files`` is comma-separated; ``-f/--force`` overwrites).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wfserve.kernel import hookimpl
from wfserve.kernel.settings import Settings
from wfserve.plugins.archives.build import build_mar
from wfserve.plugins.archives.build import build_war


def _files(value: str | None) -> list[Path]:
    return [Path(v.strip()) for v in (value or "").split(",") if v.strip()]


def cmd_war(args: argparse.Namespace, settings: Settings) -> int:
    """Build a ``.war``; print its path."""
    path = build_war(args.name, args.spec_file, args.handler,
                     extra_files=_files(args.extra_files), export_path=args.export_path,
                     force=args.force)
    sys.stdout.write(f"{path}\n")
    return 0


def cmd_mar(args: argparse.Namespace, settings: Settings) -> int:
    """Build a ``.mar``; print its path."""
    path = build_mar(args.name, args.version, args.handler,
                     serialized_file=args.serialized_file, model_file=args.model_file,
                     extra_files=_files(args.extra_files),
                     requirements_file=args.requirements_file, config_file=args.config_file,
                     runtime=args.runtime, export_path=args.export_path, force=args.force)
    sys.stdout.write(f"{path}\n")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--extra-files", help="comma-separated extra files")
    parser.add_argument("--export-path", type=Path, default=Path(),
                        help="existing folder to write to (default: current folder)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an archive")


@hookimpl
def wfserve_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``wfserve archive war`` and ``wfserve archive mar``."""
    archive = subparsers.add_parser(
        "archive", help="Build a .war or .mar (the official archivers remain the reference).")
    kinds = archive.add_subparsers(dest="archive_kind", metavar="KIND", required=True)

    war = kinds.add_parser("war", help="workflow archive: spec + handler (+ extra files)")
    war.add_argument("--name", "--workflow-name", required=True, help="workflow name")
    war.add_argument("--spec", "--spec-file", dest="spec_file", type=Path, required=True,
                     help="workflow spec YAML")
    war.add_argument("--handler", type=Path, required=True, help="function-node handler .py")
    _common(war)
    war.set_defaults(func=cmd_war)

    mar = kinds.add_parser("mar", help="model archive: handler + model files")
    mar.add_argument("--name", "--model-name", required=True, help="model name")
    mar.add_argument("-v", "--version", required=True, help="model version")
    mar.add_argument("--handler", required=True,
                     help="built-in handler name or path/to/file.py[:function]")
    mar.add_argument("--serialized-file", type=Path, help="weights or TorchScript file")
    mar.add_argument("--model-file", type=Path, help="eager model definition .py")
    mar.add_argument("-r", "--requirements-file", type=Path)
    mar.add_argument("-c", "--config-file", type=Path, help="model-config.yaml")
    mar.add_argument("--runtime", default="python", choices=("python", "python3", "LSP"))
    _common(mar)
    mar.set_defaults(func=cmd_mar)
