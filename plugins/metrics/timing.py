"""Per-request timings for the ``Server-Timing`` response header.

:class:`ServerTiming` (inference middleware) opens an :class:`Observation` per request in a
context variable; the instrumented executor fills it in ``render``, which the responder calls
on the request thread, so the header never races the executor's threads.
The header lists every node that ran, its queue wait, and the total, in milliseconds::

    Server-Timing: pre;dur=0.41, pre-queue;dur=0.02, m1;dur=1.30, ..., total;dur=2.10
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import falcon

from wfserve.kernel.contracts import NodeTiming

_TOKEN = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`|~-]")


@dataclass
class Observation:
    """What the executor saw of one request: node timings and the end-to-end seconds."""

    timings: list[NodeTiming] = field(default_factory=list)
    total: float | None = None
    started: float | None = None


_current: contextvars.ContextVar[Observation | None] = contextvars.ContextVar(
    "wfserve_observation", default=None)


def current() -> Observation | None:
    """The observation of the request being served on this thread, if any."""
    return _current.get()


def header_value(observation: Observation) -> str:
    """The ``Server-Timing`` value: ``<node>;dur=ms`` and ``<node>-queue;dur=ms`` per node."""
    parts = []
    for t in observation.timings:
        name = _TOKEN.sub("_", t.node) or "node"
        parts.append(f"{name};dur={t.run * 1000:.3f}")
        parts.append(f"{name}-queue;dur={t.queued * 1000:.3f}")
    if observation.total is not None:
        parts.append(f"total;dur={observation.total * 1000:.3f}")
    return ", ".join(parts)


class ServerTiming:
    """Opens an observation per request; writes ``Server-Timing`` when the executor filled it."""

    __slots__ = ()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.observation_token = _current.set(Observation())

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        observation = _current.get()
        token = getattr(req.context, "observation_token", None)
        if token is not None:
            _current.reset(token)
        if observation is not None and (observation.timings or observation.total is not None):
            resp.set_header("Server-Timing", header_value(observation))
