"""The Gateway API resources the sandbox serves: HTTPRoute, Gateway and GatewayClass.

HTTPRoute is served with a permissive schema: the upstream CRD (with its full schema) is not
shipped with Sluice, and what Sluice generates is validated against it in the unit tests (the
integration tests install the upstream CRD itself, from ../shared/reference).

Gateway and GatewayClass are served with the sandbox's *own* compact structural schemas, written
here rather than copied from upstream (whose CRDs must not be copied into the repository). They
hold the fields a Gateway controller reads to attach routes, with upstream's names, types and
defaults: a GatewayClass's ``controllerName``; a Gateway's ``gatewayClassName`` and its listeners'
``name``, ``port``, ``protocol``, ``hostname`` and ``allowedRoutes`` (``namespaces.from``: ``All``,
``Same`` (the default) or ``Selector`` with a label ``selector``; ``kinds``). Fields the sandbox
does not act on (``tls``, ``addresses``, ``infrastructure``) are kept as written, not checked.
Both have a status subresource with ``conditions``, which the simulated Gateway controller
(:mod:`sluice_sandbox.gateway_controller`) sets.

At start the sandbox has the GatewayClass ``sandbox`` of that controller and the Gateway
``public`` in ``default``, whose one HTTP listener admits routes from every namespace
(:func:`install_gateway_api`).
"""

from __future__ import annotations

from typing import Any

from sluice_sandbox.store import Store

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
CONTROLLER_NAME = "sandbox.sluice.dev/gateway-controller"
DEFAULT_CLASS = "sandbox"
DEFAULT_GATEWAY_NAMESPACE = "default"
DEFAULT_GATEWAY = "public"


def _crd(kind: str, plural: str, scope: str, schema: dict[str, Any], **names: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
                "categories": ["gateway-api"],
                **names,
            },
            "scope": scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


HTTPROUTE_CRD: dict[str, Any] = _crd(
    "HTTPRoute",
    "httproutes",
    "Namespaced",
    {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
)

_OPAQUE: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_NAME: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 253}

# metav1.Condition, as upstream's status lists hold them.
_CONDITIONS: dict[str, Any] = {
    "type": "array",
    "maxItems": 8,
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
    "items": {
        "type": "object",
        "required": ["type", "status", "reason", "message", "lastTransitionTime"],
        "properties": {
            "type": {"type": "string", "maxLength": 316},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "minLength": 1, "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        },
    },
}

_LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

_LISTENER: dict[str, Any] = {
    "type": "object",
    "required": ["name", "port", "protocol"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 253},
        "hostname": {"type": "string", "minLength": 1, "maxLength": 253},
        "port": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
        "protocol": {"type": "string", "minLength": 1, "maxLength": 255},
        "tls": _OPAQUE,
        "allowedRoutes": {
            "type": "object",
            "default": {"namespaces": {"from": "Same"}},
            "properties": {
                "namespaces": {
                    "type": "object",
                    "default": {"from": "Same"},
                    "properties": {
                        "from": {"type": "string", "default": "Same", "enum": ["All", "Same", "Selector"]},
                        "selector": _LABEL_SELECTOR,
                    },
                },
                "kinds": {
                    "type": "array",
                    "maxItems": 8,
                    "items": {
                        "type": "object",
                        "required": ["kind"],
                        "properties": {
                            "group": {"type": "string", "default": GROUP},
                            "kind": {"type": "string", "minLength": 1},
                        },
                    },
                },
            },
        },
    },
}

GATEWAYCLASS_CRD: dict[str, Any] = _crd(
    "GatewayClass",
    "gatewayclasses",
    "Cluster",
    {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["controllerName"],
                "properties": {
                    "controllerName": {"type": "string", "minLength": 1, "maxLength": 253},
                    "description": {"type": "string", "maxLength": 64},
                    "parametersRef": _OPAQUE,
                },
            },
            "status": {"type": "object", "properties": {"conditions": _CONDITIONS}},
        },
        "required": ["spec"],
    },
    shortNames=["gc"],
)

GATEWAY_CRD: dict[str, Any] = _crd(
    "Gateway",
    "gateways",
    "Namespaced",
    {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["gatewayClassName", "listeners"],
                "properties": {
                    "gatewayClassName": _NAME,
                    "listeners": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 64,
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": _LISTENER,
                    },
                    "addresses": {"type": "array", "items": _OPAQUE},
                    "infrastructure": _OPAQUE,
                },
            },
            "status": {
                "type": "object",
                "properties": {
                    "conditions": _CONDITIONS,
                    "addresses": {"type": "array", "items": _OPAQUE},
                    "listeners": {"type": "array", "items": _OPAQUE},
                },
            },
        },
        "required": ["spec"],
    },
    shortNames=["gtw"],
)

GATEWAY_API_CRDS: tuple[dict[str, Any], ...] = (GATEWAYCLASS_CRD, GATEWAY_CRD, HTTPROUTE_CRD)


def default_gateway_class() -> dict[str, Any]:
    """The sandbox's GatewayClass: its Gateways are the simulated controller's."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GatewayClass",
        "metadata": {"name": DEFAULT_CLASS},
        "spec": {
            "controllerName": CONTROLLER_NAME,
            "description": "The sandbox's simulated Gateway controller",
        },
    }


def default_gateway() -> dict[str, Any]:
    """The Gateway ``public`` in ``default``: one HTTP listener on port 80 for routes of any namespace."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Gateway",
        "metadata": {"name": DEFAULT_GATEWAY, "namespace": DEFAULT_GATEWAY_NAMESPACE},
        "spec": {
            "gatewayClassName": DEFAULT_CLASS,
            "listeners": [
                {
                    "name": "http",
                    "port": 80,
                    "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }


async def install_gateway_api(store: Store, *, httproute_crd: dict[str, Any] | None = None) -> None:
    """
    Serve GatewayClass, Gateway and HTTPRoute (``httproute_crd`` instead of the sandbox's own, e.g.
    the upstream one), and create the default GatewayClass and Gateway if they are not there.
    """
    for crd in (GATEWAYCLASS_CRD, GATEWAY_CRD, httproute_crd or HTTPROUTE_CRD):
        await store.install_crd(crd)
    for resource, namespace, body in (
        ("gatewayclasses.gateway.networking.k8s.io", None, default_gateway_class()),
        ("gateways.gateway.networking.k8s.io", DEFAULT_GATEWAY_NAMESPACE, default_gateway()),
    ):
        listed = await store.list(
            resource, namespace, field_selector=f"metadata.name={body['metadata']['name']}"
        )
        if not listed["items"]:
            await store.create(resource, body, namespace)
