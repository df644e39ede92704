"""Fetchers: the stores (TorchServe's rules and messages), file://, and http(s) against a real
local HTTP server on 127.0.0.1 (allow-list hit and miss, oversize, 404, timeout)."""

import http.server
import time

import pytest

from tests.local_http import FETCHERS as MINE
from tests.local_http import NO_AUTOLOAD
from tests.local_http import fetch_hooks
from tests.local_http import local_server
from tests.local_http import store_folder
from wfserve.kernel.errors import DownloadFailed
from wfserve.kernel.errors import ModelNotFound
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.errors import UnsupportedURL
from wfserve.kernel.errors import WorkflowNotFound
from wfserve.kernel.plugins import Hooks
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings
from wfserve.plugins.fetchers.http import with_progress

PAYLOAD = b"PK-not-really-a-war" * 100


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            if self.path == "/wf.war":
                self._send(PAYLOAD)
            elif self.path == "/big.war":
                self._send(b"x" * 5000)
            elif self.path == "/big-nolength.war":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"x" * 5000)
            elif self.path == "/slow.war":
                time.sleep(1.0)
                self._send(PAYLOAD)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    with local_server(Handler) as (base, _):
        yield base


@pytest.fixture
def store(tmp_path):
    return store_folder(tmp_path)


hooks_for = fetch_hooks


def downloads(store):
    return sorted(p.relative_to(store).as_posix() for p in (store / ".downloads").rglob("*.war"))


# --- the stores ---------------------------------------------------------------------------


def test_a_bare_workflow_name_is_looked_up_in_the_store(store):
    (store / "seq_wf.war").write_bytes(b"zip")
    assert hooks_for(store).fetch("seq_wf.war", store, "war").path == store / "seq_wf.war"


def test_a_missing_workflow(store):
    with pytest.raises(WorkflowNotFound) as info:
        hooks_for(store).fetch("nope.war", store, "war")
    assert info.value.message == "Workflow not found in workflow store: nope.war"


def test_a_relative_path_is_refused(store):
    with pytest.raises(WorkflowNotFound) as info:
        hooks_for(store).fetch("../secret.war", store, "war")
    assert info.value.message == "Relative path is not allowed in url: ../secret.war"


def test_a_workflow_folder_is_not_a_workflow(store):
    (store / "dir.war").mkdir()
    with pytest.raises(WorkflowNotFound, match="Workflow not found at: dir.war"):
        hooks_for(store).fetch("dir.war", store, "war")


def test_model_urls_follow_torchserve_rules(store, tmp_path):
    hooks = hooks_for(store)
    (store / "m1.mar").write_bytes(b"zip")
    (store / "m2.tar.gz").write_bytes(b"tgz")
    (store / "m3").mkdir()
    elsewhere = tmp_path / "models" / "m4"
    elsewhere.mkdir(parents=True)
    assert hooks.fetch("m1.mar", store, "mar").path == store / "m1.mar"
    assert hooks.fetch("m2.tar.gz", store, "mar").path == store / "m2.tar.gz"
    assert hooks.fetch("m3", store, "mar").path == store / "m3"
    assert hooks.fetch(str(elsewhere), store, "mar").path == elsewhere
    with pytest.raises(ModelNotFound) as info:
        hooks.fetch("absent.mar", store, "mar")
    assert info.value.message == "Model not found at: absent.mar"


def test_an_unknown_scheme_is_a_clear_error(store):
    with pytest.raises(UnsupportedURL, match="ftp://host/x.war"):
        hooks_for(store).fetch("ftp://host/x.war", store, "war")


# --- the fetcher owns its downloads ----------------------------------------------------------


def test_the_fetcher_is_told_which_archive_is_wanted(store):
    hooks = hooks_for(store)
    with pytest.raises(WorkflowNotFound, match="Workflow not found in workflow store: x"):
        hooks.fetch("x", store, "war")
    with pytest.raises(ModelNotFound, match="Model not found at: x"):
        hooks.fetch("x", store, "mar")


def test_a_download_is_released_by_its_fetcher_and_a_store_file_is_not(store, tmp_path):
    source = tmp_path / "wf.war"
    source.write_bytes(PAYLOAD)
    hooks = hooks_for(store)
    copied = hooks.fetch(f"file://{source}", store, "war")
    assert copied.keep == str(copied.path) and copied.release is not None
    copied.release()
    assert not copied.path.exists() and not copied.path.parent.exists()
    assert source.exists()
    (store / "seq_wf.war").write_bytes(PAYLOAD)
    own = hooks.fetch("seq_wf.war", store, "war")
    assert (own.release, own.keep) == (None, None)


def test_a_kept_download_is_reused_only_while_it_is_one_of_the_stores(store, tmp_path):
    source = tmp_path / "wf.war"
    source.write_bytes(PAYLOAD)
    hooks = hooks_for(store)
    first = hooks.fetch(f"file://{source}", store, "war")
    again = hooks.fetch(f"file://{source}", store, "war", first.keep)
    assert again.path == first.path and len(downloads(store)) == 1
    stranger = tmp_path / "elsewhere.war"
    stranger.write_bytes(PAYLOAD)
    fresh = hooks.fetch(f"file://{source}", store, "war", str(stranger))
    assert fresh.path != stranger and fresh.path.is_relative_to(store / ".downloads")
    first.release()
    assert hooks.fetch(f"file://{source}", store, "war", first.keep).path != first.path


# --- file:// ------------------------------------------------------------------------------


def test_file_urls_are_copied_into_their_own_download_folder(store, tmp_path):
    source = tmp_path / "wf.war"
    source.write_bytes(PAYLOAD)
    hooks = hooks_for(store)
    first = hooks.fetch(f"file://{source}", store, "war").path
    second = hooks.fetch(f"file://{source}", store, "war").path
    assert first != second  # two registrations of one URL never collide
    assert first.name == second.name == "wf.war"
    assert first.read_bytes() == PAYLOAD
    assert first.is_relative_to(store / ".downloads")


def test_a_missing_file_url_fails_to_download(store, tmp_path):
    url = f"file://{tmp_path}/absent.war"
    with pytest.raises(DownloadFailed) as info:
        hooks_for(store).fetch(url, store, "war")
    assert info.value.message == f"Failed to download archive from: {url}"


def test_a_file_url_outside_the_allow_list(store, tmp_path):
    url = f"file://{tmp_path}/wf.war"
    with pytest.raises(WorkflowNotFound) as info:
        hooks_for(store, allowed_urls=["http(s)?://.*"]).fetch(url, store, "war")
    assert info.value.message == f"Given URL {url} does not match any allowed URL(s)"


# --- http(s):// ---------------------------------------------------------------------------


def test_an_allowed_download_lands_in_the_store(server, store):
    hooks = hooks_for(store, allowed_urls=[r"http://127\.0\.0\.1:\d+/.*"])
    path = hooks.fetch(f"{server}/wf.war", store, "war").path
    assert path.read_bytes() == PAYLOAD
    assert path.name == "wf.war" and path.is_relative_to(store / ".downloads")
    again = hooks.fetch(f"{server}/wf.war", store, "war").path
    assert again != path and len(downloads(store)) == 2


def test_a_download_outside_the_allow_list_is_not_attempted(server, store):
    url = f"{server}/wf.war"
    with pytest.raises(WorkflowNotFound) as info:
        hooks_for(store, allowed_urls=[r"https://example\.com/.*"]).fetch(url, store, "war")
    assert info.value.message == f"Given URL {url} does not match any allowed URL(s)"
    assert not (store / ".downloads").exists()


def test_a_model_url_outside_the_allow_list_is_a_model_error(server, store):
    with pytest.raises(ModelNotFound, match="does not match any allowed URL"):
        hooks_for(store, allowed_urls=["file://.*"]).fetch(f"{server}/m1.mar", store, "mar")


@pytest.mark.parametrize("path", ["/big.war", "/big-nolength.war"])
def test_an_oversize_download_is_refused_and_removed(server, store, path):
    with pytest.raises(TooLarge, match="larger than 1000 bytes"):
        hooks_for(store, max_download_size=1000).fetch(f"{server}{path}", store, "war")
    assert downloads(store) == []
    assert list((store / ".downloads").iterdir()) == []


def test_a_404_fails_to_download(server, store):
    url = f"{server}/absent.war"
    with pytest.raises(DownloadFailed) as info:
        hooks_for(store).fetch(url, store, "war")
    assert info.value.message == f"Failed to download archive from: {url}"
    assert info.value.status == 404
    assert downloads(store) == []


def test_a_slow_server_times_out(server, store):
    url = f"{server}/slow.war"
    started = time.monotonic()
    with pytest.raises(DownloadFailed) as info:
        hooks_for(store, download_timeout=0.2).fetch(url, store, "war")
    assert time.monotonic() - started < 0.9
    assert info.value.reason == "timed out"
    assert downloads(store) == []


def test_a_malformed_url_fails_to_download(store):
    with pytest.raises(DownloadFailed, match="Failed to download archive from: http://localhost:aaaa"):
        hooks_for(store).fetch("http://localhost:aaaa", store, "war")


def test_the_command_line_progress_bar_downloads_the_same_bytes(server, store):
    settings = with_progress(Settings(model_store=str(store)))
    assert settings.plugin("fetchers.http") == {"progress": True}
    hooks = Hooks(make_plugin_manager(settings, builtin=MINE, env=NO_AUTOLOAD), settings)
    assert hooks.fetch(f"{server}/wf.war", store, "war").path.read_bytes() == PAYLOAD


def test_an_installed_fetcher_wins_over_the_builtin(store, tmp_path):
    """Defaults are trylast: a plugin for https:// answers first."""
    from wfserve.kernel import hookimpl

    class Mirror:
        @hookimpl
        def wfserve_fetch(self, url, store, settings):
            return tmp_path / "mirror.war" if url.startswith("https://") else None

    settings = Settings(model_store=str(store))
    pm = make_plugin_manager(settings, builtin=MINE, env=NO_AUTOLOAD, extra=[("mirror", Mirror())])
    hooks = Hooks(pm, settings)
    assert hooks.fetch("https://example.com/x.war", store, "war").path == tmp_path / "mirror.war"
