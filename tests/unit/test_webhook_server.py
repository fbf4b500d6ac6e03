"""The webhook's certificates (Secret or self-signed) and the CA bundle it publishes."""

from __future__ import annotations

import base64
import copy
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from operators.foundation.cluster import KubeError
from operators.webhook.certs import CA_FILE, CERT_FILE, KEY_FILE, from_directory, self_signed
from operators.webhook.server import (
    MAX_BUNDLED,
    WebhookOptions,
    certificate_files,
    merged_bundle,
    publish_ca_bundle,
)


def test_self_signed_certificate_names_its_hosts_and_loads(tmp_path: Path) -> None:
    files = self_signed(["sluice-webhook.sluice-system.svc", "127.0.0.1"], tmp_path)
    cert = x509.load_pem_x509_certificate(files.certfile.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["sluice-webhook.sluice-system.svc"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert files.ca_bundle == files.certfile and files.self_signed
    assert files.keyfile.stat().st_mode & 0o077 == 0, "the key is the operator's alone"
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(files.certfile, files.keyfile)


def test_a_mounted_secret_is_used_with_its_ca(tmp_path: Path) -> None:
    assert from_directory(tmp_path) is None
    issued = self_signed(["x"], tmp_path)
    found = from_directory(tmp_path)
    assert found is not None and found.certfile == issued.certfile and found.ca_bundle == tmp_path / CERT_FILE
    (tmp_path / CA_FILE).write_text("ca")
    assert (found := from_directory(tmp_path)) is not None and found.ca_bundle == tmp_path / CA_FILE
    assert not found.self_signed


def test_without_a_secret_a_self_signed_certificate_is_made(tmp_path: Path) -> None:
    files = certificate_files(WebhookOptions(cert_dir=str(tmp_path / "empty")))
    assert files.self_signed and files.certfile.name == CERT_FILE and files.keyfile.name == KEY_FILE


class FakeCluster:
    def __init__(self, body: dict[str, Any] | None) -> None:
        self.body = body
        self.puts: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        assert path.endswith("/mutatingwebhookconfigurations/sluice-sidecar-injector")
        if method == "GET":
            if self.body is None:
                raise KubeError(404, "not found")
            return self.body
        self.puts.append(body)
        return body  # type: ignore[no-any-return]


def test_publishing_the_ca_bundle_writes_only_when_it_changed() -> None:
    cluster = FakeCluster({"webhooks": [{"name": "a", "clientConfig": {"service": {"name": "s"}}}]})
    assert publish_ca_bundle(cluster, "sluice-sidecar-injector", "Q0E=")  # type: ignore[arg-type]
    assert cluster.puts[0]["webhooks"][0]["clientConfig"] == {"service": {"name": "s"}, "caBundle": "Q0E="}
    assert publish_ca_bundle(cluster, "sluice-sidecar-injector", "Q0E=")  # type: ignore[arg-type]
    assert len(cluster.puts) == 1
    missing = FakeCluster(None)
    assert not publish_ca_bundle(missing, "sluice-sidecar-injector", "Q0E=")  # type: ignore[arg-type]


# ----- several replicas, each with its own self-signed certificate -----


def bundle_of(*directories: Path) -> str:
    return base64.b64encode(b"".join((d / CERT_FILE).read_bytes() for d in directories)).decode()


def subjects(bundle: str) -> list[int]:
    """The serial numbers of a base64 PEM bundle's certificates, in order."""
    return [c.serial_number for c in x509.load_pem_x509_certificates(base64.b64decode(bundle))]


def test_each_replica_adds_its_ca_and_keeps_the_others(tmp_path: Path) -> None:
    first, second = self_signed(["a"], tmp_path / "1"), self_signed(["a"], tmp_path / "2")
    cluster = FakeCluster(
        {"webhooks": [{"name": "a", "clientConfig": {}}, {"name": "b", "clientConfig": {}}]}
    )
    assert publish_ca_bundle(cluster, "sluice-sidecar-injector", bundle_of(tmp_path / "1"))  # type: ignore[arg-type]
    assert publish_ca_bundle(cluster, "sluice-sidecar-injector", bundle_of(tmp_path / "2"))  # type: ignore[arg-type]
    published = cluster.body["webhooks"][0]["clientConfig"]["caBundle"]  # type: ignore[index]
    assert cluster.body["webhooks"][1]["clientConfig"]["caBundle"] == published  # type: ignore[index]
    serials = [x509.load_pem_x509_certificate(f.certfile.read_bytes()).serial_number for f in (second, first)]
    assert subjects(published) == serials, "the newest first, the other replica's kept"
    # Both replicas trusted: a TLS client with this bundle accepts either certificate.
    context = ssl.create_default_context(cadata=base64.b64decode(published).decode())
    assert len(context.get_ca_certs()) == 2
    # Publishing again what is already there writes nothing.
    writes = len(cluster.puts)
    assert publish_ca_bundle(cluster, "sluice-sidecar-injector", bundle_of(tmp_path / "2"))  # type: ignore[arg-type]
    assert publish_ca_bundle(cluster, "sluice-sidecar-injector", bundle_of(tmp_path / "1"))  # type: ignore[arg-type]
    assert len(cluster.puts) == writes + 1, "only the reorder (first's CA back in front) was written"


def test_the_bundle_drops_expired_certificates_and_stays_bounded(tmp_path: Path) -> None:
    old = self_signed(["a"], tmp_path / "old", now=datetime.now(tz=UTC) - timedelta(days=400))
    others = [self_signed(["a"], tmp_path / str(i)) for i in range(MAX_BUNDLED + 2)]
    existing = bundle_of(tmp_path / "old", *(tmp_path / str(i) for i in range(MAX_BUNDLED + 2)))
    ours = self_signed(["a"], tmp_path / "ours")
    merged = merged_bundle(bundle_of(tmp_path / "ours"), [existing])
    serials = subjects(merged)
    assert len(serials) == MAX_BUNDLED
    assert serials[0] == x509.load_pem_x509_certificate(ours.certfile.read_bytes()).serial_number
    assert x509.load_pem_x509_certificate(old.certfile.read_bytes()).serial_number not in serials
    assert len(others) > MAX_BUNDLED


def test_a_replica_racing_another_for_the_bundle_tries_again(tmp_path: Path) -> None:
    self_signed(["a"], tmp_path / "1")

    class Racing(FakeCluster):
        def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
            if method == "GET":  # a fresh copy, as from an API server
                return copy.deepcopy(super().request(method, path, body, **kwargs))
            if method == "PUT" and not self.puts:
                self.puts.append({})
                raise KubeError(409, "the object has been modified")
            return super().request(method, path, body, **kwargs)

    cluster = Racing({"webhooks": [{"name": "a", "clientConfig": {}}]})
    assert publish_ca_bundle(cluster, "sluice-sidecar-injector", bundle_of(tmp_path / "1"))  # type: ignore[arg-type]
    assert len(cluster.puts) == 2
