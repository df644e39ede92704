"""Hostile and broken archives: each gets its specific error and nothing lands outside workdir."""

import bz2
import gzip
import io
import json
import lzma
import stat
import struct
import tarfile
import tracemalloc
import zipfile

import pytest

from wfserve.kernel.errors import BadArchive
from wfserve.kernel.errors import InvalidWorkflow
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.errors import WfserveError
from wfserve.plugins.archives import open_archive
from wfserve.plugins.archives.extract import Limits

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


# --- headers that claim more than they hold (security finding 6) -----------------------------

MiB = 1024 * 1024
#: what one refused hostile archive may cost in Python allocations, at most
PEAK = 50 * MiB
#: the longest error message a hostile archive may produce
SHORT = 5000
COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "tar": bytes}
#: gz/bz2/xz by their usual suffixes; the plain tar has no suffix, so it is sniffed by content
SUFFIX = {"gz": ".tar.gz", "bz2": ".tar.bz2", "xz": ".tar.xz", "tar": ""}


def raw_header(name, typeflag, size):
    """One 512-byte ustar header, written by hand so that its size field can lie."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def pax_record(keyword, value):
    """One ``"%d %s=%s\\n"`` pax record, its length counting itself."""
    body = f" {keyword}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def padded(data):
    return data + b"\0" * (-len(data) % 512)


def refused(call):
    """The error ``call`` raises and the peak of Python allocations while it ran."""
    tracemalloc.start()
    try:
        with pytest.raises((BadArchive, TooLarge)) as info:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return info.value, peak


@pytest.mark.parametrize("typeflag", [b"L", b"K", b"x", b"g"])
@pytest.mark.parametrize("compression", list(COMPRESS))
def test_an_extended_header_claiming_400_mib_is_refused_before_it_is_read(
        place, typeflag, compression):
    """GNU long names/links and pax headers are size-capped before tarfile reads them."""
    data = raw_header(b"././@LongLink", typeflag, 400 * MiB) + b"a" * MiB  # truncated stream
    source = place / "src" / f"bomb{SUFFIX[compression]}"
    source.write_bytes(COMPRESS[compression](data))
    assert source.stat().st_size < 2 * MiB
    error, peak = refused(lambda: open_archive(source, place / "work"))
    assert isinstance(error, TooLarge), error
    assert "extended header" in error.message
    assert len(error.message) < SHORT
    assert peak < PEAK, f"{peak / MiB:.0f} MiB allocated for a {compression} long-name bomb"


def test_a_chain_of_extended_headers_is_refused(place):
    """Many small long-name headers before one member are refused, not followed."""
    chain = b"".join(raw_header(b"././@LongLink", b"L", 512) + b"n" * 511 + b"\0"
                     for _ in range(50))
    data = chain + raw_header(b"f.txt", b"0", 0) + b"\0" * 1024
    source = place / "src" / "chain.tar.gz"
    source.write_bytes(gzip.compress(data))
    with pytest.raises(BadArchive, match="extended headers in a row"):
        open_archive(source, place / "work")


def test_a_gnu_sparse_map_bomb_is_refused(place):
    """A pax GNU.sparse 1.0 map is read from the data by tarfile; sparse entries are refused."""
    pax = pax_record("GNU.sparse.major", "1") + pax_record("GNU.sparse.minor", "0")
    data = (raw_header(b"././@PaxHeader", b"x", len(pax)) + padded(pax)
            + raw_header(b"f.bin", b"0", 40 * MiB) + b"10000000\n" + b"1\n" * (10 * MiB))
    source = place / "src" / "sparse.tar.gz"
    source.write_bytes(gzip.compress(data))
    error, peak = refused(lambda: open_archive(source, place / "work"))
    assert "sparse" in error.message
    assert peak < PEAK, f"{peak / MiB:.0f} MiB allocated for a sparse-map bomb"


def test_a_negative_size_set_by_a_pax_header_is_refused(place):
    """A pax ``size`` may be negative; tarfile would then read the headers before again."""
    pax = pax_record("size", "-2048")
    data = (raw_header(b"a.txt", b"0", 3) + padded(b"abc")
            + raw_header(b"././@PaxHeader", b"x", len(pax)) + padded(pax)
            + raw_header(b"f.bin", b"0", 0) + b"\0" * 1024)
    source = place / "src" / "negative.tar.gz"
    source.write_bytes(gzip.compress(data))
    with pytest.raises(BadArchive, match="'f.bin' has a negative size"):
        open_archive(source, place / "work")


@pytest.mark.parametrize("compression", ["bz2", "xz", "tar"])
def test_tars_are_sniffed_without_tarfile(tmp_path, compression):
    """bz2, xz and plain tars are still recognised by content (no suffix to go by)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, text in GOOD.items():
            member = tarfile.TarInfo(name)
            member.size = len(text.encode())
            tf.addfile(member, io.BytesIO(text.encode()))
    source = tmp_path / f"wf{SUFFIX[compression]}"
    source.write_bytes(COMPRESS[compression](raw.getvalue()))
    assert open_archive(source, tmp_path / "work").name == "wf"


@pytest.mark.parametrize("writer", [write_zip, write_tar], ids=["zip", "tar"])
def test_a_huge_unsafe_entry_name_gives_a_short_message(place, writer):
    """An entry name goes into the message clipped, never whole."""
    suffix = ".war" if writer is write_zip else ".tar.gz"
    name = "/" + "a" * 60_000
    source = writer(place / "src" / f"wf{suffix}", {**GOOD, name: "x"})
    with pytest.raises(BadArchive, match="absolute path") as info:
        open_archive(source, place / "work")
    assert len(info.value.message) < SHORT
    assert len(repr(info.value)) < 3 * SHORT


def test_no_error_message_embeds_megabytes():
    """WfserveError clips its message and its long text fields; short ones are kept as given."""
    for kind in (WfserveError, BadArchive, TooLarge):
        error = kind("x" * 10 * MiB, path="p" * MiB, reason="short", limit=3)
        assert len(error.message) < SHORT and len(str(error)) < SHORT
        assert len(error.path) < SHORT and len(repr(error)) < 3 * SHORT
        assert error.reason == "short" and error.limit == 3
    assert BadArchive("as given").message == "as given"


def with_zip64_eocd(data, entries):
    """``data`` (a zip) with a zip64 end record claiming ``entries`` entries, as zipfile reads."""
    sig, disk, cd_disk, _, _, cd_size, cd_offset, comment = struct.unpack(
        "<4s4H2LH", data[-22:])
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0,
                         entries, entries, cd_size, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, cd_offset + cd_size, 1)
    end = struct.pack("<4s4H2LH", sig, disk, cd_disk, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                      0xFFFFFFFF, comment)
    return data[:-22] + record + locator + end


def test_a_zip64_end_record_claiming_ten_million_entries_is_refused(place):
    """The end-of-central-directory record is checked before ZipFile parses anything."""
    good = write_zip(place / "src" / "good.war", GOOD).read_bytes()
    source = place / "src" / "wf.war"
    source.write_bytes(with_zip64_eocd(good, 10_000_000))
    with zipfile.ZipFile(source) as zf:  # zipfile itself reads it: the claim alone is the lie
        assert len(zf.infolist()) == len(GOOD)
    error, peak = refused(lambda: open_archive(source, place / "work"))
    assert isinstance(error, TooLarge) and "entries" in error.message
    assert peak < PEAK


def test_an_end_record_claiming_too_many_entries_is_refused(place):
    good = bytearray(write_zip(place / "src" / "good.war", GOOD).read_bytes())
    good[-14:-10] = struct.pack("<2H", 65535, 65535)
    source = place / "src" / "wf.war"
    source.write_bytes(good)
    with pytest.raises(TooLarge, match="more than 10 entries"):
        open_archive(source, place / "work", Limits(max_entries=10))


def test_a_central_directory_past_the_file_is_refused(place):
    good = bytearray(write_zip(place / "src" / "good.war", GOOD).read_bytes())
    good[-10:-6] = struct.pack("<L", 50 * MiB)
    source = place / "src" / "wf.war"
    source.write_bytes(good)
    with pytest.raises(BadArchive, match="central directory"):
        open_archive(source, place / "work")


@pytest.mark.parametrize(("claimed", "message"), [
    (1, "central directory larger than its entries"), (1000, "more than 1000 entries")])
def test_a_central_directory_of_tiny_records_is_refused_before_zipfile_reads_it(
        place, claimed, message):
    """An end record may claim few entries over a directory of 300 000 records.

    zipfile ignores the claim and builds a ZipInfo per record; here a directory its claim
    cannot fill is refused, and one it can is walked, counting records in constant memory.
    """
    count = 300_000
    record = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0,
                         0, 0, 0, 0, 0, 0, 0)
    directory = record * count
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, claimed, claimed, len(directory), 0, 0)
    source = place / "src" / "tiny.war"
    source.write_bytes(directory + end)
    error, peak = refused(lambda: open_archive(source, place / "work", Limits(max_entries=1000)))
    assert message in error.message
    assert peak < PEAK, f"{peak / MiB:.0f} MiB allocated for {count} directory records"
