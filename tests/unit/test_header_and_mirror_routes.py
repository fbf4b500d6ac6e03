"""Header and mirror routes: the steps, the engine's bookkeeping, and the HTTPRoutes written for them.

The routes written are validated against the upstream Gateway API schema (the same validator as
tests/unit/test_traffic_gateway_api.py), and the engine is driven through the in-memory World.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import Draft7Validator
from pydantic import ValidationError

from operators.api.rollout import Outcome, Phase, RolloutSpec
from operators.foundation.diff import without_nulls
from operators.foundation.keys import key_of
from operators.rollout import engine
from operators.rollout.engine import active_routes
from operators.traffic.base import Weights
from operators.traffic.gateway_api import hand_back_route, is_sluice_rule
from operators.traffic.routes import HeaderRoute, MirrorRoute, Routes
from tests.reference import HTTPROUTES, upstream_crd
from tests.unit.engine_world import ROUTE_KEY, World
from tests.unit.engine_world import make_spec as make_world_spec
from tests.unit.test_engine import V2, analysis, healthy, next_check, release
from tests.unit.test_traffic_gateway_api import (
    OTHER_RULE,
    STABLE_RULE,
    as_applied,
    cel_violations,
    make_spec,
    routing,
    users_route,
)

TESTERS = {"headers": [{"name": "x-canary", "value": "always"}]}
HEADER = HeaderRoute.model_validate({"name": "testers", "matches": [TESTERS]})
MIRROR_ALL = MirrorRoute(name="shadow", percent=20)
MIRROR_API = MirrorRoute.model_validate(
    {"name": "api", "percent": 50, "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}]}
)
ALL = Routes(headers=(HEADER,), mirrors=(MIRROR_ALL, MIRROR_API))


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    """The upstream HTTPRoute v1 schema (see tests/unit/test_traffic_gateway_api.py for what it covers)."""
    (version,) = [v for v in upstream_crd(HTTPROUTES)["spec"]["versions"] if v["name"] == "v1"]
    return Draft7Validator(version["schema"]["openAPIV3Schema"])


def own_route(routes: Routes, weights: Weights | None = None) -> dict[str, Any]:
    (route,) = routing(make_spec({})).desired(weights or Weights(90, 10), None, routes)
    return without_nulls(route)  # as applied


def errors_of(validator: Draft7Validator, route: dict[str, Any]) -> list[str]:
    found = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(route)]
    return found + cel_violations(route) + unique_rule_names(route)


def unique_rule_names(route: dict[str, Any]) -> list[str]:
    """The CRD's CEL rule: rule names, where set, are unique within a route."""
    names = [rule["name"] for rule in route["spec"]["rules"] if "name" in rule]
    return [f"rule name {name} repeated" for name in set(names) if names.count(name) > 1]


# ---- the provider --------------------------------------------------------------------------------------


def test_a_header_route_is_a_rule_to_the_canary_alone_before_the_weighted_rule() -> None:
    route = own_route(Routes(headers=(HEADER,)))
    header_rule, weighted = route["spec"]["rules"]
    assert header_rule == {
        "name": "sluice-header-testers",
        "matches": [TESTERS],
        "backendRefs": [{"name": "web-canary", "port": 80}],
    }
    assert weighted["backendRefs"] == [
        {"name": "web", "port": 80, "weight": 90},
        {"name": "web-canary", "port": 80, "weight": 10},
    ]
    assert "matches" not in weighted, "the weighted rule keeps matching every other request"


def test_mirror_routes_are_request_mirror_filters_on_the_weighted_or_a_matching_rule() -> None:
    route = own_route(Routes(mirrors=(MIRROR_ALL, MIRROR_API)))
    mirror_rule, weighted = route["spec"]["rules"]
    canary = {"name": "web-canary", "port": 80}
    assert weighted["filters"] == [
        {"type": "RequestMirror", "requestMirror": {"backendRef": canary, "percent": 20}}
    ]
    assert mirror_rule["name"] == "sluice-mirror-api"
    assert mirror_rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/api"}}]
    assert mirror_rule["backendRefs"] == weighted["backendRefs"], "mirrored requests are still answered"
    assert mirror_rule["filters"] == [
        {"type": "RequestMirror", "requestMirror": {"backendRef": canary, "percent": 50}}
    ]


@pytest.mark.parametrize("weights", [Weights(100, 0), Weights(50, 50)], ids=["zero", "half"])
@pytest.mark.parametrize("routes", [Routes(headers=(HEADER,)), Routes(mirrors=(MIRROR_ALL,)), ALL])
def test_routes_with_header_and_mirror_routes_pass_the_upstream_schema(
    validator: Draft7Validator, routes: Routes, weights: Weights
) -> None:
    assert errors_of(validator, own_route(routes, weights)) == []
    adopted = adopt_with(two_rule_route_with_match(), weights, routes)
    assert errors_of(validator, {**adopted, "spec": {**adopted["spec"]}}) == []


def test_the_schema_check_of_mirror_filters_is_not_vacuous(validator: Draft7Validator) -> None:
    route = own_route(Routes(mirrors=(MIRROR_ALL,)))
    route["spec"]["rules"][-1]["filters"][0]["requestMirror"]["percent"] = 101
    assert errors_of(validator, route)
    route = own_route(Routes(headers=(HEADER,)))
    route["spec"]["rules"][0]["matches"][0]["headers"][0]["name"] = "not a header"
    assert errors_of(validator, route)


def test_header_rules_state_no_split_the_observed_weights_are_the_weighted_rules() -> None:
    bound = routing(make_spec({}))
    route = own_route(ALL, Weights(70, 30))
    assert bound.observed({key_of(route): route}) == Weights(70, 30)


def two_rule_route_with_match() -> dict[str, Any]:
    stable = copy.deepcopy(STABLE_RULE)
    return users_route(stable, copy.deepcopy(OTHER_RULE))


def adopt_with(live: dict[str, Any], weights: Weights, routes: Routes) -> dict[str, Any]:
    (adopted,) = routing(make_spec({})).desired(weights, {key_of(live): live}, routes)
    return without_nulls(adopted)  # as applied


def test_on_an_adopted_route_sluice_adds_its_rules_and_leaves_the_owners_alone() -> None:
    live = two_rule_route_with_match()
    body = adopt_with(live, Weights(80, 20), ALL)
    header, mirror, stable, other = body["spec"]["rules"]
    assert other == OTHER_RULE, "a rule not sending to the stable Service is untouched"
    # The header rule narrows the owner's rule: its path match, its timeouts, plus the header.
    assert header["name"] == "sluice-header-testers"
    assert header["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}, **TESTERS}]
    assert header["timeouts"] == STABLE_RULE["timeouts"]
    assert [ref["name"] for ref in header["backendRefs"]] == ["web-canary"]
    assert mirror["matches"] == [{"path": {"type": "PathPrefix", "value": "/api"}}]
    assert [f["requestMirror"]["percent"] for f in stable["filters"]] == [20]
    # Applied again on what it wrote (the rules are an atomic list): the same body, nothing doubled.
    again = adopt_with(as_applied(live, body), Weights(80, 20), ALL)
    assert again["spec"] == body["spec"]
    # Routes removed: Sluice's rules and filters go, the split stays.
    fewer = adopt_with(as_applied(live, body), Weights(80, 20), Routes())
    assert fewer["spec"] == adopt_with(live, Weights(80, 20), Routes())["spec"]


def test_handing_back_an_adopted_route_removes_the_header_and_mirror_rules() -> None:
    live = two_rule_route_with_match()
    applied = as_applied(live, adopt_with(live, Weights(80, 20), ALL))
    handed = hand_back_route(applied)
    assert not [rule for rule in handed["spec"]["rules"] if is_sluice_rule(rule)]
    stable, other = handed["spec"]["rules"]
    assert stable == STABLE_RULE and other == OTHER_RULE


# ---- the steps -----------------------------------------------------------------------------------------


def rollout_body(steps: list[dict[str, Any]], traffic: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}},
        "service": {"port": 80},
        "strategy": {"canary": {"steps": steps}},
    }
    if traffic:
        body["traffic"] = {"gatewayAPI": {}}
    return body


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"setHeaderRoute": {"name": "t", "matches": [{}]}}, "at least one of path, headers"),
        ({"setHeaderRoute": {"name": "T!", "matches": [TESTERS]}}, "should match pattern"),
        ({"setMirrorRoute": {"name": "m", "percent": 101}}, "less than or equal to 100"),
        ({"setMirrorRoute": {"name": "m", "matches": [TESTERS]}}, "has matches but no percent"),
        ({"setWeight": 10, "setHeaderRoute": {"name": "t"}}, "exactly one of setWeight, pause"),
    ],
)
def test_bad_route_steps_are_refused_with_a_reason(step: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RolloutSpec.model_validate(rollout_body([step]))


def test_route_steps_need_a_traffic_provider() -> None:
    with pytest.raises(ValidationError, match="setHeaderRoute and setMirrorRoute steps route requests"):
        RolloutSpec.model_validate(rollout_body([{"setMirrorRoute": {"name": "m", "percent": 5}}], False))


# ---- the engine ----------------------------------------------------------------------------------------

HEADER_STEPS: list[dict[str, Any]] = [
    {"setHeaderRoute": {"name": "testers", "matches": [TESTERS]}},
    {"pause": {}},
    {"setHeaderRoute": {"name": "testers"}},
    {"setWeight": 50},
]


def route_rules(world: World) -> list[str]:
    return [rule.get("name", "weighted") for rule in world.objects[ROUTE_KEY]["spec"]["rules"]]


def test_a_header_route_step_gives_the_canary_a_pod_and_analysis_runs_at_weight_zero() -> None:
    world = healthy(make_world_spec(HEADER_STEPS, analysis=analysis()))
    release(world)
    assert not world.analysis_due(), "no request to the canary yet"
    world.run_until(lambda w: bool(w.status.header_routes), follow_requeue=False)
    assert world.status.canary_weight == 0
    assert world.replicas("web-canary") == 1, "a header route needs a canary pod to answer"
    assert route_rules(world) == ["sluice-header-testers", "weighted"]
    assert engine.active_routes(world.status).headers == (HEADER,)
    world.settle()
    assert world.status.current_step_index == 0, "the step waits for a passing check, as a weight does"
    next_check(world, Outcome.PASSED)
    world.settle()
    assert (world.status.phase, world.status.current_step_index) == (Phase.PAUSED, 1)


def test_a_failed_check_on_header_routed_requests_rolls_back_and_removes_the_route() -> None:
    world = healthy(make_world_spec(HEADER_STEPS, analysis=analysis()))
    release(world)
    world.run_until(lambda w: bool(w.status.header_routes), follow_requeue=False)
    world.settle()
    next_check(world, Outcome.FAILED)
    world.settle()
    assert world.status.phase == Phase.DEGRADED
    assert world.status.header_routes == []
    assert route_rules(world) == ["weighted"]


def test_a_later_step_without_matches_removes_the_header_route_and_promotion_clears_the_rest() -> None:
    steps = [*HEADER_STEPS[:2], {"setMirrorRoute": {"name": "shadow", "percent": 20}}, *HEADER_STEPS[2:]]
    world = healthy(make_world_spec(steps))
    release(world, V2)
    world.settle()
    assert (world.status.phase, world.status.current_step_index) == (Phase.PAUSED, 1)
    world.annotate("promote", "1")
    world.run_until(lambda w: w.status.current_step_index == 4, follow_requeue=False)
    assert active_routes(world.status) == Routes(mirrors=(MIRROR_ALL,))
    assert route_rules(world) == ["weighted"]
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    assert active_routes(world.status) == Routes()
    assert route_rules(world) == ["weighted"]
    assert not world.objects[ROUTE_KEY]["spec"]["rules"][0].get("filters"), "the mirror is removed"


def test_a_mirror_route_is_analysed_before_the_canary_answers_a_user() -> None:
    steps = [{"setMirrorRoute": {"name": "shadow", "percent": 20}}, {"setWeight": 10}]
    world = healthy(make_world_spec(steps, analysis=analysis()))
    release(world)
    world.run_until(lambda w: bool(w.status.mirror_routes), follow_requeue=False)
    world.settle()
    next_check(world, Outcome.FAILED)
    world.settle()
    assert world.status.phase == Phase.DEGRADED
    assert world.status.mirror_routes == []
    assert all(pass_.plan.status.canary_weight == 0 for pass_ in world.passes), "no user request ever"
