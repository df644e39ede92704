"""Function nodes that report what a handler receives (tests/conformance/test_handler_contract.py).

``probe`` (the root) answers, per row, a JSON report of its inputs (type and value of each),
the context's request headers and request id (and, with an ``X-Surface`` header, its metrics
cache answers and the rest of the ``ts.context.Context`` surface), as ``bytes``. ``relay``
passes its input on unchanged. In ``chain_wf`` the probe's children answer different types
(``kid`` a dict, ``left`` a str, ``right`` a bytearray) and ``join`` reports what reached it
from each.
"""
import json


def _value(v):
    if isinstance(v, (bytes, bytearray)):
        return {"type": type(v).__name__, "text": bytes(v).decode("latin-1")}
    if v is None or isinstance(v, (str, int, float, bool, list, dict)):
        return {"type": type(v).__name__, "value": v}
    return {"type": type(v).__name__, "value": repr(v)}


def _parse(v):
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).decode("utf-8")
    return json.loads(v) if isinstance(v, str) else v


def _metrics(context):
    m = context.metrics
    res = {
        "add_time": repr(m.add_time("ContractTime", 1.5)),
        "add_counter": repr(m.add_counter("ContractCount", 2)),
        "add_size": repr(m.add_size("ContractSize", 3, unit="kB")),
        "add_percent": repr(m.add_percent("ContractPercent", 50)),
        "add_metric": repr(m.add_metric("ContractMetric", 7, "count")),
    }
    counter = m.get_metric("ContractCount")
    kinds = type(counter.metric_type)
    res["counter"] = [counter.metric_name, counter.unit, counter.metric_type.value]
    gauge = m.get_metric("ContractTime", kinds("gauge"))
    res["gauge"] = [gauge.metric_name, gauge.unit, gauge.metric_type.value]
    handler_time = m.get_metric("HandlerTime", kinds("gauge"))
    res["handler_time"] = [handler_time.unit, handler_time.dimension_names]
    try:
        m.get_metric("NoSuchMetric")
        res["missing"] = "found"
    except KeyError as exc:
        res["missing"] = type(exc).__name__
    try:
        m.add_time("BadUnit", 1, unit="h")
        res["bad_unit"] = "accepted"
    except ValueError as exc:
        res["bad_unit"] = type(exc).__name__
    return res


def _report(data, context, surface=False):
    out = []
    for i, row in enumerate(data):
        report = {
            "inputs": {k: _value(v) for k, v in row.items()},
            "headers": context.get_all_request_header(i),
            "request_id": context.get_request_id(i),
            "x_custom": context.get_request_header(i, "x-custom"),
        }
        if surface:
            props = context.system_properties
            processor = context.request_processor[i]
            context.set_response_status(201, "Made", i)
            context.set_response_content_type(i, "text/x-probe")
            context.set_response_header(i, "X-Probe", "yes")
            report["surface"] = {
                "system_properties": sorted(props),
                "batch_size": props["batch_size"],
                "server_name": props["server_name"],
                "manifest": context.manifest,
                "processor_headers": processor.get_request_properties()
                == context.get_all_request_header(i),
                "status": list(context.get_response_status(i)),
                "response_headers": context.get_response_headers(i),
                "metrics": _metrics(context),
            }
        out.append(report)
    return out


def probe(data, context):
    if data is None:
        return None
    surface = context.get_request_header(0, "x-surface") is not None
    return [json.dumps(r).encode("utf-8") for r in _report(data, context, surface)]


def relay(data, context):
    if data is None:
        return None
    return [row["body"] for row in data]


def kid(data, context):
    if data is None:
        return None
    return [{"kid": r, "parent": _parse(row["body"])}
            for r, row in zip(_report(data, context), data, strict=True)]


def left(data, context):
    if data is None:
        return None
    return [json.dumps({"left": True}) for _ in data]


def right(data, context):
    if data is None:
        return None
    return [bytearray(b'{"right": true}') for _ in data]


def join(data, context):
    if data is None:
        return None
    return [{"join": r, "kid": _parse(row["kid"])}
            for r, row in zip(_report(data, context), data, strict=True)]
