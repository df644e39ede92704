"""Log lines written while a node handler runs carry its workflow, node, worker and request
id, whether the handler logs with structlog or the standard library; nothing leaks after."""

import io
import json
import logging

import structlog

from wfserve.kernel.contracts import RowMeta
from wfserve.kernel.logs import configure_logging
from wfserve.kernel.settings import Settings
from wfserve.plugins.metrics.handler import InstrumentedHandler
from wfserve.plugins.metrics.instruments import Metrics


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_logged_by_a_handler_carry_its_node_context():
    stream = io.StringIO()
    configure_logging(Settings(log_format="json"), stream)
    try:
        def handler(batch, meta):
            logging.getLogger("user.handler").warning("from stdlib")
            structlog.get_logger("user").info("from structlog", node="own-value-wins")
            return [row for row in batch]

        wrapped = InstrumentedHandler(handler, "wf", "m1", 3, Metrics(lambda: []))
        structlog.contextvars.bind_contextvars(request_id="outer")
        assert wrapped([{"body": b"x"}], [RowMeta("req-9", {})]) == [{"body": b"x"}]
        structlog.get_logger("after").info("after the call")
    finally:
        structlog.contextvars.clear_contextvars()
        configure_logging(Settings(log_format="json"))
    stdlib, own, after = lines(stream)
    assert (stdlib["event"], stdlib["workflow"], stdlib["node"], stdlib["worker"],
            stdlib["request_id"]) == ("from stdlib", "wf", "m1", 3, "req-9")
    assert (own["node"], own["workflow"], own["request_id"]) == ("own-value-wins", "wf", "req-9")
    assert "node" not in after and after["request_id"] == "outer"


def test_a_batch_carries_every_request_id():
    stream = io.StringIO()
    configure_logging(Settings(log_format="json"), stream)
    try:
        def handler(batch, meta):
            structlog.get_logger("user").info("batch")
            return batch

        InstrumentedHandler(handler, "wf", "m1", 0, Metrics(lambda: []))(
            [{}, {}], [RowMeta("a", {}), RowMeta("b", {})])
    finally:
        configure_logging(Settings(log_format="json"))
    (line,) = lines(stream)
    assert line["request_ids"] == ["a", "b"] and "request_id" not in line
