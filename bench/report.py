"""Turning a benchmark run into a Markdown table and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGETS = [
    ("seq_wf p50 at 1 client (ms)", "seq_c1", "p50", "<= 0.8"),
    ("par_wf p50 at 1 client (ms)", "par_c1", "p50", ""),
    ("seq_wf rps at 32 clients", "seq_c32", "rps", ">= 4x TorchServe"),
    ("par_wf rps at 32 clients", "par_c32", "rps", ">= 4x TorchServe"),
]


MAIN_HEADING = "## The matrix: wfserve and TorchServe 0.12.0 side by side"


def record_section(path: Path, section: str) -> None:
    """Put ``section`` (starting with its ``## `` heading) into ``path`` in place of the section
    with the same heading, else append it; every other section is kept as it is."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(heading)
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section.rstrip("\n") + "\n" + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _ratio(a: Any, b: Any) -> str:
    try:
        return f"{a / b:.2f}"
    except (TypeError, ZeroDivisionError):
        return "-"


def phase_table(run: dict[str, Any]) -> str:
    servers = list(run["servers"])
    head = ["phase", "clients"]
    for s in servers:
        head += [f"{s} p50", f"{s} p99", f"{s} max", f"{s} rps", f"{s} err", f"{s} stalls"]
    if len(servers) == 2:
        head += ["p50 ratio", "rps ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = run["servers"][servers[0]]["phases"]
    for phase in first:
        row = [phase, str(first[phase]["concurrency"])]
        values = []
        for s in servers:
            p = run["servers"][s]["phases"].get(phase)
            values.append(p)
            row += [_fmt(p and p["p50"]), _fmt(p and p["p99"]), _fmt(p and p["max"]),
                    _fmt(p and p["rps"]), _fmt(p and p["errors"]), _fmt(p and p["stalls"])]
        if len(servers) == 2:
            a, b = values
            row += [_ratio(a and a["p50"], b and b["p50"]), _ratio(a and a["rps"], b and b["rps"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary_table(run: dict[str, Any]) -> str:
    servers = list(run["servers"])
    head = ["figure", *servers]
    if len(servers) == 2:
        head.append("wfserve/TorchServe")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label: str, getter: Any) -> None:
        vals = [getter(run["servers"][s]) for s in servers]
        cells = [label, *(_fmt(v) for v in vals)]
        if len(servers) == 2:
            cells.append(_ratio(vals[0], vals[1]))
        lines.append("| " + " | ".join(cells) + " |")

    for label, phase, key, _ in TARGETS:
        row(label, lambda s, p=phase, k=key: s["phases"].get(p, {}).get(k))
    row("cost per extra hop, p50 slope (us)", lambda s: s.get("hop_us"))
    row("batching gain, batch 8 vs 1 rps (x)", lambda s: s.get("batching_gain"))
    row("stalls over 1 s, whole matrix", lambda s: s.get("stalls"))
    row("errors, whole matrix", lambda s: s.get("errors"))
    row("RSS with seq_wf+par_wf loaded, idle (MB)", lambda s: s.get("idle_rss_mb"))
    row("peak tree RSS during the matrix (MB)", lambda s: s["memory"].get("peak_rss_mb"))
    row("peak tree PSS during the matrix (MB)", lambda s: s["memory"].get("peak_pss_mb"))
    row("processes", lambda s: s["memory"].get("processes"))
    row("cold start to both workflows answering (s)", lambda s: s.get("cold_start_s"))
    return "\n".join(lines)


def floor_table(run: dict[str, Any]) -> str:
    floor = run.get("floor") or {}
    if not floor:
        return ""
    lines = ["The floor, gunicorn alone (gthread, 1 worker, bare echo WSGI app, same run):", "",
             "| phase | clients | p50 | p99 | rps | server CPU ms/req |",
             "|---|---|---|---|---|---|"]
    for name, p in floor.items():
        lines.append(f"| {name} | {p['concurrency']} | {_fmt(p['p50'])} | {_fmt(p['p99'])} | "
                     f"{_fmt(p['rps'])} | {_fmt(p.get('server_cpu_ms_per_req'))} |")
    return "\n".join(lines)


def floors_table(run: dict[str, Any]) -> str:
    """Where a seq_wf request's time goes at 1 client (:mod:`bench.floors`, same run)."""
    floors = run.get("floors") or {}
    chain = floors.get("seq_chain")
    if not chain:
        return f"In-process floors: not measured ({floors.get('error', 'no data')[-300:]})."
    echo = (run.get("floor") or {}).get("echo_c1", {})
    seq = ((run.get("servers") or {}).get("wfserve", {}).get("phases") or {}).get("seq_c1", {})
    torch_cpu = floors["torch_threads"]
    rows = [
        ("HTTP alone: gunicorn echo app, p50 at 1 client", _us(echo.get("p50"), 1000)),
        ("seq_wf's handlers called directly, with TorchServe's byte conversions",
         _us(chain["direct"]["wall_us"])),
        ("wfserve's bookkeeping on top (executor, attempts, timers, metrics, log context)",
         _us(chain["bookkeeping_us"])),
        ("a handoff to a runner thread and back, which running nodes on the HTTP thread "
         "avoids", _us(chain["handoff_us"])),
        ("(a bare thread round trip, tight loop)", _us(floors["handoff"]["wall_us"])),
        ("seq_wf p50 at 1 client, measured over HTTP", _us(seq.get("p50"), 1000)),
        ("peer's model handler, CPU per call with 1 / 2 / 4 threads calling at once",
         " / ".join(_us(torch_cpu[f"threads_{n}_cpu_us"]) for n in (1, 2, 4))),
    ]
    lines = ["Where a seq_wf request goes (`bench/floors.py`, in-process, same run; us):", "",
             "| part | us |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _us(value: Any, scale: float = 1.0) -> str:
    return "-" if value is None else f"{float(value) * scale:.0f}"


def markdown(run: dict[str, Any]) -> str:
    m = run["machine"]
    parts = [
        MAIN_HEADING,
        "",
        f"Run {run['started']}.",
        "",
        f"Machine: {m['cpu']} x{m['cores']}, {m['memory_gb']} GB RAM, {m['os']}; "
        f"Python {m['python']}, torch {m['torch']}; load generator on the same cores "
        f"(its CPU per phase is in the JSON).",
        f"Command: `{run['command']}`",
        "",
        summary_table(run),
        "",
        phase_table(run),
        "",
        floor_table(run),
        "",
        floors_table(run),
        "",
    ]
    if run.get("note"):
        parts += [run["note"], ""]
    return "\n".join(parts)


def plot(run: dict[str, Any], path: Path) -> Path | None:
    """p50/p99 latency and rps per phase, one bar per server; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    servers = list(run["servers"])
    phases = list(run["servers"][servers[0]]["phases"])
    fig, axes = plt.subplots(3, 1, figsize=(max(10, len(phases) * 0.7), 11))
    width = 0.8 / len(servers)
    for i, s in enumerate(servers):
        data = run["servers"][s]["phases"]
        xs = [j + i * width for j in range(len(phases))]
        for ax, key in zip(axes, ("p50", "p99", "rps"), strict=True):
            ax.bar(xs, [data.get(p, {}).get(key) or 0 for p in phases], width, label=s)
    for ax, title in zip(axes, ("p50 latency (ms, log)", "p99 latency (ms, log)",
                                "throughput (requests/s)"), strict=True):
        ax.set_title(title)
        ax.set_xticks([j + width * (len(servers) - 1) / 2 for j in range(len(phases))])
        ax.set_xticklabels(phases, rotation=45, ha="right", fontsize=8)
        ax.legend()
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the server-processes run (issue 20): N wfserve processes, TorchServe, floors, memory ---

WORKERS_HEADING = "## Server processes (issue 20): wfserve --workers N and TorchServe 0.12.0"
PLAIN = "plain model (/predictions/seq_wf__m1)"
ONE = "one-model workflow (/wfpredict/one_wf)"
SCALED = (("/ping", "ping"), (PLAIN, "plain"), (ONE, "one"), ("seq_wf", "seq"), ("par_wf", "par"))
CLIENTS = (1, 8, 32)
PEER = "torchserve"


def record_top(path: Path, section: str) -> None:
    """Put ``section`` at the top of ``path``, right under its ``# `` title (a new section each
    run: its heading names the run); every other section is kept below it as it is."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    first = text.find("\n## ")
    head, rest = (text, "") if first < 0 else (text[:first], text[first + 1:])
    path.write_text(head.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
                    + ("\n" + rest if rest else ""))


def _label(name: str) -> str:
    return f"wfserve N={name.removeprefix('wfserve-n')}" if name.startswith("wfserve-n") else (
        "TorchServe" if name == PEER else name)


def _phase(run: dict[str, Any], server: str, phase: str) -> dict[str, Any] | None:
    return ((run.get("servers") or {}).get(server) or {}).get("phases", {}).get(phase)


def _rate(run: dict[str, Any], server: str, phase: str) -> float | None:
    p = _phase(run, server, phase)
    return p["rps"] if p and p.get("ok") else None


def _x(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def _pct(share: Any) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def targets(run: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, what was measured, verdict) for each target of issue 20, from the numbers."""
    rows: list[tuple[str, str, str]] = []
    servers = run.get("servers") or {}
    n1, n2 = "wfserve-n1", "wfserve-n2"
    for label, key in SCALED:
        target = f"{label}: rps at 32 clients, N=2 >= 1.5x N=1"
        a, b = _rate(run, n1, f"{key}_c32"), _rate(run, n2, f"{key}_c32")
        if a is None or b is None:
            rows.append((target, "N=1 or N=2 not measured", "not measured"))
            continue
        rows.append((target, f"N=1 {_rps(a)}, N=2 {_rps(b)} rps ({b / a:.2f}x)",
                     "holds" if b >= 1.5 * a else "missed"))
    wf = sorted((s for s in servers if s.startswith("wfserve-n")),
                key=lambda s: int(s.removeprefix("wfserve-n")))
    for label, key, factor in (("/ping", "ping", 1.0), (PLAIN, "plain", 2.0), (ONE, "one", 2.0)):
        want = "TorchServe's" if factor == 1.0 else f"{factor:g}x TorchServe's"
        for s in wf:
            target = f"{label}: rps >= {want} ({_label(s)})"
            if PEER not in servers:
                rows.append((target, "TorchServe not in this run", "not measured"))
                continue
            parts, held, missed = [], [], []
            for c in CLIENTS:
                a, b = _rate(run, s, f"{key}_c{c}"), _rate(run, PEER, f"{key}_c{c}")
                if a is None or b is None:
                    parts.append(f"{_clients(c)}: -")
                    continue
                parts.append(f"{_clients(c)}: {_rps(a)} vs {_rps(b)} rps ({a / b:.2f}x)")
                (held if a >= factor * b else missed).append(str(c))
            if not held and not missed:
                verdict = "not measured"
            elif not missed:
                verdict = "holds"
            elif not held:
                verdict = "missed"
            else:
                verdict = f"holds at {', '.join(held)}; missed at {', '.join(missed)} clients"
            rows.append((target, "; ".join(parts), verdict))
    target = "seq_wf p50 at 1 client: N=2 not worse than N=1"
    a_p, b_p = _phase(run, n1, "seq_c1"), _phase(run, n2, "seq_c1")
    if not a_p or not b_p or not a_p.get("ok") or not b_p.get("ok"):
        rows.append((target, "N=1 or N=2 not measured", "not measured"))
    else:
        a, b = a_p["p50"], b_p["p50"]
        rows.append((target, f"N=1 {a:.3f} ms, N=2 {b:.3f} ms ({b - a:+.3f} ms, "
                             f"{(b - a) / a * 100:+.0f}%)", "holds" if b <= a else "missed"))
    return rows


def _rps(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{v:.2f}"


def _clients(c: int) -> str:
    return "1 client" if c == 1 else f"{c} clients"


def _cell(p: dict[str, Any] | None) -> str:
    if not p or not p.get("ok"):
        return "-" if not p else f"0 ok, {p['errors']} errors"
    text = f"{_fmt(p['rps'])} rps; {p['p50']:.2f} / {p['p99']:.2f}"
    if p.get("errors") or p.get("stalls"):
        text += f" ({p['errors']} err, {p['stalls']} stalls)"
    return text


def _phases_of(run: dict[str, Any], image: bool) -> list[str]:
    names: list[str] = []
    for server in (run.get("servers") or {}).values():
        for name in server.get("phases", {}):
            if name not in names and name.startswith("image_") == image:
                names.append(name)
    return names


def workers_phase_table(run: dict[str, Any], image: bool = False) -> str:
    servers = list(run.get("servers") or {})
    head = ["phase", "clients", *(_label(s) for s in servers)]
    n1, n2 = "wfserve-n1" in servers, "wfserve-n2" in servers
    if n1 and n2:
        head.append("rps N=2 / N=1")
    if PEER in servers:
        head += [f"rps {_label(s)} / TorchServe" for s in servers if s != PEER]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for phase in _phases_of(run, image):
        clients = next(p["concurrency"] for s in servers
                       if (p := _phase(run, s, phase)) is not None)
        row = [phase, str(clients), *(_cell(_phase(run, s, phase)) for s in servers)]
        if n1 and n2:
            row.append(_x(_rate(run, "wfserve-n2", phase), _rate(run, "wfserve-n1", phase)))
        if PEER in servers:
            row += [_x(_rate(run, s, phase), _rate(run, PEER, phase)) for s in servers
                    if s != PEER]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def generator_table(run: dict[str, Any]) -> str:
    """The load generator's CPU share per phase and server (its CPU / wall / cores)."""
    servers = list(run.get("servers") or {})
    head = ["phase", *(_label(s) for s in servers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for phase in _phases_of(run, False) + _phases_of(run, True):
        row = [phase, *(_pct((_phase(run, s, phase) or {}).get("client_cpu_share"))
                        for s in servers)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def echo_floor_table(run: dict[str, Any]) -> str:
    floor = run.get("floor") or {}
    lines = ["| floor | workers | clients | rps | p50 | p99 | server CPU ms/req | load gen CPU |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in floor.values():
        if not isinstance(entry, dict) or "phases" not in entry:
            continue
        what = ("WSGI echo, gthread" if entry["kind"] == "gthread"
                else "Falcon ASGI echo, uvicorn worker (httptools)")
        for p in entry["phases"].values():
            lines.append(f"| {what} | {entry['workers']} | {p['concurrency']} | "
                         f"{_fmt(p['rps'])} | {_fmt(p['p50'])} | {_fmt(p['p99'])} | "
                         f"{_fmt(p.get('server_cpu_ms_per_req'))} | "
                         f"{_pct(p.get('client_cpu_share'))} |")
    if floor.get("note"):
        lines += ["", floor["note"] + "."]
    return "\n".join(lines)


def memory_table(run: dict[str, Any]) -> str:
    lines = ["| server | processes | PSS MB | RSS MB | measured on |", "|---|---|---|---|---|"]
    for n, m in (run.get("memory") or {}).items():
        lines.append(f"| wfserve N={n} | {m['processes']} | {m['pss_mb']:.0f} | "
                     f"{m['rss_mb']:.0f} | {m['source']} |")
    peer = ((run.get("servers") or {}).get(PEER) or {}).get("warm_memory")
    if peer:
        lines.append(f"| TorchServe | {peer['processes']} | {peer['pss_mb']:.0f} | "
                     f"{peer['rss_mb']:.0f} | matrix server, after its warm-up |")
    return "\n".join(lines)


def workers_summary(run: dict[str, Any]) -> str:
    servers = list(run.get("servers") or {})
    lines = ["| figure | " + " | ".join(_label(s) for s in servers) + " |",
             "|" + "---|" * (len(servers) + 1)]

    def row(label: str, get: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(_fmt(get(run["servers"][s])) for s in servers)
                     + " |")

    row("cold start to seq_wf and par_wf answering (s)", lambda s: s.get("cold_start_s"))
    row("PSS before the warm-up (MB)", lambda s: s.get("idle_pss_mb"))
    row("PSS after the warm-up (MB)", lambda s: (s.get("warm_memory") or {}).get("pss_mb"))
    row("peak tree PSS during the matrix (MB)", lambda s: s["memory"].get("peak_pss_mb"))
    row("processes", lambda s: s["memory"].get("processes"))
    row("cost per extra hop, p50 slope (us)", lambda s: s.get("hop_us"))
    row("batching gain, batch 8 vs 1 rps (x)", lambda s: s.get("batching_gain"))
    row("stalls over 1 s, whole matrix", lambda s: s.get("stalls"))
    row("errors, whole matrix", lambda s: s.get("errors"))
    return "\n".join(lines)


def workers_markdown(run: dict[str, Any]) -> str:
    m = run["machine"]
    rows = targets(run)
    judged = [r for r in rows if r[2] != "not measured"]
    holding = [r for r in judged if r[2] == "holds"]
    servers = ", ".join(_label(s) for s in run.get("servers") or {})
    parts = [
        f"{WORKERS_HEADING}, run {run['started']}",
        "",
        f"Machine: {m['cpu']} x{m['cores']}, {m['memory_gb']} GB RAM, {m['os']}; Python "
        f"{m['python']}, torch {m['torch']}. Date: {run['started']}. Command: "
        f"`{run['command']}` ({_fmt(run.get('wall_s'))} s). Servers: {servers}; loopback.",
        "",
        "Threads: every server process runs with `OMP_NUM_THREADS=1` (one intra-op torch "
        "thread; TorchServe's backend workers inherit it), and the ResNet-18 and heavy model "
        "handlers call `torch.set_num_threads(1)`. wfserve's processes each have every "
        "benchmark workflow, registered at start (`--workflows`); TorchServe's are registered "
        "over its management API. Every server process is warmed up on every path before the "
        "phases. The load generator (closed loop, keep-alive, one process per connection above "
        "1 client) runs on the same cores; its CPU share (its CPU time over the phase's wall "
        "time and all cores) is in the table below the matrix.",
        "",
        f"### Targets, judged from this run's numbers: {len(holding)} of {len(judged)} hold",
        "",
        "A target over 1, 8 and 32 clients holds only if it holds at each; a partial verdict "
        "names where it held.",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        *(f"| {t} | {measured} | {verdict} |" for t, measured, verdict in rows),
        "",
        "### rps; p50 / p99 latency (ms)",
        "",
        workers_phase_table(run),
        "",
        "Image pipeline (`image_wf`: JPEG 640x480 -> decode, resize 224x224, normalise -> "
        "ResNet-18, TorchScript, batch size 8, max-batch-delay 5 ms -> top 5; the same .war and "
        ".mar for every server):",
        "",
        workers_phase_table(run, image=True),
        "",
        "Stalls are answers slower than 1 s: at 16 clients the image pipeline queues two "
        "batches of 8 ResNet-18 calls on one torch thread, so its latency is about that by "
        "design (compare the server's rate instead). Load generator CPU share (of all cores) "
        "per phase:",
        "",
        generator_table(run),
        "",
        "### Floors: gunicorn with a bare echo app, same run",
        "",
        echo_floor_table(run),
        "",
        floors_table(_first_wfserve(run)),
        "",
        "### Memory: the server tree's PSS after the warm-up (every benchmark workflow loaded)",
        "",
        memory_table(run),
        "",
        "### Per server",
        "",
        workers_summary(run),
        "",
    ]
    for note in run.get("notes") or []:
        parts += [note, ""]
    return "\n".join(parts)


def _first_wfserve(run: dict[str, Any]) -> dict[str, Any]:
    """The run as :func:`floors_table` reads it: wfserve N=1 as "wfserve", the WSGI N=1 floor."""
    servers = run.get("servers") or {}
    name = "wfserve-n1" if "wfserve-n1" in servers else next(
        (s for s in servers if s.startswith("wfserve")), None)
    floor = ((run.get("floor") or {}).get("gthread-n1") or {}).get("phases", {})
    return {**run, "servers": {"wfserve": servers[name]} if name else {}, "floor": floor}
