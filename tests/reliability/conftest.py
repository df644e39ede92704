"""Fixtures of the reliability suite: the stores (peer's, plus diamond and chaos workflows)
and a small real server per test."""

import shutil

import pytest

from tests.helpers import WfserveServer
from tests.reliability.workflows import add_wars


@pytest.fixture(scope="session")
def rel_stores(peer_stores, tmp_path_factory):
    """A folder with ``model_store`` (m1, m2) and ``wf_store`` (seq, par, diamond, chaos)."""
    root = tmp_path_factory.mktemp("reliability")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    add_wars(root / "wf_store")
    return root


def server_args(stores, workdir, *extra):
    return ["--model-store", str(stores / "model_store"), "--workflow-store",
            str(stores / "wf_store"), "--snapshot-dir", str(workdir / "snapshots"), *extra]


@pytest.fixture
def make_server(rel_stores, tmp_path):
    """``make_server(*extra_args)``: a started server in this test's tmp folder, stopped after."""
    started = []

    def make(*extra, snapshot_dir=None):
        args = server_args(rel_stores, tmp_path, *extra)
        if snapshot_dir is not None:
            args[args.index("--snapshot-dir") + 1] = str(snapshot_dir)
        srv = WfserveServer(tmp_path, *args).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
