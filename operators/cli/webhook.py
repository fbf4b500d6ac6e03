"""The `sluice run` flags of the SidecarSet pod webhook server."""

from __future__ import annotations

import argparse

from operators.webhook.server import (
    DEFAULT_CONFIGURATION,
    DEFAULT_PORT,
    DEFAULT_SERVICE_HOSTS,
    WebhookOptions,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "SidecarSet webhook",
        "An HTTPS admission webhook injects SidecarSets into pods Sluice does not manage "
        "(manifests/webhook.yaml registers it).",
    )
    group.add_argument("--no-webhook", action="store_true", help="do not run the webhook server")
    group.add_argument(
        "--webhook-port", type=int, default=DEFAULT_PORT, metavar="PORT", help=f"(default: {DEFAULT_PORT})"
    )
    group.add_argument("--webhook-addr", default="0.0.0.0", metavar="ADDR", help="(default: 0.0.0.0)")
    group.add_argument(
        "--webhook-cert-dir",
        metavar="DIR",
        help="a mounted TLS Secret: tls.crt, tls.key and optionally ca.crt; without them (or without "
        "this flag) a self-signed certificate is generated at start",
    )
    group.add_argument(
        "--webhook-host",
        action="append",
        metavar="NAME",
        help="a DNS name or IP the self-signed certificate is for (repeatable; default: "
        f"{', '.join(DEFAULT_SERVICE_HOSTS)})",
    )
    group.add_argument(
        "--webhook-configuration",
        default=DEFAULT_CONFIGURATION,
        metavar="NAME",
        help="the MutatingWebhookConfiguration whose caBundle the operator keeps current "
        f"(default: {DEFAULT_CONFIGURATION}; '' when e.g. cert-manager's CA injector does it)",
    )


def options(args: argparse.Namespace) -> WebhookOptions | None:
    if args.no_webhook:
        return None
    return WebhookOptions(
        port=args.webhook_port,
        addr=args.webhook_addr,
        cert_dir=args.webhook_cert_dir,
        hostnames=tuple(args.webhook_host or DEFAULT_SERVICE_HOSTS),
        configuration=args.webhook_configuration or None,
    )
