"""A handler whose answer each request chooses, to test a workflow node called as a model.

The body is JSON ``{"cmd": ..., ...}`` (empty: ``echo``); with ``"log": <path>`` every call
appends one line to that file, so a test can count the calls across workers. Used as the
``.mar``'s handler (``handle``) and as the ``.war``'s function node ``pre``.
"""
import json
import threading

try:
    from ts.utils.util import PredictionException
except ImportError:  # TorchServe's class, for a server without TorchServe installed

    class PredictionException(Exception):
        def __init__(self, message, error_code=500):
            self.message = message
            self.error_code = error_code
            super().__init__(message)

        def __str__(self):
            return f"{self.message} : {self.error_code}"


_never = threading.Event()


def _command(row):
    body = row.get("body", row.get("data"))
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8")
    if isinstance(body, str):
        body = json.loads(body) if body.strip() else {}
    return body if isinstance(body, dict) else {}


def _stream(context):
    """What a streaming handler does: send an intermediate answer on the worker's socket."""
    try:
        from ts.protocol.otf_message_handler import send_intermediate_predict_response
    except ImportError:  # without TorchServe: the call it makes, context.cl_socket.sendall
        context.cl_socket.sendall(b"part")
        return
    send_intermediate_predict_response(["part"], context.request_ids,
                                       "Intermediate Prediction success", 200, context)


def _respond(command, context):
    if "status" in command:
        context.set_response_status(command["status"], command.get("phrase", ""))
    if "content_type" in command:
        context.set_response_content_type(0, command["content_type"])
    for name, value in command.get("headers", {}).items():
        context.set_response_header(0, name, value)
    return [command.get("answer", "done")]


FAILURES = {
    "raise": lambda c: ValueError("boom"),
    "memory": lambda c: MemoryError(),
    "cuda": lambda c: RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "prediction_exception": lambda c: PredictionException(c["message"], c["code"]),
}
OUTPUTS = {
    "not_a_list": lambda data: {"not": "a list"},
    "too_few": lambda data: [],
    "unencodable": lambda data: [object() for _ in data],
}


def handle(data, context):
    if data is None:  # the loader's initialize call
        return None
    if context.get_request_header(0, "describe") == "True":
        return [json.dumps({"described": True, "rows": data})]
    command = _command(data[0])
    if command.get("log"):
        with open(command["log"], "a") as log:
            log.write("call\n")
    what = command.get("cmd", "echo")
    if what in FAILURES:
        raise FAILURES[what](command)
    if what in OUTPUTS:
        return OUTPUTS[what](data)
    if what == "respond":
        return _respond(command, context)
    if what == "stream":
        _stream(context)
    if what == "wait":  # longer than timeout-ms, shorter than the response timeout
        _never.wait(command["seconds"])
    if what == "hang":  # past the response timeout
        _never.wait(60)
    return [{
        "inputs": sorted(data[0]),
        "url_path": context.get_request_header(0, "url_path"),
        "explain": context.get_request_header(0, "explain"),
    }]


pre = handle
