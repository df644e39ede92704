"""Trivial function nodes f0..f7 for the hop-cost chains: each passes its input on unchanged."""


def _passthrough(data, context):
    if data is None:
        return None
    return [row.get("body") if row.get("body") is not None else row.get("data") for row in data]


f0 = f1 = f2 = f3 = f4 = f5 = f6 = f7 = _passthrough
