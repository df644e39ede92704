"""Issue 21's deadline budget: the spec's ``deadline-ms``, the request's
``X-Request-Timeout-Ms``, attempts bounded by what is left, late inputs dropped unrun."""

from __future__ import annotations

import pytest

from wfserve.kernel.errors import SpecError
from wfserve.kernel.spec import parse_spec

SPEC = "models: {}\ndag:\n  pre: [post]\n"


def test_a_spec_without_deadline_ms_has_none():
    assert parse_spec(SPEC).deadline_ms is None


def test_deadline_ms_is_kept_on_the_spec():
    assert parse_spec("deadline-ms: 300\n" + SPEC).deadline_ms == 300


@pytest.mark.parametrize("value", ["0", "-5", "'300'", "1.5", "true", "null", "[1]"])
def test_deadline_ms_must_be_a_positive_integer(value):
    with pytest.raises(SpecError) as info:
        parse_spec(f"deadline-ms: {value}\n" + SPEC)
    assert info.value.key == "deadline-ms"
    assert info.value.line == 1
    assert "positive integer" in info.value.message


def _check(tmp_path, text):
    import os
    import subprocess
    import sys

    spec = tmp_path / "wf.yaml"
    spec.write_text(text)
    return subprocess.run([sys.executable, "-m", "wfserve.kernel.cli", "check", str(spec)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))


def test_check_prints_the_deadline(tmp_path):
    result = _check(tmp_path, "deadline-ms: 300\n" + SPEC)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "deadline-ms: 300"


def test_check_refuses_a_bad_deadline(tmp_path):
    result = _check(tmp_path, "deadline-ms: soon\n" + SPEC)
    assert result.returncode == 1
    assert "line 1: 'deadline-ms' must be a positive integer" in result.stderr
    assert "Traceback" not in result.stderr
