"""Function nodes of the TEST-ONLY chaos workflow (pre -> chaos -> m1 -> m2 -> post).

``chaos`` passes each row on unchanged, unless the row's first value asks for a fault:

- 101.0: raise (a handler error);
- 102.0: sleep ``HANG_S`` seconds, past the node's ``timeout-ms``, then answer;
- 103.0: return one output too many (the wrong number of outputs);
- 104.0: ``os.abort()``: SIGABRT kills the whole server worker process.

Every other input is served, so an answer can be checked against ``expected_seq(input)``.
Never ship this file: it exists to prove what the server survives.
"""
import json
import os
import time

RAISE, HANG, WRONG_COUNT, ABORT = 101.0, 102.0, 103.0, 104.0
HANG_S = 3.0


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


def chaos(data, context):
    if data is None:
        return None
    rows = [_load(row.get("body"))["input"] for row in data]
    out = [{"input": x} for x in rows]
    for x in rows:
        if x[0] == RAISE:
            raise RuntimeError("chaos: asked to raise")
        if x[0] == HANG:
            time.sleep(HANG_S)
        if x[0] == WRONG_COUNT:
            out.append({"input": x})
        if x[0] == ABORT:
            os.abort()
    return out


def post(data, context):
    if data is None:
        return None
    out = []
    for row in data:
        vals = _load(row.get("body"))["output"]
        out.append({"result": vals, "sum": round(sum(vals), 6)})
    return out
