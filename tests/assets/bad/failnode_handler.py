"""Function nodes of failnode_wf: ``pre`` passes its input on, ``boom`` always raises."""
import json


def pre(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        body = row.get("data")
        if body is None:
            body = row.get("body")
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body.decode("utf-8"))
        elif isinstance(body, str):
            body = json.loads(body)
        if isinstance(body, dict):
            body = body.get("input")
        out.append({"input": [float(v) for v in body]})
    return out


def boom(data, context):
    if data is None:
        return None
    raise RuntimeError("boom: this node always fails")
