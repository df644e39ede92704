"""How a node called as a model (``/predictions/<wf>__<node>``) fails: TorchServe's answer.

TorchServe runs such a call once on one worker and answers what its backend reports
(``ts/service.py`` ``Service.predict``, ``ts/protocol/otf_message_handler.py``
``create_predict_response``, the frontend's ``WorkerThread``): a ``PredictionException``
answers its own ``error_code`` and ``message``; an out-of-memory error 507 "Out of resources";
any other exception 503 "Prediction failed"; an output that is not a list, or not one per
row, 503 with its own message; an output it cannot encode 503 "Unsupported model output data
type."; a worker that overruns the response timeout 500 "Worker died." (and is restarted).

:func:`classify` gives ``(status, message)`` as plain data, so a Ray actor can classify in its
own process and send the result back; :func:`prediction_failed` makes the kernel error.
"""

from __future__ import annotations

from wfserve.kernel.errors import PredictionFailed

PREDICTION_FAILED = "Prediction failed"
INVALID_OUTPUT = "Invalid model predict output"
BATCH_MISMATCH = "number of batch response mismatched"
UNSUPPORTED_OUTPUT = "Unsupported model output data type."
OUT_OF_RESOURCES = "Out of resources"
WORKER_DIED = "Worker died."
#: the status wfserve answers for a handler that streams (TorchServe's
#: ``send_intermediate_predict_response``): streaming is refused, see :func:`classify`
STREAMING_STATUS = 501


class UnsupportedOutput(Exception):
    """An output of the handler could not be turned into bytes (compatibility mode)."""


def _prediction_exception(exc: BaseException) -> tuple[int, str] | None:
    """``ts.utils.util.PredictionException`` (or one of the same shape, so handlers need not
    install TorchServe): its ``error_code`` when it is an error status, else 500."""
    if not any(c.__name__ == "PredictionException" for c in type(exc).__mro__):
        return None
    code = getattr(exc, "error_code", 500)
    message = getattr(exc, "message", str(exc))
    valid = isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599
    return (code if valid else 500), str(message)


def classify(exc: BaseException) -> tuple[int, str]:
    """TorchServe's ``(status, message)`` for a handler call that raised ``exc``.

    ``exc`` may be what the handler raised, or what checking or encoding its output raised
    (:class:`UnsupportedOutput`, or an error whose message starts with TorchServe's own
    "Invalid model predict output" / "number of batch response mismatched").
    """
    found = _prediction_exception(exc)
    if found is not None:
        return found
    if isinstance(exc, MemoryError) or "CUDA" in str(exc):
        return 507, OUT_OF_RESOURCES
    if isinstance(exc, AttributeError) and exc.name == "cl_socket":
        return STREAMING_STATUS, (
            "Streaming responses (send_intermediate_predict_response) are not supported: "
            "return the whole answer from the handler instead")
    if isinstance(exc, UnsupportedOutput):
        return 503, UNSUPPORTED_OUTPUT
    text = str(exc)
    for message in (INVALID_OUTPUT, BATCH_MISMATCH):
        if text.startswith(message):
            return 503, message
    return 503, PREDICTION_FAILED


def prediction_failed(status: int, message: str, *, workflow: str, node: str,
                      cause: str = "") -> PredictionFailed:
    """The kernel error for a failed model call (the API answers ``status`` and ``message``)."""
    return PredictionFailed(message, http_status=status, workflow=workflow, node=node, cause=cause)


def worker_died(workflow: str, node: str, timeout: float) -> PredictionFailed:
    """A model call's worker overran the response timeout: TorchServe's 500 "Worker died."."""
    return prediction_failed(500, WORKER_DIED, workflow=workflow, node=node,
                             cause=f"no answer within the response timeout ({timeout:g} s)")
