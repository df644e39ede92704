"""A custom handler in TorchServe's documented style: a ``BaseHandler`` subclass.

``BaseHandler.initialize`` loads the model (``--model-file`` + state dict, or TorchScript),
``BaseHandler.handle`` calls ``preprocess``/``inference``/``postprocess`` and, on the
``describe``/``explain`` request headers, ``describe_handle``/``explain_handle``. This file
only supplies what TorchServe leaves to the user.

Input per row: a JSON list of 4 floats, or an object with key ``input``. Output per row:
``{"output": [3 floats rounded to 6 places]}``.
"""
import json

import torch
from captum.attr import IntegratedGradients
from ts.torch_handler.base_handler import BaseHandler

IG_STEPS = 16


class TinyHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for row in data:
            body = row.get("data")
            if body is None:
                body = row.get("body")
            if isinstance(body, (bytes, bytearray)):
                body = body.decode("utf-8")
            if isinstance(body, str):
                body = json.loads(body)
            if isinstance(body, dict):
                body = body["input"]
            rows.append([float(v) for v in body])
        return torch.tensor(rows, dtype=torch.float32, device=self.device)

    def postprocess(self, data):
        return [{"output": [round(v, 6) for v in row]} for row in data.tolist()]

    def describe_handle(self):
        model = self.manifest["model"]
        return {
            "handler": type(self).__name__,
            "modelName": model["modelName"],
            "mode": "eager" if model.get("modelFile") else "torchscript",
            "profile": bool(self.model_yaml_config.get("handler", {}).get("profile")),
        }

    def get_insights(self, tensor_data, _raw, target=0):
        """Integrated gradients of output ``target`` (a query or form field arrives as bytes)."""
        ig = IntegratedGradients(self.model)
        return ig.attribute(tensor_data, target=int(target), n_steps=IG_STEPS).tolist()
