"""Function nodes for the test workflows (sequential and parallel DAGs), as the peer's.

The initialize call passes data=None. Inter-node payloads arrive as bytes (JSON text) under
key "body" (in-degree 1) or under the predecessor's node name (in-degree > 1).
"""
import json


def _load(v):
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8")
    if isinstance(v, str):
        v = json.loads(v)
    return v


def pre(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        body = row.get("data")
        if body is None:
            body = row.get("body")
        body = _load(body)
        if isinstance(body, dict):
            body = body.get("input")
        out.append({"input": [float(v) for v in body]})
    return out


def post(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        body = _load(row.get("body"))
        vals = body["output"]
        out.append({"result": vals, "sum": round(sum(vals), 6)})
    return out


def aggregate(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        a = _load(row.get("m1"))["output"]
        b = _load(row.get("m2"))["output"]
        out.append({"m1": a, "m2": b, "sum": [round(x + y, 6) for x, y in zip(a, b, strict=True)]})
    return out
