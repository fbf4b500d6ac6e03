"""The Istio traffic provider, and what it writes against Istio's own VirtualService schema."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import Draft7Validator
from pydantic import ValidationError

from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec
from operators.foundation.diff import covers
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
    service_of,
)
from operators.traffic.registry import PROVIDERS
from sluice_sandbox.traffic import route_split, virtual_service_as_route
from tests.reference import ISTIO_NETWORKING, upstream_crd_of, upstream_schema

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
    for body in bodies:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
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


def test_header_and_mirror_steps_are_refused_with_istio_for_now() -> None:
    # Istio's match and mirror/mirrorPercentage are not mapped yet: a clear message, not a silent no-op.
    spec = {
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "w:1"}]},
        },
        "service": {"port": 80},
        "traffic": {"istio": {}},
        "strategy": {
            "canary": {"steps": [{"setHeaderRoute": {"name": "t", "matches": [{"path": {"value": "/"}}]}}]}
        },
    }
    with pytest.raises(ValidationError, match="not supported with traffic.istio yet: use traffic.gatewayAPI"):
        RolloutSpec.model_validate(spec)
