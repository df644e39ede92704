"""The two servers under test, started the way their users start them, on loopback ports.

``Wfserve``: ``wfserve serve --foreground --workers N`` with every benchmark workflow given at
start-up (``--workflows``), so each of the N server processes has them.
``TorchServe``: the real TorchServe 0.12.0 (``torchserve --start``) from a venv built with the
peer recipe (``VENV``, default /tmp/peer-venv: torchserve 0.12.0, the archivers, pyyaml, numpy,
Pillow and torch; ``python -m bench.peer_venv`` builds it with torch 2.14.1 and torchvision
0.29.1); workflows are registered over its management API, which is its only way.
``EchoFloor``: gunicorn with a bare echo app, WSGI (gthread, as wfserve) or ASGI (uvicorn's
worker class, httptools), N worker processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.procmon import wait_until

ASSETS = Path(__file__).resolve().parent / "assets"
PEER_VENV = Path(os.environ.get("VENV", "/tmp/peer-venv"))
START_WORKFLOWS = ("seq_wf", "par_wf")
# every server process runs one intra-op torch thread, so N processes do not oversubscribe the
# cores (TorchServe's backend workers inherit the frontend's environment)
SERVER_ENV = {"OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str, body: bytes) -> bool:
    try:
        return httpx.post(url, content=body, headers={"Content-Type": "application/json"},
                          timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


class Server:
    """Common parts: ports, cold start measurement, registration."""

    name = "server"
    processes = 1  # processes that answer requests (each must be warmed up)

    def __init__(self, model_store: Path, workflow_store: Path, workdir: Path) -> None:
        self.model_store, self.workflow_store, self.workdir = model_store, workflow_store, workdir
        self.ports = {"inference": free_port(), "management": free_port(),
                      "metrics": free_port()}
        self.pid: int | None = None
        self.cold_start_s: float | None = None

    @property
    def inference(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    @property
    def management(self) -> str:
        return f"http://127.0.0.1:{self.ports['management']}"

    def _wait_answering(self, started: float, payload: bytes, timeout: float = 180) -> None:
        urls = [f"{self.inference}/wfpredict/{w}" for w in START_WORKFLOWS]
        if not wait_until(lambda: all(_answers(u, payload) for u in urls), timeout):
            raise RuntimeError(f"{self.name}: workflows not answering after {timeout} s")
        self.cold_start_s = round(time.monotonic() - started, 3)

    def register(self, war: str) -> None:
        r = httpx.post(f"{self.management}/workflows", params={"url": war}, timeout=300)
        if r.status_code != 200:
            raise RuntimeError(f"{self.name}: registering {war} gave {r.status_code} {r.text}")


class Wfserve(Server):
    name = "wfserve"
    extra: tuple[str, ...] = ()  # more command-line settings (the executor)

    def __init__(self, model_store: Path, workflow_store: Path, workdir: Path, *,
                 workers: int | None = None, workflows: tuple[str, ...] = START_WORKFLOWS
                 ) -> None:
        """:param workers: ``--workers N`` (None: the setting's default, one per core);
        :param workflows: registered at start-up (``--workflows``), ``.war`` names."""
        super().__init__(model_store, workflow_store, workdir)
        self.workers, self.workflows = workers, workflows
        if workers is not None:
            self.name, self.processes = f"wfserve-n{workers}", workers

    def start(self, payload: bytes) -> None:
        log = open(self.workdir / "wfserve.log", "ab")  # noqa: SIM115 - lives with the process
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wfserve.kernel.cli", "serve", "--foreground",
             "--inference-address", self.inference, "--management-address", self.management,
             "--metrics-address", f"http://127.0.0.1:{self.ports['metrics']}",
             "--model-store", str(self.model_store), "--workflow-store", str(self.workflow_store),
             "--run-dir", str(self.workdir / "run"), "--no-example", "--disable-token-auth",
             *self.extra, *(("--workers", str(self.workers)) if self.workers else ()),
             "--workflows", *(f"{w}.war" for w in self.workflows)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **SERVER_ENV, "WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"})
        self.pid = self.process.pid
        self._wait_answering(started, payload)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class WfserveRay(Wfserve):
    """wfserve with ``executor: ray`` on a local Ray cluster of 2 CPUs."""

    name = "wfserve-ray"
    extra = ("--executor", "ray", "--ray-num-cpus", "2", "--no-snapshot")


class TorchServe(Server):
    name = "torchserve"

    def __init__(self, model_store: Path, workflow_store: Path, workdir: Path, *,
                 workflows: tuple[str, ...] = START_WORKFLOWS) -> None:
        """:param workflows: registered over the management API once it answers."""
        super().__init__(model_store, workflow_store, workdir)
        self.workflows = workflows

    @staticmethod
    def available() -> bool:
        return (PEER_VENV / "bin" / "torchserve").exists() and shutil.which("java") is not None

    def start(self, payload: bytes) -> None:
        run = self.workdir / "ts"
        (run / "logs").mkdir(parents=True, exist_ok=True)
        config = run / "config.properties"
        config.write_text("\n".join([
            f"inference_address={self.inference}",
            f"management_address={self.management}",
            f"metrics_address=http://127.0.0.1:{self.ports['metrics']}",
            "grpc_inference_address=127.0.0.1", "grpc_management_address=127.0.0.1",
            f"grpc_inference_port={free_port()}", f"grpc_management_port={free_port()}",
            "disable_token_authorization=true", "install_py_dep_per_model=false",
            f"model_store={self.model_store}", f"workflow_store={self.workflow_store}", "",
        ]))
        env = {**os.environ, **SERVER_ENV, "PATH": f"{PEER_VENV / 'bin'}:{os.environ['PATH']}",
               "LOG_LOCATION": str(run / "logs"), "METRICS_LOCATION": str(run / "logs")}
        started = time.monotonic()
        # NOTE: the daemonized JVM inherits stdout/stderr: a pipe here would never reach EOF
        with open(run / "torchserve-start.log", "ab") as log:
            subprocess.run([str(PEER_VENV / "bin" / "torchserve"), "--start", "--ncs",
                            "--ts-config", str(config),
                            "--log-config", str(ASSETS / "ts_log4j2.xml")],
                           cwd=run, env=env, check=True, stdin=subprocess.DEVNULL, stdout=log,
                           stderr=subprocess.STDOUT, timeout=60)
        self.env, self.run = env, run
        if not wait_until(self._pinged, 120):
            raise RuntimeError("torchserve did not answer /ping")
        self.pid = self._java_pid()
        for w in self.workflows:
            self.register(f"{w}.war")
        self._wait_answering(started, payload)

    def _pinged(self) -> bool:
        try:
            return httpx.get(f"{self.inference}/ping", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _java_pid(self) -> int | None:
        out = subprocess.run(["pgrep", "-f", "org.pytorch.serve.ModelServer"],
                             capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else None

    def stop(self) -> None:
        subprocess.run([str(PEER_VENV / "bin" / "torchserve"), "--stop"], cwd=self.run,
                       env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)
        if self.pid:
            wait_until(lambda: not Path(f"/proc/{self.pid}").exists(), 30)


class EchoFloor(Server):
    """gunicorn with a bare echo app: ``gthread`` (wfserve's worker class, thread count and
    keep-alive; ``bench/echo_app.py``) or ``uvicorn`` (uvicorn's worker class with httptools, a
    Falcon ASGI app; ``bench/asgi_echo.py``), ``workers`` processes."""

    name = "echo-floor"

    def __init__(self, model_store: Path, workflow_store: Path, workdir: Path, *,
                 workers: int = 1, kind: str = "gthread") -> None:
        super().__init__(model_store, workflow_store, workdir)
        self.workers, self.kind = workers, kind
        self.name, self.processes = f"{kind}-n{workers}", workers

    @staticmethod
    def asgi_available() -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in ("uvicorn", "httptools"))

    def start(self, payload: bytes) -> None:
        from wfserve.plugins.api.settings import ApiSettings

        if self.kind == "gthread":
            worker = ["-k", "gthread", "--threads", str(ApiSettings().threads),
                      "bench.echo_app:app"]
        else:
            worker = ["-k", "bench.asgi_echo.HttptoolsWorker", "bench.asgi_echo:app"]
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - lives with it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", str(self.workers), "--keep-alive", "75",
             "-b", f"127.0.0.1:{self.ports['inference']}", *worker],
            cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid
        if not wait_until(lambda: _answers(f"{self.inference}/", payload), 60):
            raise RuntimeError("the echo floor did not start")

    def stop(self) -> None:
        Wfserve.stop(self)  # type: ignore[arg-type]
