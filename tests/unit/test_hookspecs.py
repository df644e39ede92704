"""Meta-tests that keep the plugin surface honest (STYLE conventions 2, 4, 19)."""

import inspect
import re

import pytest

from wfserve.kernel import hookspecs
from wfserve.kernel.plugins import Hooks

SPECS = [
    (name, fn)
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("wfserve_")
]
FACADE = {
    "wfserve_fetch": "fetch",
    "wfserve_open_archive": "open_archive",
    "wfserve_load_handler": "load_handler",
    "wfserve_make_batcher": "make_batcher",
    "wfserve_make_executor": "make_executor",
    "wfserve_handler_ran": "handler_ran",
    "wfserve_serializer": "serializer",
    "wfserve_add_routes": "add_routes",
    "wfserve_middleware": "middleware",
    "wfserve_serve": "serve",
    "wfserve_settings": "settings_sections",
    "wfserve_spec_sections": "spec_sections",
    "wfserve_add_commands": "add_commands",
    "wfserve_registration_store": "registration_store",
    "wfserve_preload": "preload",
    "wfserve_process_exited": "process_exited",
    "wfserve_startup": "startup",
    "wfserve_restore": "restore",
    "wfserve_register_configured": "register_configured",
    "wfserve_register_defaults": "register_defaults",
    "wfserve_ready": "ready",
    "wfserve_shutdown": "shutdown",
    "wfserve_workflow_event": "workflow_event",
}
DESIGN_TABLE = {
    "wfserve_fetch", "wfserve_open_archive", "wfserve_load_handler", "wfserve_make_batcher",
    "wfserve_make_executor", "wfserve_serializer", "wfserve_add_routes", "wfserve_startup",
    "wfserve_shutdown", "wfserve_workflow_event",
}


def test_every_hook_of_the_design_table_is_specified():
    assert {name for name, _ in SPECS} >= DESIGN_TABLE


@pytest.mark.parametrize(("name", "fn"), SPECS, ids=[n for n, _ in SPECS])
def test_hookspec_docstring_is_a_contract(name, fn):
    doc = inspect.getdoc(fn)
    assert doc, f"{name} has no docstring"
    for arg in inspect.signature(fn).parameters:
        assert re.search(rf":param {arg}:", doc), f"{name}: argument {arg} is not documented"
    assert ":returns:" in doc
    assert "Called" in doc, f"{name}: say which thread calls it"
    firstresult = fn.wfserve_spec["firstresult"]
    flat = " ".join(doc.split())
    assert ("First non-None result wins" in flat) == firstresult
    if firstresult:
        assert "None" in doc.split(":returns:")[1]


@pytest.mark.parametrize(("name", "fn"), SPECS, ids=[n for n, _ in SPECS])
def test_every_hook_has_a_typed_facade_method(name, fn):
    method = getattr(Hooks, FACADE[name])
    source = inspect.getsource(method)
    assert f"hook.{name}(" in source
    spec_args = set(inspect.signature(fn).parameters)
    facade_args = set(inspect.signature(method).parameters) - {"self"}
    assert facade_args <= spec_args


def test_facade_covers_exactly_the_specs():
    assert set(FACADE) == {name for name, _ in SPECS}
