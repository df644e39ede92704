"""Function nodes of the image pipeline: ``decode_resize`` (JPEG -> 224x224 RGB, scaled to [0, 1]
and normalised with ImageNet's mean and std, as torchvision's ResNet expects) and ``top5``
(softmax over the classifier's logits, the five best classes). Payloads between nodes are raw
float32 bytes; PIL and numpy only, so these nodes use no torch threads."""
import io

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _body(row):
    body = row.get("data")
    if body is None:
        body = row.get("body")
    return bytes(body)


def decode_resize(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        image = Image.open(io.BytesIO(_body(row))).convert("RGB").resize(
            (224, 224), Image.BILINEAR)
        pixels = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
        out.append(np.ascontiguousarray(pixels.transpose(2, 0, 1)).tobytes())
    return out


def top5(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        logits = np.frombuffer(_body(row), dtype=np.float32).astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        best = np.argsort(-p)[:5]
        out.append({"top5": [{"class": int(i), "p": round(float(p[i]), 6)} for i in best]})
    return out
