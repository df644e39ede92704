"""TLS for ``https://`` addresses: the server's certificate as TorchServe's ConfigManager
finds it, in a Python :class:`ssl.SSLContext`.

Where the key and certificate come from, first match wins (as ``ConfigManager.getSslContext``):

1. ``keystore`` (``keystore_pass``, default ``changeit``; ``keystore_type``, default
   ``PKCS12``): the first key entry of a PKCS#12 file, read with ``cryptography``. A JKS
   keystore is refused with the ``keytool`` command that converts it.
2. ``private_key_file`` and ``certificate_file``: PEM files (a PKCS#8, PKCS#1 or SEC1 key; the
   certificate file may hold the whole chain).
3. Neither: a self-signed certificate made at start (TorchServe does the same), valid for the
   bound hosts, ``localhost`` and ``127.0.0.1``. Its PEM is written to
   ``<run_dir>/self-signed.pem`` so a client can verify it, and its SHA-256 fingerprint is
   logged.

Deliberate difference: TLS 1.2 or newer with Python's default ciphers and any key type
(TorchServe allows TLS 1.2 only, two ECDHE-RSA suites, RSA keys).

Python's ``ssl`` loads keys from files only; a key read from a keystore or made here is
written PEM-encoded to a private temporary folder (mode 0700), loaded, and deleted at once.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from wfserve.kernel.errors import UsageError
from wfserve.plugins.api.settings import ApiSettings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

    from wfserve.kernel.settings import Settings

log = structlog.get_logger(__name__)
SELF_SIGNED_NAME = "self-signed.pem"
SELF_SIGNED_DAYS = 365


@dataclass(frozen=True)
class KeyAndChain:
    """A private key and its certificate chain (leaf first), PEM-encoded."""

    key_pem: bytes
    chain_pem: bytes


def server_context(settings: Settings, hosts: Iterable[str] = ()) -> ssl.SSLContext:
    """The server-side TLS context of every ``https://`` address (see the module docstring).

    :param hosts: the bound hosts, named in a self-signed certificate.
    :raises UsageError: a keystore or PEM file that cannot be read or does not hold a key
        and its certificate, a wrong password, or an unsupported keystore type.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    tls = settings.of(ApiSettings)
    if tls.keystore:
        _load(context, read_keystore(Path(tls.keystore), tls.keystore_pass, tls.keystore_type),
              "keystore " + tls.keystore)
    elif tls.private_key_file and tls.certificate_file:
        _load_files(context, Path(tls.certificate_file), Path(tls.private_key_file))
    elif tls.private_key_file or tls.certificate_file:
        raise UsageError("TLS needs both private_key_file and certificate_file (or a keystore);"
                         " only one of them is set", key="certificate_file")
    else:
        made = self_signed(hosts)
        _load(context, made, "a self-signed certificate")
        _publish(made, Path(settings.run_dir))
    return context


def client_verify(settings: Settings) -> ssl.SSLContext | bool:
    """What wfserve's own clients (the client commands, the start-up ping) verify a server
    of these settings with: its self-signed certificate when it made one (none configured),
    else the system's trust store (``SSL_CERT_FILE`` is honoured by httpx)."""
    configured = settings.of(ApiSettings).keystore or settings.of(ApiSettings).certificate_file
    published = Path(settings.run_dir) / SELF_SIGNED_NAME
    if configured or not published.is_file():
        return True
    return ssl.create_default_context(cafile=str(published))


def read_keystore(path: Path, password: str, kind: str) -> KeyAndChain:
    """The first key entry of a PKCS#12 keystore, with its certificate chain.

    :raises UsageError: not PKCS12 (JKS: the conversion command is named), unreadable, a wrong
        password, or no key entry.
    """
    if kind.strip().upper() != "PKCS12":
        raise UsageError(
            f"keystore_type={kind} is not supported: wfserve reads PKCS12 keystores only. "
            f"Convert it with: keytool -importkeystore -srckeystore {path} "
            f"-destkeystore {path.with_suffix('.p12')} -deststoretype PKCS12", key="keystore_type")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read keystore {path}: {exc.strerror}", key="keystore") from None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode() or None)
    except ValueError:
        raise UsageError(f"keystore {path} is not a PKCS12 file or keystore_pass is wrong",
                         key="keystore_pass") from None
    if key is None or cert is None:
        raise UsageError(f"keystore {path} holds no key entry with a certificate",
                         key="keystore")
    return KeyAndChain(_key_pem(key), b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in (cert, *extra)))


def self_signed(hosts: Iterable[str] = ()) -> KeyAndChain:
    """A new P-256 key and a self-signed certificate for ``hosts``, ``localhost`` and
    ``127.0.0.1``, valid for :data:`SELF_SIGNED_DAYS` days."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for host in hosts:
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in names:
            names.append(entry)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wfserve self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return KeyAndChain(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load(context: ssl.SSLContext, made: KeyAndChain, source: str) -> None:
    """Load PEM bytes into ``context`` through files in a private temporary folder."""
    with tempfile.TemporaryDirectory(prefix="wfserve-tls-") as folder:
        key = Path(folder) / "key.pem"
        chain = Path(folder) / "chain.pem"
        for path, data in ((key, made.key_pem), (chain, made.chain_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        try:
            context.load_cert_chain(chain, key)
        except ssl.SSLError as exc:
            raise UsageError(f"cannot use {source}: {exc.reason or exc}", key="keystore") from None


def _load_files(context: ssl.SSLContext, certificate: Path, key: Path) -> None:
    for path, name in ((certificate, "certificate_file"), (key, "private_key_file")):
        if not path.is_file():
            raise UsageError(f"{name} {path} is not a readable file", key=name)
    try:
        context.load_cert_chain(certificate, key)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"cannot use certificate_file {certificate} with private_key_file "
                         f"{key}: {getattr(exc, 'reason', None) or exc}",
                         key="certificate_file") from None


def _publish(made: KeyAndChain, run_dir: Path) -> None:
    """Write the self-signed certificate (not its key) where clients can find it; log its
    fingerprint."""
    cert = x509.load_pem_x509_certificate(made.chain_pem)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":")
    path = run_dir / SELF_SIGNED_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(made.chain_pem)
    except OSError as exc:
        log.warning("cannot write the self-signed certificate", path=str(path),
                    error=exc.strerror)
    log.warning("https without a certificate: serving a self-signed one (set "
                "certificate_file and private_key_file, or keystore)",
                certificate=str(path), sha256=fingerprint)
