"""The webhook server's TLS certificate: from a mounted Secret, or generated self-signed.

A Secret of type kubernetes.io/tls mounted as a directory gives ``tls.crt``
and ``tls.key`` (and ``ca.crt`` when cert-manager issued it). Without them a
self-signed certificate is made for the webhook's Service names, and its
own certificate is the CA bundle the API server must trust.

kopf can generate one itself, but through ``certbuilder``/``oscrypto``, and
oscrypto 1.3 (the latest release) cannot load OpenSSL 3.0.10 or later
("Error detecting the version of libcrypto"); ``cryptography`` can.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"
VALIDITY = timedelta(days=365)


@dataclass(frozen=True)
class CertificateFiles:
    certfile: Path
    keyfile: Path
    # What the API server must trust: the issuing CA, or the certificate itself when self-signed.
    ca_bundle: Path
    self_signed: bool


def from_directory(directory: Path) -> CertificateFiles | None:
    """The certificate in `directory` (a mounted TLS Secret), or None when it holds none."""
    cert, key, ca = directory / CERT_FILE, directory / KEY_FILE, directory / CA_FILE
    if not (cert.is_file() and key.is_file()):
        return None
    return CertificateFiles(cert, key, ca if ca.is_file() else cert, self_signed=False)


def self_signed(hostnames: Sequence[str], directory: Path, now: datetime | None = None) -> CertificateFiles:
    """Write a new self-signed certificate for `hostnames` (DNS names or IPs) into `directory`."""
    if not hostnames:
        raise ValueError("a certificate needs at least one hostname")
    now = now or datetime.now(tz=UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate clocks a little behind ours
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hostnames]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The key is readable by the operator only.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    return CertificateFiles(cert_path, key_path, cert_path, self_signed=True)


def _san(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)
