"""The library type-checks clean: ``python -m mypy`` with ``[tool.mypy]`` of pyproject.toml.

mypy cannot follow ``wfserve/__init__.py``'s run-time path (kernel/, plugins/ and conf/ live
at the repository's top level), so the package is laid out as it is installed, with links, in
a temporary folder that is put on ``MYPYPATH``. That folder and mypy's cache are kept between
runs (one per checkout), so a second run only checks what changed.
"""

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ("kernel", "plugins", "wfserve")


def package_links() -> dict[str, Path]:
    """Each entry of the installed ``wfserve`` package -> the file or folder it comes from:
    ``wfserve/``'s own files, and the folders pyproject's ``package-dir`` maps into it."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    links = {p.name: p for p in (ROOT / "wfserve").iterdir() if p.name != "__pycache__"}
    for name, folder in package_dir.items():
        if name.count(".") == 1 and name.startswith("wfserve."):
            links[name.removeprefix("wfserve.")] = ROOT / folder
    return links


def package_tree(base: Path) -> Path:
    """``base/tree/wfserve``, its entries links into this checkout (made or fixed)."""
    package = base / "tree" / "wfserve"
    package.mkdir(parents=True, exist_ok=True)
    links = package_links()
    for stale in package.iterdir():
        if stale.name not in links or not stale.is_symlink() or (
                stale.readlink() != links[stale.name]):
            stale.unlink()
    for name, target in links.items():
        if not (package / name).is_symlink():
            (package / name).symlink_to(target)
    return package


def test_package_links_cover_the_library():
    assert {"__init__.py", "kernel", "plugins"} <= set(package_links())


def test_mypy_is_clean():
    base = Path(tempfile.gettempdir()) / (
        "wfserve-mypy-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:12])
    package = package_tree(base)
    env = {**os.environ, "MYPYPATH": str(package.parent)}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(base / "cache"), "--no-color-output", "--no-error-summary"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=280,
    )
    report = result.stdout + result.stderr
    for name, target in package_links().items():  # name the checkout's files, not the links
        report = report.replace(f"{package / name}", str(target.relative_to(ROOT)))
    assert result.returncode == 0, report


def test_every_type_ignore_has_a_code_and_a_reason():
    """``# type: ignore[code]  # why``: mypy checks the code (ignore-without-code) and that the
    ignore is still needed (warn_unused_ignores); the reason is for the reader."""
    pattern = re.compile(r"#\s*type:\s*ignore(?!\[[\w,\- ]+\]\s+#\s*\S)")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for folder in LIBRARY for path in sorted((ROOT / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if pattern.search(line)]
    assert not found, "\n".join(found)
