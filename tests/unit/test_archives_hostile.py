"""Hostile and broken archives: each gets its specific error and nothing lands outside workdir."""

import io
import json
import stat
import tarfile
import zipfile

import pytest

from kernel.errors import BadArchive
from kernel.errors import InvalidWorkflow
from kernel.errors import TooLarge
from plugins.archives import open_archive
from plugins.archives.extract import Limits

MANIFEST = {"createdOn": "01/01/2024 00:00:00", "archiverVersion": "0.2.15",
            "workflow": {"workflowName": "wf", "specFile": "spec.yaml", "handler": "h.py"}}
GOOD = {"WAR-INF/MANIFEST.json": json.dumps(MANIFEST), "spec.yaml": "models: {}\ndag: {}\n",
        "h.py": "def pre(data, context):\n    return data\n"}


def tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def write_zip(path, entries, *, symlinks=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def write_tar(path, entries, *, symlinks=()):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in entries.items():
            member = tarfile.TarInfo(name)
            member.size = len(data.encode())
            tf.addfile(member, io.BytesIO(data.encode()))
        for name, target in symlinks:
            member = tarfile.TarInfo(name)
            member.type = tarfile.SYMTYPE
            member.linkname = target
            tf.addfile(member)
    return path


@pytest.fixture
def place(tmp_path):
    """A source folder and a work folder; on exit, checks nothing was written elsewhere."""
    (tmp_path / "src").mkdir()
    (tmp_path / "work").mkdir()
    yield tmp_path
    assert tree(tmp_path / "work") == [], "a failed open must leave workdir empty"
    outside = [p for p in tree(tmp_path) if not p.startswith(("src", "work"))]
    assert outside == [], f"written outside the work folder: {outside}"


def test_the_good_archive_opens(tmp_path):
    """The baseline the hostile cases are variations of."""
    archive = open_archive(write_zip(tmp_path / "wf.war", GOOD), tmp_path / "work")
    assert archive.name == "wf"


@pytest.mark.parametrize("writer", [write_zip, write_tar], ids=["zip", "tar"])
def test_zip_slip_is_refused(place, writer):
    suffix = ".war" if writer is write_zip else ".tar.gz"
    source = writer(place / "src" / f"wf{suffix}", {**GOOD, "../../evil.py": "x = 1\n"})
    with pytest.raises(BadArchive, match=r"'\.\.'") as info:
        open_archive(source, place / "work")
    assert info.value.path == str(source)
    assert not (place / "evil.py").exists() and not (place.parent / "evil.py").exists()


@pytest.mark.parametrize("writer", [write_zip, write_tar], ids=["zip", "tar"])
def test_absolute_paths_are_refused(place, writer):
    suffix = ".war" if writer is write_zip else ".tar.gz"
    evil = place / "evil_abs.txt"
    source = writer(place / "src" / f"wf{suffix}", {**GOOD, str(evil): "owned"})
    with pytest.raises(BadArchive, match="absolute path"):
        open_archive(source, place / "work")
    assert not evil.exists()


@pytest.mark.parametrize("writer", [write_zip, write_tar], ids=["zip", "tar"])
def test_symlink_entries_are_refused(place, writer):
    suffix = ".war" if writer is write_zip else ".tar.gz"
    source = writer(place / "src" / f"wf{suffix}", GOOD, symlinks=[("link", "/etc/passwd")])
    with pytest.raises(BadArchive, match="symlink"):
        open_archive(source, place / "work")


def test_a_symlink_in_an_unpacked_folder_is_refused(place):
    folder = place / "src" / "m"
    (folder / "MAR-INF").mkdir(parents=True)
    (folder / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(
        {"runtime": "python", "model": {"modelName": "m", "handler": "h.py"}}))
    (folder / "secret").symlink_to("/etc/passwd")
    with pytest.raises(BadArchive, match="symlink"):
        open_archive(folder, place / "work")


def test_a_zip_bomb_past_the_size_cap_is_refused(place):
    source = write_zip(place / "src" / "bomb.war", {**GOOD, "zeros.bin": "\0" * 5_000_000})
    assert source.stat().st_size < 50_000  # highly compressed
    with pytest.raises(TooLarge, match="more than 1000000 bytes") as info:
        open_archive(source, place / "work", Limits(max_size=1_000_000))
    assert info.value.reason == "uncompressed size over the limit"


def test_a_tar_bomb_past_the_size_cap_is_refused(place):
    source = write_tar(place / "src" / "bomb.tar.gz", {**GOOD, "zeros.bin": "\0" * 3_000_000})
    with pytest.raises(TooLarge):
        open_archive(source, place / "work", Limits(max_size=1_000_000))


def test_too_many_entries_are_refused(place):
    entries = {**GOOD, **{f"f{i}.txt": "x" for i in range(20)}}
    source = write_zip(place / "src" / "many.war", entries)
    with pytest.raises(TooLarge, match="more than 10 entries"):
        open_archive(source, place / "work", Limits(max_entries=10))


def test_a_truncated_zip_is_a_bad_archive(place, peer_stores):
    data = peer_stores.seq_war.read_bytes()
    source = place / "src" / "cut.war"
    source.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadArchive, match="cut.war: not a zip file"):
        open_archive(source, place / "work")


def test_a_truncated_tar_gz_is_a_bad_archive(place):
    full = write_tar(place / "src" / "full.tar.gz", {**GOOD, "big.bin": "x" * 100_000})
    source = place / "src" / "cut.tar.gz"
    source.write_bytes(full.read_bytes()[:300])
    with pytest.raises(BadArchive, match="cut.tar.gz"):
        open_archive(source, place / "work")


def test_an_empty_file_is_a_bad_archive(place):
    source = place / "src" / "empty.war"
    source.write_bytes(b"")
    with pytest.raises(BadArchive, match="empty.war: empty file"):
        open_archive(source, place / "work")


def test_a_text_file_named_war_is_not_a_zip(place):
    source = place / "src" / "notazip.war"
    source.write_text("not a zip\n")
    with pytest.raises(BadArchive, match="notazip.war: not a zip file"):
        open_archive(source, place / "work")


def test_a_manifest_that_is_not_json(place):
    source = write_zip(place / "src" / "wf.war", {**GOOD, "WAR-INF/MANIFEST.json": "{nope"})
    with pytest.raises(BadArchive, match="not valid JSON"):
        open_archive(source, place / "work")


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.pop("workflow"), "Missing Workflow entry in manifest file."),
    (lambda m: m["workflow"].pop("workflowName"), "Workflow name is not defined."),
    (lambda m: m.pop("archiverVersion"), "Workflow archive version is not defined."),
    (lambda m: m.pop("createdOn"), "Workflow archive createdOn is not defined."),
])
def test_workflow_manifest_validation_uses_torchserve_messages(place, change, message):
    manifest = json.loads(json.dumps(MANIFEST))
    change(manifest)
    source = write_zip(place / "src" / "wf.war",
                       {**GOOD, "WAR-INF/MANIFEST.json": json.dumps(manifest)})
    with pytest.raises(InvalidWorkflow) as info:
        open_archive(source, place / "work")
    assert info.value.message == message


def test_a_war_without_its_manifest(place):
    entries = {k: v for k, v in GOOD.items() if not k.startswith("WAR-INF")}
    source = write_zip(place / "src" / "wf.war", entries)
    with pytest.raises(BadArchive, match=r"no WAR-INF/MANIFEST.json"):
        open_archive(source, place / "work")


def test_a_model_manifest_in_a_war_is_the_wrong_manifest(place):
    entries = {"MAR-INF/MANIFEST.json": json.dumps(
        {"runtime": "python", "model": {"modelName": "m", "handler": "h.py"}}), "h.py": ""}
    source = write_zip(place / "src" / "wf.war", entries)
    with pytest.raises(BadArchive, match=r"no WAR-INF/MANIFEST.json"):
        open_archive(source, place / "work")


def test_a_manifest_naming_a_path_outside_the_archive(place):
    manifest = json.loads(json.dumps(MANIFEST))
    manifest["workflow"]["handler"] = "../../etc/h.py"
    source = write_zip(place / "src" / "wf.war",
                       {**GOOD, "WAR-INF/MANIFEST.json": json.dumps(manifest)})
    with pytest.raises(BadArchive, match="unsafe path"):
        open_archive(source, place / "work")


def test_a_missing_spec_file(place):
    entries = {k: v for k, v in GOOD.items() if k != "spec.yaml"}
    source = write_zip(place / "src" / "wf.war", entries)
    with pytest.raises(BadArchive, match="spec file 'spec.yaml' is not in the archive"):
        open_archive(source, place / "work")


def test_a_model_manifest_without_a_name(place):
    entries = {"MAR-INF/MANIFEST.json": json.dumps({"runtime": "python", "model": {}})}
    source = write_zip(place / "src" / "m.mar", entries)
    with pytest.raises(BadArchive, match="Model name is not defined."):
        open_archive(source, place / "work")
