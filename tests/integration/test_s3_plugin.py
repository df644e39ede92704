"""The example third-party distribution ``examples/wfserve-s3``, installed as a user installs it.

pip installs it (no dependencies: boto3 is in the ``test`` extra) into a folder of its own; the
server finds it only through its ``wfserve`` entry point (that folder on ``PYTHONPATH``,
autoloading on). A real S3-compatible server (moto's server mode) runs on loopback with real
``.war`` and ``.mar`` archives from the official archivers; the server reaches it through the
plugin's own setting ``--s3-endpoint-url`` and test credentials in the AWS variables.
The plugin's fetch is also called in this process (the installed copy) for what HTTP cannot
show: reuse of a kept download, the streamed count and the deadline.
"""

import importlib
import io
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from tests.archives import SEQ_SPEC
from tests.archives import build_war
from tests.archives import expected_seq
from tests.helpers import WfserveServer
from tests.helpers import unused_port
from wfserve.kernel.errors import DownloadFailed
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.errors import WorkflowNotFound
from wfserve.kernel.settings import Settings
from wfserve.plugins.fetchers.common import FetchSettings

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wfserve-s3"
BUCKET, OTHER = "wf-bucket", "other-bucket"
MAX_DOWNLOAD = 1_000_000
SECRET_KEY = "test-secret-key-never-logged"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``wfserve-s3`` installed by pip into ``<tmp>/site`` (built from a copy of the example,
    so no build output lands in the repository)."""
    root = tmp_path_factory.mktemp("s3dist")
    source = root / "src"
    shutil.copytree(EXAMPLE, source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--quiet", "--target",
         str(root / "site"), str(source)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    (entry_points,) = (root / "site").glob("wfserve_s3-*.dist-info/entry_points.txt")
    assert "[wfserve]\ns3 = wfserve_s3" in entry_points.read_text()
    return root / "site"


@pytest.fixture(scope="module")
def aws_files(tmp_path_factory):
    """AWS variables for the test credentials, with no shared config or credentials file of
    the machine in play."""
    root = tmp_path_factory.mktemp("aws")
    return {**AWS, "AWS_CONFIG_FILE": str(root / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(root / "credentials")}


@pytest.fixture(scope="module")
def endpoint():
    """moto's S3-compatible server on an unused loopback port, stopped afterwards."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(endpoint):
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key=SECRET_KEY, config=Config(proxies={}))


@pytest.fixture(scope="module")
def objects(endpoint, peer_stores, tmp_path_factory):
    """The buckets: ``wf-bucket`` holds ``workflows/s3wf.war`` (seq_wf with both models at
    ``s3://wf-bucket/models/``), ``models/m1.mar``, ``models/m2.mar``,
    ``workflows/lost_model.war`` (its m2 is ``models/nope.mar``, absent) and ``big.war``
    (one byte over the limit); ``other-bucket`` holds ``s3wf.war`` too (no rule allows it)."""
    build = tmp_path_factory.mktemp("s3build")
    models = f"s3://{BUCKET}/models"
    wars = {}
    for name, m2 in (("s3wf", f"{models}/m2.mar"), ("lost_model", f"{models}/nope.mar")):
        spec = build / f"{name}.yaml"
        spec.write_text(SEQ_SPEC.read_text().replace("url: m1.mar", f"url: {models}/m1.mar")
                        .replace("url: m2.mar", f"url: {m2}"))
        wars[name] = build_war(build / "wars", name, spec_file=spec)
    client = s3_client(endpoint)
    for bucket in (BUCKET, OTHER):
        client.create_bucket(Bucket=bucket)
    for key, path in (("workflows/s3wf.war", wars["s3wf"]),
                      ("workflows/lost_model.war", wars["lost_model"]),
                      ("models/m1.mar", peer_stores.model_store / "m1.mar"),
                      ("models/m2.mar", peer_stores.model_store / "m2.mar")):
        client.upload_file(str(path), BUCKET, key)
    client.upload_file(str(wars["s3wf"]), OTHER, "s3wf.war")
    client.put_object(Bucket=BUCKET, Key="big.war", Body=b"\0" * (MAX_DOWNLOAD + 1))
    return client


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3server")
    for folder in ("model_store", "wf_store"):
        (root / folder).mkdir()
    return root


def s3_server(root, site, aws_files, endpoint):
    """A server whose only URLs are ``s3://wf-bucket/...``, the plugin loaded from ``site``
    through its entry point."""
    python_path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    env = {**aws_files, "PYTHONPATH": python_path, "WFSERVE_DISABLE_PLUGIN_AUTOLOAD": ""}
    return WfserveServer(root, "--model-store", str(root / "model_store"),
                         "--workflow-store", str(root / "wf_store"),
                         "--snapshot-dir", str(root / "snapshots"),
                         "--allowed-urls", f"s3://{BUCKET}/.*",
                         "--max-download-size", str(MAX_DOWNLOAD),
                         "--s3-endpoint-url", endpoint, env=env)


@pytest.fixture(scope="module")
def server(root, site, endpoint, objects, aws_files):
    with s3_server(root, site, aws_files, endpoint) as srv:
        yield srv


@pytest.fixture
def requests_seen(caplog):
    """The requests moto's server logged (werkzeug's access lines) during the test."""
    caplog.set_level(logging.INFO, logger="werkzeug")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "werkzeug"]


def register(server, url):
    return httpx.post(f"{server.management}/workflows", params={"url": url}, timeout=60)


def downloads(root):
    """Everything in the two stores' download folders."""
    return sorted(p.relative_to(root).as_posix()
                  for store in ("model_store", "wf_store")
                  for p in (root / store / ".downloads").glob("**/*"))


def test_an_s3_workflow_registers_answers_and_leaves_nothing_when_unregistered(server, root):
    r = register(server, f"s3://{BUCKET}/workflows/s3wf.war")
    assert r.status_code == 200, r.text + server.log()[-3000:]
    held = downloads(root)
    assert sorted(p.rsplit("/", 1)[-1] for p in held if p.count("/") == 3) == [
        "m1.mar", "m2.mar", "s3wf.war"]  # NOTE: each in its own <uuid>/ folder, any order
    r = httpx.post(f"{server.inference}/wfpredict/s3wf", json={"input": [0.1, 0.2, 0.3, 0.4]},
                   timeout=60)
    assert (r.status_code, r.json()) == (200, expected_seq()), r.text
    assert httpx.delete(f"{server.management}/workflows/s3wf", timeout=60).status_code == 200
    assert downloads(root) == []
    assert SECRET_KEY not in server.log()


def test_a_bucket_allowed_urls_does_not_match_is_refused(server, root, requests_seen):
    url = f"s3://{OTHER}/s3wf.war"  # the object exists
    r = register(server, url)
    assert r.status_code == 404, r.text
    assert r.json()["message"] == f"Given URL {url} does not match any allowed URL(s)"
    assert downloads(root) == []
    assert requests_seen() == []  # S3 was not asked


def test_a_missing_key_is_torchserves_not_found_for_its_kind(server, root):
    url = f"s3://{BUCKET}/workflows/missing.war"
    r = register(server, url)
    assert r.status_code == 404, r.text
    assert r.json()["message"] == f"Workflow not found in workflow store: {url}"
    r = register(server, f"s3://{BUCKET}/workflows/lost_model.war")
    # TorchServe's answer for a node whose model is missing (tests/conformance, step 21)
    assert (r.status_code, r.json()["type"]) == (500, "WorkflowException"), r.text
    assert r.json()["message"] == (
        "Workflow lost_model has failed to register. Failures: [Workflow Node lost_model__m2 "
        f"failed to register. Details: Model not found at: s3://{BUCKET}/models/nope.mar]")
    assert downloads(root) == []  # the war fetched before the model failed is gone too


def test_an_object_over_the_limit_is_413_and_nothing_is_left(server, root, requests_seen):
    url = f"s3://{BUCKET}/big.war"
    r = register(server, url)
    assert r.status_code == 413, r.text
    assert r.json()["type"] == "RequestEntityTooLargeException"
    assert r.json()["message"] == f"{url} is larger than {MAX_DOWNLOAD} bytes"
    assert downloads(root) == []
    seen = requests_seen()
    assert any("HEAD /wf-bucket/big.war" in line for line in seen), seen
    assert not any("GET /wf-bucket/big.war" in line for line in seen), seen  # refused unread
    names = [w["workflowName"] for w in
             httpx.get(f"{server.management}/workflows", timeout=10).json()["workflows"]]
    assert names == []


def test_a_restart_restores_from_the_kept_downloads_without_s3(site, endpoint, objects,
                                                                   aws_files, tmp_path):
    """The snapshot keeps each download's path (``Fetched.keep``); the restarted server hands
    it back as ``reuse`` and the plugin answers with it: S3 is not reachable then."""
    for folder in ("model_store", "wf_store"):
        (tmp_path / folder).mkdir()
    with s3_server(tmp_path, site, aws_files, endpoint) as srv:
        assert register(srv, f"s3://{BUCKET}/workflows/s3wf.war").status_code == 200
    kept = downloads(tmp_path)
    assert len([p for p in kept if p.count("/") == 3]) == 3
    with s3_server(tmp_path, site, aws_files, f"http://127.0.0.1:{unused_port()}") as srv:
        r = httpx.post(f"{srv.inference}/wfpredict/s3wf", json={"input": [0.1, 0.2, 0.3, 0.4]},
                       timeout=60)
        assert (r.status_code, r.json()) == (200, expected_seq()), r.text + srv.log()[-3000:]
        assert downloads(tmp_path) == kept
        assert httpx.delete(f"{srv.management}/workflows/s3wf", timeout=60).status_code == 200
    assert downloads(tmp_path) == []


# --- the installed plugin, called in this process ------------------------------------------


@pytest.fixture
def plugin(site, monkeypatch, aws_files):
    """The installed ``wfserve_s3`` package, with the test credentials in the environment."""
    for name, value in aws_files.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(site))
    module = importlib.import_module("wfserve_s3")
    assert Path(module.__file__).is_relative_to(site)
    return module


def settings_for(plugin, endpoint, **bounds):
    settings = Settings(allowed_urls=[f"s3://{BUCKET}/.*", "s3://Bad_Bucket/.*",
                                      "s3://[^/]*@.*"])
    return (settings.with_section(plugin.S3Settings(s3_endpoint_url=endpoint))
            .with_section(FetchSettings(**bounds)))


def test_only_s3_urls_are_answered_and_bad_ones_are_refused(plugin, endpoint, tmp_path):
    settings = settings_for(plugin, endpoint)
    for url in ("https://example.com/a.war", "file:///tmp/a.war", "a.war"):
        assert plugin.wfserve_fetch(url=url, store=tmp_path, settings=settings, kind="war",
                                    reuse=None) is None
    for url in ("s3://Bad_Bucket/a.war", f"s3://{BUCKET}/", f"s3://{BUCKET}/dir/",
                "s3://key:topsecret@wf-bucket/a.war"):
        with pytest.raises(WorkflowNotFound, match="Invalid S3 URL") as caught:
            plugin.wfserve_fetch(url=url, store=tmp_path, settings=settings, kind="war",
                                 reuse=None)
        assert "topsecret" not in str(caught.value)
    assert not (tmp_path / ".downloads").exists() or not any(
        (tmp_path / ".downloads").iterdir())


def test_a_kept_download_is_reused_while_it_exists(plugin, endpoint, objects, tmp_path):
    url = f"S3://{BUCKET}/models/m1.mar"  # the scheme in any case
    fetched = plugin.wfserve_fetch(url=url, store=tmp_path, settings=settings_for(
        plugin, endpoint), kind="mar", reuse=None)
    assert fetched.path.read_bytes() == objects.get_object(
        Bucket=BUCKET, Key="models/m1.mar")["Body"].read()
    assert fetched.path.stat().st_mode & 0o777 == 0o600
    # nothing listens there: a reuse must not go to the network
    offline = settings_for(plugin, f"http://127.0.0.1:{unused_port()}", download_timeout=5.0)
    again = plugin.wfserve_fetch(url=url, store=tmp_path, settings=offline, kind="mar",
                                 reuse=fetched.keep)
    assert again.path == fetched.path
    again.release()
    assert not fetched.path.parent.exists()
    with pytest.raises(DownloadFailed):  # gone: fetched again, and this endpoint is down
        plugin.wfserve_fetch(url=url, store=tmp_path, settings=offline, kind="mar",
                             reuse=fetched.keep)
    assert list((tmp_path / ".downloads").iterdir()) == []


def test_the_stream_is_counted_and_bounded_in_time(plugin, endpoint, objects, tmp_path):
    fetch = importlib.import_module("wfserve_s3.fetch")
    with pytest.raises(TooLarge, match="larger than 10 bytes"):  # whatever the length said
        fetch.copy(io.BytesIO(b"x" * 11), io.BytesIO(), url="s3://b/k", limit=10,
                   deadline=float("inf"))
    assert fetch.copy(io.BytesIO(b"x" * 10), io.BytesIO(), url="s3://b/k", limit=10,
                      deadline=float("inf")) == 10
    ticks = iter(range(0, 10_000, 10))  # each look at the clock: 10 s later
    with pytest.raises(DownloadFailed) as caught:
        fetch.download(f"s3://{BUCKET}/big.war", tmp_path,
                       settings_for(plugin, endpoint, download_timeout=25.0,
                                    max_download_size=2 * MAX_DOWNLOAD),
                       "war", clock=lambda: next(ticks))
    assert caught.value.fields["reason"] == "timed out"
    assert list((tmp_path / ".downloads").iterdir()) == []  # the partial file went with it
