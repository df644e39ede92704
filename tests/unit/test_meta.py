"""Layout rules: kernel never imports plugins; importing any module does nothing."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for pkg in ("kernel", "plugins")
    for p in (ROOT / pkg).rglob("*.py")
)


@pytest.mark.parametrize("path", sorted((ROOT / "kernel").rglob("*.py")), ids=lambda p: p.name)
def test_kernel_never_imports_plugins(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert not any(n == "plugins" or n.startswith("plugins.") for n in names), path


def test_importing_every_module_has_no_side_effects():
    """Under -W error: no warning, no thread, no logging handler, no plugin loaded."""
    code = (
        "import importlib, logging, threading, sys\n"
        f"mods = {MODULES!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert not logging.getLogger().handlers\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr


def test_no_print_in_library_code():
    for pkg in ("kernel", "plugins"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    pytest.fail(f"print() in {path.relative_to(ROOT)}:{node.lineno}")
