"""The Istio traffic provider, and what it writes against Istio's own VirtualService schema."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from jsonschema import Draft7Validator
from pydantic import ValidationError

from operators.api.refs import RolloutRef
from operators.api.rollout import Phase, RolloutSpec
from operators.foundation.diff import covers, without_nulls
from operators.foundation.keys import ObjectKey
from operators.rollout.ownership import ROLLOUT_LABEL, is_owned_by
from operators.rollout.routing import Routing, routing_of
from operators.traffic.base import CannotAdopt, Weights
from operators.traffic.istio import (
    ADOPTED_DESTINATIONS_ANNOTATION,
    API_VERSION,
    KIND,
    IstioProvider,
    hand_back_virtual_service,
    istio_match,
    service_of,
)
from operators.traffic.registry import PROVIDERS
from operators.traffic.routes import HeaderRoute, MirrorRoute, RouteMatch, Routes
from sluice_sandbox.traffic import MarkedRequests, route_split, virtual_service_as_route
from tests.reference import ISTIO_NETWORKING, upstream_crd_of, upstream_schema
from tests.unit.engine_world import World
from tests.unit.engine_world import make_spec as make_world_spec

REF = RolloutRef(name="web", namespace="shop", uid="0b5a-rollout-uid")


def make_spec(istio: dict[str, Any] | None = None, port: int = 80) -> RolloutSpec:
    return RolloutSpec.model_validate(
        {
            "replicas": 4,
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}},
            "service": {"port": port},
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
            "traffic": {"istio": istio if istio is not None else {}},
        }
    )


def routing(istio: dict[str, Any] | None = None, port: int = 80) -> Routing:
    bound = routing_of(REF, make_spec(istio, port))
    assert bound is not None
    return bound


def key(name: str = "web") -> ObjectKey:
    return ObjectKey(API_VERSION, KIND, "shop", name)


def weights_of(virtual_service: dict[str, Any], route: int = 0) -> dict[str, int]:
    return {d["destination"]["host"]: d["weight"] for d in virtual_service["spec"]["http"][route]["route"]}


def users_virtual_service(http: list[dict[str, Any]]) -> dict[str, Any]:
    """Someone else's VirtualService, as the API server returns it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "web", "namespace": "shop", "generation": 3, "labels": {"team": "shop"}},
        "spec": {"hosts": ["shop.example.com"], "gateways": ["infra/public"], "http": http},
    }


USERS_HTTP: list[dict[str, Any]] = [
    {
        "name": "testers",
        "match": [{"headers": {"x-tester": {"exact": "yes"}}}],
        "route": [{"destination": {"host": "web-next"}}],
    },
    {
        "name": "primary",
        "retries": {"attempts": 3},
        "route": [
            {"destination": {"host": "web.shop.svc.cluster.local", "port": {"number": 80}, "subset": "v1"}}
        ],
        "timeout": "5s",
    },
]


# --- the provider and the Rollout's model ----------------------------------------------------------


def test_istio_is_registered_and_exactly_one_provider_is_allowed() -> None:
    assert isinstance(PROVIDERS["istio"], IstioProvider)
    with pytest.raises(ValidationError, match="exactly one provider"):
        RolloutSpec.model_validate(
            {
                **make_spec().model_dump(by_alias=True, exclude_none=True),
                "traffic": {"gatewayAPI": {}, "istio": {}},
            }
        )
    with pytest.raises(ValidationError, match="pattern"):
        make_spec({"virtualService": {"name": "Not_A_Name"}})


def test_created_virtual_service_splits_the_stable_and_canary_services() -> None:
    bound = routing({"virtualService": {"name": "web-mesh"}}, port=8080)
    assert bound.keys() == [key("web-mesh")]
    (vs,) = bound.desired(Weights.to_canary(20))
    assert vs["metadata"]["name"] == "web-mesh" and vs["metadata"]["namespace"] == "shop"
    assert vs["metadata"]["labels"][ROLLOUT_LABEL] == "web"
    assert is_owned_by(vs, REF)
    assert vs["spec"]["hosts"] == ["web"]
    (route,) = vs["spec"]["http"]
    assert route["name"] == "primary"
    assert route["route"] == [
        {"destination": {"host": "web", "port": {"number": 8080}}, "weight": 80},
        {"destination": {"host": "web-canary", "port": {"number": 8080}}, "weight": 20},
    ]


def test_each_named_route_of_a_created_virtual_service_gets_the_split() -> None:
    (vs,) = routing({"virtualService": {"routes": ["primary", "internal"]}}).desired(Weights.to_canary(30))
    assert [route["name"] for route in vs["spec"]["http"]] == ["primary", "internal"]
    assert all(weights_of(vs, n) == {"web": 70, "web-canary": 30} for n in (0, 1))


@pytest.mark.parametrize("canary", [0, 1, 33, 50, 100])
def test_observed_weights_read_back_what_was_written(canary: int) -> None:
    bound = routing()
    (vs,) = bound.desired(Weights.to_canary(canary))
    assert bound.observed({key(): vs}) == Weights.to_canary(canary)


def test_observed_weights_never_guess() -> None:
    bound = routing()
    (vs,) = bound.desired(Weights.to_canary(20))
    assert bound.observed({}) is None
    elsewhere = copy.deepcopy(vs)
    elsewhere["spec"]["http"][0]["route"].append({"destination": {"host": "legacy"}, "weight": 0})
    assert bound.observed({key(): elsewhere}) is None, "a third destination is no split of ours"
    nothing = copy.deepcopy(vs)
    for destination in nothing["spec"]["http"][0]["route"]:
        destination["weight"] = 0
    assert bound.observed({key(): nothing}) is None
    disagree = copy.deepcopy(vs)
    disagree["spec"]["http"].append(copy.deepcopy(disagree["spec"]["http"][0]))
    disagree["spec"]["http"][1]["route"][1]["weight"] = 40
    disagree["spec"]["http"][1]["route"][0]["weight"] = 60
    assert bound.observed({key(): disagree}) is None
    # A lone destination without a weight gets everything, as Istio reads it.
    lone = copy.deepcopy(vs)
    lone["spec"]["http"][0]["route"] = [{"destination": {"host": "web.shop.svc.cluster.local"}}]
    assert bound.observed({key(): lone}) == Weights.to_canary(0)


def test_istio_reports_no_refusals() -> None:
    bound = routing()
    (vs,) = bound.desired(Weights.to_canary(20))
    assert (
        bound.refusals({key(): {**vs, "status": {"validationMessages": [{"type": {"code": "IST0101"}}]}}})
        == []
    )


@pytest.mark.parametrize(
    ("host", "service"),
    [
        ("web", "web"),
        ("web.shop", "web"),
        ("web.shop.svc", "web"),
        ("web.shop.svc.cluster.local", "web"),
        ("web.other", None),
        ("web.other.svc.cluster.local", None),
        ("", None),
        (None, None),
    ],
)
def test_a_destination_host_names_a_service_of_the_namespace(host: Any, service: str | None) -> None:
    assert service_of(host, "shop") == service


# --- adopting someone else's VirtualService ----------------------------------------------------------


def test_adoption_splits_only_the_named_routes_and_keeps_everything_else() -> None:
    bound = routing({"virtualService": {"routes": ["primary"]}})
    live = users_virtual_service(copy.deepcopy(USERS_HTTP))
    assert bound.problems({key(): live}) == []
    (body,) = bound.desired(Weights.to_canary(25), {key(): live})
    assert "ownerReferences" not in body["metadata"]
    assert body["metadata"]["annotations"]["sluice.dev/adopted-by"] == "web"
    assert set(body["spec"]) == {"http"}, "hosts and gateways are the owner's: not in the apply"
    testers, primary = body["spec"]["http"]
    assert testers == USERS_HTTP[0], "a route not named is exactly as found"
    assert primary["retries"] == {"attempts": 3} and primary["timeout"] == "5s"
    assert primary["route"] == [
        {
            "destination": {"host": "web.shop.svc.cluster.local", "port": {"number": 80}, "subset": "v1"},
            "weight": 75,
        },
        # Qualified as the stable host is; the stable host's subset is not the canary Service's.
        {"destination": {"host": "web-canary.shop.svc.cluster.local", "port": {"number": 80}}, "weight": 25},
    ]
    assert live["spec"]["http"] == USERS_HTTP, "the live object is not changed in place"


def test_adoption_without_names_splits_every_route_to_the_stable_service() -> None:
    bound = routing()
    http = [
        *copy.deepcopy(USERS_HTTP),
        {"name": "api", "route": [{"destination": {"host": "web"}, "weight": 100}]},
    ]
    (body,) = bound.desired(Weights.to_canary(10), {key(): users_virtual_service(http)})
    assert body["spec"]["http"][0] == USERS_HTTP[0]
    assert weights_of(body, 1) == {"web.shop.svc.cluster.local": 90, "web-canary.shop.svc.cluster.local": 10}
    assert weights_of(body, 2) == {"web": 90, "web-canary": 10}
    live = {**users_virtual_service(http), "spec": {**users_virtual_service(http)["spec"], **body["spec"]}}
    assert bound.observed({key(): live}) == Weights.to_canary(10)


@pytest.mark.parametrize(
    ("istio", "http", "message"),
    [
        ({"virtualService": {"routes": ["missing"]}}, USERS_HTTP, "has no HTTP route named missing"),
        ({"virtualService": {"routes": ["testers"]}}, USERS_HTTP, "sends no traffic to Service web"),
        ({}, USERS_HTTP[:1], "has no HTTP route sending traffic to Service web"),
        (
            {},
            [
                {
                    "name": "p",
                    "route": [
                        {"destination": {"host": "web"}, "weight": 90},
                        {"destination": {"host": "old"}, "weight": 10},
                    ],
                }
            ],
            "sends traffic to Service web and to old",
        ),
        (
            {},
            [
                {
                    "name": "p",
                    "route": [
                        {"destination": {"host": "web"}, "weight": 50},
                        {"destination": {"host": "web.shop"}, "weight": 50},
                    ],
                }
            ],
            "names Service web 2 times",
        ),
        ({}, [{"route": [{"destination": {"host": "web"}}]}], "has no name"),
    ],
)
def test_what_cannot_be_split_is_refused_with_the_reason(
    istio: dict[str, Any], http: list[dict[str, Any]], message: str
) -> None:
    bound = routing(istio)
    (problem,) = bound.problems({key(): users_virtual_service(copy.deepcopy(http))})
    assert problem.startswith("cannot adopt VirtualService shop/web: VirtualService shop/web")
    assert message in problem
    with pytest.raises(CannotAdopt):
        IstioProvider().adopt(bound.target, bound.config, Weights.to_canary(0), users_virtual_service(http))


def test_hand_back_restores_the_routes_as_their_owner_wrote_them() -> None:
    bound = routing()
    http = copy.deepcopy(USERS_HTTP)
    http[1]["route"][0]["weight"] = 100
    live = users_virtual_service(http)
    for canary in (20, 60, 0):  # adopted, then re-applied at later steps: the original weight stays known
        (body,) = bound.desired(Weights.to_canary(canary), {key(): live})
        live = {
            **live,
            "metadata": {**live["metadata"], **body["metadata"]},
            "spec": {**live["spec"], **body["spec"]},
        }
        assert covers(live, body)
    assert ADOPTED_DESTINATIONS_ANNOTATION in live["metadata"]["annotations"]
    handed = hand_back_virtual_service(live)
    assert handed["spec"]["http"] == http
    assert set(handed["metadata"]) == {"name", "namespace"}, "our labels and annotations are dropped"
    assert PROVIDERS["istio"].hand_back(live) == handed


# --- Istio's own schema ------------------------------------------------------------------------------
#
# Validated with jsonschema (Draft 7) as tests/unit/test_traffic_gateway_api.py does for HTTPRoute:
# `x-kubernetes-*` keys (and the CEL rules among them) are ignored here; the sandbox evaluates the
# CEL rules when the integration tests write to it.


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = upstream_schema(upstream_crd_of("VirtualService", ISTIO_NETWORKING), "v1")
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def test_written_virtual_services_pass_istios_schema(validator: Draft7Validator) -> None:
    bodies: list[dict[str, Any]] = []
    for istio in ({}, {"virtualService": {"name": "web-mesh", "routes": ["a", "b"]}}):
        for canary in (0, 20, 100):
            bodies.extend(routing(istio, port=8080).desired(Weights.to_canary(canary)))
    for http in (USERS_HTTP, [{"name": "api", "route": [{"destination": {"host": "web"}}]}]):
        live = users_virtual_service(copy.deepcopy(http))
        (adopted,) = routing().desired(Weights.to_canary(30), {key(): live})
        bodies.append(adopted)
        bodies.append(hand_back_virtual_service({**live, **{"metadata": adopted["metadata"]}}))
    bodies.extend(bodies_with_routes())
    for body in bodies:
        # What the apply sends: nulls (fields Sluice no longer sets) are left out (apply_body).
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(without_nulls(body))]
        assert errors == [], body


def test_schema_validation_is_not_vacuous(validator: Draft7Validator) -> None:
    (vs,) = routing().desired(Weights.to_canary(20))
    broken = copy.deepcopy(vs)
    broken["spec"]["http"][0]["route"][0]["weight"] = "eighty"
    assert list(validator.iter_errors(broken))
    no_host = copy.deepcopy(vs)
    del no_host["spec"]["http"][0]["route"][1]["destination"]["host"]
    assert list(validator.iter_errors(no_host))


# --- the sandbox's traffic simulator reads a VirtualService as the HTTPRoute it amounts to ----------


def test_the_simulator_splits_a_virtual_service_by_its_first_routes_weights() -> None:
    (vs,) = routing().desired(Weights.to_canary(25))
    vs["spec"]["http"].append({"name": "later", "route": [{"destination": {"host": "other"}}]})
    assert route_split([virtual_service_as_route(vs)], 20.0) == {
        ("shop", "web"): (75, 15.0),
        ("shop", "web-canary"): (25, 5.0),
    }
    lone = copy.deepcopy(vs)
    lone["spec"]["http"][0]["route"] = [{"destination": {"host": "web.shop.svc.cluster.local"}}]
    assert route_split([virtual_service_as_route(lone)], 20.0) == {("shop", "web"): (100, 20.0)}
    external = copy.deepcopy(vs)
    external["spec"]["hosts"] = ["shop.example.com"]
    assert route_split([virtual_service_as_route(external)], 20.0) == {}, (
        "no host naming a Service: no requests"
    )


# --- header and mirror routes as Istio's match and mirror ------------------------------------------

TESTERS = HeaderRoute.model_validate(
    {"name": "testers", "matches": [{"headers": [{"name": "X-Canary", "value": "always"}]}]}
)
SHADOW = MirrorRoute.model_validate({"name": "shadow", "percent": 30})
API_SHADOW = MirrorRoute.model_validate(
    {"name": "api", "percent": 50, "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}]}
)
ALL_ROUTES = Routes(headers=(TESTERS,), mirrors=(SHADOW, API_SHADOW))


def match(api: dict[str, Any]) -> RouteMatch:
    return RouteMatch.model_validate(api)


@pytest.mark.parametrize(
    ("api", "istio"),
    [
        (
            {"headers": [{"name": "X-Canary", "value": "always"}]},
            {"headers": {"x-canary": {"exact": "always"}}},
        ),
        (
            {"headers": [{"type": "RegularExpression", "name": "user", "value": "b.*"}]},
            {"headers": {"user": {"regex": "b.*"}}},
        ),
        (
            {
                "queryParams": [
                    {"name": "Beta", "value": "1"},
                    {"type": "RegularExpression", "name": "v", "value": "2.*"},
                ]
            },
            {"queryParams": {"Beta": {"exact": "1"}, "v": {"regex": "2.*"}}},
        ),
        ({"path": {"type": "Exact", "value": "/login"}}, {"uri": {"exact": "/login"}}),
        ({"path": {"type": "RegularExpression", "value": "/v[0-9]+/.*"}}, {"uri": {"regex": "/v[0-9]+/.*"}}),
        ({"path": {"value": "/"}}, {"uri": {"prefix": "/"}}),
        ({"path": {}}, {"uri": {"prefix": "/"}}),
        # Gateway API prefixes match whole path elements; Istio's prefix would take /apis too.
        ({"path": {"type": "PathPrefix", "value": "/api/"}}, {"uri": {"regex": "/api(/.*)?"}}),
        ({"path": {"type": "PathPrefix", "value": "/a.b"}}, {"uri": {"regex": "/a\\.b(/.*)?"}}),
        (
            {"method": "POST", "headers": [{"name": "x-a", "value": "1"}, {"name": "x-b", "value": "2"}]},
            {"method": {"exact": "POST"}, "headers": {"x-a": {"exact": "1"}, "x-b": {"exact": "2"}}},
        ),
    ],
)
def test_a_gateway_api_match_becomes_the_istio_match_taking_the_same_requests(
    api: dict[str, Any], istio: dict[str, Any]
) -> None:
    assert istio_match(match(api)) == istio


def test_the_path_regex_of_a_prefix_matches_whole_path_elements() -> None:
    regex = istio_match(match({"path": {"value": "/api"}}))["uri"]["regex"]
    assert all(re.fullmatch(regex, path) for path in ("/api", "/api/", "/api/v1"))
    assert not any(re.fullmatch(regex, path) for path in ("/apis", "/", "/x/api"))


def test_a_header_route_goes_before_the_split_and_sends_its_requests_to_the_canary_only() -> None:
    bound = routing(port=8080)
    routes = Routes(
        headers=(
            TESTERS,
            HeaderRoute.model_validate(
                {
                    "name": "beta",
                    "matches": [{"queryParams": [{"name": "beta", "value": "1"}]}, {"method": "PUT"}],
                }
            ),
        )
    )
    (vs,) = bound.desired(Weights.to_canary(10), None, routes)
    testers, beta, primary = vs["spec"]["http"]
    assert testers == {
        "name": "sluice-header-testers",
        "match": [{"headers": {"x-canary": {"exact": "always"}}}],
        "route": [{"destination": {"host": "web-canary", "port": {"number": 8080}}, "weight": 100}],
    }
    assert beta["name"] == "sluice-header-beta"
    assert beta["match"] == [{"queryParams": {"beta": {"exact": "1"}}}, {"method": {"exact": "PUT"}}], (
        "several matches: several entries, any one is enough"
    )
    assert primary["name"] == "primary" and weights_of(vs, 2) == {"web": 90, "web-canary": 10}
    assert bound.observed({key(): vs}) == Weights.to_canary(10), "Sluice's routes are not the split"
    (without,) = bound.desired(Weights.to_canary(10))
    assert not covers(vs, without), "removing the header route is a change to apply"


def test_a_mirror_without_matches_sits_on_the_split_route_and_one_with_matches_gets_its_own() -> None:
    bound = routing()
    (vs,) = bound.desired(Weights.to_canary(0), None, Routes(mirrors=(SHADOW, API_SHADOW)))
    api, primary = vs["spec"]["http"]
    assert primary["mirror"] == {"host": "web-canary", "port": {"number": 80}}
    assert primary["mirrorPercentage"] == {"value": 30.0}
    assert api["name"] == "sluice-mirror-api"
    assert api["match"] == [{"uri": {"regex": "/api(/.*)?"}}]
    assert api["route"] == primary["route"], "a mirror route keeps the split: only a copy goes to the canary"
    assert api["mirror"] == primary["mirror"] and api["mirrorPercentage"] == {"value": 50.0}
    assert bound.observed({key(): vs}) == Weights.to_canary(0)
    # A live route still mirroring differs from one without mirror routes: the mirror gets removed.
    (plain,) = bound.desired(Weights.to_canary(0))
    assert plain["spec"]["http"][0]["mirror"] is None
    assert not covers({**vs, "spec": {"http": [primary]}}, plain)
    # Two mirrors of every request: Istio's mirrors list, one copy each (as two Gateway API filters).
    twice = Routes(mirrors=(SHADOW, MirrorRoute.model_validate({"name": "more", "percent": 5})))
    (vs2,) = bound.desired(Weights.to_canary(0), None, twice)
    (primary2,) = vs2["spec"]["http"]
    assert primary2["mirrors"] == [
        {"destination": {"host": "web-canary", "port": {"number": 80}}, "percentage": {"value": 30.0}},
        {"destination": {"host": "web-canary", "port": {"number": 80}}, "percentage": {"value": 5.0}},
    ]
    assert primary2["mirror"] is None
    # From two mirrors to one, or none: the live `mirrors` list is a difference to apply away.
    live2 = without_nulls(vs2)
    assert not covers(live2, vs) and not covers(live2, plain)


def adopted_live(live: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The live object after the apply of `body` (spec.http is atomic: the applied list replaces it)."""
    return {
        **live,
        "metadata": {**live["metadata"], **body["metadata"]},
        "spec": {**live["spec"], **without_nulls(body["spec"])},
    }


def test_adopted_routes_get_sluices_routes_right_before_them_and_keep_everything_else() -> None:
    bound = routing({"virtualService": {"routes": ["primary"]}})
    http = copy.deepcopy(USERS_HTTP)
    http[1]["match"] = [{"uri": {"prefix": "/shop"}, "headers": {"x-region": {"exact": "eu"}}}]
    live = users_virtual_service(http)
    (body,) = bound.desired(Weights.to_canary(20), {key(): live}, ALL_ROUTES)
    names = [route["name"] for route in body["spec"]["http"]]
    assert names == ["testers", "sluice-header-testers", "sluice-mirror-api", "primary"]
    assert body["spec"]["http"][0] == USERS_HTTP[0], "the owner's other routes are exactly as found"
    header, mirror, primary = body["spec"]["http"][1:]
    # Narrowed: the owner's conditions stay, the header route's are added (Istio ANDs them).
    assert header["match"] == [
        {
            "uri": {"prefix": "/shop"},
            "headers": {"x-region": {"exact": "eu"}, "x-canary": {"exact": "always"}},
        }
    ]
    assert header["retries"] == {"attempts": 3} and header["timeout"] == "5s"
    assert header["route"] == [
        {"destination": {"host": "web-canary.shop.svc.cluster.local", "port": {"number": 80}}, "weight": 100}
    ]
    assert mirror["match"] == [{"uri": {"regex": "/api(/.*)?"}, "headers": {"x-region": {"exact": "eu"}}}]
    assert primary["mirror"] == {"host": "web-canary.shop.svc.cluster.local", "port": {"number": 80}}
    # The next pass starts from the live object holding all that: the same body, not one more of each.
    after = adopted_live(live, body)
    assert bound.desired(Weights.to_canary(20), {key(): after}, ALL_ROUTES) == [body]
    assert bound.observed({key(): after}) == Weights.to_canary(20)
    # Without routes, Sluice's are gone and the split route mirrors no more.
    (bare,) = bound.desired(Weights.to_canary(20), {key(): after})
    assert [route["name"] for route in bare["spec"]["http"]] == ["testers", "primary"]
    assert "mirror" not in without_nulls(bare["spec"])["http"][1]
    # Handed back, it is the owner's again, exactly.
    assert hand_back_virtual_service(after)["spec"]["http"] == http


def test_an_owners_route_that_mirrors_already_cannot_take_sluices_mirror() -> None:
    bound = routing({"virtualService": {"routes": ["primary"]}})
    http = copy.deepcopy(USERS_HTTP)
    http[1]["mirror"] = {"host": "audit"}
    live = users_virtual_service(http)
    assert bound.problems({key(): live}) == [], "weights alone split it, the owner's mirror kept"
    (body,) = bound.desired(Weights.to_canary(20), {key(): live}, Routes(headers=(TESTERS,)))
    assert body["spec"]["http"][2]["mirror"] == {"host": "audit"}
    assert "mirror" not in body["spec"]["http"][1], "the owner's mirror is not copied to the canary's route"
    with pytest.raises(CannotAdopt, match="HTTP route 'primary' mirrors its requests already \\(mirror\\)"):
        bound.desired(Weights.to_canary(20), {key(): live}, Routes(mirrors=(SHADOW,)))


def bodies_with_routes() -> list[dict[str, Any]]:
    """VirtualServices written with header and mirror routes: created, adopted, handed back."""
    bodies: list[dict[str, Any]] = []
    for routes in (
        ALL_ROUTES,
        Routes(headers=(TESTERS,)),
        Routes(mirrors=(SHADOW, MirrorRoute(name="b", percent=1))),
    ):
        for istio in ({}, {"virtualService": {"routes": ["a", "b"]}}):
            bodies.extend(routing(istio).desired(Weights.to_canary(40), None, routes))
        live = users_virtual_service(copy.deepcopy(USERS_HTTP))
        (adopted,) = routing().desired(Weights.to_canary(40), {key(): live}, routes)
        bodies.append(adopted)
        bodies.append(hand_back_virtual_service(adopted_live(live, adopted)))
    return bodies


def test_the_simulator_sends_marked_requests_to_the_header_route_and_mirrors_copies() -> None:
    marked = MarkedRequests(share=0.1)
    (vs,) = routing().desired(Weights.to_canary(0), None, Routes(headers=(TESTERS,)))
    assert route_split([virtual_service_as_route(vs)], 100.0, marked) == {
        ("shop", "web"): (100, 90.0),
        ("shop", "web-canary"): (100, 10.0),
    }
    (mirrored,) = routing().desired(Weights.to_canary(0), None, Routes(mirrors=(SHADOW,)))
    split = route_split([virtual_service_as_route(mirrored)], 100.0, marked)
    assert split[("shop", "web")] == (100, 100.0)
    assert split[("shop", "web-canary")] == pytest.approx((0, 30.0))


def test_the_engine_holds_a_release_whose_mirror_an_adopted_route_cannot_take() -> None:
    # routing.problems judges an adopted VirtualService by weights alone; a mirror step that the
    # owner's route cannot take is found when the pass renders it: the release holds, saying why.
    steps = [{"setMirrorRoute": {"name": "shadow", "percent": 30}}, {"setWeight": 50}]
    body = make_world_spec(steps).model_dump(by_alias=True, exclude_none=True, mode="json")
    spec = RolloutSpec.model_validate(
        {**body, "traffic": {"istio": {"virtualService": {"routes": ["primary"]}}}}
    )
    http = copy.deepcopy(USERS_HTTP)
    http[1]["mirror"] = {"host": "audit"}
    world = World(spec, ref=REF)
    world.put(users_virtual_service(http))
    world.settle()
    assert world.status.phase == Phase.HEALTHY, world.status.message
    world.set_image("ghcr.io/acme/web:2")
    world.run_until(
        lambda w: "mirrors its requests already" in (w.status.message or ""), follow_requeue=False
    )
    assert "cannot adopt: VirtualService shop/web HTTP route 'primary'" in (world.status.message or "")
    live = world.objects[key()]
    assert live["spec"]["http"][1]["mirror"] == {"host": "audit"}, "the owner's mirror is left alone"
    assert world.status.mirror_routes == [], "the mirror step is not taken"
