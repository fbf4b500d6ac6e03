"""The admission webhook server that `sluice run` starts: kopf's, with our certificates.

The API server calls the webhook through the Service in ``manifests/webhook.yaml``
and must trust its certificate: the MutatingWebhookConfiguration's caBundle.
Each time the server (re)loads its certificate, the operator writes the CA into
that configuration, so a self-signed certificate works with no manual step. With
cert-manager's CA injector doing that instead, pass ``--webhook-configuration ''``.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

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


def publish_ca_bundle(cluster: Cluster, configuration: str, ca_bundle: str) -> bool:
    """Put `ca_bundle` (base64 PEM) into every webhook of the configuration; False if it does not exist."""
    path = f"{CONFIGURATIONS_PATH}/{configuration}"
    try:
        body = cluster.request("GET", path)
    except KubeError as error:
        if error.status == 404:
            logger.warning(
                "MutatingWebhookConfiguration %s not found: apply manifests/webhook.yaml so the API server "
                "calls the sidecar webhook",
                configuration,
            )
            return False
        raise
    webhooks = body.get("webhooks") or []
    if all((w.get("clientConfig") or {}).get("caBundle") == ca_bundle for w in webhooks):
        return True
    for webhook in webhooks:
        webhook.setdefault("clientConfig", {})["caBundle"] = ca_bundle
    cluster.request("PUT", path, body)
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
        async for client_config in super().__call__(fn):
            ca_bundle = client_config.get("caBundle")
            if ca_bundle and self.publish is not None:
                try:
                    await asyncio.to_thread(self.publish, ca_bundle)
                except KubeError as error:  # serving matters more; the API server may trust it already
                    logger.warning("could not publish the webhook CA bundle: %s", error)
            yield client_config


def build_server(options: WebhookOptions, cluster: Cluster) -> SluiceWebhookServer:
    files = certificate_files(options)
    configuration = options.configuration
    publish = (lambda ca: publish_ca_bundle(cluster, configuration, ca)) if configuration else None
    return SluiceWebhookServer(options, files, publish)
