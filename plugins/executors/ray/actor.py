"""The Ray actor behind one worker of one node, and how an archive travels to it.

An archive folder is zipped in memory once per workflow (:func:`pack_archive`), put in Ray's
object store by the driver, and unzipped by each actor into its own temporary folder
(:func:`unpack_archive`): no shared disk is assumed. The actor then loads the node's handler
once through ``wfserve_load_handler``, with a plugin manager of its own built from the
server's settings (the built-ins and the installed plugins of the actor's environment), so
third-party loaders apply there as in the threaded engine.

:class:`NodeActor` is a plain class; :func:`remote_class` wraps it with ``ray.remote`` on
first use, so importing this module does not import Ray.

``run`` returns ``1 + len(batch)`` values (the caller asks for ``num_returns``): a small status
record first, then one output per row. The status is all the driver fetches; the outputs stay
in Ray's object store and are handed to child nodes by reference. Rows may hold such
references (a parent's output): the actor resolves them itself, from the object store.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from wfserve.kernel.contracts import Archive
from wfserve.kernel.contracts import LoadContext
from wfserve.kernel.contracts import NodeHandler
from wfserve.kernel.contracts import RowMeta
from wfserve.kernel.spec import NodeSpec


def pack_archive(root: Path) -> bytes:
    """The files under ``root`` as an in-memory zip (stored, not compressed: models are dense)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


def unpack_archive(data: bytes, archive: Archive, prefix: str) -> Archive:
    """Unzip ``data`` into a new temporary folder; ``archive`` with ``root`` pointing there."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    with zipfile.ZipFile(io.BytesIO(data)) as packed:
        for info in packed.infolist():
            target = (root / info.filename).resolve()
            if not target.is_relative_to(root.resolve()):
                raise ValueError(f"archive entry {info.filename!r} leaves its folder")
        packed.extractall(root)
    return dataclasses.replace(archive, root=root)


class NodeActor:
    """One worker of one node, in a Ray actor process: a handler loaded once, run per batch.

    :param node: the node's spec.
    :param archive: the archive its handler comes from (its ``root`` is the driver's folder).
    :param packed: the archive folder as :func:`pack_archive` made it (Ray resolves the
        object-store reference before the constructor runs).
    :param context: the driver's load context; ``model_dir`` and ``gpu_id`` are replaced by
        this actor's own. ``context.typed``: outputs pass on as objects; otherwise each is
        turned into the bytes TorchServe would pass on.
    """

    def __init__(self, node: NodeSpec, archive: Archive, packed: bytes,
                 context: LoadContext) -> None:
        local = unpack_archive(packed, archive, f"wfserve-ray-{node.name}-")
        self.folder = local.root
        context = dataclasses.replace(context, model_dir=local.root, gpu_id=_gpu_id())
        self.name = node.name
        self.typed = context.typed
        self.handler = load_handler(node, local, context)

    def ready(self) -> dict[str, Any]:
        """Where this actor runs: ``{"node_id", "pid"}`` (its handler is loaded by now)."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def run(self, rows: list[dict[str, Any]], meta: list[RowMeta]) -> tuple[Any, ...]:
        """Run one batch: ``(status, output_0, ..., output_n-1)``.

        ``status`` is ``{"error": None | str, "failure": None | (status, message), "run":
        seconds, "responses": [ResponseMeta, ...], "called": None | seconds, "raised": None |
        str}``; a handler that raises, or returns other than one output per row, gives an
        error status (``failure`` is TorchServe's answer for it,
        :func:`wfserve.plugins.executors.failures.classify`) and ``None`` outputs.
        ``responses`` are what the handler set for each row's answer (this process's copies
        of ``meta[i].response``, sent back for the driver to copy). ``called`` is how long the
        handler call itself took (None: it was not called, the rows' inputs could not be
        fetched) and ``raised`` the class name of what it raised: the driver reports them
        through ``wfserve_handler_ran``, as a handler wrapped in its own process is observed.
        """
        from wfserve.plugins.executors.core.outputs import finish_outputs
        from wfserve.plugins.executors.failures import classify

        started = time.perf_counter()
        error: str | None = None
        failure: tuple[int, str] | None = None
        raised: str | None = None  # the handler's own exception, by class
        called: float | None = None  # seconds the handler call took
        try:
            rows = _resolve(rows)
            began = time.perf_counter()
            try:
                returned = self.handler(rows, meta)
            except Exception as exc:
                raised = type(exc).__name__
                raise
            finally:
                called = time.perf_counter() - began
            outputs = finish_outputs(returned, len(rows), self.typed)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            failure = classify(exc)
            outputs = [None] * len(rows)
        status = {"error": error, "failure": failure, "run": time.perf_counter() - started,
                  "responses": [m.response for m in meta], "called": called, "raised": raised}
        return (status, *outputs)

    def __del__(self) -> None:
        folder = getattr(self, "folder", "")
        if folder and shutil is not None:  # NOTE: at interpreter exit module globals are None
            shutil.rmtree(folder, ignore_errors=True)


def load_handler(node: NodeSpec, archive: Archive, context: LoadContext) -> NodeHandler:
    """``node``'s handler through ``wfserve_load_handler``, with a plugin manager of this
    process made from ``context.settings`` (entry points load unless
    ``WFSERVE_DISABLE_PLUGIN_AUTOLOAD`` is set in this process's environment)."""
    from wfserve.kernel.plugins import Hooks
    from wfserve.kernel.plugins import make_plugin_manager

    pm = make_plugin_manager(context.settings, env=os.environ)
    return Hooks(pm, context.settings).load_handler(node=node, archive=archive, context=context)


def _resolve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every object-store reference among their values replaced by its value."""
    import ray

    wanted = [(i, key) for i, row in enumerate(rows) for key, value in row.items()
              if isinstance(value, ray.ObjectRef)]
    if not wanted:
        return rows
    values = ray.get([rows[i][key] for i, key in wanted])
    rows = [dict(row) for row in rows]
    for (i, key), value in zip(wanted, values, strict=True):
        rows[i][key] = value
    return rows


def _gpu_id() -> int | None:
    import ray

    ids = ray.get_gpu_ids()
    return 0 if ids else None  # Ray sets CUDA_VISIBLE_DEVICES: the actor's GPU is device 0


@functools.cache
def remote_class() -> Any:
    """``ray.remote(NodeActor)``, made once per process (imports Ray): a memo of a derived
    class, not server state."""
    import ray

    return ray.remote(NodeActor)


def actor_options(node: NodeSpec) -> dict[str, Any]:
    """Ray actor options for ``node``: its spec's ``ray:`` placement (num_cpus, num_gpus,
    memory, resources), with restarts off (the executor replaces dead actors itself).

    :raises ValueError: an unknown key or a value of the wrong type under ``ray:``.
    """
    return {"max_restarts": 0, "max_task_retries": 0,
            **placement_options(node.extensions.get("ray", {}))}


def placement_options(placement: Any) -> dict[str, Any]:
    """The Ray actor options a model's ``ray:`` section gives (its spec-section check).

    :raises ValueError: not a mapping, an unknown key, or a value of the wrong type.
    """
    if not isinstance(placement, dict):
        raise ValueError(f"must be a mapping, got {placement!r}")
    options: dict[str, Any] = {}
    for key, value in placement.items():
        if key in ("num_cpus", "num_gpus", "memory"):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"ray.{key} must be a number >= 0, got {value!r}")
            options[key] = value
        elif key == "resources":
            if not isinstance(value, dict) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
            ):
                raise ValueError(f"ray.resources must map names to numbers, got {value!r}")
            options["resources"] = {str(k): float(v) for k, v in value.items()}
        else:
            raise ValueError(
                f"unknown key ray.{key} (known: num_cpus, num_gpus, memory, resources)"
            )
    return options
