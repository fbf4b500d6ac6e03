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

Header and mirror routes map to Istio's own fields (`sluice_routes`). Istio takes
the first HTTP route whose `match` holds, in order, so Sluice's routes go right
before each route that splits traffic: a header route becomes an HTTP route
`sluice-header-<name>` whose `match` is the split route's narrowed by the header
route's (`istio_match` converts the Gateway API HTTPRouteMatch shape) and whose
one destination is the canary Service; a mirror route with matches becomes
`sluice-mirror-<name>`, the split with `mirror`/`mirrorPercentage` added; a
mirror route without matches puts `mirror`/`mirrorPercentage` on the split route
itself. Sluice's routes and its mirrors to the canary are recognised on the live
object (by name, by mirror host), recomputed on every pass, and removed on hand-back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from operators.foundation.diff import plain
from operators.foundation.keys import ObjectKey
from operators.foundation.model import ApiModel
from operators.traffic.base import CannotAdopt, Refusal, TrafficTarget, Weights
from operators.traffic.gateway_api import DNS1123_SUBDOMAIN_PATTERN
from operators.traffic.routes import NO_ROUTES, MirrorRoute, RouteMatch, Routes

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
# The HTTP routes Sluice adds for header and mirror routes are named so: recognised, and recomputed
# or removed, on every pass.
SLUICE_ROUTE_PREFIX = "sluice-"
# The fields of an HTTP route that mirror its requests (`mirror_percent`, `mirrorPercent`: deprecated).
MIRROR_FIELDS = ("mirror", "mirrorPercentage", "mirrors", "mirror_percent", "mirrorPercent")


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
    # Header and mirror routes map to Istio's match and mirror/mirrorPercentage (sluice_routes).
    supports_routes = True
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
        canary = {"host": target.canary_service, "port": port}
        http: list[dict[str, Any]] = []
        for number, name in enumerate(names, start=1):
            split = {
                "name": name,
                "route": [
                    {"destination": {"host": target.stable_service, "port": port}, "weight": weights.stable},
                    {"destination": canary, "weight": weights.canary},
                ],
            }
            suffix = f"-{number}" if len(names) > 1 else ""
            http.extend(sluice_routes(split, canary, routes, suffix))
            http.append(with_mirrors(split, canary, _unmatched(routes)))
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
            if (named and route.get("name") not in named) or is_sluice_route(route):
                continue  # Sluice's header and mirror routes are additions on top of the split
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
        return adopted_virtual_service(live, target, weights, config.virtual_service.routes, routes)

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
    live: Mapping[str, Any],
    target: TrafficTarget,
    weights: Weights,
    names: Sequence[str] = (),
    routes: Routes = NO_ROUTES,
) -> dict[str, Any]:
    """The apply body that makes an existing VirtualService (not ours) split its stable traffic.

    Only `spec.http` (the whole list: it is atomic) and our marks in the metadata: no hosts, no
    gateways, no owner references. Header and mirror `routes` become HTTP routes of Sluice's own
    right before each split route (`sluice_routes`), and mirrors on the split routes. Raises
    CannotAdopt when it cannot be split without guessing.
    """
    meta = live.get("metadata") or {}
    namespace = meta.get("namespace") or target.namespace
    described = f"VirtualService {namespace}/{meta.get('name')}"
    # What Sluice added at its last pass goes first: it is recomputed below from the owner's routes.
    http = [
        _without_mirrors_to(route, target.canary_service, namespace)
        for route in (live.get("spec") or {}).get("http") or []
        if not is_sluice_route(route)
    ]
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
    # Each route as it will be, with the canary destination of those that split (None: not split).
    new_http: list[tuple[dict[str, Any], dict[str, Any] | None, str]] = []
    originals: dict[str, int | None] = {}
    for number, route in enumerate(http, start=1):
        label = f"HTTP route {route.get('name')!r}" if route.get("name") else f"HTTP route {number}"
        stable, canary, others = _sort_destinations(
            route, namespace, target.stable_service, target.canary_service
        )
        if names and route.get("name") not in names:
            new_http.append((plain(route), None, label))
            continue
        if not stable:
            if names:
                raise CannotAdopt(
                    f"{described} {label} sends no traffic to Service {target.stable_service}: there is "
                    f"nothing for Sluice to split in it; point it at the stable Service or name another route"
                )
            new_http.append((plain(route), None, label))  # not the stable Service's traffic: as found
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
        canary_destination = plain(stable_destination.get("destination") or {})
        canary_destination["host"] = _canary_host(canary_destination.get("host"), target.canary_service)
        # A subset is a DestinationRule's, for the stable host: the canary Service has none.
        canary_destination.pop("subset", None)
        new_route = plain(route)
        new_route["route"] = [
            {**plain(stable_destination), "weight": weights.stable},
            {**plain(stable_destination), "destination": canary_destination, "weight": weights.canary},
        ]
        new_http.append((new_route, canary_destination, label))
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
        "spec": {"http": _with_sluice_routes(new_http, routes, described)},
    }


def _with_sluice_routes(
    http: Sequence[tuple[dict[str, Any], dict[str, Any] | None, str]], routes: Routes, described: str
) -> list[dict[str, Any]]:
    """The HTTP routes with Sluice's header and mirror routes right before each split route."""
    split_count = sum(1 for _, canary, _ in http if canary is not None)
    result: list[dict[str, Any]] = []
    number = 0
    for route, canary, label in http:
        if canary is None:
            result.append(route)
            continue
        number += 1
        suffix = f"-{number}" if split_count > 1 else ""
        where = f"{described} {label}"
        result.extend(sluice_routes(route, canary, routes, suffix, where))
        result.append(with_mirrors(route, canary, _unmatched(routes), where))
    return result


def hand_back_virtual_service(live: Mapping[str, Any]) -> dict[str, Any]:
    """The apply body that gives an adopted VirtualService back as its owner last wrote it.

    The canary destinations go from the routes the adoption recorded, each stable destination
    gets back the weight it had (none: Istio's default), Sluice's header and mirror routes and its
    mirrors to the canary go, and our labels and annotations go too,
    being left out of the apply. Every other route and field is as the live object has it now.
    """
    meta = live.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    recorded = _recorded(live)
    stable_service, canary_service = recorded.get("stableService"), recorded.get("canaryService")
    weights = recorded.get("stableWeights")
    weights = weights if isinstance(weights, Mapping) else {}
    http: list[dict[str, Any]] = []
    for live_route in (live.get("spec") or {}).get("http") or []:
        if is_sluice_route(live_route):
            continue  # a header or mirror route of Sluice's
        route = _without_mirrors_to(live_route, canary_service, namespace)
        if route.get("name") not in weights:
            http.append(plain(route))
            continue
        original = weights[route.get("name")]
        destinations: list[dict[str, Any]] = []
        for destination in route.get("route") or []:
            service = service_of((destination.get("destination") or {}).get("host"), namespace)
            if service == canary_service:
                continue
            restored = plain(destination)
            if service == stable_service:
                restored.pop("weight", None)
                if isinstance(original, int) and not isinstance(original, bool):
                    restored["weight"] = original
            destinations.append(restored)
        http.append({**plain(route), "route": destinations})
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


# ---- header and mirror routes ---------------------------------------------------------------------


def is_sluice_route(route: Mapping[str, Any]) -> bool:
    """Whether an HTTP route is one Sluice added for a header or mirror route (by its name)."""
    name = route.get("name")
    return isinstance(name, str) and name.startswith(SLUICE_ROUTE_PREFIX)


def sluice_routes(
    split: Mapping[str, Any], canary: Mapping[str, Any], routes: Routes, suffix: str = "", where: str = ""
) -> list[dict[str, Any]]:
    """Sluice's HTTP routes for the header routes and the mirror routes with matches, derived from
    one route that splits traffic (already holding its stable and canary destinations), to go
    right before it.

    Each keeps the split route's own `match`, narrowed by the route's (`_narrowed`): it takes a
    subset of the requests the split route would, and, coming first, takes them. A header route
    sends to the canary alone; a mirror route keeps the split and adds the mirror. The split route's
    other fields (retries, timeout, header rules) carry over: the requests are treated as before.
    """
    kept = {key: plain(value) for key, value in split.items() if key not in ("name", "match")}
    derived: list[dict[str, Any]] = []
    for header in routes.headers:
        derived.append(
            {
                **{key: value for key, value in kept.items() if key not in MIRROR_FIELDS},
                "name": f"{SLUICE_ROUTE_PREFIX}header-{header.name}{suffix}",
                "match": _narrowed(split.get("match"), header.matches or []),
                # One destination, the canary's: Istio sends a lone destination all the requests.
                "route": [{"destination": plain(canary), "weight": 100}],
            }
        )
    for mirror in routes.mirrors:
        if mirror.matches is None or mirror.percent is None:
            continue  # mirrors every request the split route gets: on the split route (with_mirrors)
        derived.append(
            with_mirrors(
                {
                    **kept,
                    "name": f"{SLUICE_ROUTE_PREFIX}mirror-{mirror.name}{suffix}",
                    "match": _narrowed(split.get("match"), mirror.matches),
                },
                canary,
                [mirror],
                where,
            )
        )
    return derived


def with_mirrors(
    route: Mapping[str, Any], canary: Mapping[str, Any], mirrors: Sequence[MirrorRoute], where: str = ""
) -> dict[str, Any]:
    """The route copying `percent` of its requests to the canary per mirror route.

    One mirror is Istio's `mirror` and `mirrorPercentage`; several (each its own copy, as Gateway
    API filters are) its `mirrors` list. None: the mirror fields set to None, not absent, so that a
    live route still holding a removed mirror differs (foundation/diff.py's covers); the apply leaves
    them out (apply_body). A route of the owner's that mirrors already is refused: Istio takes
    `mirror` or `mirrors`, one per route, and Sluice would have to replace the owner's.
    """
    owners = [field for field in MIRROR_FIELDS if route.get(field) is not None]
    # Every mirror field Sluice may write, unset unless written below (and not the owner's).
    unset = {field: None for field in ("mirror", "mirrorPercentage", "mirrors") if field not in owners}
    if not mirrors:
        return {**route, **unset}
    if owners:
        raise CannotAdopt(
            f"{where} mirrors its requests already ({', '.join(owners)}): Istio takes one mirror "
            f"setting per route, so Sluice cannot add its mirror to the canary; remove the owner's "
            f"mirror or mirror in a route of its own"
        )
    if len(mirrors) == 1:
        return {
            **route,
            **unset,
            "mirror": plain(canary),
            "mirrorPercentage": {"value": float(mirrors[0].percent or 0)},
        }
    return {
        **route,
        **unset,
        "mirrors": [
            {"destination": plain(canary), "percentage": {"value": float(mirror.percent or 0)}}
            for mirror in mirrors
        ],
    }


def istio_match(match: RouteMatch) -> dict[str, Any]:
    """A Gateway API HTTPRouteMatch as Istio's HTTPMatchRequest: the same requests, all conditions ANDed.

    Header names go lowercase (Istio wants them so; HTTP header names are case-insensitive). A
    path prefix is Gateway API's, element by element (`/api` takes `/api` and `/api/v1`, not
    `/apis`), which Istio's `prefix` is not: it becomes a `regex` but for `/`, which takes every path.
    """
    result: dict[str, Any] = {}
    if match.path is not None:
        result["uri"] = _uri(match.path.type or "PathPrefix", match.path.value or "/")
    if match.headers:
        result["headers"] = {
            header.name.lower(): _string_match(header.type, header.value) for header in match.headers
        }
    if match.query_params:
        result["queryParams"] = {
            param.name: _string_match(param.type, param.value) for param in match.query_params
        }
    if match.method is not None:
        result["method"] = {"exact": match.method}
    return result


def _uri(kind: str, value: str) -> dict[str, str]:
    if kind == "Exact":
        return {"exact": value}
    if kind == "RegularExpression":
        return {"regex": value}
    trimmed = value.rstrip("/")
    if not trimmed:
        return {"prefix": "/"}
    return {"regex": f"{re.escape(trimmed)}(/.*)?"}


def _string_match(kind: str | None, value: str) -> dict[str, str]:
    return {"regex": value} if kind == "RegularExpression" else {"exact": value}


def _narrowed(base: Any, matches: Sequence[RouteMatch]) -> list[dict[str, Any]]:
    """Every (route match, Sluice's match) pair as one match holding the conditions of both (Istio
    ORs the entries of a `match` list and ANDs the conditions of one). The route's headers and query
    parameters gain Sluice's; Sluice's path and method take the place of the route's."""
    result: list[dict[str, Any]] = []
    for outer in base or [{}]:
        for inner in matches:
            extra = istio_match(inner)
            merged = plain(outer)
            for key in ("uri", "method"):
                if key in extra:
                    merged[key] = extra[key]
            for key in ("headers", "queryParams"):
                if key in extra:
                    merged[key] = {**(merged.get(key) or {}), **extra[key]}
            result.append(merged)
    return result


def _unmatched(routes: Routes) -> list[MirrorRoute]:
    """The mirror routes that mirror every request of the split routes."""
    return [mirror for mirror in routes.mirrors if mirror.matches is None and mirror.percent is not None]


def _without_mirrors_to(route: Mapping[str, Any], canary_service: Any, namespace: str) -> dict[str, Any]:
    """The route without the mirrors to the canary Service that Sluice added (the owner's stay)."""
    # A null mirror field is one Sluice left unset (with_mirrors): no field at all.
    result = {key: value for key, value in route.items() if not (key in MIRROR_FIELDS and value is None)}
    if service_of((route.get("mirror") or {}).get("host"), namespace) == canary_service:
        for field in ("mirror", "mirrorPercentage", "mirror_percent", "mirrorPercent"):
            result.pop(field, None)
    mirrors = route.get("mirrors")
    if isinstance(mirrors, list):
        kept = [
            item
            for item in mirrors
            if service_of(((item or {}).get("destination") or {}).get("host"), namespace) != canary_service
        ]
        result.pop("mirrors")
        if kept:
            result["mirrors"] = kept
    return result
