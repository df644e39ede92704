"""The inference API's one door to running a request's nodes on its own HTTP thread.

PERF: no thread handoff per request (measured in ``bench/floors.py``: ``executor_here`` against
``executor_handoff``). The API lends its thread only where it can keep the promise that every
request is answered by its deadline even when a node hangs on that thread: a plain HTTP/1.x
request served by the wfserve worker class, whose WSGI environ holds a socket writer
(:data:`~wfserve.plugins.api.rescue.RESCUE_KEY`). The thread is offered to the executor through the
threaded engine's seam (:mod:`wfserve.plugins.executors.threaded.inline`); the request's future is
watched by a :class:`~wfserve.plugins.api.rescue.Rescue` before any node runs here, which answers
on the
socket from another thread should the request settle while a node still holds this one.
Anything else (another server, TLS, HTTP/2, another engine) is a plain ``submit``.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping
from typing import Any

from wfserve.kernel.contracts import Executor
from wfserve.kernel.contracts import PredictRequest
from wfserve.plugins.api.rescue import RESCUE_KEY
from wfserve.plugins.api.rescue import Rescue
from wfserve.plugins.executors.threaded.inline import offered


def submit(executor: Executor, request: PredictRequest, environ: Mapping[str, Any],
           max_size: int) -> tuple[concurrent.futures.Future[Any], int | None]:
    """Submit ``request``, running on this thread what the executor leaves to it.

    :param environ: the request's WSGI environ (it tells whether this thread may be lent).
    :param max_size: ``max_response_size``, for an answer written from another thread.
    :returns: the request's future, and the status of the answer already written to the
        client from another thread (None when this thread is to answer).
    :raises WfserveError: what ``submit`` raises (``Unavailable``...).
    """
    write = environ.get(RESCUE_KEY)
    if write is None:
        return executor.submit(request), None
    with offered() as offer:
        future = executor.submit(request)
        if offer.free:  # nothing was left to this thread: the request runs elsewhere
            return future, None
        rescue = Rescue(write, executor.render, request.request_id, max_size)
        rescue.watch(future)
        offer.run()
    if rescue.returned():
        return future, None
    return future, rescue.code or 500
