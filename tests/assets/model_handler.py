"""Minimal TorchServe custom handler (function entry point `handle`), as the peer's.

Input per request row: JSON body that is either a list of floats, or an object with
key "input" (or "output", so the output of one model can feed the next one).
Output per row: {"output": [floats rounded to 6 places]}. The model is a module global,
so two models using this file must not share the module.
"""
import json
import os

import torch

_model = None


def _load(context):
    global _model
    model_dir = context.system_properties.get("model_dir")
    serialized = context.manifest["model"]["serializedFile"]
    _model = torch.jit.load(os.path.join(model_dir, serialized), map_location="cpu")  # noqa: PTH118
    _model.eval()


def _parse(row):
    body = row.get("data")
    if body is None:
        body = row.get("body")
    if isinstance(body, (bytes, bytearray)):
        body = json.loads(body.decode("utf-8"))
    elif isinstance(body, str):
        body = json.loads(body)
    if isinstance(body, dict):
        body = body.get("input", body.get("output"))
    return [float(v) for v in body]


def handle(data, context):
    if _model is None:
        _load(context)
    if data is None:  # initialize call from the model loader
        return None
    xs = torch.tensor([_parse(r) for r in data], dtype=torch.float32)
    with torch.inference_mode():
        ys = _model(xs)
    return [{"output": [round(v, 6) for v in y.tolist()]} for y in ys]
