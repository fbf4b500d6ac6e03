"""`plural_of`: the resource name the operator puts in a request path for a kind."""

from __future__ import annotations

import pytest

from operators.foundation.keys import plural_of


@pytest.mark.parametrize(
    ("kind", "plural"),
    [
        ("HTTPRoute", "httproutes"),
        ("Deployment", "deployments"),
        ("Ingress", "ingresses"),
        ("NetworkPolicy", "networkpolicies"),
        ("Gateway", "gateways"),  # a vowel before the y: client-go's guess would say "gatewaies"
        ("VirtualService", "virtualservices"),
    ],
)
def test_plural_of(kind: str, plural: str) -> None:
    assert plural_of(kind) == plural
