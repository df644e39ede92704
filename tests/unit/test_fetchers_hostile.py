"""Fetchers under attack (the security review's findings 1-3 and 8), on the fetch hook:
encoded names, ``file://`` escapes, download names, redirects, proxies, private addresses,
devices, FIFOs and oversized folders. The same attacks over HTTP: tests/integration/
test_security.py."""

import http.server
import os
import re
import socket
import types

import pytest

from tests.local_http import fetch_hooks
from tests.local_http import local_server
from tests.local_http import store_folder
from wfserve.kernel.errors import DownloadFailed
from wfserve.kernel.errors import ModelNotFound
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.errors import WorkflowNotFound
from wfserve.plugins.fetchers import addresses
from wfserve.plugins.fetchers.common import download_name

BODY = b"war bytes"


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 200 BODY, or a redirect for /redirect?to=<url>; records every request."""

    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Host")))
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorders():
    """Two recording HTTP servers on 127.0.0.1: (base URL, requests seen) each."""
    with local_server(Recorder, seen=[]) as (a, first), \
            local_server(Recorder, seen=[]) as (b, second):
        yield [(a, first.seen), (b, second.seen)]


@pytest.fixture
def store(tmp_path):
    return store_folder(tmp_path)


hooks_for = fetch_hooks


def outside_downloads(root, store):
    """Files under ``root`` other than the store's own and its downloads."""
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not p.is_relative_to(store))


# --- finding 1: encoded bare names and file:// escapes -----------------------------------


def test_an_encoded_bare_name_is_not_decoded_again(store, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "probe.war").write_bytes(b"zip")
    encoded = f"%2F{str(other)[1:].replace('/', '%2F')}%2Fprobe.war"
    with pytest.raises(WorkflowNotFound) as info:
        hooks_for(store).fetch(encoded, store, "war")
    assert info.value.message == f"Workflow not found in workflow store: {encoded}"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b.war", "a\\b.war", "/etc/passwd.war",
                                  "x\0.war", "sub/../x.war"])
def test_bare_names_must_be_one_plain_file_name(store, name):
    with pytest.raises((WorkflowNotFound, ModelNotFound)):
        hooks_for(store).fetch(name, store, "war")


def test_a_bare_name_must_resolve_inside_the_store(store, tmp_path):
    secret = tmp_path / "secret.war"
    secret.write_bytes(b"zip")
    (store / "link.war").symlink_to(secret)
    with pytest.raises(WorkflowNotFound, match="outside the store"):
        hooks_for(store).fetch("link.war", store, "war")


def test_file_urls_are_matched_as_resolved(store, tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "probe.war").write_bytes(b"zip")
    (allowed / "link.war").symlink_to(outside / "probe.war")
    hooks = hooks_for(store, allowed_urls=[f"file://{allowed}/.*"])
    for url in (f"file://{allowed}/%2e%2e/outside/probe.war",
                f"file://{allowed}/%2E%2E/%2e%2e/{tmp_path.name}/outside/probe.war",
                f"file://{allowed}/link.war"):
        with pytest.raises(WorkflowNotFound, match="does not match any allowed URL"):
            hooks.fetch(url, store, "war")
    assert not (store / ".downloads").exists() or not any((store / ".downloads").iterdir())


def test_an_absolute_model_folder_must_match_a_file_rule(store, tmp_path):
    folder = tmp_path / "models" / "m4"
    folder.mkdir(parents=True)
    # the default rules (file://.*) allow it
    assert hooks_for(store).fetch(str(folder), store, "mar").path == folder
    strict = hooks_for(store, allowed_urls=[f"file://{tmp_path}/elsewhere/.*"])
    with pytest.raises(ModelNotFound, match="does not match any allowed URL"):
        strict.fetch(str(folder), store, "mar")
    allowed = hooks_for(store, allowed_urls=[f"file://{tmp_path}/models/.*"])
    assert allowed.fetch(str(folder), store, "mar").path == folder


# --- finding 2: download names ---------------------------------------------------------------


@pytest.mark.parametrize(("url", "name"), [
    ("http://h/a/%2e%2e%2f%2e%2e%2fescaped.war", "_.._escaped.war"),
    ("http://h/a/..%5C..%5Cx.mar", "_.._x.mar"),
    ("file:///tmp/%2Fetc%2Fpasswd", "_etc_passwd"),
    ("http://h/", "archive"),
    ("http://h/.hidden.war", "hidden.war"),
    ("http://h/" + "a" * 300 + ".war", "a" * 124 + ".war"),
])
def test_downloads_are_named_by_wfserve(url, name):
    assert download_name(url) == name
    assert "/" not in download_name(url) and not download_name(url).startswith(".")


def test_a_download_never_lands_outside_its_folder(store, tmp_path, recorders):
    (base, _), _ = recorders
    hooks = hooks_for(store)
    path = hooks.fetch(f"{base}/d/%2e%2e%2f%2e%2e%2f%2e%2e%2fescaped.war", store, "war").path
    assert path.parent.parent == store / ".downloads"
    assert path.read_bytes() == BODY
    assert outside_downloads(tmp_path, store) == []


def test_a_file_url_never_overwrites_or_escapes(store, tmp_path):
    source = tmp_path / "src"
    (source / "x").mkdir(parents=True)
    (source / "victim.war").write_bytes(b"new")
    victim = store / "victim.war"
    victim.write_bytes(b"old")
    path = hooks_for(store).fetch(f"file://{source}/x%2f%2e%2e%2fvictim.war", store, "war").path
    assert path.parent.parent == store / ".downloads"
    assert victim.read_bytes() == b"old"


# --- finding 3: redirects, proxies, private addresses -----------------------------------------


def test_a_redirect_to_a_url_not_allowed_is_refused(store, recorders):
    (allowed, seen_allowed), (internal, seen_internal) = recorders
    hooks = hooks_for(store, allowed_urls=[re.escape(allowed) + "/.*"])
    with pytest.raises(DownloadFailed, match="redirected to .* does not match any allowed"):
        hooks.fetch(f"{allowed}/redirect?to={internal}/secret.war", store, "war")
    assert seen_internal == []
    assert [p for p, _ in seen_allowed] == [f"/redirect?to={internal}/secret.war"]


def test_an_allowed_redirect_is_followed(store, recorders):
    (first, _), (second, seen) = recorders
    path = hooks_for(store).fetch(f"{first}/redirect?to={second}/wf.war", store, "war").path
    assert path.read_bytes() == BODY and [p for p, _ in seen] == ["/wf.war"]


def test_proxy_variables_are_ignored(store, recorders, monkeypatch):
    (origin, seen_origin), (proxy, seen_proxy) = recorders
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    hooks_for(store).fetch(f"{origin}/wf.war", store, "war")
    assert seen_proxy == [] and [p for p, _ in seen_origin] == ["/wf.war"]


def test_private_addresses_are_refused_when_asked(store, recorders):
    (base, seen), _ = recorders
    hooks = hooks_for(store, block_private_addresses=True)
    for url in (f"{base}/wf.war", base.replace("127.0.0.1", "localhost") + "/wf.war"):
        with pytest.raises(DownloadFailed, match="not a public address"):
            hooks.fetch(url, store, "war")
    assert seen == []
    # off: allowed
    assert hooks_for(store).fetch(f"{base}/wf.war", store, "war").path.read_bytes() == BODY


def test_the_checked_address_is_the_one_connected_to(store, recorders, monkeypatch):
    """A rebinding resolver answers a checked address once, then another: the download
    connects to the first, with the name in Host, after one lookup."""
    (base, seen), _ = recorders
    port = int(base.rsplit(":", 1)[1])
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    lookups = []

    def rebinding(host, *args, **kwargs):
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(addresses, "socket", types.SimpleNamespace(
        getaddrinfo=rebinding, SOCK_STREAM=socket.SOCK_STREAM))
    monkeypatch.setattr(addresses, "is_public", lambda a: str(a) == "127.0.0.1")
    path = hooks_for(store, block_private_addresses=True).fetch(
        f"http://rebind.test:{port}/wf.war", store, "war").path
    assert path.read_bytes() == BODY
    assert lookups == ["rebind.test"]
    assert seen == [("/wf.war", f"rebind.test:{port}")]


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("127.0.0.1", False), ("10.1.2.3", False), ("169.254.169.254", False),
    ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False), ("fe80::1", False),
    ("::ffff:127.0.0.1", False), ("2002:7f00:1::", False), ("224.0.0.1", False),
    ("2606:4700::1111", True),
])
def test_which_addresses_are_public(address, public):
    import ipaddress

    assert addresses.is_public(ipaddress.ip_address(address)) is public


# --- finding 8: devices, FIFOs, folders without bounds -----------------------------------------


def test_devices_and_fifos_are_not_copied(store, tmp_path):
    fifo = tmp_path / "pipe.war"
    os.mkfifo(fifo)
    hooks = hooks_for(store)
    for url in ("file:///dev/zero", f"file://{fifo}"):
        with pytest.raises(DownloadFailed, match="Failed to download archive"):
            hooks.fetch(url, store, "war")


def test_folder_copies_are_bounded(store, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):
        (big / f"f{i}").write_bytes(b"x" * 4000)
    with pytest.raises(TooLarge):
        hooks_for(store, max_download_size=10_000).fetch(f"file://{big}", store, "war")
    with pytest.raises(TooLarge):
        hooks_for(store, max_archive_entries=2).fetch(f"file://{big}", store, "war")
    (big / "link").symlink_to("/etc/hostname")
    with pytest.raises(DownloadFailed):
        hooks_for(store).fetch(f"file://{big}", store, "war")
    assert not any((store / ".downloads").iterdir())
