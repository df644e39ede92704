"""A TorchServe-style handler class (no `ts` import): initialize(context) / handle(data, context).

Loads the TorchScript model named in the manifest; answers {"output": [...], "request_id",
"trace"} so tests can see the context's per-batch request ids and headers.
"""
import json
import os

import torch


class DoublingHandler:
    def __init__(self):
        self.model = None
        self.initialized = False

    def initialize(self, context):
        props = context.system_properties
        path = os.path.join(props["model_dir"], context.manifest["model"]["serializedFile"])  # noqa: PTH118
        self.model = torch.jit.load(path, map_location="cpu").eval()
        self.batch_size = props["batch_size"]
        self.initialized = True

    def handle(self, data, context):
        xs = torch.tensor([json.loads(r["body"]) for r in data], dtype=torch.float32)
        with torch.inference_mode():
            ys = self.model(xs) * 2
        return [
            {"output": [round(v, 6) for v in y.tolist()],
             "request_id": context.get_request_id(i),
             "trace": context.get_request_header(i, "x-trace")}
            for i, y in enumerate(ys)
        ]
