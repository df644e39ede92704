"""Starting the server in the background (``wfserve serve``) and stopping it (``wfserve stop``).

Like ``torchserve --start``: the command starts ``wfserve serve --foreground`` as a detached
process with the same effective settings, writes its pid, waits until ``/ping`` answers and
returns. ``wfserve stop`` sends SIGTERM to the pid and waits for the process to end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import yaml

from wfserve.kernel.settings import flat_values
from wfserve.plugins.api.tls import client_verify

if TYPE_CHECKING:
    from wfserve.kernel.settings import Settings

READY_SECONDS = 120.0
#: the most of the start-up log read for errors
MAX_START_LOG = 1024 * 1024
_CONSOLE_ERROR = re.compile(r"\[(error|critical)\s*\]")
STOP_SECONDS = 40.0


def pid_file(settings: Settings) -> Path:
    return Path(settings.run_dir) / "wfserve.pid"


def running_pid(settings: Settings) -> int | None:
    """The pid of a live background server started from this folder, else None."""
    try:
        pid = int(pid_file(settings).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_background(settings: Settings) -> int:
    """Start the server detached; returns 0 once it answers ``/ping``, 1 if it died first."""
    out = sys.stdout
    pid = running_pid(settings)
    if pid is not None:
        out.write(f"wfserve is already running (pid {pid}); `wfserve stop` stops it.\n")
        return 1
    run_dir = Path(settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    frozen = run_dir / "settings.yaml"
    values = {k: v for k, v in flat_values(settings).items()
              if k not in ("plugin_config", "plugins_disable", "foreground")}
    values["plugins"] = {**settings.plugin_config, "disable": list(settings.plugins_disable)}
    # NOTE: owner-only: it may hold a keystore password given by flag or variable
    fd = os.open(frozen, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as frozen_file:
        frozen_file.write(yaml.safe_dump(values, sort_keys=False))
    frozen.chmod(0o600)
    log_path = run_dir / "wfserve.log"
    with open(log_path, "ab") as log:
        started_at = log.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", "wfserve.kernel.cli", "serve", "--foreground", "--config",
             str(frozen)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(settings).write_text(f"{process.pid}\n")
    ping = settings.inference_address.rstrip("/") + "/ping"
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pid_file(settings).unlink(missing_ok=True)
            sys.stderr.write(f"wfserve failed to start (exit {process.returncode}); "
                             f"see {log_path}\n")
            return 1
        try:
            if httpx.get(ping, timeout=1.0, verify=client_verify(settings)).status_code == 200:
                out.write(f"wfserve is serving (pid {process.pid}): inference "
                          f"{settings.inference_address}, management "
                          f"{settings.management_address}, metrics {settings.metrics_address}\n"
                          f"log: {log_path}; stop with `wfserve stop`\n")
                for line in start_errors(log_path, started_at):
                    sys.stderr.write(f"wfserve: error at start-up: {line}\n")
                return 0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.stderr.write(
        f"wfserve did not answer {ping} within {READY_SECONDS:.0f} s; see {log_path}\n"
    )
    return 1


def start_errors(log_path: Path, offset: int) -> list[str]:
    """The error lines the server logged since ``offset`` of its log (its start-up: restoring,
    registering the ``workflows`` setting and the example), one line each, so that a failure
    at start-up is seen on the command line, not only in the log. JSON lines give their event
    and fields; a console-format line is kept as written."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            text = log.read(MAX_START_LOG).decode("utf-8", "replace")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if _CONSOLE_ERROR.search(line):
                found.append(line.strip())
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            fields = " ".join(f"{k}={v}" for k, v in record.items()
                              if k not in ("event", "level", "timestamp", "logger"))
            found.append(f"{record.get('event', '')} {fields}".strip())
    return found


def stop(settings: Settings) -> int:
    """SIGTERM the background server and wait for it to end."""
    pid = running_pid(settings)
    if pid is None:
        sys.stdout.write("wfserve is not running (no live pid in "
                         f"{pid_file(settings)}).\n")
        return 1
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file(settings).unlink(missing_ok=True)
    sys.stdout.write(f"wfserve stopped (pid {pid}).\n")
    return 0
