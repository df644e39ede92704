"""What the security review tried and found holding, kept tested over HTTP: constant-time key
comparison, a private key file, no key in logs, a full-match case-insensitive allow-list, no
response splitting through ``X-Request-ID``, request smuggling refused. (Tar links and devices:
tests/unit/test_archives_hostile.py.)"""

import hmac
import re
import shutil
import stat

import httpx
import pytest

from tests.helpers import WfserveServer
from tests.helpers import raw_exchange
from wfserve.plugins.auth.keys import KeyStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(peer_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("holds")
    shutil.copytree(peer_stores.model_store, root / "model_store")
    shutil.copytree(peer_stores.workflow_store, root / "wf_store")
    (root / "allowed").mkdir()
    shutil.copy(peer_stores.seq_war, root / "allowed" / "seq.war")
    allowed = f"file://{re.escape(str(root))}/allowed/seq\\.war"
    with WfserveServer(root, "--model-store", str(root / "model_store"), "--workflow-store",
                       str(root / "wf_store"), "--workflows", "seq_wf.war", "--no-snapshot",
                       "--allowed-urls", allowed, "--threads", "4", auth=True) as srv:
        yield srv


exchange = raw_exchange


def test_keys_are_compared_in_constant_time(tmp_path, monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    keys = KeyStore(tmp_path / "key_file.json", 60.0)
    assert keys.check(keys.key("inference"), "inference")
    assert not keys.check("x" + keys.key("inference"), "inference")
    assert len(calls) == 2


def test_the_key_file_is_private_and_no_key_reaches_the_log(server):
    path = server.workdir / "key_file.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    wrong = server.bearer("management")  # the management key on the inference port
    r = httpx.post(f"{server.inference}/wfpredict/seq_wf", json={"input": [1, 2, 3, 4]},
                   headers=wrong)
    assert r.status_code == 400
    r = httpx.get(f"{server.management}/token", params={"type": "inference"},
                  headers=server.bearer("API"))
    assert r.status_code == 200
    log = server.log()
    for kind in ("management", "inference", "API"):
        assert server.key(kind) not in log
    assert wrong["Authorization"].split()[1] not in log


@pytest.mark.parametrize(("url", "allowed"), [
    ("FILE://{root}/allowed/SEQ.WAR", False),  # the file name differs: no such file
    ("FILE://{root}/allowed/seq.war", True),  # case-insensitive scheme
    ("file://{root}/allowed/seq.war.bak", False),  # full match only
    ("http://127.0.0.1:1/{root}/allowed/seq.war", False),
])
def test_the_allow_list_is_a_full_case_insensitive_match(server, url, allowed):
    r = httpx.post(f"{server.management}/workflows", timeout=60,
                   params={"url": url.format(root=server.workdir), "workflow_name": "al"},
                   headers=server.bearer("management"))
    if allowed:
        assert r.status_code == 200, r.text
        assert httpx.delete(f"{server.management}/workflows/al",
                            headers=server.bearer("management")).status_code == 200
    else:
        assert r.status_code in (400, 404), r.text
        assert "does not match any allowed URL" in r.json()["message"] or \
            "Failed to download" in r.json()["message"]


@pytest.mark.parametrize("value", [b"a\r\n Set-Cookie: x=1", b"a%0d%0aSet-Cookie:%20x=1",
                                   b"a\x0bSet-Cookie: x=1", b"a" * 500])
def test_a_request_id_cannot_split_the_response(server, value):
    answer = exchange(server, b"GET /ping HTTP/1.1\r\nHost: a\r\nX-Request-ID: " + value
                      + b"\r\nConnection: close\r\n\r\n")
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert b"set-cookie" not in head.lower()
    ids = [line for line in head.split(b"\r\n") if line.lower().startswith(b"x-request-id:")]
    assert len(ids) <= 1
    for line in ids:
        assert re.fullmatch(rb"x-request-id: [A-Za-z0-9._:\-]{1,128}", line, re.IGNORECASE)


@pytest.mark.parametrize("head", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\nContent-Length: 70\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    b"Transfer-Encoding: xchunked\r\n",
])
def test_smuggling_attempts_are_refused(server, head):
    smuggled = (b"GET /workflows HTTP/1.1\r\nHost: a\r\n"
                + b"Authorization: Bearer " + server.key("management").encode() + b"\r\n\r\n")
    body = b"0\r\n\r\n" + smuggled
    answer = exchange(server, b"POST /wfpredict/seq_wf HTTP/1.1\r\nHost: a\r\n" + head
                      + b"\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 501"), answer[:80]
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # the smuggled request got no answer
