"""Function nodes of wfserve's bundled example workflow: ``pre -> classifier -> post``.

``pre`` accepts ``{"input": [4 numbers]}`` or a bare list and hands the classifier a JSON list;
``post`` turns the classifier's three scores into a label and probabilities.
"""
import json
import math

LABELS = ["setosa", "versicolor", "virginica"]


def _load(value):
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        value = json.loads(value)
    return value


def pre(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        body = _load(row.get("data") if row.get("data") is not None else row.get("body"))
        if isinstance(body, dict):
            body = body.get("input")
        values = [float(v) for v in body]
        if len(values) != 4:
            raise ValueError(f"expected 4 numbers, got {len(values)}")
        out.append(values)
    return out


def post(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        scores = _load(row.get("body"))
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        total = sum(exps)
        probs = {label: round(e / total, 4) for label, e in zip(LABELS, exps, strict=True)}
        out.append({"label": max(probs, key=probs.get), "probabilities": probs})
    return out
