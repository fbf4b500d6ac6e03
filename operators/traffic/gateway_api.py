"""Gateway API: one HTTPRoute whose single rule splits traffic between two Services.

The route sends to the stable Service `<name>` and the canary Service
`<name>-canary` with weights that add up to 100. Gateway API weights are
proportional, so reading a route back normalises them to percent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from operators.api.refs import RolloutRef
from operators.api.rollout import GatewayAPITraffic, RolloutSpec, ServiceSpec
from operators.rollout.ownership import CANARY, STABLE, managed_metadata
from operators.rollout.render import object_name
from operators.traffic.base import ObjectKey, Weights

API_VERSION = "gateway.networking.k8s.io/v1"
KIND = "HTTPRoute"
# What the API server fills in for a backendRef that leaves them out.
DEFAULT_BACKEND_GROUP = ""
DEFAULT_BACKEND_KIND = "Service"
DEFAULT_BACKEND_WEIGHT = 1


def _config(spec: RolloutSpec) -> GatewayAPITraffic:
    if spec.traffic is None or spec.traffic.gateway_api is None:
        raise ValueError("the Gateway API provider needs spec.traffic.gatewayAPI")
    return spec.traffic.gateway_api


class GatewayAPIProvider:
    """Traffic shifting with a Gateway API (v1) HTTPRoute."""

    name: str = "gatewayAPI"

    def route_name(self, ref: RolloutRef, spec: RolloutSpec) -> str:
        """`traffic.gatewayAPI.httpRoute`, defaulting to the Rollout's name."""
        return _config(spec).http_route or ref.name

    def object_keys(self, ref: RolloutRef, spec: RolloutSpec) -> list[ObjectKey]:
        return [ObjectKey(API_VERSION, KIND, ref.namespace, self.route_name(ref, spec))]

    def desired_objects(self, ref: RolloutRef, spec: RolloutSpec, weights: Weights) -> list[dict[str, Any]]:
        config = _config(spec)
        # The spec model refuses traffic without a service; this guards a bypassed model.
        port = spec.service.port if spec.service is not None else ServiceSpec().port
        route_spec: dict[str, Any] = {}
        # Empty lists are left out: the API server drops them anyway, and a diff against it stays quiet.
        if config.parent_refs:
            route_spec["parentRefs"] = [parent.to_api() for parent in config.parent_refs]
        if config.hostnames:
            route_spec["hostnames"] = list(config.hostnames)
        route_spec["rules"] = [
            {
                "backendRefs": [
                    {"name": object_name(ref, STABLE), "port": port, "weight": weights.stable},
                    {"name": object_name(ref, CANARY), "port": port, "weight": weights.canary},
                ]
            }
        ]
        return [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": managed_metadata(ref, self.route_name(ref, spec)),
                "spec": route_spec,
            }
        ]

    def observed_weights(
        self, ref: RolloutRef, spec: RolloutSpec, observed: Mapping[ObjectKey, dict[str, Any]]
    ) -> Weights | None:
        (key,) = self.object_keys(ref, spec)
        route = observed.get(key)
        if route is None:
            return None
        rules = (route.get("spec") or {}).get("rules") or []
        ours = {object_name(ref, STABLE): STABLE, object_name(ref, CANARY): CANARY}
        splits = [split for rule in rules if (split := _rule_split(rule, ref.namespace, ours))[0]]
        # One rule routing to our Services and nothing else is what we write; anything else
        # (several such rules, a third backend) is no stable/canary split we can state.
        if len(splits) != 1:
            return None
        weights, routes_elsewhere = splits[0]
        stable, canary = weights.get(STABLE, 0), weights.get(CANARY, 0)
        if routes_elsewhere or stable + canary == 0:
            return None
        return Weights.to_canary(round(100 * canary / (stable + canary)))


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
