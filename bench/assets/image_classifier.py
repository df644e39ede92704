"""TorchServe custom handler (function entry point ``handle``) for the image pipeline's classifier.

The serialized file is a TorchScript ResNet-18 (random weights, ``bench/workloads.py``). Each
input row is one image as raw float32 bytes (3x224x224, normalised), what the workflow's
``decode_resize`` function node sends; the rows of a batch go through the model in one call.
Each output row is the 1000 logits as raw float32 bytes, for the ``top5`` function node.

``torch.set_num_threads(1)``: one intra-op thread per process that loads this handler, so N
server processes (or TorchServe's worker process) do not oversubscribe the machine's cores.
"""
import os

import numpy as np
import torch

_model = None
SHAPE = (3, 224, 224)


def _load(context):
    global _model
    torch.set_num_threads(1)
    model_dir = context.system_properties.get("model_dir")
    serialized = context.manifest["model"]["serializedFile"]
    _model = torch.jit.load(os.path.join(model_dir, serialized), map_location="cpu")
    _model.eval()


def _tensor(row):
    body = row.get("body")
    if body is None:
        body = row.get("data")
    # NOTE: a bytearray copy: torch wants a writable buffer
    return torch.from_numpy(np.frombuffer(bytearray(body), dtype=np.float32).reshape(SHAPE))


def handle(data, context):
    if _model is None:
        _load(context)
    if data is None:  # initialize call from the model loader
        return None
    xs = torch.stack([_tensor(r) for r in data])
    with torch.inference_mode():
        ys = _model(xs)
    return [y.numpy().astype(np.float32).tobytes() for y in ys]
