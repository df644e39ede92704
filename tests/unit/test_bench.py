"""The benchmark harness's own logic (no timing is asserted: performance lives in bench/)."""

import http.server
import threading

import pytest

from bench.__main__ import hop_slope_us
from bench.__main__ import matrix
from bench.load import _percentile
from bench.load import check_loopback
from bench.load import run_load
from bench.report import floors_table
from bench.report import markdown


@pytest.mark.parametrize("base", ["http://10.0.0.1:80", "http://8.8.8.8:8080"])
def test_load_refuses_non_loopback_targets(base):
    with pytest.raises(ValueError, match="loopback only"):
        check_loopback(base)


def test_loopback_targets_are_accepted():
    assert check_loopback("http://127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert check_loopback("http://localhost:9") == ("localhost", 9)


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (_percentile(values, 50), _percentile(values, 99), _percentile(values, 100)) == (
        50.0, 99.0, 100.0)


def test_hop_slope_is_the_least_squares_slope_in_microseconds():
    phases = {f"hop{h}_c1": {"p50": 1.0 + 0.025 * h} for h in (1, 2, 4, 8)}
    assert hop_slope_us(phases) == 25.0
    assert hop_slope_us({}) is None


@pytest.fixture
def counting_server():
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hits.append(1)
            status = 500 if self.path == "/fail" else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.mark.parametrize("processes", [False, True])
def test_request_cap_and_counts(counting_server, processes):
    base, hits = counting_server
    result = run_load(base, "/x", body=b"{}", concurrency=4, duration=30, max_requests=40,
                      warmup=3, processes=processes)
    assert result.ok == 40 and result.errors == 0
    assert len(hits) == 43  # the warm-up is sent but not counted
    assert result.min <= result.p50 <= result.p99 <= result.max


def test_errors_are_counted_not_timed(counting_server):
    base, _ = counting_server
    result = run_load(base, "/fail", concurrency=1, duration=30, max_requests=5, warmup=0)
    assert (result.ok, result.errors, result.statuses) == (0, 5, {"500": 5})


def test_matrix_covers_the_issue_workloads():
    names = [name for name, *_ in matrix()]
    for required in ("seq_c1", "seq_c8", "seq_c32", "par_c32", "plain_c1", "batch1_c32",
                     "batch8_c32", "hop1_c1", "hop8_c1"):
        assert required in names


def test_report_renders_both_servers_with_ratios():
    phase = {"concurrency": 1, "p50": 1.0, "p99": 2.0, "max": 3.0, "rps": 100.0, "errors": 0,
             "stalls": 0}
    server = {"phases": {"seq_c1": phase}, "memory": {}, "hop_us": 5.0, "stalls": 0}
    slow = {**server, "phases": {"seq_c1": {**phase, "p50": 4.0, "rps": 25.0}}}
    run = {"started": "t", "command": "python -m bench", "servers": {"wfserve": server,
                                                                      "torchserve": slow},
           "machine": {"cpu": "x", "cores": 2, "memory_gb": 1, "os": "Linux", "python": "3.11",
                       "torch": "2.13.0"}}
    text = markdown(run)
    assert "| seq_c1 | 1 |" in text
    assert "| 0.25 | 4.00 |" in text


def test_record_section_replaces_only_its_own_section(tmp_path):
    from bench.report import record_section

    path = tmp_path / "RESULTS.md"
    record_section(path, "## A\n\nfirst a\n")
    record_section(path, "## B\n\nfirst b\n")
    record_section(path, "## A\n\nsecond a\n")
    text = path.read_text()
    assert text.startswith("# Benchmark results")
    assert "second a" in text and "first a" not in text and "first b" in text
    assert text.index("## A") < text.index("## B")


def test_floors_run_on_real_archives_and_render(peer_stores, monkeypatch, tmp_path):
    """The in-process floors work against the executor as it is (they reach inside it), and
    the report renders them; the figures themselves are the benchmark's, not asserted."""
    from bench import floors
    from bench.__main__ import PAYLOAD
    from tests.archives import save_torchscript

    monkeypatch.setattr(floors, "ROUNDS", 20)
    found = floors.measure(peer_stores.model_store, peer_stores.workflow_store,
                           save_torchscript("m1", tmp_path), PAYLOAD)
    chain = found["seq_chain"]
    assert set(chain) == {"direct", "executor_here", "executor_handoff", "bookkeeping_us",
                          "handoff_us"}
    assert all(v["wall_us"] > 0 for k, v in chain.items() if isinstance(v, dict))
    assert set(found["torch_threads"]) == {"threads_1_cpu_us", "threads_2_cpu_us",
                                           "threads_4_cpu_us"}
    run = {"floors": found, "floor": {"echo_c1": {"p50": 0.3}},
           "servers": {"wfserve": {"phases": {"seq_c1": {"p50": 0.7}}}}}
    text = floors_table(run)
    assert f"| {chain['direct']['wall_us']:.0f} |" in text and "| 300 |" in text
    assert "| 700 |" in text
    assert "not measured" in floors_table({"floors": {"error": "boom"}})
