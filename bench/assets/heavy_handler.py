"""Model handler for the batching workload: one TorchScript call per batch.

Each row is a JSON list of 4 numbers (or {"input": [...]}); the rows are stacked into one
[batch, 4] tensor, so a batch of 8 costs one model call instead of eight.
"""
import json
import os

import torch

_model = None


def _row(row):
    body = row.get("data") if row.get("data") is not None else row.get("body")
    if isinstance(body, (bytes, bytearray)):
        body = json.loads(body)
    if isinstance(body, str):
        body = json.loads(body)
    if isinstance(body, dict):
        body = body.get("input")
    return [float(v) for v in body]


def handle(data, context):
    global _model
    if _model is None:
        torch.set_num_threads(1)
        path = os.path.join(context.system_properties["model_dir"],
                            context.manifest["model"]["serializedFile"])
        _model = torch.jit.load(path, map_location="cpu").eval()
    if data is None:
        return None
    with torch.inference_mode():
        out = _model(torch.tensor([_row(r) for r in data], dtype=torch.float32))
    return [{"output": [round(v, 5) for v in y.tolist()]} for y in out]
