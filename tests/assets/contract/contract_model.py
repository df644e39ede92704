"""A model handler (function entry point) reporting its manifest and inputs
(tests/conformance/test_handler_contract.py)."""


def handle(data, context):
    if data is None:
        return None
    model = context.manifest["model"]
    return [{"model": [model["modelName"], model["modelVersion"], model["handler"]],
             "body_type": type(row["body"]).__name__,
             "headers": context.get_all_request_header(i)}
            for i, row in enumerate(data)]
