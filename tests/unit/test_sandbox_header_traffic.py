"""The traffic simulator and header routes, mirroring: on the HTTPRoutes Sluice writes for them."""

from __future__ import annotations

import random
from typing import Any

import pytest

from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec
from operators.rollout.routing import routing_of
from operators.traffic.base import Weights
from operators.traffic.routes import HeaderRoute, MirrorRoute, Routes
from sluice_sandbox.traffic import MarkedRequests, TrafficIndex, gateway_traffic, route_split, service_traffic
from tests.unit.test_sandbox_traffic import codes, service, serving_pod

REF = RolloutRef(name="web", namespace="ns", uid="uid-web")
MARKED = MarkedRequests("x-canary", "always", 0.1)
TESTERS = HeaderRoute.model_validate(
    {"name": "testers", "matches": [{"headers": [{"name": "x-canary", "value": "always"}]}]}
)
OTHERS = HeaderRoute.model_validate(
    {"name": "others", "matches": [{"headers": [{"name": "x-tester", "value": "yes"}]}]}
)
SHADOW = MirrorRoute(name="shadow", percent=20)
SERVICES = [service("web", "stable", track="stable"), service("web-canary", "canary", track="canary")]
BAD_CANARY = [
    serving_pod("web-1", track="stable"),
    serving_pod("web-canary-1", track="canary", error_rate="0.5"),
]


def written(routes: Routes, canary: int = 0) -> dict[str, Any]:
    """The HTTPRoute the Gateway API provider writes for these routes, as stored."""
    spec = RolloutSpec.model_validate(
        {
            "template": {"spec": {"containers": [{"name": "web"}]}},
            "service": {"port": 80},
            "traffic": {"gatewayAPI": {}},
            "strategy": {"canary": {"steps": [{"setWeight": 10}]}},
        }
    )
    bound = routing_of(REF, spec)
    assert bound is not None
    (route,) = bound.desired(Weights.to_canary(canary), None, routes)
    return route


def split(routes: Routes, canary: int = 0) -> dict[str, tuple[int, float]]:
    return {name: value for (_, name), value in route_split([written(routes, canary)], 100, MARKED).items()}


def test_only_the_marked_requests_a_header_route_matches_go_to_the_canary() -> None:
    assert split(Routes(headers=(TESTERS,))) == {"web-canary": (1, pytest.approx(10.0)), "web": (100, 90.0)}
    # With weight as well: the unmarked 90% split by weight.
    assert split(Routes(headers=(TESTERS,)), 50) == {"web-canary": (51, 55.0), "web": (50, 45.0)}


def test_a_header_route_the_marked_requests_do_not_match_gets_none() -> None:
    assert split(Routes(headers=(OTHERS,))) == {"web-canary": (1, 0.0), "web": (100, 100.0)}


def test_the_marked_share_is_configurable_and_no_header_rule_changes_nothing() -> None:
    route = written(Routes(headers=(TESTERS,)))
    half = route_split([route], 100, MarkedRequests("x-canary", "always", 0.5))
    assert half[("ns", "web-canary")] == (1, 50.0)
    assert route_split([written(Routes())], 100, MARKED) == route_split([written(Routes())], 100)


def test_mirrored_copies_count_for_the_service_but_not_at_the_gateway() -> None:
    route = written(Routes(mirrors=(SHADOW,)))
    traffic = service_traffic([route], SERVICES, BAD_CANARY, rps=100, marked=MARKED)
    canary = traffic[("ns", "web-canary")]
    assert (canary.weight, canary.rps) == (0, pytest.approx(20.0)), "20% copied; no weight of its own"
    assert [stream.error_rate for stream in canary.streams] == [0.5], "its errors show in its own metrics"
    assert traffic[("ns", "web")].rps == pytest.approx(100.0), "every request is still answered by stable"
    gateway = gateway_traffic([route], SERVICES, BAD_CANARY, rps=100, marked=MARKED)
    assert gateway[("ns", "web")] == codes(ok=100), "users never see a mirrored answer"


def test_a_bad_canary_behind_a_header_route_fails_only_the_marked_requests() -> None:
    route = written(Routes(headers=(TESTERS,)))
    gateway = gateway_traffic([route], SERVICES, BAD_CANARY, rps=100, marked=MARKED)
    assert gateway[("ns", "web")] == codes(ok=95, errors=5)


@pytest.mark.parametrize("seed", range(5))
def test_the_traffic_index_equals_the_pure_functions_with_header_and_mirror_routes(seed: int) -> None:
    choices = random.Random(seed)
    index = TrafficIndex(100, MARKED)
    for pod in BAD_CANARY:
        index.put_pod("ns", pod["metadata"]["name"], pod)
    for svc in SERVICES:
        index.put_service(("ns", svc["metadata"]["name"]), svc)
    for _ in range(6):
        routes = Routes(
            headers=tuple(choices.sample([TESTERS, OTHERS], choices.randint(0, 2))),
            mirrors=(SHADOW,) if choices.random() < 0.5 else (),
        )
        route = written(routes, choices.choice([0, 10, 50]))
        index.put_route(("ns", "web"), route)
        index.refresh()
        assert index.traffic == service_traffic([route], SERVICES, BAD_CANARY, rps=100, marked=MARKED)
        assert index.gateway == gateway_traffic([route], SERVICES, BAD_CANARY, rps=100, marked=MARKED)
