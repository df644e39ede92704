"""TLS as a TorchServe deployment configures it: ``https://`` addresses in a
``config.properties`` with PEM files or a PKCS12 keystore, or a self-signed certificate; each
address's scheme decides. Clients verify a certificate made in the test (``trustme``)."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import load_pem_x509_certificate

from tests.helpers import WfserveServer
from tests.helpers import unused_port

pytestmark = pytest.mark.integration
ADDRESSES = """\
inference_address=https://127.0.0.1:$$TEST_INFERENCE_PORT$$
management_address=http://127.0.0.1:$$TEST_MANAGEMENT_PORT$$
metrics_address=https\\://127.0.0.1:$$TEST_METRICS_PORT$$
"""


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def trusting(ca):
    """A client context that trusts the test CA only."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def start(root, config_text, **kwargs):
    (root / "model_store").mkdir(exist_ok=True)
    config = root / "config.properties"
    config.write_text(config_text)
    return WfserveServer(root, "--ts-config", str(config), ports_in_env=True,
                         https={"inference", "metrics"}, **kwargs)


@pytest.fixture(scope="module")
def pem_server(tmp_path_factory, ca, trusting):
    root = tmp_path_factory.mktemp("tls-pem")
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_pem.write_to_path(str(root / "server.key"))
    leaf.cert_chain_pems[0].write_to_path(str(root / "server.crt"))
    text = (ADDRESSES
            + f"private_key_file={root / 'server.key'}\ncertificate_file={root / 'server.crt'}\n"
            "cors_allowed_origin=https://replaced.example\n"
            "cors_allowed_methods=GET, POST\n"
            "enable_envvars_config=true\n"
            "model_store=model_store\n"
            "allowed_urls=file://.*,http://127\\\\.0\\\\.0\\\\.1\\:\\\\d+/.*\n"
            "number_of_netty_threads=4\n")
    env = {"TS_CORS_ALLOWED_ORIGIN": "https://app.example", "WFSERVE_REQUEST_READ_TIMEOUT": "2"}
    with start(root, text, env=env, verify=trusting) as server:
        yield server


def test_https_inference_and_metrics_plain_management(pem_server, trusting):
    ping = httpx.get(pem_server.inference + "/ping", verify=trusting, timeout=30)
    assert ping.status_code == 200
    assert ping.json() == {"status": "Healthy"}
    assert ping.headers["access-control-allow-origin"] == "https://app.example"  # TS_ variable
    assert ping.headers["access-control-allow-methods"] == "GET, POST"
    metrics = httpx.get(pem_server.metrics + "/metrics", verify=trusting, timeout=30)
    assert metrics.status_code == 200
    listing = httpx.get(pem_server.management + "/workflows", timeout=30)
    assert listing.status_code == 200
    # allowed_urls written with Java escapes: 127\.0\.0\.1 matches that address only
    refused = httpx.post(pem_server.management + "/workflows",
                         params={"url": "http://127.0.0.2:1/x.war"}, timeout=30)
    assert "does not match any allowed URL" in refused.text
    allowed = httpx.post(pem_server.management + "/workflows",
                         params={"url": "http://127.0.0.1:1/x.war"}, timeout=30)
    assert allowed.status_code >= 400 and "does not match" not in allowed.text
    assert pem_server.management.startswith("http://")
    reported = [line for line in pem_server.log().splitlines()
                if "setting ignored" in line]
    assert len(reported) == 1 and "number_of_netty_threads" in reported[0]


def test_the_certificate_is_verified_and_the_scheme_is_kept(pem_server, ca):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(pem_server.inference + "/ping", verify=ssl.create_default_context(),
                  timeout=30)
    plain = pem_server.inference.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/ping", timeout=30)
    management_tls = pem_server.management.replace("http://", "https://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(management_tls + "/workflows", verify=False, timeout=30)


def test_a_stalled_tls_client_is_dropped(pem_server, trusting):
    port = pem_server.ports["inference"]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
        raw.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        assert raw.recv(1024) == b""  # the handshake read timed out: closed
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw, \
            trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end of headers
        # NOTE: closed without a TLS close_notify is dropped all the same
        with contextlib.suppress(ssl.SSLError, ConnectionResetError):
            assert tls.recv(1024) == b""
    assert httpx.get(pem_server.inference + "/ping", verify=trusting, timeout=30).is_success


def test_a_slow_tls_body_is_bounded(pem_server, trusting):
    port = pem_server.ports["inference"]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw, \
            trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"POST /wfpredict/absent HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Length: 100\r\n\r\nabc")
        answer = b""
        try:
            while chunk := tls.recv(4096):
                answer += chunk
        except (ssl.SSLError, ConnectionResetError):
            pass
    # the server answered (404: no such workflow, or 408/400: the body stalled) and closed
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]


def test_pkcs12_keystore_with_password_from_the_environment(tmp_path, ca, trusting):
    leaf = ca.issue_cert("127.0.0.1")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    cert = load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    (tmp_path / "server.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"server", key, cert, None, serialization.BestAvailableEncryption(b"s3cret")))
    text = ADDRESSES + f"keystore={tmp_path / 'server.p12'}\nkeystore_pass=$$KS_PASS$$\n"
    with start(tmp_path, text, env={"KS_PASS": "s3cret"}, verify=trusting) as server:
        answer = httpx.get(server.inference + "/ping", verify=trusting, timeout=30)
        assert answer.status_code == 200
        with socket.create_connection(("127.0.0.1", server.ports["inference"]), 30) as raw, \
                trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_without_a_certificate_a_self_signed_one_is_served(tmp_path):
    published = tmp_path / "run" / "self-signed.pem"
    with start(tmp_path, ADDRESSES, verify=False) as server:
        trusting = ssl.create_default_context(cafile=str(published))
        answer = httpx.get(server.inference + "/ping", verify=trusting, timeout=30)
        assert answer.status_code == 200
    assert "self-signed" in server.log()


@pytest.mark.parametrize(("extra", "message"), [
    ("keystore=ks.jks\nkeystore_type=JKS\n", "keytool -importkeystore"),
    ("keystore=missing.p12\n", "cannot read keystore"),
    ("certificate_file=only.crt\n", "both private_key_file and certificate_file"),
])
def test_a_tls_setting_that_cannot_work_stops_the_start_clearly(tmp_path, extra, message):
    config = tmp_path / "config.properties"
    config.write_text("inference_address=https://127.0.0.1:1\n" + extra)
    result = subprocess.run(
        [sys.executable, "-m", "wfserve.kernel.cli", "serve", "--foreground", "--ts-config",
         str(config), "--run-dir", str(tmp_path / "run"), "--disable-token-auth"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1", "WFSERVE_EXAMPLE": "0"})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_background_start_and_client_commands_trust_the_self_signed_certificate(tmp_path):
    """`wfserve serve` over https with no certificate: the start-up ping and the client
    commands verify the certificate the server made (published in the run folder)."""
    ports = {s: unused_port() for s in ("INFERENCE", "MANAGEMENT", "METRICS")}
    env = {**os.environ, "WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1", "WFSERVE_EXAMPLE": "0",
           "WFSERVE_DISABLE_TOKEN_AUTHORIZATION": "true",
           **{f"WFSERVE_{s}_ADDRESS": f"https://127.0.0.1:{p}" for s, p in ports.items()}}

    def wfserve(*args):
        return subprocess.run([sys.executable, "-m", "wfserve.kernel.cli", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)

    try:
        started = wfserve("serve")
        assert started.returncode == 0, started.stderr
        listed = wfserve("list")
        assert (listed.returncode, listed.stdout.split()) == (0, ["{", '"workflows":', "[]", "}"])
    finally:
        assert wfserve("stop").returncode == 0
