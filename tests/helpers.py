"""Test helpers: a real wfserve server (gunicorn) on ephemeral loopback ports.

``WfserveServer`` starts ``python -m wfserve.kernel.cli serve --foreground`` with three unused
127.0.0.1 ports, polls ``/ping`` until ready (with a deadline), and stops it with SIGTERM,
then SIGKILL if it is stubborn. A port clash at start is retried with new ports.

``https`` names the surfaces served over TLS (``verify`` is what the readiness ping trusts);
with ``ports_in_env`` the addresses are not given as flags: the ports are in the variables
``TEST_<SURFACE>_PORT`` for a ``config.properties`` to name as ``$$TEST_INFERENCE_PORT$$``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx

READY_SECONDS = 60.0


def wait_for(condition: Callable[[], bool], within: float, every: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``within`` seconds pass; whether it held."""
    end = time.monotonic() + within
    while not condition():
        if time.monotonic() >= end:
            return False
        time.sleep(every)
    return True


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WfserveServer:
    """One server process; use as a context manager."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None,
                 auth: bool = False, https: Collection[str] = (), verify: Any = True,
                 ports_in_env: bool = False) -> None:
        """``auth=False`` (the default) passes ``--disable-token-auth``, as TorchServe's own
        workflow tests do; with ``auth=True`` the keys are in ``workdir / "key_file.json"``."""
        self.workdir = workdir
        self.args = list(args) if auth else ["--disable-token-auth", *args]
        self.env = {**os.environ, "WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1", "WFSERVE_EXAMPLE": "0",
                    **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"
        self.ports: dict[str, int] = {}
        self.https = set(https)
        self.verify = verify
        self.ports_in_env = ports_in_env

    def address(self, surface: str) -> str:
        scheme = "https" if surface in self.https else "http"
        return f"{scheme}://127.0.0.1:{self.ports[surface]}"

    @property
    def inference(self) -> str:
        return self.address("inference")

    @property
    def management(self) -> str:
        return self.address("management")

    @property
    def metrics(self) -> str:
        return self.address("metrics")

    def start(self, attempts: int = 3) -> WfserveServer:
        for _ in range(attempts):
            self.ports = {s: unused_port() for s in ("inference", "management", "metrics")}
            if self._start_once():
                return self
        raise RuntimeError(f"wfserve did not start; log:\n{self.log()}")

    def _start_once(self) -> bool:
        addresses = [] if self.ports_in_env else [
            "--inference-address", self.inference,
            "--management-address", self.management,
            "--metrics-address", self.metrics]
        cmd = [sys.executable, "-m", "wfserve.kernel.cli", "serve", "--foreground", *addresses,
               "--run-dir", str(self.workdir / "run"), *self.args]
        env = {**self.env, **{f"TEST_{s.upper()}_PORT": str(p) for s, p in self.ports.items()}}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if httpx.get(self.inference + "/ping", timeout=1.0,
                             verify=self.verify).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"wfserve not ready in {READY_SECONDS} s; log:\n{self.log()}")

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def key(self, kind: str) -> str:
        """A key from the server's key file (``management``, ``inference`` or ``API``)."""
        import json

        return json.loads((self.workdir / "key_file.json").read_text())[kind]["key"]

    def bearer(self, kind: str) -> dict[str, str]:
        """``{"Authorization": "Bearer <key>"}`` for ``kind``."""
        return {"Authorization": f"Bearer {self.key(kind)}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> WfserveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def raw_exchange(server: WfserveServer, data: bytes, port: str = "inference",
                 timeout: float = 10.0) -> bytes:
    """Send ``data`` as it is to one of ``server``'s ports; read until the server closes the
    connection (or ``timeout`` seconds pass without a byte)."""
    with socket.create_connection(("127.0.0.1", server.ports[port]), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
