"""The Gateway API traffic provider, the provider registry, and the upstream HTTPRoute schema."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jsonschema import Draft7Validator

from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec, Traffic
from operators.foundation.diff import covers, without_nulls
from operators.foundation.keys import ObjectKey
from operators.rollout.ownership import MANAGED_BY, MANAGED_BY_LABEL, ROLLOUT_LABEL, is_owned_by
from operators.rollout.routing import Routing, routing_of
from operators.traffic.base import CannotAdopt, Weights
from operators.traffic.gateway_api import API_VERSION, KIND, GatewayAPIProvider, hand_back_route
from operators.traffic.registry import PROVIDERS
from tests.reference import HTTPROUTES, upstream_crd

REF = RolloutRef(name="web", namespace="shop", uid="0b5a-rollout-uid")


def routing(spec: RolloutSpec) -> Routing:
    """The provider as the Rollout shell binds it: to this Rollout's Services and metadata."""
    bound = routing_of(REF, spec)
    assert bound is not None
    return bound


def make_spec(gateway_api: dict[str, Any] | None = None, port: int = 80) -> RolloutSpec:
    body: dict[str, Any] = {
        "replicas": 4,
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}},
        "service": {"port": port},
        "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
    }
    if gateway_api is not None:
        body["traffic"] = {"gatewayAPI": gateway_api}
    return RolloutSpec.model_validate(body)


SPECS: dict[str, dict[str, Any]] = {
    "minimal": {},
    "hostnames": {"hostnames": ["shop.example.com", "*.shop.example.com"]},
    "parent-namespace": {
        "parentRefs": [{"name": "public", "namespace": "infra"}],
        "hostnames": ["shop.example.com"],
    },
    "parent-sections": {
        "httpRoute": "web-public",
        "parentRefs": [
            {"name": "public", "namespace": "infra", "sectionName": "https", "port": 443},
            {"name": "public", "namespace": "infra", "sectionName": "http"},
            {"name": "mesh", "group": "", "kind": "Service"},
        ],
    },
}
WEIGHTS = [Weights(100, 0), Weights(90, 10), Weights(50, 50), Weights(0, 100)]


def desired_route(config: dict[str, Any], weights: Weights, port: int = 80) -> dict[str, Any]:
    (route,) = routing(make_spec(config, port)).desired(weights)
    return without_nulls(route)  # as applied: a null (an absent field that must stay absent) is left out


def all_generated_routes() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, config in SPECS.items():
        for weights in WEIGHTS:
            yield f"{name}-{weights.canary}", desired_route(config, weights)


# --- desired HTTPRoute --------------------------------------------------------------------------


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: f"canary-{w.canary}")
@pytest.mark.parametrize("port", [80, 8080])
def test_desired_route_splits_between_the_two_services(weights: Weights, port: int) -> None:
    route = desired_route({}, weights, port)
    assert route["spec"]["rules"] == [
        {
            "backendRefs": [
                {"name": "web", "port": port, "weight": weights.stable},
                {"name": "web-canary", "port": port, "weight": weights.canary},
            ]
        }
    ]


def test_desired_route_metadata() -> None:
    route = desired_route({}, Weights(90, 10))
    assert (route["apiVersion"], route["kind"]) == ("gateway.networking.k8s.io/v1", "HTTPRoute")
    assert (route["metadata"]["name"], route["metadata"]["namespace"]) == ("web", "shop")
    assert route["metadata"]["labels"] == {MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: "web"}
    assert route["metadata"]["ownerReferences"] == [REF.owner_reference()]
    assert is_owned_by(route, REF)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param({}, {}, id="nothing-set-nothing-written"),
        pytest.param(
            {"hostnames": ["shop.example.com"]}, {"hostnames": ["shop.example.com"]}, id="hostnames"
        ),
        pytest.param(
            {"parentRefs": [{"name": "public", "namespace": "infra"}]},
            {"parentRefs": [{"name": "public", "namespace": "infra"}]},
            id="parent-namespace",
        ),
        pytest.param(
            {
                "parentRefs": [
                    {"name": "public", "sectionName": "https", "port": 443, "group": "g.io", "kind": "Gw"}
                ]
            },
            {
                "parentRefs": [
                    {"name": "public", "sectionName": "https", "port": 443, "group": "g.io", "kind": "Gw"}
                ]
            },
            id="parent-all-keys-camel-case",
        ),
    ],
)
def test_desired_route_passes_parent_refs_and_hostnames_through(
    config: dict[str, Any], expected: dict[str, Any]
) -> None:
    route_spec = desired_route(config, Weights(100, 0))["spec"]
    assert {key: value for key, value in route_spec.items() if key != "rules"} == expected


@pytest.mark.parametrize(("config", "name"), [({}, "web"), ({"httpRoute": "shop-web"}, "shop-web")])
def test_route_name_and_object_keys(config: dict[str, Any], name: str) -> None:
    spec = make_spec(config)
    assert routing(spec).keys() == [ObjectKey(API_VERSION, KIND, "shop", name)]
    # A provider manages exactly the objects it names, so the operator's ownership check covers them all.
    keys = [key_of(obj) for obj in routing(spec).desired(Weights(50, 50))]
    assert keys == routing(spec).keys()


def test_desired_objects_are_idempotent_and_independent() -> None:
    spec = make_spec(SPECS["parent-sections"])
    first = routing(spec).desired(Weights(90, 10))
    first[0]["spec"]["parentRefs"].clear()
    assert routing(spec).desired(Weights(90, 10)) != first
    assert routing(spec).desired(Weights(90, 10)) == routing(spec).desired(Weights(90, 10))


# --- observed_weights ---------------------------------------------------------------------------


def key_of(obj: dict[str, Any]) -> ObjectKey:
    meta = obj["metadata"]
    return ObjectKey(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])


def observe(route: dict[str, Any], config: dict[str, Any] | None = None) -> Weights | None:
    return routing(make_spec(config or {})).observed({key_of(route): route})


@pytest.mark.parametrize("canary", range(0, 101))
def test_observed_weights_round_trip(canary: int) -> None:
    for config in SPECS.values():
        weights = Weights.to_canary(canary)
        route = desired_route(config, weights)
        assert observe(route, config) == weights


def live(backend_refs: list[dict[str, Any]], *extra_rules: dict[str, Any]) -> dict[str, Any]:
    """A route as the API server returns it: defaults filled in, status present."""
    route = desired_route({}, Weights(100, 0))
    route["spec"]["rules"] = [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backend_refs},
        *extra_rules,
    ]
    route["status"] = {"parents": []}
    return route


def backend(name: str, weight: int | None = None, **fields: Any) -> dict[str, Any]:
    ref = {"group": "", "kind": "Service", "name": name, "port": 80, **fields}
    if weight is not None:
        ref["weight"] = weight
    return ref


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        pytest.param(
            live([backend("web", 90), backend("web-canary", 10)]), Weights(90, 10), id="server-defaults"
        ),
        pytest.param(
            live([backend("web"), backend("web-canary")]), Weights(50, 50), id="default-weight-is-1"
        ),
        pytest.param(live([backend("web", 3), backend("web-canary", 1)]), Weights(75, 25), id="proportional"),
        pytest.param(live([backend("web", 1), backend("web-canary", 2)]), Weights(33, 67), id="rounded"),
        pytest.param(live([backend("web", 100)]), Weights(100, 0), id="stable-only"),
        pytest.param(live([backend("web-canary", 5)]), Weights(0, 100), id="canary-only"),
        pytest.param(
            live([backend("web", 90), backend("web-canary", 10)], {"backendRefs": [backend("other", 1)]}),
            Weights(90, 10),
            id="unrelated-rule-ignored",
        ),
        pytest.param(live([backend("web", 0), backend("web-canary", 0)]), None, id="routes-nothing"),
        pytest.param(live([backend("web", 90), backend("other", 10)]), None, id="third-backend"),
        pytest.param(
            live([backend("web", 90), backend("web-canary", 10, namespace="x")]), None, id="other-namespace"
        ),
        pytest.param(
            live([backend("web", 90), backend("web-canary", 10, kind="Pod")]), None, id="not-a-service"
        ),
        pytest.param(
            live([backend("web", 90)], {"backendRefs": [backend("web-canary", 10)]}),
            None,
            id="split-across-rules",
        ),
        pytest.param(live([backend("other", 1)]), None, id="no-backend-of-ours"),
        pytest.param(live([]), None, id="no-backends"),
    ],
)
def test_observed_weights_from_live_routes(route: dict[str, Any], expected: Weights | None) -> None:
    assert observe(route) == expected


def test_observed_weights_unknown_without_the_route() -> None:
    assert routing(make_spec({})).observed({}) is None
    elsewhere = ObjectKey(API_VERSION, KIND, "shop", "not-ours")
    assert routing(make_spec({})).observed({elsewhere: desired_route({}, Weights(0, 100))}) is None


# --- Weights and the registry -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stable", "canary"), [(90, 20), (-10, 110), (101, -1), (50, 49), (True, 99), (50.0, 50)]
)
def test_weights_refuse_invalid_splits(stable: Any, canary: Any) -> None:
    with pytest.raises(ValueError):
        Weights(stable, canary)


def test_registry() -> None:
    assert routing_of(REF, make_spec()) is None
    assert isinstance(routing(make_spec({})).provider, GatewayAPIProvider)
    assert routing(make_spec({})).provider is routing(make_spec({"hostnames": ["a.example.com"]})).provider


def test_every_traffic_field_has_a_provider() -> None:
    """The registry is keyed by the traffic field names users write, one provider per field."""
    fields = {field.alias for field in Traffic.model_fields.values()}
    assert set(PROVIDERS) == fields
    assert all(provider.field == name for name, provider in PROVIDERS.items())


# --- the upstream HTTPRoute schema --------------------------------------------------------------
#
# The CRD's openAPIV3Schema is validated with jsonschema (Draft 7, the closest
# draft to OpenAPI v3's schema dialect). What that does and does not cover:
# - `x-kubernetes-*` keys are unknown to jsonschema and ignored; `format: int32`
#   is not asserted (no format checker), but minimum/maximum are, which is what
#   bounds backendRef weights (0..1000000) and ports.
# - `nullable` would change meaning under jsonschema; the schema does not use it
#   (checked below), so ignoring OpenAPI's dialect loses nothing.
# - CEL rules (`x-kubernetes-validations`) are evaluated by the API server only.
#   The two that our routes can break are checked by hand in `cel_violations`;
#   the rest concern filters, redirects and matches, which Sluice never writes.


@pytest.fixture(scope="module")
def crd_schema() -> dict[str, Any]:
    crd = upstream_crd(HTTPROUTES)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(scope="module")
def validator(crd_schema: dict[str, Any]) -> Draft7Validator:
    Draft7Validator.check_schema(crd_schema)
    return Draft7Validator(crd_schema)


def schema_keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            # Under "properties" the keys are field names, not schema keywords.
            children = value.values() if key == "properties" else [value]
            for child in children:
                yield from schema_keys(child)
    elif isinstance(node, list):
        for item in node:
            yield from schema_keys(item)


def test_schema_does_not_use_nullable(crd_schema: dict[str, Any]) -> None:
    assert "nullable" not in set(schema_keys(crd_schema))


def cel_violations(route: dict[str, Any]) -> list[str]:
    """By hand, the CEL rules of the HTTPRoute CRD that a Sluice route could break."""
    problems = []
    for rule in route["spec"].get("rules", []):
        for ref in rule.get("backendRefs", []):
            # "Must have port for Service reference"
            if ref.get("group", "") == "" and ref.get("kind", "Service") == "Service" and "port" not in ref:
                problems.append(f"backendRef {ref.get('name')} to a Service has no port")
    # "sectionName must be specified / unique when parentRefs includes 2 or more references
    # to the same parent"
    by_parent: dict[tuple[str, str, str, str], list[str | None]] = {}
    for parent in route["spec"].get("parentRefs", []):
        key = (
            parent.get("group", "gateway.networking.k8s.io"),
            parent.get("kind", "Gateway"),
            parent["name"],
            parent.get("namespace", ""),
        )
        by_parent.setdefault(key, []).append(parent.get("sectionName") or None)
    for parent_key, sections in by_parent.items():
        if len(sections) > 1 and (None in sections or len(set(sections)) != len(sections)):
            problems.append(f"parentRefs to {parent_key} need distinct sectionNames")
    return problems


def test_generated_routes_pass_the_upstream_schema(validator: Draft7Validator) -> None:
    for name, route in all_generated_routes():
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(route)]
        assert errors == [], name
        assert cel_violations(route) == [], name


def broken(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """A generated route with one thing broken by `change`."""
    route = desired_route(SPECS["parent-namespace"], Weights(90, 10))
    change(route)
    return route


def backend_of(route: dict[str, Any], index: int) -> dict[str, Any]:
    backends: list[dict[str, Any]] = route["spec"]["rules"][0]["backendRefs"]
    return backends[index]


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(broken(lambda r: backend_of(r, 1).update(weight=-1)), id="weight-negative"),
        pytest.param(broken(lambda r: backend_of(r, 1).update(weight=1_000_001)), id="weight-too-big"),
        pytest.param(broken(lambda r: backend_of(r, 1).update(weight="10")), id="weight-string"),
        pytest.param(broken(lambda r: backend_of(r, 0).pop("name")), id="backend-without-name"),
        pytest.param(broken(lambda r: backend_of(r, 0).update(port=0)), id="port-zero"),
        pytest.param(broken(lambda r: r["spec"].update(hostnames=["Shop.Example.com"])), id="bad-hostname"),
        pytest.param(
            broken(lambda r: r["spec"]["parentRefs"][0].update(namespace="Infra")), id="bad-namespace"
        ),
        pytest.param(
            broken(lambda r: r["spec"].update(rules=[{"backendRefs": {}}])), id="backendrefs-not-list"
        ),
    ],
)
def test_schema_validation_is_not_vacuous(validator: Draft7Validator, route: dict[str, Any]) -> None:
    assert list(validator.iter_errors(route)), "a broken HTTPRoute must fail validation"


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(broken(lambda r: backend_of(r, 0).pop("port")), id="service-without-port"),
        pytest.param(
            broken(lambda r: r["spec"]["parentRefs"].append({"name": "public", "namespace": "infra"})),
            id="same-parent-twice",
        ),
    ],
)
def test_hand_checked_cel_rules_are_not_vacuous(validator: Draft7Validator, route: dict[str, Any]) -> None:
    assert not list(validator.iter_errors(route)), "only CEL catches this one"
    assert cel_violations(route)


# --- adopting an existing route ---------------------------------------------------------------


def users_route(*rules: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """Someone else's route, as the API server returns it: no owner, defaults filled in."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "resourceVersion": "7",
            "labels": {"team": "shop"},
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}],
            "hostnames": ["shop.example.com"],
            "rules": list(rules),
        },
    }


STABLE_RULE = {
    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
    "backendRefs": [backend("web", 1)],
    "timeouts": {"request": "10s"},
}
OTHER_RULE = {
    "matches": [
        {"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "x-beta", "value": "1"}]}
    ],
    "filters": [
        {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {"add": [{"name": "x-from", "value": "gw"}]},
        }
    ],
    "backendRefs": [backend("api", 3)],
}


def two_rule_route() -> dict[str, Any]:
    return users_route(copy.deepcopy(STABLE_RULE), copy.deepcopy(OTHER_RULE))


def adopt(route: dict[str, Any], weights: Weights) -> dict[str, Any]:
    (adopted,) = routing(make_spec({})).desired(weights, {key_of(route): route})
    return without_nulls(adopted)  # as applied


def as_applied(live: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The live route after a server-side apply of `body` by Sluice's field manager (rules: atomic)."""
    result = copy.deepcopy(live)
    meta = result["metadata"]
    meta["labels"] = {**meta.get("labels", {}), **body["metadata"].get("labels", {})}
    meta["annotations"] = {**meta.get("annotations", {}), **body["metadata"].get("annotations", {})}
    result["spec"]["rules"] = copy.deepcopy(body["spec"]["rules"])
    return result


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: f"canary-{w.canary}")
def test_adoption_changes_only_the_backends_of_the_stable_rule(weights: Weights) -> None:
    live = two_rule_route()
    body = adopt(live, weights)
    stable_rule, other_rule = body["spec"]["rules"]
    assert stable_rule["backendRefs"] == [
        backend("web", weights.stable),
        backend("web-canary", weights.canary),
    ]
    # Everything else of the rule, and the other rule, exactly as found (JSON equality).
    assert json.dumps(
        {k: v for k, v in stable_rule.items() if k != "backendRefs"}, sort_keys=True
    ) == json.dumps({k: v for k, v in STABLE_RULE.items() if k != "backendRefs"}, sort_keys=True)
    assert json.dumps(other_rule, sort_keys=True) == json.dumps(OTHER_RULE, sort_keys=True)
    # Only the rules and Sluice's marks are applied: no parentRefs, no hostnames, no owner.
    assert set(body["spec"]) == {"rules"}
    assert "ownerReferences" not in body["metadata"]
    assert body["metadata"]["annotations"]["sluice.dev/adopted-by"] == "web"
    assert body["metadata"]["labels"] == {MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: "web"}
    assert not is_owned_by(body, REF)
    assert live == two_rule_route()  # the live copy is not changed by computing


def test_adoption_is_idempotent_and_the_adopted_route_reads_back() -> None:
    live = as_applied(two_rule_route(), adopt(two_rule_route(), Weights(80, 20)))
    again = adopt(live, Weights(80, 20))
    assert covers(live, again)  # a quiet pass writes nothing
    assert observe(live) == Weights(80, 20)
    moved = as_applied(live, adopt(live, Weights(40, 60)))
    assert observe(moved) == Weights(40, 60)
    assert moved["spec"]["rules"][1] == OTHER_RULE


def test_every_rule_to_the_stable_service_is_split_alike() -> None:
    second = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
        "backendRefs": [backend("web")],
    }
    live = users_route(copy.deepcopy(STABLE_RULE), second, copy.deepcopy(OTHER_RULE))
    adopted = as_applied(live, adopt(live, Weights(90, 10)))
    rules = adopted["spec"]["rules"]
    assert [r["backendRefs"] for r in rules[:2]] == [[backend("web", 90), backend("web-canary", 10)]] * 2
    assert rules[2] == OTHER_RULE
    assert observe(adopted) == Weights(90, 10)
    # Rules that disagree state no split.
    rules[1]["backendRefs"][0]["weight"] = 50
    assert observe(adopted) is None


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param(
            [{"backendRefs": [backend("web", 1), backend("api", 1)]}],
            "rule 1 sends traffic to Service web and to Service api: "
            "Sluice splits only a rule whose backends are the stable Service alone",
            id="stable-with-another-backend",
        ),
        pytest.param(
            [copy.deepcopy(OTHER_RULE), {"backendRefs": [backend("web", 1), backend("web", 1, port=8080)]}],
            "rule 2 names Service web 2 times",
            id="stable-twice",
        ),
        pytest.param(
            [copy.deepcopy(OTHER_RULE)],
            "has no rule sending traffic to Service web in its namespace",
            id="no-stable-rule",
        ),
        pytest.param(
            [{"backendRefs": [backend("web", 1, namespace="other")]}],
            "has no rule sending traffic to Service web in its namespace",
            id="stable-name-in-another-namespace",
        ),
    ],
)
def test_ambiguous_routes_are_refused_with_a_clear_message(
    rules: list[dict[str, Any]], expected: str
) -> None:
    live = users_route(*rules)
    (problem,) = routing(make_spec({})).problems({key_of(live): live})
    assert problem.startswith("cannot adopt HTTPRoute shop/web: HTTPRoute shop/web ")
    assert expected in problem
    with pytest.raises(CannotAdopt):
        adopt(live, Weights(100, 0))


def test_a_route_another_rollout_adopted_or_owns_is_a_conflict() -> None:
    taken = users_route(copy.deepcopy(STABLE_RULE), annotations={"sluice.dev/adopted-by": "shop-v2"})
    (problem,) = routing(make_spec({})).problems({key_of(taken): taken})
    assert "already adopted by Rollout shop-v2" in problem
    owned = users_route(copy.deepcopy(STABLE_RULE))
    owned["metadata"]["ownerReferences"] = [{"kind": "Rollout", "name": "other", "uid": "other-uid"}]
    (problem,) = routing(make_spec({})).problems({key_of(owned): owned})
    assert "exists and is not managed by this Rollout" in problem
    mine = users_route(copy.deepcopy(STABLE_RULE), annotations={"sluice.dev/adopted-by": "web"})
    assert routing(make_spec({})).problems({key_of(mine): mine}) == []


@pytest.mark.parametrize("stable_weight", [None, 1, 5])
def test_handback_restores_the_route_exactly(stable_weight: int | None) -> None:
    rule = copy.deepcopy(STABLE_RULE)
    rule["backendRefs"] = [backend("web", stable_weight)]
    original = users_route(rule, copy.deepcopy(OTHER_RULE))
    live = original
    for weights in (Weights(100, 0), Weights(80, 20), Weights(50, 50)):
        live = as_applied(live, adopt(live, weights))
    body = hand_back_route(live)
    assert body["metadata"] == {"name": "web", "namespace": "shop"}  # our labels and annotations go
    assert body["spec"] == {"rules": original["spec"]["rules"]}


def test_handback_after_a_gitops_reapply_keeps_the_owners_new_weight() -> None:
    live = as_applied(two_rule_route(), adopt(two_rule_route(), Weights(70, 30)))
    # A GitOps tool re-applies the user's copy, with a new weight for the stable backend.
    reapplied = copy.deepcopy(live)
    reapplied["spec"]["rules"] = two_rule_route()["spec"]["rules"]
    reapplied["spec"]["rules"][0]["backendRefs"][0]["weight"] = 4
    restored = as_applied(reapplied, adopt(reapplied, Weights(70, 30)))
    assert restored["spec"]["rules"][0]["backendRefs"] == [backend("web", 70), backend("web-canary", 30)]
    assert hand_back_route(restored)["spec"]["rules"][0]["backendRefs"] == [backend("web", 4)]


def test_drift_on_an_adopted_route_is_noticed() -> None:
    bound = routing(make_spec({}))
    live = as_applied(two_rule_route(), adopt(two_rule_route(), Weights(80, 20)))
    key = key_of(live)
    assert bound.adoption_notes({key: live}, {20}, 20) == []
    reapplied = copy.deepcopy(live)
    reapplied["spec"]["rules"] = two_rule_route()["spec"]["rules"]
    ((reason, message),) = bound.adoption_notes({key: reapplied}, {20}, 20)
    assert reason == "AdoptedDriftRestored"
    assert "HTTPRoute shop/web was changed by someone else" in message
    ((reason, _),) = bound.adoption_notes({key: two_rule_route()}, {0}, 0)
    assert reason == "Adopted"


def test_adopted_routes_pass_the_upstream_schema(validator: Draft7Validator) -> None:
    live = two_rule_route()
    for weights in WEIGHTS:
        body = adopt(live, weights)
        errors = list(validator.iter_errors({**live, **body, "spec": {**live["spec"], **body["spec"]}}))
        assert errors == [], errors
