"""``wfserve archive``: its archives open through the plugin and match the official ones."""

import json
import zipfile

import pytest

from tests import archives
from wfserve.kernel.cli import build_parser
from wfserve.kernel.errors import UsageError
from wfserve.kernel.plugins import Hooks
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings

MINE = ("wfserve.plugins.archives", "wfserve.plugins.archives.command", "wfserve.plugins.handlers")
NO_AUTOLOAD = {"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"}


@pytest.fixture(scope="module")
def pm():
    return make_plugin_manager(Settings(), builtin=MINE, env=NO_AUTOLOAD)


def wfserve(pm, *argv):
    args = build_parser(pm).parse_args(list(argv))
    return args.func(args, Settings())


def manifest_of(path, kind):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(f"{kind.upper()}-INF/MANIFEST.json")), sorted(zf.namelist())


def shape(manifest):
    """The manifest with the values that differ by tool and time blanked."""
    return {**manifest, "createdOn": "*", "archiverVersion": "*"}


def test_war_matches_the_official_archiver(pm, tmp_path, capsys):
    ours_dir, official_dir = tmp_path / "ours", tmp_path / "official"
    ours_dir.mkdir()
    assert wfserve(pm, "archive", "war", "--name", "seq_wf", "--spec", str(archives.SEQ_SPEC),
                   "--handler", str(archives.WORKFLOW_HANDLER),
                   "--export-path", str(ours_dir)) == 0
    assert capsys.readouterr().out.strip() == str(ours_dir / "seq_wf.war")
    official = archives.build_war(official_dir, "seq_wf", spec_file=archives.SEQ_SPEC)
    ours_manifest, ours_files = manifest_of(ours_dir / "seq_wf.war", "war")
    theirs_manifest, theirs_files = manifest_of(official, "war")
    assert shape(ours_manifest) == shape(theirs_manifest)
    assert ours_files == theirs_files
    archive = Hooks(pm, Settings()).open_archive(ours_dir / "seq_wf.war", tmp_path / "work")
    assert (archive.kind, archive.name, archive.spec_file) == ("war", "seq_wf",
                                                               "seq_workflow.yaml")


def test_mar_matches_the_official_archiver_and_loads(pm, peer_stores, tmp_path, capsys):
    weights = peer_stores.root / "build" / "m1.pt"
    ours_dir = tmp_path / "ours"
    ours_dir.mkdir()
    assert wfserve(pm, "archive", "mar", "--name", "m1", "-v", "1.0", "--handler",
                   str(archives.MODEL_HANDLER), "--serialized-file", str(weights),
                   "--export-path", str(ours_dir)) == 0
    capsys.readouterr()
    ours_manifest, ours_files = manifest_of(ours_dir / "m1.mar", "mar")
    theirs_manifest, theirs_files = manifest_of(peer_stores.model_store / "m1.mar", "mar")
    assert shape(ours_manifest) == shape(theirs_manifest)
    assert ours_files == theirs_files
    archive = Hooks(pm, Settings()).open_archive(ours_dir / "m1.mar", tmp_path / "work")
    assert (archive.name, archive.handler, archive.serialized_file) == (
        "m1", "model_handler.py", "m1.pt")


def test_an_existing_archive_needs_force(pm, tmp_path, capsys):
    args = ["archive", "war", "--name", "w", "--spec", str(archives.SEQ_SPEC), "--handler",
            str(archives.WORKFLOW_HANDLER), "--export-path", str(tmp_path)]
    assert wfserve(pm, *args) == 0
    with pytest.raises(UsageError, match="already exists"):
        wfserve(pm, *args)
    assert wfserve(pm, *args, "-f") == 0


@pytest.mark.parametrize("name", ["bad/name", "bad..name", "nl\n"])
def test_a_name_outside_the_name_rule_is_refused(pm, tmp_path, name):
    """The server's one name rule (kernel/names.py): a separator, '..' or a control
    character is refused; a space is not."""
    with pytest.raises(UsageError, match="special characters"):
        wfserve(pm, "archive", "war", "--name", name, "--spec", str(archives.SEQ_SPEC),
                "--handler", str(archives.WORKFLOW_HANDLER), "--export-path", str(tmp_path))
    assert wfserve(pm, "archive", "war", "--name", "good name", "--spec",
                   str(archives.SEQ_SPEC), "--handler", str(archives.WORKFLOW_HANDLER),
                   "--export-path", str(tmp_path)) == 0
