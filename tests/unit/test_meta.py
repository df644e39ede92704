"""Layout rules: kernel never imports plugins; importing any module does nothing."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    "wfserve." + ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
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
        assert not any(n in ("plugins", "wfserve.plugins") or n.startswith(
            ("plugins.", "wfserve.plugins.")) for n in names), path


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


def test_no_module_is_imported_under_two_names():
    """Everything is ``wfserve.*``: importing every module (and starting the CLI's imports)
    loads no file twice, and nothing as a top-level ``kernel`` or ``plugins``."""
    code = (
        "import importlib, sys\n"
        f"mods = {MODULES!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        "import wfserve.kernel.cli\n"
        "files = {}\n"
        "for name, mod in list(sys.modules.items()):\n"
        "    f = getattr(mod, '__file__', None)\n"
        f"    if f and f.startswith({str(ROOT)!r}): files.setdefault(f, []).append(name)\n"
        "twice = {f: n for f, n in files.items() if len(n) > 1}\n"
        "assert not twice, twice\n"
        "assert not {'kernel', 'plugins'} & set(sys.modules), 'top-level kernel/plugins'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr


def test_plugin_authors_import_hookimpl_from_wfserve():
    import wfserve
    from wfserve.kernel import hookimpl

    assert wfserve.hookimpl is hookimpl


def test_the_wheel_lists_every_package():
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {"wfserve", "wfserve.conf"} | {
        "wfserve." + ".".join(init.parent.relative_to(ROOT).parts)
        for pkg in ("kernel", "plugins") for init in (ROOT / pkg).rglob("__init__.py")}
    assert set(setuptools["packages"]) == found
