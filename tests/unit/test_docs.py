"""docs/plugins.md, the plugin authors' guide, keeps up with the hook specifications."""

import ast
import re
from pathlib import Path

import pytest

from wfserve.kernel import hookspecs

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"
HOOKS = sorted(name for name, obj in vars(hookspecs).items()
               if hasattr(obj, f"{hookspecs.PROJECT}_spec"))
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def sections(text: str) -> dict[str, str]:
    """``### `hook` `` heading -> the text up to the next heading."""
    parts = re.split(r"^#{2,3} ", text, flags=re.MULTILINE)
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def test_the_hook_specifications_are_found():
    assert "wfserve_fetch" in HOOKS and "wfserve_workflow_event" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_with_an_example(hook):
    section = sections(GUIDE.read_text()).get(f"`{hook}`")
    assert section is not None, f"docs/plugins.md has no section '### `{hook}`'"
    assert PYTHON_BLOCK.search(section), f"the section on {hook} has no python example"


def test_every_python_block_compiles():
    text = GUIDE.read_text()
    blocks = [(text[:m.start()].count("\n") + 2, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]
    assert blocks
    for line, code in blocks:
        try:
            ast.parse(code)
        except SyntaxError as exc:
            pytest.fail(f"docs/plugins.md, the block at line {line}: {exc}")


def test_the_readme_links_the_guide():
    assert "(docs/plugins.md)" in (ROOT / "README.md").read_text()
