"""The webhook's certificates (Secret or self-signed) and the CA bundle it publishes."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from operators.foundation.cluster import KubeError
from operators.webhook.certs import CA_FILE, CERT_FILE, KEY_FILE, from_directory, self_signed
from operators.webhook.server import WebhookOptions, certificate_files, publish_ca_bundle


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
