"""Snapshot files: atomic writes, newest first, pruning, full validation before use."""

import json

import pytest

from wfserve.plugins.snapshot.store import CorruptSnapshot
from wfserve.plugins.snapshot.store import Entry
from wfserve.plugins.snapshot.store import files
from wfserve.plugins.snapshot.store import load
from wfserve.plugins.snapshot.store import write

ENTRIES = [
    Entry("wf", "1.0", "wf.war", False),
    Entry("wf", "2.0", "file:///x/wf2.war", True, {"m1": {"min_workers": 2, "batch_size": 4}},
          {"": ("file:///x/wf2.war", "/store/.downloads/u/wf2.war")}),
]


def test_round_trip_newest_first_and_pruned(tmp_path):
    stamps = []
    for _ in range(4):
        _, stamp = write(tmp_path, ENTRIES, keep=3, after=stamps[-1] if stamps else 0)
        stamps.append(stamp)
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    found = files(tmp_path)
    assert [p.name for p in found] == [f"snapshot-{s:020d}.json" for s in reversed(stamps[1:])]
    assert load(found[0]) == ENTRIES
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_a_later_stamp_even_when_the_clock_goes_back(tmp_path):
    _, stamp = write(tmp_path, [], keep=5, after=10**19)
    assert stamp == 10**19 + 1


def test_a_failed_write_leaves_neither_snapshot_nor_temporary_file(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("wfserve.plugins.snapshot.store.os.fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write(tmp_path, ENTRIES, keep=5)
    assert list(tmp_path.iterdir()) == []


def body(workflows):
    return {"format": "wfserve-snapshot", "version": 1, "created": 0, "workflows": workflows}


GOOD = {"name": "wf", "version": "1.0", "url": "wf.war", "default": True}


@pytest.mark.parametrize(("content", "reason"), [
    ("{not json", "cannot be read as JSON"),
    (json.dumps([1]), "not a wfserve snapshot"),
    (json.dumps({**body([]), "version": 2}), "unknown snapshot version"),
    (json.dumps({**body([]), "workflows": {}}), "'workflows' is not a list"),
    (json.dumps(body([{**GOOD, "name": "../x"}])), "name is missing or invalid"),
    (json.dumps(body([{**GOOD, "url": ""}])), "url is missing or invalid"),
    (json.dumps(body([{**GOOD, "default": "yes"}])), "default is not a boolean"),
    (json.dumps(body([{**GOOD, "scale": {"m1": {"min_workers": "2"}}}])), "scale is invalid"),
    (json.dumps(body([{**GOOD, "scale": {"m1": {"workers": 2}}}])), "scale is invalid"),
    (json.dumps(body([{**GOOD, "fetched": {"": ["only-url"]}}])), "fetched is invalid"),
    (json.dumps(body([GOOD, GOOD])), "appears twice"),
    (json.dumps(body([GOOD, {**GOOD, "version": "2.0"}])), "has 2 default versions"),
    (json.dumps(body([{**GOOD, "default": False}])), "has 0 default versions"),
])
def test_corrupt_snapshots_are_refused_whole(tmp_path, content, reason):
    path = tmp_path / f"snapshot-{1:020d}.json"
    path.write_text(content)
    with pytest.raises(CorruptSnapshot, match=reason):
        load(path)
