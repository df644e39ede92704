"""Real archives from the official archivers open through the archives plugin, in every format."""

import io
import json
import tarfile
import zipfile

import pytest

from tests import archives
from wfserve.kernel.errors import UnknownArchiveFormat
from wfserve.kernel.plugins import Hooks
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings

MINE = ("wfserve.plugins.archives", "wfserve.plugins.fetchers.local",
        "wfserve.plugins.fetchers.http", "wfserve.plugins.handlers")
NO_AUTOLOAD = {"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"}


@pytest.fixture(scope="module")
def hooks():
    return Hooks(make_plugin_manager(Settings(), builtin=MINE, env=NO_AUTOLOAD), Settings())


@pytest.fixture(scope="module")
def m1_formats(tmp_path_factory, peer_stores):
    """m1 as the model archiver writes it in each --archive-format."""
    export = tmp_path_factory.mktemp("formats")
    weights = peer_stores.root / "build" / "m1.pt"
    return {
        fmt: archives.build_mar(export / fmt, "m1", handler=archives.MODEL_HANDLER,
                                serialized_file=weights, archive_format=fmt)
        for fmt in ("default", "zip-store", "tgz", "no-archive")
    }


@pytest.mark.parametrize("fmt", ["default", "zip-store", "tgz", "no-archive"])
def test_every_model_archive_format_opens(hooks, m1_formats, fmt, tmp_path):
    source = m1_formats[fmt]
    archive = hooks.open_archive(source, tmp_path / "work")
    assert archive.kind == "mar"
    assert archive.name == "m1"
    assert archive.handler == "model_handler.py"
    assert archive.serialized_file == "m1.pt"
    assert archive.version == "1.0"
    assert archive.manifest["runtime"] == "python"
    assert archive.path("m1.pt").is_file()
    assert archive.path("MAR-INF/MANIFEST.json").is_file()
    assert archive.root.is_relative_to(tmp_path / "work")  # extracted or copied, never in place


def test_workflow_archive_opens(hooks, peer_stores, tmp_path):
    archive = hooks.open_archive(peer_stores.seq_war, tmp_path)
    assert archive.kind == "war"
    assert archive.name == "seq_wf"
    assert archive.spec_file == "seq_workflow.yaml"
    assert archive.handler == "workflow_handler.py"
    assert "dag:" in archive.path(archive.spec_file).read_text()
    assert archive.manifest["archiverVersion"] == "0.2.15"


def test_a_workflow_as_tar_gz_opens_with_its_top_folder_stripped(hooks, peer_stores, tmp_path):
    """TorchServe treats a workflow file not named .war as tar.gz under one top folder."""
    tgz = tmp_path / "seq_wf.tar.gz"
    with zipfile.ZipFile(peer_stores.seq_war) as zf, tarfile.open(tgz, "w:gz") as tf:
        for info in zf.infolist():
            data = zf.read(info)
            member = tarfile.TarInfo(f"seq_wf/{info.filename}")
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
    archive = hooks.open_archive(tgz, tmp_path / "work")
    assert (archive.kind, archive.name) == ("war", "seq_wf")
    assert archive.root == tmp_path / "work" / "seq_wf"


def test_extra_files_requirements_and_config_are_found(hooks, peer_stores, tmp_path):
    extra = tmp_path / "extra"
    (extra / "sub").mkdir(parents=True)
    (extra / "labels.json").write_text('{"0": "cat"}')
    (extra / "sub" / "vocab.txt").write_text("a\nb\n")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "model-config.yaml").write_text("batchSize: 4\nfoo: bar\n")
    mar = archives.build_mar(
        tmp_path / "out", "withextras", handler=archives.MODEL_HANDLER,
        serialized_file=peer_stores.root / "build" / "m1.pt", extra_files=[extra],
        requirements_file=tmp_path / "requirements.txt",
        config_file=tmp_path / "model-config.yaml",
    )
    archive = hooks.open_archive(mar, tmp_path / "work")
    assert archive.requirements_file == "requirements.txt"
    assert archive.config_file == "model-config.yaml"
    assert json.loads(archive.path("labels.json").read_text()) == {"0": "cat"}
    assert archive.path("sub/vocab.txt").read_text() == "a\nb\n"


def test_a_file_that_is_no_archive_is_left_to_other_plugins(hooks, tmp_path):
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    with pytest.raises(UnknownArchiveFormat, match="notes.txt"):
        hooks.open_archive(stray, tmp_path / "work")


def test_a_folder_without_manifest_is_not_an_archive(hooks, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownArchiveFormat):
        hooks.open_archive(tmp_path / "empty", tmp_path / "work")
