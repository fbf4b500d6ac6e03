"""Gateway API: an HTTPRoute whose rules split traffic between two Services.

The route Sluice creates has one rule sending to the stable Service `<name>`
and the canary Service `<name>-canary` with weights that add up to 100.
Gateway API weights are proportional, so reading a route back normalises them
to percent.

An existing route that is someone else's is adopted instead (`adopted_route`):
every rule whose backends are the stable Service gets the canary Service next
to it, and both get their weights; every other rule, and every match, filter,
hostname, parentRef and timeout, stays exactly as found. `spec.rules` is an
atomic list in the Gateway API schema, so server-side apply cannot own part of
it: the whole list is applied, recomputed from the live route on every pass, so
what others change in other rules is kept. A rule sending to the stable Service
*and* to other backends is refused: splitting only the stable Service's share
would mean rewriting the other backends' weights (weights are proportional),
which is not Sluice's to change. What the adoption changed (the stable
backendRefs' weights, the canary Service's name) is recorded in an annotation on
the route, so `hand_back_route` restores the route from the live object alone.

A Gateway controller reports on the route in `status.parents[]`: per parent
(Gateway) its `Accepted` and `ResolvedRefs` conditions. `route_refusals` reads
them: a parent that explicitly refused the route as it is now (the condition's
`observedGeneration` is the route's generation, the parent is still one of its
`parentRefs`) is a refusal; a route no controller reported on (clusters
without one) has none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from operators.foundation.diff import plain
from operators.foundation.keys import ObjectKey
from operators.foundation.model import ApiModel
from operators.traffic.base import CannotAdopt, Refusal, TrafficTarget, Weights
from operators.traffic.routes import NO_ROUTES, RouteMatch, Routes

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
# On an adopted route: what the adoption changed, so that handing it back needs nothing but the route.
ADOPTED_BACKENDS_ANNOTATION = "sluice.dev/adopted-backends"
# The rules Sluice adds for header and mirror routes are named so: recognised, and recomputed or
# removed, on every pass (a route's `rules` is an atomic list; they must be told from the owner's).
SLUICE_RULE_PREFIX = "sluice-"
MIRROR_FILTER = "RequestMirror"


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
    supports_routes = True
    config_model = GatewayAPITraffic
    resources = (("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"),)

    def route_name(self, target: TrafficTarget, config: GatewayAPITraffic) -> str:
        """`traffic.gatewayAPI.httpRoute`, defaulting to the release's name."""
        return config.http_route or target.name

    def object_keys(self, target: TrafficTarget, config: GatewayAPITraffic) -> list[ObjectKey]:
        return [ObjectKey(API_VERSION, KIND, target.namespace, self.route_name(target, config))]

    def desired_objects(
        self, target: TrafficTarget, config: GatewayAPITraffic, weights: Weights, routes: Routes = NO_ROUTES
    ) -> list[dict[str, Any]]:
        route_spec: dict[str, Any] = {}
        # Empty lists are left out: the API server drops them anyway, and a diff against it stays quiet.
        if config.parent_refs:
            route_spec["parentRefs"] = [parent.to_api() for parent in config.parent_refs]
        if config.hostnames:
            route_spec["hostnames"] = list(config.hostnames)
        weighted = {
            "backendRefs": [
                {"name": target.stable_service, "port": target.port, "weight": weights.stable},
                {"name": target.canary_service, "port": target.port, "weight": weights.canary},
            ]
        }
        route_spec["rules"] = [
            *routed_rules([weighted], target, routes),
            with_mirrors(weighted, target, routes),
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
        # Header and mirror rules are Sluice's additions on top of the split, not a statement of it.
        rules = [rule for rule in (route.get("spec") or {}).get("rules") or [] if not is_sluice_rule(rule)]
        ours = {target.stable_service: _STABLE, target.canary_service: _CANARY}
        splits = [split for rule in rules if (split := _rule_split(rule, target.namespace, ours))[0]]
        # Each rule routing to our Services and nothing else is what we write (one rule on a route
        # of our own, every rule to the stable Service on an adopted one): they state a split when
        # they all state the same one. A third backend, or rules that disagree, state none.
        canary_shares: set[int] = set()
        for weights, routes_elsewhere in splits:
            stable, canary = weights.get(_STABLE, 0), weights.get(_CANARY, 0)
            if routes_elsewhere or stable + canary == 0:
                return None
            canary_shares.add(round(100 * canary / (stable + canary)))
        if len(canary_shares) != 1:
            return None
        return Weights.to_canary(canary_shares.pop())

    def adopt(
        self,
        target: TrafficTarget,
        config: GatewayAPITraffic,
        weights: Weights,
        live: Mapping[str, Any],
        routes: Routes = NO_ROUTES,
    ) -> dict[str, Any]:
        return adopted_route(live, target, weights, routes)

    def hand_back(self, live: Mapping[str, Any]) -> dict[str, Any]:
        return hand_back_route(live)

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


# ---- adopting someone else's route ----------------------------------------------------------------


def adopted_route(
    live: Mapping[str, Any], target: TrafficTarget, weights: Weights, routes: Routes = NO_ROUTES
) -> dict[str, Any]:
    """The apply body that makes an existing route (not ours) split its stable traffic at `weights`.

    Only `spec.rules` (the whole list: it is atomic) and our marks in the metadata: no parentRefs,
    no hostnames, no owner references. Header and mirror `routes` become rules of Sluice's own
    (`routed_rules`) before the owner's, and mirror filters on the split rules. Raises CannotAdopt
    when the route cannot be split.
    """
    meta = live.get("metadata") or {}
    name = f"HTTPRoute {meta.get('namespace') or target.namespace}/{meta.get('name')}"
    namespace = meta.get("namespace") or target.namespace
    # What Sluice added at its last pass goes first: it is recomputed below from the owner's rules.
    rules = [
        _without_mirrors_to(rule, target.canary_service, namespace)
        for rule in (live.get("spec") or {}).get("rules") or []
        if not is_sluice_rule(rule)
    ]
    split_rules: list[dict[str, Any]] = []
    recorded = _recorded(live)
    before = recorded.get("stableWeights") if recorded.get("canaryService") == target.canary_service else None
    new_rules: list[dict[str, Any]] = []
    originals: list[int | None] = []
    for number, rule in enumerate(rules, start=1):
        stable, canary, others = _sort_backends(
            rule, target.namespace, target.stable_service, target.canary_service
        )
        if not stable:
            new_rules.append(plain(rule))  # not the stable Service's traffic: exactly as found
            continue
        if others:
            raise CannotAdopt(
                f"{name} rule {number} sends traffic to Service {target.stable_service} and to "
                f"{', '.join(_describe(ref) for ref in others)}: Sluice splits only a rule whose "
                f"backends are the stable Service alone; move the other backends to a rule of their own"
            )
        if len(stable) > 1:
            raise CannotAdopt(
                f"{name} rule {number} names Service {target.stable_service} {len(stable)} times: "
                f"Sluice cannot tell which backendRef to split; keep one"
            )
        (stable_ref,) = stable
        # A rule without our canary is as its owner wrote it: its weight is the one to restore.
        # With it, the weight is ours, and the one to restore is the one recorded at adoption.
        if canary:
            originals.append(_nth(before, len(originals), stable_ref.get("weight")))
        else:
            originals.append(stable_ref.get("weight"))
        new_rule = plain(rule)
        new_rule["backendRefs"] = [
            {**plain(stable_ref), "weight": weights.stable},
            {**plain(stable_ref), "name": target.canary_service, "weight": weights.canary},
        ]
        split_rules.append(new_rule)
        new_rules.append(with_mirrors(new_rule, target, routes))
    if not originals:
        raise CannotAdopt(
            f"{name} has no rule sending traffic to Service {target.stable_service} in its namespace: "
            f"there is nothing for Sluice to split; point a rule at it or name another route in "
            f"traffic.gatewayAPI.httpRoute"
        )
    record = {
        "stableService": target.stable_service,
        "canaryService": target.canary_service,
        "stableWeights": originals,
    }
    annotations = {
        **target.adopted_annotations,
        ADOPTED_BACKENDS_ANNOTATION: json.dumps(record, sort_keys=True, separators=(",", ":")),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace") or target.namespace,
            "labels": dict(target.labels),
            "annotations": annotations,
        },
        "spec": {"rules": [*routed_rules(split_rules, target, routes), *new_rules]},
    }


def hand_back_route(live: Mapping[str, Any]) -> dict[str, Any]:
    """The apply body that gives an adopted route back as its owner last wrote it.

    The canary backendRefs go, each stable backendRef gets back the weight it had (none: the
    API server's default), and our labels and annotations go too, being left out of the apply.
    Every other rule and field is as the live route has it now.
    """
    meta = live.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    recorded = _recorded(live)
    stable_service, canary_service = recorded.get("stableService"), recorded.get("canaryService")
    weights = recorded.get("stableWeights")
    rules: list[dict[str, Any]] = []
    adopted = 0
    owners = [
        _without_mirrors_to(rule, canary_service, namespace)
        for rule in (live.get("spec") or {}).get("rules") or []
        if not is_sluice_rule(rule)
    ]
    for rule in owners:
        stable, _, _ = _sort_backends(rule, namespace, stable_service, canary_service)
        if not stable or not isinstance(stable_service, str):
            rules.append(plain(rule))
            continue
        original = _nth(weights, adopted, None)
        adopted += 1
        backends: list[dict[str, Any]] = []
        for ref in rule.get("backendRefs") or []:
            if _is_local_service(ref, namespace) and ref.get("name") == canary_service:
                continue
            restored = plain(ref)
            if _is_local_service(ref, namespace) and ref.get("name") == stable_service:
                restored.pop("weight", None)
                if original is not None:
                    restored["weight"] = original
            backends.append(restored)
        rules.append({**plain(rule), "backendRefs": backends})
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": meta.get("name"), "namespace": namespace},
        "spec": {"rules": rules},
    }


def _sort_backends(
    rule: Mapping[str, Any], namespace: str, stable: Any, canary: Any
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """A rule's backendRefs: to the stable Service, to the canary Service, and to anything else."""
    found: tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[Mapping[str, Any]]] = ([], [], [])
    for ref in rule.get("backendRefs") or []:
        local = _is_local_service(ref, namespace)
        if local and ref.get("name") == stable:
            found[0].append(ref)
        elif local and ref.get("name") == canary:
            found[1].append(ref)
        else:
            found[2].append(ref)
    return found


def _recorded(route: Mapping[str, Any]) -> dict[str, Any]:
    """What an adoption recorded on the route; {} when nothing (or nothing readable) is."""
    text = ((route.get("metadata") or {}).get("annotations") or {}).get(ADOPTED_BACKENDS_ANNOTATION)
    try:
        record = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _nth(values: Any, index: int, default: Any) -> Any:
    """`values[index]`, or its last item when the rules grew since, or `default` without any."""
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        return default
    value = values[min(index, len(values) - 1)]
    return value if value is None or (isinstance(value, int) and not isinstance(value, bool)) else default


def _describe(ref: Mapping[str, Any]) -> str:
    kind = ref.get("kind", DEFAULT_BACKEND_KIND)
    namespace = f"{ref['namespace']}/" if ref.get("namespace") else ""
    return f"{kind} {namespace}{ref.get('name')}"


# ---- header and mirror routes ---------------------------------------------------------------------


def is_sluice_rule(rule: Mapping[str, Any]) -> bool:
    """Whether a rule is one Sluice added for a header or mirror route (by its name)."""
    name = rule.get("name")
    return isinstance(name, str) and name.startswith(SLUICE_RULE_PREFIX)


def routed_rules(
    split_rules: Sequence[Mapping[str, Any]], target: TrafficTarget, routes: Routes
) -> list[dict[str, Any]]:
    """Sluice's rules for the header routes and the mirror routes with matches, derived from each rule
    that splits traffic (already holding its stable and canary backendRefs).

    Each derived rule keeps the split rule's own matches, narrowed by the route's (the route's
    headers and query parameters added, its path and method in place of the rule's): it matches
    a subset of what the split rule does, with more conditions, so Gateway API precedence (more
    header, then query parameter, matches win) gives it those requests. A header rule sends to the
    canary alone; a mirror rule keeps the split and adds the mirror. The split rule's other fields
    (its filters, timeouts) carry over: the requests are treated as before, only sent elsewhere.
    """
    derived: list[dict[str, Any]] = []
    numbered = len(split_rules) > 1
    for number, rule in enumerate(split_rules, start=1):
        suffix = f"-{number}" if numbered else ""
        kept = {key: plain(value) for key, value in rule.items() if key not in ("name", "matches")}
        canary_refs = [
            {key: plain(value) for key, value in ref.items() if key != "weight"}
            for ref in rule.get("backendRefs") or []
            if ref.get("name") == target.canary_service
        ]
        for header in routes.headers:
            derived.append(
                {
                    **kept,
                    "name": f"{SLUICE_RULE_PREFIX}header-{header.name}{suffix}",
                    "matches": _narrowed(rule.get("matches"), header.matches or []),
                    "backendRefs": canary_refs,
                }
            )
        for mirror in routes.mirrors:
            if mirror.matches is None or mirror.percent is None:
                continue  # mirrors every request the split rule gets: a filter on it (with_mirrors)
            derived.append(
                {
                    **kept,
                    "name": f"{SLUICE_RULE_PREFIX}mirror-{mirror.name}{suffix}",
                    "matches": _narrowed(rule.get("matches"), mirror.matches),
                    "filters": [*(kept.get("filters") or []), mirror_filter(target, mirror.percent)],
                }
            )
    return derived


def with_mirrors(rule: Mapping[str, Any], target: TrafficTarget, routes: Routes) -> dict[str, Any]:
    """The split rule with a RequestMirror filter to the canary per mirror route without matches."""
    filters = [
        mirror_filter(target, mirror.percent)
        for mirror in routes.mirrors
        if mirror.matches is None and mirror.percent is not None
    ]
    if not filters:
        # None, not absent: "no filters" then differs from a live rule still holding a removed mirror
        # (foundation/diff.py's covers), and the apply leaves the field out (apply_body).
        return {**rule, "filters": rule.get("filters") or None}
    return {**rule, "filters": [*(rule.get("filters") or []), *filters]}


def mirror_filter(target: TrafficTarget, percent: int) -> dict[str, Any]:
    """A copy of `percent` of the rule's requests to the canary Service; its answers are discarded."""
    backend = {"name": target.canary_service, "port": target.port}
    return {"type": MIRROR_FILTER, "requestMirror": {"backendRef": backend, "percent": percent}}


def _narrowed(base: Any, matches: Sequence[RouteMatch]) -> list[dict[str, Any]]:
    """Every (rule match, route match) pair as one match holding the conditions of both."""
    result: list[dict[str, Any]] = []
    for outer in base or [{}]:
        for inner in matches:
            extra = inner.to_api()
            merged = plain(outer)
            for key in ("path", "method"):
                if key in extra:
                    merged[key] = extra[key]
            for key in ("headers", "queryParams"):
                if extra.get(key):
                    merged[key] = [*(merged.get(key) or []), *extra[key]]
            result.append(merged)
    return result


def _without_mirrors_to(rule: Mapping[str, Any], canary_service: Any, namespace: str) -> dict[str, Any]:
    """The rule without the RequestMirror filters to the canary Service that Sluice added."""
    filters = rule.get("filters")
    if not filters:
        return dict(rule)
    kept = [
        item
        for item in filters
        if not (
            item.get("type") == MIRROR_FILTER
            and _is_local_service((item.get("requestMirror") or {}).get("backendRef") or {}, namespace)
            and ((item.get("requestMirror") or {}).get("backendRef") or {}).get("name") == canary_service
        )
    ]
    if len(kept) == len(filters):
        return dict(rule)
    result = {key: value for key, value in rule.items() if key != "filters"}
    if kept:
        result["filters"] = kept
    return result
