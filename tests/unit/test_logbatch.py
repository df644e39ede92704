"""Batched log lines: info lines wait for the flusher, an urgent line goes out at once after
everything held before it, a stop flushes, and a forked child gets a flusher of its own."""

import io
import os
import time

from wfserve.plugins.api.logbatch import BatchedSink


def test_info_lines_wait_and_an_urgent_line_flushes_in_order():
    stream = io.StringIO()
    sink = BatchedSink(stream, interval=60)
    sink.write("one", urgent=False)
    sink.write("two", urgent=False)
    assert stream.getvalue() == ""
    sink.write("three (a warning)", urgent=True)
    assert stream.getvalue() == "one\ntwo\nthree (a warning)\n"
    sink.write("four", urgent=False)
    sink.flush()
    assert stream.getvalue().endswith("three (a warning)\nfour\n")


def test_the_flusher_writes_held_lines_within_the_interval():
    stream = io.StringIO()
    sink = BatchedSink(stream, interval=0.02)
    sink.write("held", urgent=False)
    deadline = time.monotonic() + 10
    while "held" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "held\n"


def test_a_forked_child_flushes_its_own_lines():
    read, write = os.pipe()
    sink = BatchedSink(io.StringIO(), interval=0.02)
    sink.write("parent", urgent=False)  # starts the parent's flusher
    pid = os.fork()
    if pid == 0:
        out = os.fdopen(write, "w")
        sink.stream = out
        sink.flush()  # the parent writes the lines it held, not the child too
        sink.write("from the child", urgent=False)
        time.sleep(0.5)  # only a flusher started in the child can write it
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as got:
        assert got.read() == "from the child\n"


def test_close_writes_what_is_held_and_later_lines_at_once():
    stream = io.StringIO()
    sink = BatchedSink(stream, interval=60)
    sink.write("held", urgent=False)
    flusher = sink._flusher
    sink.close()
    assert stream.getvalue() == "held\n"
    flusher.join(10)
    assert not flusher.is_alive()  # the flusher stopped with the sink
    sink.write("after", urgent=False)
    assert stream.getvalue() == "held\nafter\n"
