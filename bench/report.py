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
