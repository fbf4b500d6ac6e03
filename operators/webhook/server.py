"""The admission webhook server that `sluice run` starts: kopf's, with our certificates.

The API server calls the webhook through the Service in ``manifests/webhook.yaml``
and must trust its certificate: the MutatingWebhookConfiguration's caBundle.
Each time the server (re)loads its certificate, the operator writes the CA into
that configuration, so a self-signed certificate works with no manual step. With
cert-manager's CA injector doing that instead, pass ``--webhook-configuration ''``.

Every replica serves the webhook, and with self-signed certificates each has its
own: a replica adds its CA to the bundle, keeping the others' (newest first, at
most ``MAX_BUNDLED``, expired ones dropped), and checks every minute that it is
still there (re-applying the manifest empties the bundle).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509

from operators.foundation.cluster import Cluster, KubeError
from operators.webhook.certs import CertificateFiles, from_directory, self_signed

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9443
DEFAULT_SERVICE_HOSTS = (
    "sluice-webhook.sluice-system.svc",
    "sluice-webhook.sluice-system.svc.cluster.local",
    "localhost",
    "127.0.0.1",
)
DEFAULT_CONFIGURATION = "sluice-sidecar-injector"
CONFIGURATIONS_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


@dataclass(frozen=True)
class WebhookOptions:
    port: int = DEFAULT_PORT
    addr: str = "0.0.0.0"
    # A mounted TLS Secret (tls.crt, tls.key, optionally ca.crt); without them, a self-signed certificate.
    cert_dir: str | None = None
    # Names the self-signed certificate is valid for: the webhook Service's DNS names.
    hostnames: Sequence[str] = DEFAULT_SERVICE_HOSTS
    # The MutatingWebhookConfiguration whose caBundle the operator keeps current; None: leave it alone.
    configuration: str | None = DEFAULT_CONFIGURATION


def certificate_files(options: WebhookOptions) -> CertificateFiles:
    if options.cert_dir:
        found = from_directory(Path(options.cert_dir))
        if found is not None:
            return found
        logger.info("no tls.crt/tls.key in %s: generating a self-signed certificate", options.cert_dir)
    # A fresh directory: the operator's root filesystem is read-only, /tmp is not.
    return self_signed(list(options.hostnames), Path(tempfile.mkdtemp(prefix="sluice-webhook-")))


# Certificates the caBundle keeps: this replica's, then those other replicas published.
MAX_BUNDLED = 8
# How often a replica checks that its CA is still in the bundle.
REPUBLISH_SECONDS = 60.0
_BEGIN, _END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
_PEM_CERTIFICATE = re.compile(f"{_BEGIN}([A-Za-z0-9+/=\\s]+?){_END}")
_CONFLICT_RETRIES = 5


def merged_bundle(ca_bundle: str, existing: Sequence[str | None], now: datetime | None = None) -> str:
    """`ca_bundle` (base64 PEM) first, then the still valid certificates of the `existing` bundles.

    What is not a PEM certificate is dropped (a bundle that is not PEM at all is used as given).
    """
    ours = _certificates(ca_bundle)
    if not ours:
        return ca_bundle
    now = now or datetime.now(tz=UTC)
    merged = list(ours)
    for bundle in existing:
        for certificate in _certificates(bundle):
            if certificate not in merged and _valid(certificate, now):
                merged.append(certificate)
    return base64.b64encode("\n".join(merged[:MAX_BUNDLED]).encode() + b"\n").decode()


def _certificates(bundle: str | None) -> list[str]:
    """The PEM certificates in a base64 bundle, each in one canonical form (so equal ones compare equal)."""
    try:
        text = base64.b64decode(bundle or "", validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return []
    certificates = []
    for body in _PEM_CERTIFICATE.findall(text):
        data = "".join(body.split())
        lines = [data[i : i + 64] for i in range(0, len(data), 64)]
        certificates.append("\n".join([_BEGIN, *lines, _END]))
    return certificates


def _valid(certificate: str, now: datetime) -> bool:
    try:
        loaded = x509.load_pem_x509_certificate(certificate.encode())
    except ValueError:
        return False
    return loaded.not_valid_before_utc <= now < loaded.not_valid_after_utc


def publish_ca_bundle(cluster: Cluster, configuration: str, ca_bundle: str) -> bool:
    """Put `ca_bundle` (base64 PEM) first in every webhook's caBundle, keeping the other replicas'
    certificates; False if the configuration does not exist."""
    path = f"{CONFIGURATIONS_PATH}/{configuration}"
    for attempt in range(_CONFLICT_RETRIES):
        try:
            body = cluster.request("GET", path)
        except KubeError as error:
            if error.status == 404:
                logger.warning(
                    "MutatingWebhookConfiguration %s not found: apply manifests/webhook.yaml so the API "
                    "server calls the sidecar webhook",
                    configuration,
                )
                return False
            raise
        webhooks = body.get("webhooks") or []
        bundles = [(w.get("clientConfig") or {}).get("caBundle") for w in webhooks]
        wanted = merged_bundle(ca_bundle, bundles)
        if all(bundle == wanted for bundle in bundles):
            return True
        for webhook in webhooks:
            webhook.setdefault("clientConfig", {})["caBundle"] = wanted
        try:
            cluster.request("PUT", path, body)  # with the resourceVersion read: another replica may race
        except KubeError as error:
            if error.status != 409 or attempt == _CONFLICT_RETRIES - 1:
                raise
            continue
        return True
    return True


class SluiceWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server, publishing its CA bundle whenever it (re)loads its certificate."""

    def __init__(
        self, options: WebhookOptions, files: CertificateFiles, publish: Callable[[str], object] | None
    ) -> None:
        super().__init__(
            addr=options.addr,
            port=options.port,
            host=options.hostnames[0] if options.hostnames else None,
            certfile=files.certfile,
            pkeyfile=files.keyfile,
            cafile=files.ca_bundle,
        )
        self.publish = publish

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        keeper: asyncio.Task[None] | None = None
        try:
            async for client_config in super().__call__(fn):
                ca_bundle = client_config.get("caBundle")
                if ca_bundle and self.publish is not None:
                    await self._publish(ca_bundle)
                    if keeper is not None:
                        keeper.cancel()
                    keeper = asyncio.create_task(self._keep_published(ca_bundle))
                yield client_config
        finally:
            if keeper is not None:
                keeper.cancel()

    async def _publish(self, ca_bundle: str) -> None:
        assert self.publish is not None
        try:
            await asyncio.to_thread(self.publish, ca_bundle)
        except KubeError as error:  # serving matters more; the API server may trust it already
            logger.warning("could not publish the webhook CA bundle: %s", error)

    async def _keep_published(self, ca_bundle: str) -> None:
        """Check now and then that our CA is still trusted (a GET; a write only when it is not)."""
        while True:
            await asyncio.sleep(REPUBLISH_SECONDS)
            await self._publish(ca_bundle)


def build_server(options: WebhookOptions, cluster: Cluster) -> SluiceWebhookServer:
    files = certificate_files(options)
    configuration = options.configuration
    publish = (lambda ca: publish_ca_bundle(cluster, configuration, ca)) if configuration else None
    return SluiceWebhookServer(options, files, publish)
