"""The wheel, as a user installs it: built with pip, installed (not editable) into a fresh venv,
started from another folder with the README's command, answering the bundled example.

The fresh venv reuses the packages installed here (torch is large) through a ``.pth`` line
naming this interpreter's site-packages: a plain path, so the editable install's own ``.pth``
hooks there are not run and ``wfserve`` comes from the wheel alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from tests.helpers import unused_port

ROOT = Path(__file__).resolve().parents[2]
PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
pytestmark = pytest.mark.integration


def clean_env() -> dict[str, str]:
    """This environment without a ``PYTHONPATH`` (the wheel alone, not this source tree)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a command in ``cwd``, away from this tree (a ``python -c`` finds ``wfserve`` in its
    current folder first), without ``PYTHONPATH`` unless ``env`` says otherwise."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                            timeout=600, cwd=cwd, env=env if env is not None else clean_env())
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from a copy of this tree installed (no deps)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "tests", "bench", "*.egg-info", "__pycache__", ".wfserve", "build"))
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", root / "dist",
        source, cwd=root)
    wheel = next((root / "dist").glob("wfserve-*.whl"))
    env = root / "venv"
    run(sys.executable, "-m", "venv", env, cwd=root)
    site = Path(run(env / "bin" / "python", "-c", PURELIB, cwd=root).stdout.strip())
    (site / "reuse-installed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(env / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", wheel, cwd=root)
    return env


def test_the_wheel_holds_one_wfserve_package_and_no_top_level_kernel(venv: Path):
    site = Path(run(venv / "bin" / "python", "-c", PURELIB, cwd=venv).stdout.strip())
    assert (site / "wfserve" / "kernel" / "hookspecs.py").is_file()
    assert (site / "wfserve" / "conf" / "wfserve.yaml").is_file()
    assert (site / "wfserve" / "plugins" / "example" / "assets" / "example_handler.py").is_file()
    assert not (site / "kernel").exists() and not (site / "plugins").exists()
    where = run(venv / "bin" / "python", "-c",
                "import wfserve.kernel.cli as c; print(c.__file__)", cwd=venv).stdout.strip()
    assert where.startswith(str(site))


def test_the_wheel_serves_the_example_from_another_folder(venv: Path, tmp_path: Path):
    ports = {s: unused_port() for s in ("INFERENCE", "MANAGEMENT", "METRICS")}
    env = {**clean_env(), **{f"WFSERVE_{s}_ADDRESS": f"http://127.0.0.1:{p}"
                             for s, p in ports.items()}}
    env.pop("WFSERVE_DISABLE_PLUGIN_AUTOLOAD", None)
    wfserve = venv / "bin" / "wfserve"
    try:
        started = run(wfserve, "serve", cwd=tmp_path, env=env)
        assert "wfserve is serving" in started.stdout
        assert "error at start-up" not in started.stderr, started.stderr
        key = json.loads((tmp_path / "key_file.json").read_text())["inference"]["key"]
        answer = httpx.post(f"http://127.0.0.1:{ports['INFERENCE']}/wfpredict/example",
                            json={"input": [5.1, 3.5, 1.4, 0.2]}, timeout=60,
                            headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] in answer.json()["probabilities"]
    finally:
        run(wfserve, "stop", cwd=tmp_path, env=env)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".wfserve", "key_file.json"]


def test_a_start_up_registration_that_fails_is_said_on_the_command_line(venv: Path,
                                                                        tmp_path: Path):
    ports = {s: unused_port() for s in ("INFERENCE", "MANAGEMENT", "METRICS")}
    env = {**clean_env(), **{f"WFSERVE_{s}_ADDRESS": f"http://127.0.0.1:{p}"
                             for s, p in ports.items()}}
    wfserve = venv / "bin" / "wfserve"
    try:
        started = run(wfserve, "serve", "--no-example", "--workflows", "absent=absent.war",
                      cwd=tmp_path, env=env)
        assert "error at start-up" in started.stderr
        assert "absent.war" in started.stderr
    finally:
        run(wfserve, "stop", cwd=tmp_path, env=env)
