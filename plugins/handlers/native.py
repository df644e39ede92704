"""wfserve's own stand-in for TorchServe's ``base_handler`` when ``ts`` is not installed.

:func:`load_model` loads a ``.mar``'s model as ``BaseHandler.initialize`` does: with a
``modelFile`` it imports that file, takes its only ``torch.nn.Module`` class, builds it and
loads the state dict from ``serializedFile``; without one, ``serializedFile`` is TorchScript
(``torch.jit.load``). :class:`NativeBaseHandler` runs it over a batch: each row's ``data`` or
``body`` (a ``torch.save``d tensor, JSON text of numbers, a list, or an object with ``input``)
becomes one float32 tensor, the rows are stacked, and each output row is returned as a list.
(TorchServe's own ``BaseHandler.preprocess`` only accepts tensors; install ``wfserve[ts]`` for
its exact behaviour and for the other built-in handlers.)
"""

from __future__ import annotations

import io
import json
from typing import Any

from wfserve.kernel.contracts import Archive
from wfserve.plugins.handlers.importer import HandlerError
from wfserve.plugins.handlers.importer import import_file
from wfserve.plugins.handlers.importer import isolated


def device_for(gpu_id: int | None) -> Any:
    """``cuda:<gpu_id>`` when a GPU is assigned and available, else ``cpu``."""
    import torch

    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")


def load_model(archive: Archive, device: Any) -> Any:
    """The archive's model, in eval mode, on ``device`` (see the module docstring).

    :raises HandlerError: no serialized file, a model file without exactly one
        ``nn.Module`` class, or a file torch cannot load.
    """
    import torch

    if not archive.serialized_file or not archive.path(archive.serialized_file).is_file():
        raise HandlerError(f"{archive.source.name}: no serialized file to load a model from",
                           file=str(archive.source))
    weights = archive.path(archive.serialized_file)
    try:
        if archive.model_file:
            module = import_file(archive.path(archive.model_file), archive.root)
            classes = [c for c in vars(module).values()
                       if isinstance(c, type) and issubclass(c, torch.nn.Module)
                       and c.__module__ == module.__name__]
            if len(classes) != 1:
                raise HandlerError(
                    f"Expected only one class as model definition. {[c.__name__ for c in classes]}",
                    file=archive.model_file,
                )
            with isolated(archive.root):
                model = classes[0]()
            state = torch.load(weights, map_location=device, weights_only=True)
            model.load_state_dict(state)
        else:
            with isolated(archive.root):  # silences torch's jit.load deprecation
                model = torch.jit.load(str(weights), map_location=device)
    except HandlerError:
        raise
    except Exception as exc:
        raise HandlerError(f"{archive.source.name}: cannot load the model from "
                           f"{weights.name}: {exc}", file=weights.name, cause=repr(exc)) from exc
    return model.to(device).eval()


def _row_tensor(row: Any) -> Any:
    import torch

    body = row.get("data", row.get("body")) if isinstance(row, dict) else row
    if isinstance(body, bytes | bytearray):
        raw = bytes(body)
        if raw.startswith(b"PK"):  # torch.save's zip format
            body = torch.load(io.BytesIO(raw), weights_only=True)
        else:
            body = json.loads(raw.decode("utf-8"))
    elif isinstance(body, str):
        body = json.loads(body)
    if isinstance(body, dict):
        body = body.get("input", body.get("data"))
    return torch.as_tensor(body, dtype=torch.float32)


class NativeBaseHandler:
    """``base_handler`` without TorchServe: load the model, batch the rows, return lists."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.model: Any = None
        self.device: Any = None
        self.initialized = False

    def initialize(self, context: Any) -> None:
        """Load the archive's model on the context's GPU (or the CPU)."""
        self.device = device_for(context.system_properties.get("gpu_id"))
        self.model = load_model(self.archive, self.device)
        self.initialized = True

    def preprocess(self, data: list[Any]) -> Any:
        """One float32 tensor per row, stacked into a batch."""
        import torch

        return torch.stack([_row_tensor(row) for row in data]).to(self.device)

    def inference(self, data: Any) -> Any:
        """Run the model without autograd."""
        import torch

        with torch.inference_mode():
            return self.model(data)

    def postprocess(self, data: Any) -> list[Any]:
        """One list per row (TorchServe's ``data.tolist()``)."""
        return data.tolist()

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        """``postprocess(inference(preprocess(data)))``."""
        return self.postprocess(self.inference(self.preprocess(data)))
