"""Handlers from real archives: each kind answers with the expected output; modules are isolated."""

import json
import sys
import uuid

import pytest

from tests import archives
from wfserve.kernel.contracts import LoadContext
from wfserve.kernel.contracts import RowMeta
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.plugins import Hooks
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings
from wfserve.kernel.spec import NodeConfig
from wfserve.kernel.spec import NodeSpec
from wfserve.plugins.handlers import HandlerError
from wfserve.plugins.handlers.context import REQUEST_ID_NAMESPACE
from wfserve.plugins.handlers.settings import HandlerSettings

MINE = ("wfserve.plugins.archives", "wfserve.plugins.handlers")
NO_AUTOLOAD = {"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"}
ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]


@pytest.fixture(scope="module")
def hooks():
    return Hooks(make_plugin_manager(Settings(), builtin=MINE, env=NO_AUTOLOAD), Settings())


@pytest.fixture(scope="module")
def mars(tmp_path_factory, peer_stores):
    """One .mar per handler kind, built by torch-model-archiver."""
    out = tmp_path_factory.mktemp("mars")
    build = peer_stores.root / "build"
    eager = archives.save_state_dict("tiny", out)
    return {
        "function": peer_stores.model_store / "m1.mar",
        "function-m2": peer_stores.model_store / "m2.mar",
        "function-named": archives.build_mar(
            out / "named", "m1n", handler=f"{archives.MODEL_HANDLER.with_suffix('')}:handle",
            serialized_file=build / "m1.pt"),
        "tgz": archives.build_mar(out / "tgz", "m1t", handler=archives.MODEL_HANDLER,
                                  serialized_file=build / "m1.pt", archive_format="tgz"),
        "folder": archives.build_mar(out / "dir", "m1d", handler=archives.MODEL_HANDLER,
                                     serialized_file=build / "m1.pt",
                                     archive_format="no-archive"),
        "class": archives.build_mar(out / "cls", "cls", handler=archives.CLASS_HANDLER,
                                    serialized_file=build / "m1.pt"),
        "torchscript": archives.build_mar(out / "ts", "m2b", handler="base_handler",
                                          serialized_file=build / "m2.pt"),
        "eager": archives.build_mar(out / "eager", "tiny", handler="base_handler",
                                    serialized_file=eager, model_file=archives.TINY_MODEL),
    }


def load(hooks, tmp_path, source, node="m1", kind="model", batch_size=2):
    archive = hooks.open_archive(source, tmp_path / f"work-{node}-{source.name}")
    spec = NodeSpec(name=node, kind=kind, config=NodeConfig(batch_size=batch_size))
    context = LoadContext(workflow="wf", model_name=f"wf__{node}", model_dir=archive.root,
                          settings=Settings())
    return hooks.load_handler(spec, archive, context), archive


def meta(n):
    return [RowMeta(request_id=f"r{i}", headers={"x-trace": f"t{i}"}) for i in range(n)]


def body_rows(rows=ROWS):
    return [{"body": json.dumps(r).encode()} for r in rows]


def flat(rows):
    return [v for row in rows for v in row]


def rounded(rows):
    return [[round(v, 6) for v in row] for row in rows]


@pytest.mark.parametrize("kind", ["function", "function-named", "tgz", "folder"])
def test_module_entry_point_answers(hooks, mars, tmp_path, kind):
    handler, _ = load(hooks, tmp_path, mars[kind])
    out = handler(body_rows(), meta(2))
    assert out == [{"output": r} for r in rounded(archives.run_model("m1", ROWS))]


def test_two_models_from_one_handler_file_do_not_share_its_globals(hooks, mars, tmp_path):
    """model_handler.py keeps its model in a module global, as TorchServe handlers do."""
    h1, _ = load(hooks, tmp_path, mars["function"], node="m1")
    h2, _ = load(hooks, tmp_path, mars["function-m2"], node="m2")
    assert h2(body_rows(), meta(2)) == [{"output": r}
                                        for r in rounded(archives.run_model("m2", ROWS))]
    assert h1(body_rows(), meta(2)) == [{"output": r}
                                        for r in rounded(archives.run_model("m1", ROWS))]


def test_handler_class_sees_the_context(hooks, mars, tmp_path):
    handler, archive = load(hooks, tmp_path, mars["class"])
    out = handler(body_rows(), meta(2))
    expected = rounded([[2 * v for v in row] for row in archives.run_model("m1", ROWS)])
    assert flat(o["output"] for o in out) == pytest.approx(flat(expected), abs=1e-5)
    assert [o["request_id"] for o in out] == [str(uuid.uuid5(REQUEST_ID_NAMESPACE, f"r{i}"))
                                               for i in range(2)]
    assert [o["trace"] for o in out] == ["t0", "t1"]
    context = handler.context
    assert context.system_properties["model_dir"] == str(archive.root)
    assert context.system_properties["batch_size"] == 2
    assert context.system_properties["gpu_id"] is None
    assert context.system_properties["server_name"] == "MMS"
    assert context.manifest["model"]["modelName"] == "cls"
    assert context.model_name == "wf__m1"
    assert context.get_all_request_header(1) == {"body": {"content-type": ""}, "x-trace": "t1"}
    context.set_response_status(201, "Created", idx=0)
    assert context.get_response_status(0) == (201, "Created")
    assert context.metrics.add_time("HandlerTime", 1.5, None, "ms") is None


def without_ts(monkeypatch):
    """Import as on a machine without ``wfserve[ts]``: ``ts`` and every ``ts.*`` module an
    earlier test imported are hidden for this test."""
    for name in [m for m in sys.modules if m == "ts" or m.startswith("ts.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "ts", None)


def test_torchscript_with_the_builtin_base_handler(hooks, mars, tmp_path, monkeypatch):
    without_ts(monkeypatch)
    handler, _ = load(hooks, tmp_path, mars["torchscript"], node="m2")
    out = handler(body_rows(), meta(2))
    assert flat(out) == pytest.approx(flat(archives.run_model("m2", ROWS)), abs=1e-6)


def test_eager_model_file_and_state_dict_with_the_builtin_base_handler(
        hooks, mars, tmp_path, monkeypatch):
    without_ts(monkeypatch)
    handler, _ = load(hooks, tmp_path, mars["eager"], node="tiny")
    out = handler(body_rows(), meta(2))
    assert len(out[0]) == 3
    assert flat(out) == pytest.approx(flat(archives.run_model("tiny", ROWS)), abs=1e-6)


def test_function_nodes_from_the_war(hooks, peer_stores, tmp_path):
    pre, archive = load(hooks, tmp_path, peer_stores.seq_war, node="pre", kind="function",
                        batch_size=1)
    assert pre([{"body": b'{"input": [1, 2, 3, 4]}'}], meta(1)) == [{"input": [1, 2, 3, 4]}]
    assert pre.context.manifest is None  # TorchServe gives function nodes no manifest
    assert pre.context.system_properties["model_dir"] == str(archive.root)
    post, _ = load(hooks, tmp_path, peer_stores.seq_war, node="post", kind="function")
    assert post([{"body": b'{"output": [1.5, 2.5]}'}], meta(1)) == [
        {"result": [1.5, 2.5], "sum": 4.0}]


def test_two_workflows_with_the_same_handler_module_name_do_not_collide(
        hooks, peer_stores, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "workflow_handler.py").write_text(
        "def pre(data, context):\n    return None if data is None else ['other'] * len(data)\n")
    war = archives.build_war(tmp_path / "wars", "other_wf", spec_file=archives.SEQ_SPEC,
                             handler=other / "workflow_handler.py")
    theirs, _ = load(hooks, tmp_path, war, node="pre", kind="function")
    ours, _ = load(hooks, tmp_path, peer_stores.seq_war, node="pre", kind="function")
    row = [{"body": b"[1, 2, 3, 4]"}]
    assert theirs(row, meta(1)) == ["other"]
    assert ours(row, meta(1)) == [{"input": [1.0, 2.0, 3.0, 4.0]}]
    assert "workflow_handler" not in sys.modules


def test_a_function_named_in_the_dag_but_missing_from_the_handler(hooks, peer_stores, tmp_path):
    with pytest.raises(HandlerError) as info:
        load(hooks, tmp_path, peer_stores.seq_war, node="missing_fn", kind="function")
    message = info.value.message
    assert "node missing_fn" in message and "workflow_handler.py" in message
    assert "no function 'missing_fn'" in message
    assert info.value.node == "missing_fn"


def test_other_builtin_handlers_name_the_ts_extra(hooks, peer_stores, tmp_path, monkeypatch):
    without_ts(monkeypatch)
    mar = archives.build_mar(tmp_path / "ic", "ic", handler="image_classifier",
                             serialized_file=peer_stores.root / "build" / "m1.pt")
    with pytest.raises(HandlerError, match=r"wfserve\[ts\]"):
        load(hooks, tmp_path, mar)


def test_a_handler_importing_ts_names_the_extra(hooks, peer_stores, tmp_path, monkeypatch):
    without_ts(monkeypatch)
    source = tmp_path / "ts_handler.py"
    source.write_text("from ts.torch_handler.base_handler import BaseHandler\n\n"
                      "class H(BaseHandler):\n    pass\n")
    mar = archives.build_mar(tmp_path / "tsh", "tsh", handler=source,
                             serialized_file=peer_stores.root / "build" / "m1.pt")
    with pytest.raises(HandlerError, match=r"pip install 'wfserve\[ts\]'") as info:
        load(hooks, tmp_path, mar)
    assert info.value.extra == "wfserve[ts]"


def test_a_wrong_number_of_outputs_fails_the_batch(hooks, peer_stores, tmp_path):
    source = tmp_path / "short.py"
    source.write_text("def handle(data, context):\n    return None if data is None else [1]\n")
    mar = archives.build_mar(tmp_path / "short", "short", handler=source)
    handler, _ = load(hooks, tmp_path, mar)
    assert handler(body_rows()[:1], meta(1)) == [1]
    with pytest.raises(WfserveError, match="number of batch response mismatched"):
        handler(body_rows(), meta(2))


def test_limit_max_image_pixels_setting_reaches_the_context(hooks, mars, tmp_path):
    archive = hooks.open_archive(mars["class"], tmp_path / "work")
    spec = NodeSpec(name="m1", kind="model", config=NodeConfig(batch_size=1))
    for value in (True, False):
        load = LoadContext(workflow="wf", model_name="wf__m1", model_dir=archive.root,
                           settings=Settings().with_section(HandlerSettings(value)))
        handler = hooks.load_handler(spec, archive, load)
        assert handler.context.system_properties["limit_max_image_pixels"] is value
