"""Istio: a VirtualService whose HTTP routes split traffic between two Services by weight.

The VirtualService Sluice creates (`traffic.istio.virtualService.name`, by default
the Rollout's name) has the stable Service as its host and one HTTP route per
name in `routes` (by default one, `primary`), each sending to the stable and the
canary Service on the Rollout's port with weights that add up to 100, as Istio
wants them.

An existing VirtualService that is someone else's is adopted instead
(`adopted_virtual_service`): each of its HTTP routes named in `routes` (with no
names: each whose destinations include the stable Service) gets the canary
Service next to the stable one, and both get their weights; every other route,
and every match, retry, timeout, header rule, host and gateway, stays exactly as
found. `spec.http` is an atomic list in Istio's schema, so server-side apply
cannot own part of it: the whole list is applied, recomputed from the live
object on every pass, so what others change in other routes is kept. A route
sending to the stable Service *and* elsewhere is refused, as the Gateway API
provider refuses such a rule: Istio weights add up to 100, so splitting only the
stable share would mean rewriting the other destinations' weights. What the
adoption changed (the stable destinations' weights, by route) is recorded in an
annotation, so `hand_back_virtual_service` restores it from the live object alone.

Istio reports nothing about a VirtualService in its status that says "refused"
the way a Gateway's `Accepted=False` does (its analysis messages are warnings):
`refusals` is always empty.

Header routes and mirroring (Istio's `match`, `mirror`, `mirrorPercentage`) are
not mapped yet: this provider routes by weight only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from operators.foundation.keys import ObjectKey
from operators.foundation.model import ApiModel
from operators.traffic.base import CannotAdopt, Refusal, TrafficTarget, Weights
from operators.traffic.gateway_api import DNS1123_SUBDOMAIN_PATTERN
from operators.traffic.routes import NO_ROUTES, Routes

GROUP = "networking.istio.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VirtualService"
# The HTTP route of a VirtualService Sluice creates, when `routes` names none.
DEFAULT_ROUTE = "primary"
# On an adopted VirtualService: what the adoption changed, so that handing it back needs nothing else.
ADOPTED_DESTINATIONS_ANNOTATION = "sluice.dev/adopted-destinations"
# The suffix of a Service's fully qualified host name inside the mesh.
CLUSTER_DOMAIN = "svc.cluster.local"


class VirtualServiceRef(ApiModel):
    """The VirtualService to manage, and which of its HTTP routes split traffic."""

    name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="Name of the VirtualService (created if absent, adopted if it exists). "
        "Defaults to the Rollout's name.",
    )
    routes: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Names of the HTTP routes whose destinations Sluice splits. A VirtualService "
        f"Sluice creates has one route per name (default: one, `{DEFAULT_ROUTE}`); on an existing one, "
        "without names every route sending to the stable Service is split.",
    )


class IstioTraffic(ApiModel):
    """Traffic shifting with an Istio VirtualService holding two weighted destinations."""

    virtual_service: VirtualServiceRef = Field(default_factory=VirtualServiceRef, alias="virtualService")


class IstioProvider:
    """Traffic shifting with an Istio (networking.istio.io/v1) VirtualService."""

    field = "istio"
    # Header and mirror routes would map to Istio's match and mirror/mirrorPercentage: not yet.
    supports_routes = False
    config_model = IstioTraffic
    resources = ((GROUP, VERSION, "virtualservices", KIND),)

    def name(self, target: TrafficTarget, config: IstioTraffic) -> str:
        """`traffic.istio.virtualService.name`, defaulting to the release's name."""
        return config.virtual_service.name or target.name

    def object_keys(self, target: TrafficTarget, config: IstioTraffic) -> list[ObjectKey]:
        return [ObjectKey(API_VERSION, KIND, target.namespace, self.name(target, config))]

    def desired_objects(
        self, target: TrafficTarget, config: IstioTraffic, weights: Weights, routes: Routes = NO_ROUTES
    ) -> list[dict[str, Any]]:
        names = config.virtual_service.routes or [DEFAULT_ROUTE]
        port = {"number": target.port}
        http = [
            {
                "name": route,
                "route": [
                    {"destination": {"host": target.stable_service, "port": port}, "weight": weights.stable},
                    {"destination": {"host": target.canary_service, "port": port}, "weight": weights.canary},
                ],
            }
            for route in names
        ]
        return [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": target.metadata(self.name(target, config)),
                "spec": {"hosts": [target.stable_service], "http": http},
            }
        ]

    def observed_weights(
        self, target: TrafficTarget, config: IstioTraffic, observed: Mapping[ObjectKey, Mapping[str, Any]]
    ) -> Weights | None:
        (key,) = self.object_keys(target, config)
        live = observed.get(key)
        if live is None:
            return None
        namespace = target.namespace
        ours = {target.stable_service: _STABLE, target.canary_service: _CANARY}
        named = set(config.virtual_service.routes)
        canary_shares: set[int] = set()
        for route in (live.get("spec") or {}).get("http") or []:
            if named and route.get("name") not in named:
                continue
            weights, elsewhere = _route_split(route, namespace, ours)
            if not weights:
                continue  # not one of ours (an adopted object's other routes)
            stable, canary = weights.get(_STABLE, 0), weights.get(_CANARY, 0)
            # A destination elsewhere, or weights that route nothing: no split this provider states.
            if elsewhere or stable + canary == 0:
                return None
            canary_shares.add(round(100 * canary / (stable + canary)))
        if len(canary_shares) != 1:
            return None  # none of ours, or routes that disagree
        return Weights.to_canary(canary_shares.pop())

    def adopt(
        self,
        target: TrafficTarget,
        config: IstioTraffic,
        weights: Weights,
        live: Mapping[str, Any],
        routes: Routes = NO_ROUTES,
    ) -> dict[str, Any]:
        return adopted_virtual_service(live, target, weights, config.virtual_service.routes)

    def hand_back(self, live: Mapping[str, Any]) -> dict[str, Any]:
        return hand_back_virtual_service(live)

    def refusals(
        self, target: TrafficTarget, config: IstioTraffic, observed: Mapping[ObjectKey, Mapping[str, Any]]
    ) -> list[Refusal]:
        return []  # Istio reports no refusal of a VirtualService in its status (module docs)


_STABLE = "stable"
_CANARY = "canary"


def service_of(host: Any, namespace: str) -> str | None:
    """The Service of the VirtualService's namespace that a destination host names, else None.

    Istio reads a short name (`web`) in the VirtualService's namespace; `web.shop`,
    `web.shop.svc` and `web.shop.svc.cluster.local` name the same Service.
    """
    if not isinstance(host, str) or not host:
        return None
    name, _, rest = host.partition(".")
    if rest in ("", namespace, f"{namespace}.svc", f"{namespace}.{CLUSTER_DOMAIN}"):
        return name
    return None


def _weight(destination: Mapping[str, Any], count: int) -> int:
    """A destination's weight as Istio reads it: a lone destination without one gets all the traffic."""
    value = destination.get("weight")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return 100 if count == 1 else 0


def _route_split(
    route: Mapping[str, Any], namespace: str, ours: Mapping[str, str]
) -> tuple[dict[str, int], bool]:
    """The weight per track of our Services in one HTTP route, and whether it also routes elsewhere."""
    destinations = route.get("route") or []
    weights: dict[str, int] = {}
    elsewhere = False
    for destination in destinations:
        service = service_of((destination.get("destination") or {}).get("host"), namespace)
        track = ours.get(service or "")
        if track is None:
            elsewhere = True
            continue
        weights[track] = weights.get(track, 0) + _weight(destination, len(destinations))
    return weights, elsewhere


# ---- adopting someone else's VirtualService --------------------------------------------------------


def adopted_virtual_service(
    live: Mapping[str, Any], target: TrafficTarget, weights: Weights, names: Sequence[str] = ()
) -> dict[str, Any]:
    """The apply body that makes an existing VirtualService (not ours) split its stable traffic.

    Only `spec.http` (the whole list: it is atomic) and our marks in the metadata: no hosts, no
    gateways, no owner references. Raises CannotAdopt when it cannot be split without guessing.
    """
    meta = live.get("metadata") or {}
    namespace = meta.get("namespace") or target.namespace
    described = f"VirtualService {namespace}/{meta.get('name')}"
    http = list((live.get("spec") or {}).get("http") or [])
    recorded = _recorded(live)
    before = recorded.get("stableWeights") if recorded.get("canaryService") == target.canary_service else None
    before = before if isinstance(before, Mapping) else {}
    present = {route.get("name") for route in http}
    missing = [name for name in names if name not in present]
    if missing:
        raise CannotAdopt(
            f"{described} has no HTTP route named {', '.join(missing)}: name routes it has in "
            f"traffic.istio.virtualService.routes (its routes: {_names(http)})"
        )
    new_http: list[dict[str, Any]] = []
    originals: dict[str, int | None] = {}
    for number, route in enumerate(http, start=1):
        label = f"HTTP route {route.get('name')!r}" if route.get("name") else f"HTTP route {number}"
        stable, canary, others = _sort_destinations(
            route, namespace, target.stable_service, target.canary_service
        )
        if names and route.get("name") not in names:
            new_http.append(_copied(route))
            continue
        if not stable:
            if names:
                raise CannotAdopt(
                    f"{described} {label} sends no traffic to Service {target.stable_service}: there is "
                    f"nothing for Sluice to split in it; point it at the stable Service or name another route"
                )
            new_http.append(_copied(route))  # not the stable Service's traffic: exactly as found
            continue
        if others:
            raise CannotAdopt(
                f"{described} {label} sends traffic to Service {target.stable_service} and to "
                f"{', '.join(str((d.get('destination') or {}).get('host')) for d in others)}: Sluice splits "
                f"only a route whose destinations are the stable Service alone; move the others to a "
                f"route of their own"
            )
        if len(stable) > 1:
            raise CannotAdopt(
                f"{described} {label} names Service {target.stable_service} {len(stable)} times: Sluice "
                f"cannot tell which destination to split; keep one"
            )
        if not isinstance(route.get("name"), str) or not route.get("name"):
            raise CannotAdopt(
                f"{described} {label} has no name: Sluice records what it changed by route name; "
                f"name the route"
            )
        (stable_destination,) = stable
        route_name = str(route["name"])
        # A route without our canary is as its owner wrote it: its weight is the one to restore.
        # With it, the weight is ours, and the one to restore is the one recorded at adoption.
        original = before.get(route_name) if canary else stable_destination.get("weight")
        originals[route_name] = (
            original if isinstance(original, int) and not isinstance(original, bool) else None
        )
        canary_destination = _copied(stable_destination.get("destination") or {})
        canary_destination["host"] = _canary_host(canary_destination.get("host"), target.canary_service)
        # A subset is a DestinationRule's, for the stable host: the canary Service has none.
        canary_destination.pop("subset", None)
        new_route = _copied(route)
        new_route["route"] = [
            {**_copied(stable_destination), "weight": weights.stable},
            {**_copied(stable_destination), "destination": canary_destination, "weight": weights.canary},
        ]
        new_http.append(new_route)
    if not originals:
        raise CannotAdopt(
            f"{described} has no HTTP route sending traffic to Service {target.stable_service}: there is "
            f"nothing for Sluice to split; point a route at it or name another VirtualService in "
            f"traffic.istio.virtualService.name"
        )
    record = {
        "stableService": target.stable_service,
        "canaryService": target.canary_service,
        "stableWeights": originals,
    }
    annotations = {
        **target.adopted_annotations,
        ADOPTED_DESTINATIONS_ANNOTATION: json.dumps(record, sort_keys=True, separators=(",", ":")),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": meta.get("name"),
            "namespace": namespace,
            "labels": dict(target.labels),
            "annotations": annotations,
        },
        "spec": {"http": new_http},
    }


def hand_back_virtual_service(live: Mapping[str, Any]) -> dict[str, Any]:
    """The apply body that gives an adopted VirtualService back as its owner last wrote it.

    The canary destinations go from the routes the adoption recorded, each stable destination
    gets back the weight it had (none: Istio's default), and our labels and annotations go too,
    being left out of the apply. Every other route and field is as the live object has it now.
    """
    meta = live.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    recorded = _recorded(live)
    stable_service, canary_service = recorded.get("stableService"), recorded.get("canaryService")
    weights = recorded.get("stableWeights")
    weights = weights if isinstance(weights, Mapping) else {}
    http: list[dict[str, Any]] = []
    for route in (live.get("spec") or {}).get("http") or []:
        if route.get("name") not in weights:
            http.append(_copied(route))
            continue
        original = weights[route.get("name")]
        destinations: list[dict[str, Any]] = []
        for destination in route.get("route") or []:
            service = service_of((destination.get("destination") or {}).get("host"), namespace)
            if service == canary_service:
                continue
            restored = _copied(destination)
            if service == stable_service:
                restored.pop("weight", None)
                if isinstance(original, int) and not isinstance(original, bool):
                    restored["weight"] = original
            destinations.append(restored)
        http.append({**_copied(route), "route": destinations})
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": meta.get("name"), "namespace": namespace},
        "spec": {"http": http},
    }


def _sort_destinations(
    route: Mapping[str, Any], namespace: str, stable: str, canary: str
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """A route's destinations: to the stable Service, to the canary Service, and to anything else."""
    found: tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[Mapping[str, Any]]] = ([], [], [])
    for destination in route.get("route") or []:
        service = service_of((destination.get("destination") or {}).get("host"), namespace)
        if service == stable:
            found[0].append(destination)
        elif service == canary:
            found[1].append(destination)
        else:
            found[2].append(destination)
    return found


def _canary_host(stable_host: Any, canary_service: str) -> str:
    """The canary Service's host written the way the stable one is (short or qualified)."""
    if not isinstance(stable_host, str):
        return canary_service
    _, dot, rest = stable_host.partition(".")
    return f"{canary_service}{dot}{rest}"


def _recorded(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What an adoption recorded on the object; {} when nothing (or nothing readable) is."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(ADOPTED_DESTINATIONS_ANNOTATION)
    try:
        record = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _names(http: Sequence[Mapping[str, Any]]) -> str:
    names = [str(route["name"]) for route in http if route.get("name")]
    return ", ".join(names) if names else "none named"


def _copied(value: Any) -> Any:
    """A deep copy of JSON data: what is kept exactly as found must not share lists with the input."""
    if isinstance(value, Mapping):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value
