"""Function nodes of the workflows in ``tests/integration/test_ts_handlers.py``.

The initialize call passes data=None. A node with one predecessor gets its payload under
"body"; with several, under each predecessor's name (bytes of JSON text).
"""
import json


def _load(v):
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8")
    if isinstance(v, str):
        v = json.loads(v)
    return v


def pre(data, context):
    """The request body as it came: JSON for the tiny models, image bytes for the vision ones."""
    if data is None:
        return None
    return [row.get("data") if row.get("data") is not None else row.get("body") for row in data]


def both(data, context):
    """The two tiny models' answers side by side."""
    if data is None:
        return None
    return [{"eager": _load(row["eager"])["output"], "scripted": _load(row["scripted"])["output"]}
            for row in data]


def classes(data, context):
    """The two image classifiers' top-5 dicts side by side."""
    if data is None:
        return None
    return [{"scripted": _load(row["resnet_scripted"]), "eager": _load(row["resnet_eager"])}
            for row in data]
