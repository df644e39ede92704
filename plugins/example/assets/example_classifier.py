"""The handler of the bundled example's classifier node, in TorchServe's custom-handler style.

Each row's body is a JSON list of 4 numbers (what ``pre`` hands on); the answer per row is
the model's 3 scores as a list. It needs nothing of TorchServe, so the example behaves the same
whether the ``ts`` package is installed or not (its ``base_handler`` expects tensors as input).
"""
import json
import os


class ExampleClassifier:
    def initialize(self, context):
        import torch  # here, not at import: importing wfserve's modules loads no torch

        self.torch = torch
        properties = context.system_properties
        serialized = context.manifest["model"]["serializedFile"]
        path = os.path.join(properties["model_dir"], serialized)  # noqa: PTH118
        self.model = torch.jit.load(path, map_location="cpu").eval()

    def handle(self, data, context):
        rows = []
        for row in data:
            body = row.get("body")
            if isinstance(body, (bytes, bytearray)):
                body = body.decode("utf-8")
            if isinstance(body, str):
                body = json.loads(body)
            rows.append([float(v) for v in body])
        torch = self.torch
        with torch.inference_mode():
            scores = self.model(torch.tensor(rows, dtype=torch.float32))
        return scores.tolist()
