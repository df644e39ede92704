"""A snapshot folder that cannot be written: under a regular file (ENOTDIR), a read-only
filesystem (EROFS) or a full one (ENOSPC, a tiny tmpfs). Registration still works, each failed
write is logged, predictions are served, no temporary file is left behind, and writing
resumes once the folder is usable again."""

import contextlib
import subprocess

import httpx
import pytest

from tests.reliability.workflows import case
from tests.reliability.workflows import inputs

pytestmark = pytest.mark.integration
FAILED = "snapshot could not be written"


@contextlib.contextmanager
def tmpfs(path, *options):
    """A tiny tmpfs at ``path`` (root may mount one here; say why when it cannot)."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=64k", *options)),
                           "tmpfs", str(path)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


def register(srv, name):
    return httpx.post(f"{srv.management}/workflows", params={"url": "seq_wf.war",
                      "workflow_name": name}, timeout=60)


def check_serving(srv, names):
    for i, name in enumerate(names):
        c = case("seq_wf", inputs(40 + i, 1)[0])
        r = httpx.post(f"{srv.inference}/wfpredict/{name}", content=c.body, timeout=30)
        assert r.status_code == 200 and r.json() == c.expected


def test_snapshot_dir_under_a_regular_file(make_server, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    srv = make_server(snapshot_dir=blocker / "snapshots")
    assert register(srv, "one").status_code == 200
    assert register(srv, "two").status_code == 200
    check_serving(srv, ["one", "two"])
    assert srv.log().count(FAILED) >= 2
    assert "Traceback" not in srv.log()


def test_read_only_snapshot_filesystem(make_server, tmp_path):
    with tmpfs(tmp_path / "ro", "ro") as folder:
        srv = make_server(snapshot_dir=folder)
        assert register(srv, "one").status_code == 200
        check_serving(srv, ["one"])
        assert FAILED in srv.log() and "Read-only file system" in srv.log()
        srv.stop()


def test_full_snapshot_filesystem_then_space_again(make_server, tmp_path):
    with tmpfs(tmp_path / "full") as folder:
        filler = folder / "filler"
        with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
            for _ in range(1000):  # bounded: 64 KiB fill in 4 KiB writes
                fh.write(b"x" * 4096)
        srv = make_server(snapshot_dir=folder)
        assert register(srv, "one").status_code == 200
        check_serving(srv, ["one"])
        assert FAILED in srv.log() and "No space left on device" in srv.log()
        assert sorted(p.name for p in folder.iterdir()) == ["filler"]  # no temp file left
        filler.unlink()
        assert register(srv, "two").status_code == 200
        assert len(list(folder.glob("snapshot-*.json"))) == 1
        check_serving(srv, ["one", "two"])
        srv.stop()
