"""The wfserve command as a user runs it (a subprocess of the installed console script)."""

import shutil
import subprocess
import sys
import textwrap

import pytest

WFSERVE = shutil.which("wfserve") or f"{sys.executable} -m wfserve.kernel.cli"


def run(*args, env=None, timeout=60):
    cmd = [*WFSERVE.split(), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_help():
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "settings", "plugins", "check"):
        assert command in result.stdout


def test_serve_help_lists_settings_and_torchserve_aliases():
    result = run("serve", "--help")
    assert result.returncode == 0
    for flag in ("--inference-address", "--ts-config", "--model-store", "--ncs",
                 "--disable-token-auth", "--enable-model-api"):
        assert flag in result.stdout


def test_settings_reflect_cli_flags():
    result = run("settings", "--job-queue-size", "7")
    assert result.returncode == 0
    assert "job_queue_size = 7" in result.stdout


def test_settings_list_every_torchserve_key_and_hide_secrets(tmp_path):
    config = tmp_path / "config.properties"
    config.write_text("keystore_pass=hunter2\nnumber_of_netty_threads=4\n")
    result = run("settings", "--ts-config", str(config))
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert "keystore_pass = (secret)" in result.stdout
    listed = result.stdout.split("TorchServe 0.12.0 config.properties keys:\n", 1)[1]
    assert "number_of_netty_threads: ignored: a Netty" in listed
    assert "private_key_file: setting private_key_file" in listed
    assert "ts_header_key_sequence_id: ignored:" in listed


def test_bad_setting_is_a_one_line_error_not_a_traceback():
    result = run("settings", "--job-queue-size", "lots")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "job_queue_size" in result.stderr


def test_check_a_good_spec(tmp_path):
    spec = tmp_path / "wf.yaml"
    spec.write_text(textwrap.dedent("""
        models:
          m1: {url: m1.mar}
        dag:
          pre: [m1]
          m1: [post]
    """))
    result = run("check", str(spec))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("pre: function -> m1")


def test_check_shows_map_and_conditional_edges(tmp_path):
    spec = tmp_path / "wf.yaml"
    spec.write_text("models: {}\ndag:\n  a: [b, c]\n  b: [d]\nedges:\n  a -> b: {map: true}\n"
                    "  a -> c: {when: \"label == 'x'\"}\n")
    result = run("check", str(spec))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("a: function -> b [map], c [when label == 'x']")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: {}\ndag:\n  a: [b]\n  b: [a]\n  c: [a]\n", "Not a valid DAG"),
        ("models:\n  batch-size: x\ndag:\n  a: [b]\n", "line 2"),
    ],
)
def test_check_a_bad_spec(tmp_path, text, message):
    spec = tmp_path / "wf.yaml"
    spec.write_text(text)
    result = run("check", str(spec))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
