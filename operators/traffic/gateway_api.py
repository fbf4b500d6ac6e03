"""Gateway API: one HTTPRoute whose single rule splits traffic between two Services.

The route sends to the stable Service `<name>` and the canary Service
`<name>-canary` with weights that add up to 100. Gateway API weights are
proportional, so reading a route back normalises them to percent.

A Gateway controller reports on the route in `status.parents[]`: per parent
(Gateway) its `Accepted` and `ResolvedRefs` conditions. `route_refusals` reads
them: a parent that explicitly refused the route as it is now (the condition's
`observedGeneration` is the route's generation, the parent is still one of its
`parentRefs`) is a refusal; a route no controller reported on (clusters
without one) has none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from operators.foundation.keys import ObjectKey
from operators.foundation.model import ApiModel
from operators.traffic.base import Refusal, TrafficTarget, Weights

API_VERSION = "gateway.networking.k8s.io/v1"
KIND = "HTTPRoute"
# What the API server fills in for a backendRef that leaves them out.
DEFAULT_BACKEND_GROUP = ""
DEFAULT_BACKEND_KIND = "Service"
DEFAULT_BACKEND_WEIGHT = 1
# What the API server fills in for a parentRef that leaves them out.
DEFAULT_PARENT_GROUP = "gateway.networking.k8s.io"
DEFAULT_PARENT_KIND = "Gateway"
# What Sluice reports a route's refusal under (the Rollout's condition reason), by route condition.
REFUSAL_REASONS = {"Accepted": "RouteNotAccepted", "ResolvedRefs": "RouteRefsNotResolved"}
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

    def refusals(
        self,
        target: TrafficTarget,
        config: GatewayAPITraffic,
        observed: Mapping[ObjectKey, Mapping[str, Any]],
    ) -> list[Refusal]:
        (key,) = self.object_keys(target, config)
        route = observed.get(key)
        return [] if route is None else route_refusals(route)


_STABLE = "stable"
_CANARY = "canary"


def route_refusals(route: Mapping[str, Any]) -> list[Refusal]:
    """Each `Accepted=False` or `ResolvedRefs=False` a controller reported for the route as it is now."""
    meta = route.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    generation = meta.get("generation")
    current = {_parent_identity(namespace, ref) for ref in (route.get("spec") or {}).get("parentRefs") or []}
    refusals: list[Refusal] = []
    for entry in (route.get("status") or {}).get("parents") or []:
        parent_ref = entry.get("parentRef") or {}
        if _parent_identity(namespace, parent_ref) not in current:
            continue  # a parent the route no longer names: what was said of it is history
        for condition in entry.get("conditions") or []:
            kind = condition.get("type")
            if kind not in REFUSAL_REASONS or condition.get("status") != "False":
                continue
            observed = condition.get("observedGeneration")
            if observed is not None and generation is not None and observed != generation:
                continue  # said of an earlier spec: the controller has yet to look at this one
            refusals.append(Refusal(REFUSAL_REASONS[kind], _refusal_message(route, parent_ref, condition)))
    return refusals


def _parent_identity(namespace: str, parent_ref: Mapping[str, Any]) -> tuple[Any, ...]:
    """A parentRef with the API server's defaults, so a status entry matches the spec's ref."""
    return (
        parent_ref.get("group", DEFAULT_PARENT_GROUP),
        parent_ref.get("kind", DEFAULT_PARENT_KIND),
        parent_ref.get("namespace") or namespace,
        parent_ref.get("name"),
        parent_ref.get("sectionName"),
        parent_ref.get("port"),
    )


def _refusal_message(
    route: Mapping[str, Any], parent_ref: Mapping[str, Any], condition: Mapping[str, Any]
) -> str:
    """`HTTPRoute shop/web is not accepted by Gateway infra/public: NoMatchingParent (...)`."""
    meta = route.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    parent = (
        f"{parent_ref.get('kind', DEFAULT_PARENT_KIND)} "
        f"{parent_ref.get('namespace') or namespace}/{parent_ref.get('name')}"
    )
    if parent_ref.get("sectionName"):
        parent += f" (listener {parent_ref['sectionName']})"
    verdict = "is not accepted by" if condition.get("type") == "Accepted" else "has unresolved references on"
    reason = condition.get("reason") or "no reason given"
    detail = f" ({condition['message']})" if condition.get("message") else ""
    return f"HTTPRoute {namespace}/{meta.get('name')} {verdict} {parent}: {reason}{detail}"


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
