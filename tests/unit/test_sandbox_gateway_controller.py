"""The sandbox's Gateway controller: what it says of each HTTPRoute, and that it says it once.

The pure decisions first (:func:`route_status` and friends, on a :class:`GatewayWorld`), then the
controller on a store (no HTTP), with the sandbox's Gateway CRDs and the upstream HTTPRoute CRD,
so that every status it writes is one the real schema accepts. Last, the examples: every route
they make attaches to a Gateway the sandbox has.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.api.application import ApplicationSpec
from operators.api.refs import ApplicationRef, RolloutRef
from operators.api.rollout import RolloutSpec
from operators.application.render import render_application
from operators.application.types import ComponentTypes
from operators.rollout.routing import routing_of
from operators.traffic.base import Weights
from sluice_sandbox.apiserver import SandboxAPIServer
from sluice_sandbox.gateway import (
    CONTROLLER_NAME,
    GATEWAY_API_CRDS,
    default_gateway,
    default_gateway_class,
    install_gateway_api,
)
from sluice_sandbox.gateway_controller import (
    GATEWAYS,
    HTTPROUTES,
    GatewayController,
    GatewayWorld,
    class_status,
    gateway_status,
    hostnames_intersect,
    route_status,
)
from sluice_sandbox.store import Store
from sluice_sandbox.traffic import refused, route_split
from tests.reference import HTTPROUTES as HTTPROUTES_REFERENCE
from tests.reference import upstream_crd

AT = "2030-01-01T00:00:00Z"
LATER = "2030-01-01T00:05:00Z"
OTHER_CONTROLLER = "example.net/gateway-controller"


def gateway(
    name: str = "public",
    namespace: str = "default",
    *,
    gateway_class: str = "sandbox",
    **listener: Any,
) -> dict[str, Any]:
    body = {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
    body.update(listener)
    return {
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": {"gatewayClassName": gateway_class, "listeners": [body]},
    }


def route(
    *parents: dict[str, Any],
    namespace: str = "shop",
    backends: tuple[str, ...] = ("web", "web-canary"),
    generation: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": namespace, "generation": generation},
        "spec": {
            "parentRefs": list(parents or [{"name": "public", "namespace": "default"}]),
            "rules": [{"backendRefs": [{"name": name, "port": 80, "weight": 50} for name in backends]}],
            **spec,
        },
    }


def world(
    *gateways: dict[str, Any], services: tuple[str, ...] = ("web", "web-canary"), **kw: Any
) -> GatewayWorld:
    classes = {
        "sandbox": default_gateway_class(),
        "other": {"metadata": {"name": "other"}, "spec": {"controllerName": OTHER_CONTROLLER}},
    }
    found = gateways or (gateway(),)
    by_key = {(g["metadata"]["namespace"], g["metadata"]["name"]): g for g in found}
    return GatewayWorld(by_key, classes, {("shop", name) for name in services}, **kw)


def conditions(status: dict[str, Any] | None, index: int = 0) -> dict[str, tuple[str, str]]:
    """The (status, reason) of each condition of the status' parent number `index`."""
    assert status is not None
    parent = status["parents"][index]
    return {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]}


ACCEPTED = {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}


# ----- Accepted -----


def test_a_route_to_the_default_gateway_is_accepted_with_its_references_resolved() -> None:
    status = route_status(route(generation=3), world(), AT)
    assert status is not None
    [parent] = status["parents"]
    assert parent["controllerName"] == CONTROLLER_NAME
    assert parent["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "public",
        "namespace": "default",
    }
    assert conditions(status) == ACCEPTED
    assert {c["observedGeneration"] for c in parent["conditions"]} == {3}
    assert {c["lastTransitionTime"] for c in parent["conditions"]} == {AT}


def test_a_missing_gateway_is_no_matching_parent() -> None:
    status = route_status(route({"name": "missing"}), world(), AT)
    assert conditions(status)["Accepted"] == ("False", "NoMatchingParent")
    assert status is not None
    message = status["parents"][0]["conditions"][0]["message"]
    assert message == "Gateway shop/missing not found"  # the namespace defaults to the route's


@pytest.mark.parametrize(
    ("allowed", "labels", "expected"),
    [
        pytest.param({"from": "Same"}, {}, ("False", "NotAllowedByListeners"), id="same-other-namespace"),
        pytest.param({}, {}, ("False", "NotAllowedByListeners"), id="default-is-same"),
        pytest.param(
            {"from": "Selector", "selector": {"matchLabels": {"env": "prod"}}},
            {"env": "prod"},
            ("True", "Accepted"),
            id="selector-matches",
        ),
        pytest.param(
            {"from": "Selector", "selector": {"matchLabels": {"env": "prod"}}},
            {"env": "dev"},
            ("False", "NotAllowedByListeners"),
            id="selector-does-not-match",
        ),
        pytest.param(
            {
                "from": "Selector",
                "selector": {
                    "matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]}
                    ]
                },
            },
            {},
            ("True", "Accepted"),
            id="selector-by-name-label",
        ),
        pytest.param({"from": "All"}, {}, ("True", "Accepted"), id="all"),
    ],
)
def test_listeners_admit_routes_by_namespace(
    allowed: dict[str, Any], labels: dict[str, str], expected: tuple[str, str]
) -> None:
    listening = gateway(namespace="infra", allowedRoutes={"namespaces": allowed})
    status = route_status(
        route({"name": "public", "namespace": "infra"}),
        world(listening, namespace_labels={"shop": labels}),
        AT,
    )
    assert conditions(status)["Accepted"] == expected


def test_a_route_in_the_gateways_own_namespace_is_admitted_by_default() -> None:
    same = gateway(namespace="shop", allowedRoutes={"namespaces": {"from": "Same"}})
    assert conditions(route_status(route({"name": "public"}), world(same), AT)) == ACCEPTED


@pytest.mark.parametrize(
    ("parent", "listener", "expected"),
    [
        ({"sectionName": "https"}, {}, ("False", "NoMatchingParent")),
        ({"sectionName": "http"}, {}, ("True", "Accepted")),
        ({"port": 8080}, {}, ("False", "NoMatchingParent")),
        ({}, {"protocol": "TCP"}, ("False", "NotAllowedByListeners")),
        ({}, {"allowedRoutes": {"kinds": [{"kind": "GRPCRoute"}], "namespaces": {"from": "All"}}}, None),
        ({}, {"hostname": "*.example.com"}, ("True", "Accepted")),
        ({}, {"hostname": "api.example.org"}, ("False", "NoMatchingListenerHostname")),
    ],
)
def test_listeners_by_section_port_protocol_kind_and_hostname(
    parent: dict[str, Any], listener: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    ref = {"name": "public", "namespace": "default", **parent}
    status = route_status(route(ref, hostnames=["shop.example.com"]), world(gateway(**listener)), AT)
    assert conditions(status)["Accepted"] == (expected or ("False", "NotAllowedByListeners"))


@pytest.mark.parametrize(
    ("listener", "route_host", "expected"),
    [
        (None, "shop.example.com", True),
        ("shop.example.com", "shop.example.com", True),
        ("*.example.com", "shop.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("shop.example.com", "*.example.com", True),
        ("*.example.com", "*.shop.example.com", True),
        ("shop.example.com", "api.example.com", False),
    ],
)
def test_hostnames_intersect(listener: str | None, route_host: str, expected: bool) -> None:
    assert hostnames_intersect(listener, route_host) is expected


def test_gateways_of_another_controller_are_left_alone_and_their_entries_kept() -> None:
    theirs = gateway("theirs", gateway_class="other")
    mine = gateway()
    other_entry = {
        "parentRef": {"name": "theirs", "namespace": "default"},
        "controllerName": OTHER_CONTROLLER,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""}],
    }
    attached = route({"name": "theirs", "namespace": "default"})
    attached["status"] = {"parents": [other_entry]}
    assert route_status(attached, world(theirs, mine), AT) is None  # nothing of ours to say

    both = route({"name": "theirs", "namespace": "default"}, {"name": "public", "namespace": "default"})
    both["status"] = {"parents": [other_entry]}
    status = route_status(both, world(theirs, mine), AT)
    assert status is not None
    assert status["parents"][0] == other_entry
    assert [p["controllerName"] for p in status["parents"]] == [OTHER_CONTROLLER, CONTROLLER_NAME]


def test_a_parent_that_is_no_gateway_is_left_alone() -> None:
    mesh = route({"group": "", "kind": "Service", "name": "web"})
    assert route_status(mesh, world(), AT) is None


def test_a_removed_parent_loses_its_entry() -> None:
    attached = route()
    attached["status"] = route_status(attached, world(), AT)
    attached["spec"]["parentRefs"] = [{"group": "", "kind": "Service", "name": "web"}]
    assert route_status(attached, world(), LATER) == {"parents": []}


# ----- ResolvedRefs -----


def test_a_missing_backend_service_is_backend_not_found() -> None:
    status = route_status(route(), world(services=("web",)), AT)
    assert conditions(status) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("False", "BackendNotFound"),
    }
    assert status is not None
    assert status["parents"][0]["conditions"][1]["message"] == (
        "backendRef web-canary: Service shop/web-canary not found"
    )


def test_backends_of_another_namespace_or_kind_are_not_resolved() -> None:
    elsewhere = route()
    elsewhere["spec"]["rules"][0]["backendRefs"][1]["namespace"] = "other"
    assert conditions(route_status(elsewhere, world(), AT))["ResolvedRefs"] == ("False", "RefNotPermitted")
    bucket = route()
    bucket["spec"]["rules"][0]["backendRefs"][1].update(group="storage.example.com", kind="Bucket")
    assert conditions(route_status(bucket, world(), AT))["ResolvedRefs"] == ("False", "InvalidKind")


# ----- Writing only changes -----


def test_the_status_it_wrote_is_left_as_it_is() -> None:
    attached = route()
    attached["status"] = route_status(attached, world(), AT)
    assert route_status(attached, world(), LATER) is None


def test_a_flip_moves_the_transition_time_of_that_condition_only() -> None:
    attached = route()
    attached["status"] = route_status(attached, world(), AT)
    status = route_status(attached, world(services=("web",)), LATER)
    assert status is not None
    times = {c["type"]: c["lastTransitionTime"] for c in status["parents"][0]["conditions"]}
    assert times == {"Accepted": AT, "ResolvedRefs": LATER}


def test_a_new_generation_is_reported_again() -> None:
    attached = route()
    attached["status"] = route_status(attached, world(), AT)
    attached["metadata"]["generation"] = 2
    status = route_status(attached, world(), LATER)
    assert status is not None
    assert {c["observedGeneration"] for c in status["parents"][0]["conditions"]} == {2}
    assert {c["lastTransitionTime"] for c in status["parents"][0]["conditions"]} == {AT}


def test_gateways_and_classes_of_this_controller_get_their_conditions() -> None:
    ours = gateway()
    status = gateway_status(ours, world(), AT)
    assert status is not None
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Accepted": "True",
        "Programmed": "True",
    }
    assert gateway_status({**ours, "status": status}, world(), LATER) is None
    assert gateway_status(gateway(gateway_class="other"), world(), AT) is None
    accepted = class_status(default_gateway_class(), at=AT)
    assert accepted is not None and accepted["conditions"][0]["reason"] == "Accepted"
    assert class_status({"metadata": {"name": "x"}, "spec": {"controllerName": OTHER_CONTROLLER}}) is None


# ----- The traffic simulator serves only what a Gateway accepted -----


def test_the_traffic_simulator_routes_no_request_through_a_refused_route() -> None:
    unreported = route()
    accepted = {**route(), "status": route_status(route(), world(), AT)}
    rejected = {**route({"name": "missing"}), "status": route_status(route({"name": "missing"}), world(), AT)}
    assert not refused(unreported) and not refused(accepted) and refused(rejected)
    assert route_split([accepted], 10.0) == {("shop", "web"): (50, 5.0), ("shop", "web-canary"): (50, 5.0)}
    assert route_split([rejected], 10.0) == {}


# ----- The controller on a store -----


def run(scenario: Callable[[Store, GatewayController], Awaitable[None]]) -> None:
    """Run `scenario` on a fresh store with the Gateway API served (the upstream HTTPRoute CRD) and the
    controller following it."""
    httproute_crd = upstream_crd(HTTPROUTES_REFERENCE)

    async def main() -> None:
        store = SandboxAPIServer().store
        controller = GatewayController(store)
        await controller.start()
        try:
            await install_gateway_api(store, httproute_crd=httproute_crd)
            for namespace in ("shop", "infra"):
                await store.create("namespaces", {"metadata": {"name": namespace}})
            await scenario(store, controller)
        finally:
            await controller.stop()
            store.close()

    asyncio.run(main())


def service(name: str, namespace: str = "shop") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"ports": [{"port": 80}]}}


def reported(condition: str, truth: str, reason: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """The route's parent has `condition` at `truth` (with `reason`), for its current generation."""

    def check(obj: dict[str, Any]) -> bool:
        generation = obj["metadata"]["generation"]
        for parent in (obj.get("status") or {}).get("parents") or []:
            for c in parent["conditions"]:
                if c["type"] == condition and c["status"] == truth and c["observedGeneration"] == generation:
                    return reason is None or c["reason"] == reason
        return False

    return check


async def settled(controller: GatewayController) -> None:
    await asyncio.wait_for(controller.idle.wait(), timeout=5)


def test_the_sandbox_starts_with_an_accepted_gateway() -> None:
    async def scenario(store: Store, controller: GatewayController) -> None:
        def programmed(obj: dict[str, Any]) -> bool:
            return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []} == {
                "Accepted": "True",
                "Programmed": "True",
            }

        found = await store.wait_for(GATEWAYS, "default", "public", programmed, timeout=5)
        assert found["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["from"] == "All"

        def accepted(obj: dict[str, Any]) -> bool:
            return [(c["type"], c["status"]) for c in (obj.get("status") or {}).get("conditions") or []] == [
                ("Accepted", "True")
            ]

        gateway_class = await store.wait_for("gatewayclasses", None, "sandbox", accepted, timeout=5)
        assert gateway_class["spec"]["controllerName"] == CONTROLLER_NAME
        await install_gateway_api(store)  # again: what exists is kept, not duplicated
        assert len((await store.list(GATEWAYS))["items"]) == 1

    run(scenario)


def test_routes_follow_services_and_gateways_as_they_come_and_go() -> None:
    async def scenario(store: Store, controller: GatewayController) -> None:
        await store.create("services", service("web"))
        await store.create(HTTPROUTES, route(), "shop")
        await store.wait_for(HTTPROUTES, "shop", "web", reported("Accepted", "True"), timeout=5)
        await store.wait_for(
            HTTPROUTES, "shop", "web", reported("ResolvedRefs", "False", "BackendNotFound"), timeout=5
        )
        await store.create("services", service("web-canary"))  # the route itself does not change
        await store.wait_for(HTTPROUTES, "shop", "web", reported("ResolvedRefs", "True"), timeout=5)

        # A missing Gateway, then created: accepted without any change to the route.
        await store.patch(
            HTTPROUTES, "shop", "web", {"spec": {"parentRefs": [{"name": "edge", "namespace": "infra"}]}}
        )
        await store.wait_for(
            HTTPROUTES, "shop", "web", reported("Accepted", "False", "NoMatchingParent"), timeout=5
        )
        edge = gateway("edge", "infra", allowedRoutes={"namespaces": {"from": "Same"}})
        del edge["metadata"]["generation"]
        await store.create(GATEWAYS, edge, "infra")
        await store.wait_for(
            HTTPROUTES, "shop", "web", reported("Accepted", "False", "NotAllowedByListeners"), timeout=5
        )
        await store.patch(GATEWAYS, "infra", "edge", _all_namespaces())
        await store.wait_for(HTTPROUTES, "shop", "web", reported("Accepted", "True"), timeout=5)
        await store.delete(GATEWAYS, "infra", "edge")
        await store.wait_for(
            HTTPROUTES, "shop", "web", reported("Accepted", "False", "NoMatchingParent"), timeout=5
        )
        await store.delete("services", "shop", "web")
        await store.wait_for(
            HTTPROUTES, "shop", "web", reported("ResolvedRefs", "False", "BackendNotFound"), timeout=5
        )

    run(scenario)


def _all_namespaces() -> dict[str, Any]:
    listener = {
        "name": "http",
        "port": 80,
        "protocol": "HTTP",
        "allowedRoutes": {"namespaces": {"from": "All"}},
    }
    return {"spec": {"listeners": [listener]}}


def test_no_status_write_when_nothing_changes() -> None:
    async def scenario(store: Store, controller: GatewayController) -> None:
        for name in ("web", "web-canary"):
            await store.create("services", service(name))
        await store.create(HTTPROUTES, route(), "shop")
        await store.wait_for(HTTPROUTES, "shop", "web", reported("ResolvedRefs", "True"), timeout=5)
        await settled(controller)
        writes = controller.writes

        # Changes it looks at that change nothing it reports: a label on the route, on a Service,
        # on the Gateway; a Service of no route; the route's own status written again as it is.
        touched = await store.patch(HTTPROUTES, "shop", "web", {"metadata": {"labels": {"team": "a"}}})
        await store.patch("services", "shop", "web", {"metadata": {"labels": {"team": "a"}}})
        await store.patch(GATEWAYS, "default", "public", {"metadata": {"labels": {"team": "a"}}})
        await store.create("services", service("unrelated"))
        await settled(controller)
        assert controller.writes == writes
        unchanged = await store.get(HTTPROUTES, "shop", "web")
        assert unchanged["metadata"]["resourceVersion"] == touched["metadata"]["resourceVersion"]

        # A new generation is reported once, and only once.
        await store.patch(HTTPROUTES, "shop", "web", {"spec": {"hostnames": ["shop.example.com"]}})
        await store.wait_for(HTTPROUTES, "shop", "web", reported("Accepted", "True"), timeout=5)
        await settled(controller)
        assert controller.writes == writes + 1

    run(scenario)


# ----- The examples attach to the sandbox's Gateway -----

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_routes() -> list[Any]:
    """The HTTPRoute of every example Rollout (and of every Rollout an example Application renders),
    and every HTTPRoute an example writes itself (a route a Rollout adopts: examples/adopt/)."""
    params = []
    catalog = ComponentTypes(EXAMPLES / "application" / "component-types").catalog()
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            namespace = doc.get("metadata", {}).get("namespace", "default")
            rollouts = []
            if doc.get("kind") == "HTTPRoute":
                written = {**doc, "metadata": {**doc["metadata"], "namespace": namespace, "generation": 1}}
                params.append(
                    pytest.param(written, id=f"{path.relative_to(EXAMPLES)}:{doc['metadata']['name']}")
                )
            elif doc.get("kind") == "Rollout" and doc["spec"].get("workloadRef"):
                continue  # it adopts the route its example writes (above), which names the Gateway
            elif doc.get("kind") == "Rollout":
                rollouts = [doc]
            elif doc.get("kind") == "Application":
                ref = ApplicationRef(doc["metadata"]["name"], namespace, "uid")
                rendered = render_application(ref, ApplicationSpec.model_validate(doc["spec"]), catalog)
                rollouts = list(rendered.rollouts.values())
            for rollout in rollouts:
                name = rollout["metadata"]["name"]
                routing = routing_of(
                    RolloutRef(name, namespace, "uid"), RolloutSpec.model_validate(rollout["spec"])
                )
                if routing is not None and routing.provider.field == "gatewayAPI":  # Istio: no Gateway
                    [desired] = routing.desired(Weights.to_canary(0))
                    desired["metadata"]["generation"] = 1
                    params.append(pytest.param(desired, id=f"{path.relative_to(EXAMPLES)}:{name}"))
    return params


EXAMPLE_ROUTES = example_routes()


def test_the_example_routes_are_found() -> None:
    assert len(EXAMPLE_ROUTES) >= 6  # minimal, analysis, demo, sidecarset (2), shop and adopt examples


@pytest.mark.parametrize("desired", EXAMPLE_ROUTES)
def test_every_example_route_attaches_to_the_sandbox_gateway(desired: dict[str, Any]) -> None:
    namespace = desired["metadata"]["namespace"]
    names = [ref["name"] for rule in desired["spec"]["rules"] for ref in rule.get("backendRefs") or []]
    sandbox = GatewayWorld(
        {("default", "public"): default_gateway()},
        {"sandbox": default_gateway_class()},
        {(namespace, name) for name in names},
    )
    status = route_status(copy.deepcopy(desired), sandbox, AT)
    assert status is not None, "the example's route names no Gateway of the sandbox's"
    for index in range(len(status["parents"])):
        assert conditions(status, index) == ACCEPTED, status["parents"][index]


def test_the_sandbox_gateway_api_crds_are_structural() -> None:
    async def main() -> None:
        store = SandboxAPIServer().store
        for crd in GATEWAY_API_CRDS:
            installed = await store.install_crd(crd)
            assert {c["type"]: c["status"] for c in installed["status"]["conditions"]}[
                "Established"
            ] == "True"
        # Defaults as upstream's: a listener admits routes of its own namespace unless it says otherwise.
        body = gateway("bare", "default")
        del body["spec"]["listeners"][0]["allowedRoutes"]
        del body["metadata"]["generation"]
        created = await store.create(GATEWAYS, body, "default")
        assert created["spec"]["listeners"][0]["allowedRoutes"] == {"namespaces": {"from": "Same"}}
        store.close()

    asyncio.run(main())
