"""The threaded engine's one optional capability: a request's nodes run on the thread that
submitted it (no thread handoff per request).

The seam: a caller that may lend its thread wraps its ``submit`` in :func:`offered`. Under an
offer, :meth:`ThreadedExecutor.submit <plugins.executors.threaded.executor.ThreadedExecutor.submit>`
starts the request as usual, but when the root's worker is idle and nothing is queued, it
leaves that first batch (and each first ready child after it) to the offer instead of a
runner thread, and returns the future *before any node ran*. The caller then watches the
future as it likes and calls :meth:`Offer.run`, which runs that work on its thread. Anything
between the caller and the executor (a proxy such as the metrics one) sees an ordinary
``submit``: nothing else knows about the offer.

The caller's promise: it can answer its client from another thread should a node it runs hang
(the watchdog still abandons the attempt and settles the future elsewhere). Any other executor
ignores the offer, whose :meth:`Offer.run` then does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from collections.abc import Iterator
from contextvars import ContextVar

_OFFER: ContextVar[Offer | None] = ContextVar("wfserve_inline_offer", default=None)


class Offer:
    """One thread's offer to run the first work of one request."""

    __slots__ = ("_work",)

    def __init__(self) -> None:
        self._work: Callable[[], None] | None = None

    @property
    def free(self) -> bool:
        """No work was left to this offer yet."""
        return self._work is None

    def take(self, work: Callable[[], None]) -> None:
        """The executor's: leave ``work`` (which holds a node worker) to the offering thread.

        :raises RuntimeError: the offer already holds work (one request per offer).
        """
        if self._work is not None:
            raise RuntimeError("an inline offer takes the work of one request")
        self._work = work

    def run(self) -> bool:
        """Run the work left to this offer, on this thread; False when there was none (the
        request runs elsewhere, or another executor took no notice of the offer)."""
        work, self._work = self._work, None
        if work is None:
            return False
        work()
        return True


@contextlib.contextmanager
def offered() -> Iterator[Offer]:
    """Offer this thread to the ``submit`` calls inside the block (see the module docstring).

    The caller calls :meth:`Offer.run` inside the block; work still left when the block ends
    (it raised first) runs then, as work left to the offer holds a node worker until it runs.
    """
    offer = Offer()
    token = _OFFER.set(offer)
    try:
        yield offer
    finally:
        _OFFER.reset(token)
        offer.run()


def current() -> Offer | None:
    """The offer of this thread's context, if any."""
    return _OFFER.get()
