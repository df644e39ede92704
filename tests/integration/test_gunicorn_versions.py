"""The supported gunicorn range, tested at both ends.

``plugins/api/worker.py`` relies on gthread internals, so ``pyproject.toml`` pins the range it
was tested with. The suite itself runs on the newest gunicorn the install resolves; this test
installs the oldest the pin allows into a folder put first on ``PYTHONPATH`` and reruns the
tests that depend on those internals (keep-alive lingering, read bounds, per-address TLS).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OLDEST = "27.0.0"
HTTP_TESTS = ("tests/integration/test_keepalive.py", "tests/integration/test_tls.py",
              "tests/reliability/test_slow_clients.py")

pytestmark = pytest.mark.integration


def test_the_pin_starts_at_the_version_tested_here():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("gunicorn"))
    lower = re.search(r">=\s*([\d.]+)", pin)
    assert lower is not None, pin
    assert OLDEST.startswith(lower.group(1)), f"{pin}: test {lower.group(1)}, not {OLDEST}"


@pytest.mark.timeout(1500)
def test_the_oldest_supported_gunicorn_passes_the_http_tests(tmp_path):
    site = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
         f"gunicorn=={OLDEST}"], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    path = [str(site), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    version = subprocess.run([sys.executable, "-c", "import gunicorn; print(gunicorn.__version__)"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == OLDEST, version.stderr
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *HTTP_TESTS], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1400)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
