"""Gateway API: one HTTPRoute whose single rule splits traffic between two Services.

The route sends to the stable Service `<name>` and the canary Service
`<name>-canary` with weights that add up to 100. Gateway API weights are
proportional, so reading a route back normalises them to percent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from operators.foundation.keys import ObjectKey
from operators.foundation.model import ApiModel
from operators.traffic.base import TrafficTarget, Weights

API_VERSION = "gateway.networking.k8s.io/v1"
KIND = "HTTPRoute"
# What the API server fills in for a backendRef that leaves them out.
DEFAULT_BACKEND_GROUP = ""
DEFAULT_BACKEND_KIND = "Service"
DEFAULT_BACKEND_WEIGHT = 1
# What an HTTPRoute's name must be (as any object's): a DNS-1123 subdomain of at most 253 characters.
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ParentReference(ApiModel):
    """A Gateway API parentRef: the Gateway (or listener) the route attaches to."""

    name: str
    namespace: str | None = None
    section_name: str | None = None
    port: int | None = None
    group: str | None = None
    kind: str | None = None


class GatewayAPITraffic(ApiModel):
    """Traffic shifting with a Gateway API HTTPRoute holding two weighted backendRefs."""

    http_route: str | None = Field(
        default=None,
        alias="httpRoute",
        max_length=253,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="Name of the HTTPRoute to manage (created if absent). Defaults to the Rollout's name.",
    )
    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)


class GatewayAPIProvider:
    """Traffic shifting with a Gateway API (v1) HTTPRoute."""

    field = "gatewayAPI"
    config_model = GatewayAPITraffic
    resources = (("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"),)

    def route_name(self, target: TrafficTarget, config: GatewayAPITraffic) -> str:
        """`traffic.gatewayAPI.httpRoute`, defaulting to the release's name."""
        return config.http_route or target.name

    def object_keys(self, target: TrafficTarget, config: GatewayAPITraffic) -> list[ObjectKey]:
        return [ObjectKey(API_VERSION, KIND, target.namespace, self.route_name(target, config))]

    def desired_objects(
        self, target: TrafficTarget, config: GatewayAPITraffic, weights: Weights
    ) -> list[dict[str, Any]]:
        route_spec: dict[str, Any] = {}
        # Empty lists are left out: the API server drops them anyway, and a diff against it stays quiet.
        if config.parent_refs:
            route_spec["parentRefs"] = [parent.to_api() for parent in config.parent_refs]
        if config.hostnames:
            route_spec["hostnames"] = list(config.hostnames)
        route_spec["rules"] = [
            {
                "backendRefs": [
                    {"name": target.stable_service, "port": target.port, "weight": weights.stable},
                    {"name": target.canary_service, "port": target.port, "weight": weights.canary},
                ]
            }
        ]
        return [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": target.metadata(self.route_name(target, config)),
                "spec": route_spec,
            }
        ]

    def observed_weights(
        self,
        target: TrafficTarget,
        config: GatewayAPITraffic,
        observed: Mapping[ObjectKey, Mapping[str, Any]],
    ) -> Weights | None:
        (key,) = self.object_keys(target, config)
        route = observed.get(key)
        if route is None:
            return None
        rules = (route.get("spec") or {}).get("rules") or []
        ours = {target.stable_service: _STABLE, target.canary_service: _CANARY}
        splits = [split for rule in rules if (split := _rule_split(rule, target.namespace, ours))[0]]
        # One rule routing to our Services and nothing else is what we write; anything else
        # (several such rules, a third backend) is no stable/canary split we can state.
        if len(splits) != 1:
            return None
        weights, routes_elsewhere = splits[0]
        stable, canary = weights.get(_STABLE, 0), weights.get(_CANARY, 0)
        if routes_elsewhere or stable + canary == 0:
            return None
        return Weights.to_canary(round(100 * canary / (stable + canary)))


_STABLE = "stable"
_CANARY = "canary"


def _rule_split(
    rule: Mapping[str, Any], namespace: str, ours: Mapping[str, str]
) -> tuple[dict[str, int], bool]:
    """The weight per track of our Services in one rule, and whether it also routes elsewhere."""
    weights: dict[str, int] = {}
    routes_elsewhere = False
    for backend in rule.get("backendRefs") or []:
        track = ours.get(backend.get("name", "")) if _is_local_service(backend, namespace) else None
        if track is None:
            routes_elsewhere = True
            continue
        weights[track] = weights.get(track, 0) + int(backend.get("weight", DEFAULT_BACKEND_WEIGHT))
    return weights, routes_elsewhere


def _is_local_service(backend: Mapping[str, Any], namespace: str) -> bool:
    """Whether a backendRef names a Service in the route's namespace, with the API server's defaults."""
    return bool(
        backend.get("group", DEFAULT_BACKEND_GROUP) == DEFAULT_BACKEND_GROUP
        and backend.get("kind", DEFAULT_BACKEND_KIND) == DEFAULT_BACKEND_KIND
        and backend.get("namespace", namespace) == namespace
    )
