"""TLS settings: where the key and certificate come from, what is refused, which binds use TLS."""

from __future__ import annotations

import ipaddress
import ssl
from types import SimpleNamespace

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from wfserve.kernel.errors import UsageError
from wfserve.kernel.settings import Settings
from wfserve.plugins.api.app import parse_address
from wfserve.plugins.api.app import tls_binds
from wfserve.plugins.api.settings import ApiSettings
from wfserve.plugins.api.tls import SELF_SIGNED_NAME
from wfserve.plugins.api.tls import client_verify
from wfserve.plugins.api.tls import read_keystore
from wfserve.plugins.api.tls import self_signed
from wfserve.plugins.api.tls import server_context


def keystore(tmp_path, password=b"pw"):
    leaf = trustme.CA().issue_cert("127.0.0.1")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    path = tmp_path / "server.p12"
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"alias", key, cert, None, serialization.BestAvailableEncryption(password)))
    return path, cert


def test_a_pkcs12_keystore_gives_its_key_and_certificate(tmp_path):
    path, cert = keystore(tmp_path)
    made = read_keystore(path, "pw", "pkcs12")
    assert x509.load_pem_x509_certificate(made.chain_pem) == cert
    assert b"PRIVATE KEY" in made.key_pem
    context = server_context(Settings(run_dir=str(tmp_path / "run")).with_section(
        ApiSettings(keystore=str(path), keystore_pass="pw")))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert not (tmp_path / "run" / SELF_SIGNED_NAME).exists()


@pytest.mark.parametrize(("password", "kind", "message"), [
    ("wrong", "PKCS12", "keystore_pass is wrong"),
    ("pw", "JKS", "keytool -importkeystore"),
])
def test_a_keystore_that_cannot_be_used_is_refused(tmp_path, password, kind, message):
    path, _ = keystore(tmp_path)
    with pytest.raises(UsageError, match=message):
        read_keystore(path, password, kind)


def test_pem_files_need_each_other_and_must_exist(tmp_path):
    with pytest.raises(UsageError, match="both private_key_file and certificate_file"):
        server_context(Settings().with_section(
            ApiSettings(certificate_file=str(tmp_path / "a.crt"))))
    with pytest.raises(UsageError, match="not a readable file"):
        server_context(Settings().with_section(ApiSettings(
            certificate_file=str(tmp_path / "a.crt"), private_key_file=str(tmp_path / "a.key"))))


def test_a_self_signed_certificate_names_the_bound_hosts(tmp_path):
    made = self_signed(["10.1.2.3", "model.example"])
    cert = x509.load_pem_x509_certificate(made.chain_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "model.example"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.2.3")}
    settings = Settings(run_dir=str(tmp_path))
    server_context(settings, ["127.0.0.1"])
    assert (tmp_path / SELF_SIGNED_NAME).read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    assert isinstance(client_verify(settings), ssl.SSLContext)
    assert client_verify(Settings(run_dir=str(tmp_path / "none"))) is True


def test_https_addresses_parse_and_other_schemes_do_not():
    assert parse_address("https://127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    for bad in ("ftp://127.0.0.1:21", "https://127.0.0.1", "http://127.0.0.1:port"):
        with pytest.raises(UsageError):
            parse_address(bad)


def test_tls_binds_follow_each_address_scheme():
    kernel = SimpleNamespace(settings=Settings(
        inference_address="https://127.0.0.1:8443", management_address="http://127.0.0.1:8081",
        metrics_address="https://localhost:8443"))
    assert tls_binds(kernel) == {("127.0.0.1", 8443)}  # type: ignore[arg-type]
    mixed = SimpleNamespace(settings=Settings(
        inference_address="https://127.0.0.1:8443", management_address="http://127.0.0.1:8443",
        metrics_address="http://127.0.0.1:8082"))
    with pytest.raises(UsageError, match="one port speaks one protocol"):
        tls_binds(mixed)  # type: ignore[arg-type]
