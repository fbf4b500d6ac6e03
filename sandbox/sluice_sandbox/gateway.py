"""The Gateway API HTTPRoute resource, as the sandbox serves it.

The sandbox has no Gateway controller; it only needs to store HTTPRoutes so
the operator can write them and the traffic simulator can read their weights.
The upstream CRD (with its full schema) is not shipped with Sluice, so the
sandbox serves the resource with a permissive schema; what Sluice generates is
validated against the upstream schema in the unit tests.
"""

from __future__ import annotations

from typing import Any

HTTPROUTE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "httproutes.gateway.networking.k8s.io"},
    "spec": {
        "group": "gateway.networking.k8s.io",
        "names": {
            "kind": "HTTPRoute",
            "plural": "httproutes",
            "singular": "httproute",
            "listKind": "HTTPRouteList",
            "categories": ["gateway-api"],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}
