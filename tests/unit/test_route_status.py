"""A Gateway controller's verdict on the HTTPRoute, as the Rollout engine takes it.

`route_refusals` reads what controllers reported in the route's `status.parents`; the real engine
(driven through tests/unit/engine_world.py) holds a release whose route a Gateway explicitly
refused, for the route as it is now, and goes on by itself once the route is accepted. A route
no controller reported on (a cluster without one, such as kind in CI) holds nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from operators.api.rollout import Phase
from operators.rollout.commands import Command
from operators.traffic.base import Refusal
from operators.traffic.gateway_api import route_refusals
from tests.unit.engine_world import ROUTE_KEY, World, make_spec

V2 = "ghcr.io/acme/web:2"
CONTROLLER = "sandbox.sluice.dev/gateway-controller"
PARENT = {"name": "public", "namespace": "infra"}


def parent_status(
    accepted: tuple[str, str, str] = ("True", "Accepted", ""),
    resolved: tuple[str, str, str] = ("True", "ResolvedRefs", ""),
    *,
    generation: int | None = 1,
    parent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One `status.parents[]` entry with Accepted and ResolvedRefs as (status, reason, message)."""
    conditions = []
    for kind, (status, reason, message) in (("Accepted", accepted), ("ResolvedRefs", resolved)):
        condition = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": "2026-01-01T12:00:00Z",
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        conditions.append(condition)
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", **(parent or PARENT)}
    return {"parentRef": ref, "controllerName": CONTROLLER, "conditions": conditions}


def live_route(*parents: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "shop", "generation": generation},
        "spec": {"parentRefs": [PARENT], "rules": []},
        "status": {"parents": list(parents)},
    }


NOT_FOUND = ("False", "NoMatchingParent", "Gateway infra/public not found")


# ----- Reading the route's status -----


def test_no_report_is_no_refusal() -> None:
    assert route_refusals({"metadata": {"name": "web", "namespace": "shop"}, "spec": {}}) == []
    assert route_refusals(live_route()) == []
    assert route_refusals(live_route(parent_status())) == []


def test_a_parent_that_refuses_the_route_is_named_with_its_reason_and_message() -> None:
    assert route_refusals(live_route(parent_status(NOT_FOUND))) == [
        Refusal(
            "RouteNotAccepted",
            "HTTPRoute shop/web is not accepted by Gateway infra/public: "
            "NoMatchingParent (Gateway infra/public not found)",
        )
    ]
    missing = ("False", "BackendNotFound", "backendRef web-canary: Service shop/web-canary not found")
    assert route_refusals(live_route(parent_status(resolved=missing))) == [
        Refusal(
            "RouteRefsNotResolved",
            "HTTPRoute shop/web has unresolved references on Gateway infra/public: BackendNotFound "
            "(backendRef web-canary: Service shop/web-canary not found)",
        )
    ]


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (parent_status(NOT_FOUND, generation=1), "said of generation 1; the route is at 2"),
        (parent_status(NOT_FOUND, parent={"name": "old", "namespace": "infra"}), "a parent no longer named"),
        (parent_status(("Unknown", "Pending", "")), "not an explicit False"),
    ],
)
def test_only_an_explicit_refusal_of_the_route_as_it_is_counts(entry: dict[str, Any], why: str) -> None:
    assert route_refusals(live_route(entry, generation=2)) == [], why


def test_a_condition_without_observed_generation_counts() -> None:
    assert len(route_refusals(live_route(parent_status(NOT_FOUND, generation=None), generation=5))) == 1


def test_the_spec_parent_ref_matches_its_status_entry_by_the_api_defaults() -> None:
    route = live_route(parent_status(NOT_FOUND, parent={"name": "public"}))
    route["spec"]["parentRefs"] = [{"name": "public"}]  # the route's own namespace, written either way
    route["status"]["parents"][0]["parentRef"]["namespace"] = "shop"
    assert [r.reason for r in route_refusals(route)] == ["RouteNotAccepted"]


# ----- The engine -----


def healthy() -> World:
    world = World(
        make_spec([{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}], progressDeadlineSeconds=60)
    )
    world.settle()
    assert world.status.phase == Phase.HEALTHY, world.status.message
    return world


def report(world: World, *entries: dict[str, Any]) -> None:
    """The Gateway controller writes the route's status for the route's current generation."""
    route = world.objects[ROUTE_KEY]
    generation = route["metadata"]["generation"]
    for entry in entries:
        for condition in entry["conditions"]:
            condition["observedGeneration"] = generation
    route["status"] = {"parents": list(entries)}


def condition(world: World, kind: str) -> tuple[str, str]:
    [found] = [c for c in world.status.conditions if c.type == kind]
    return found.status, found.reason


def test_a_refused_route_holds_the_release_at_its_step_and_says_why() -> None:
    world = healthy()
    report(world, parent_status(NOT_FOUND))
    world.set_image(V2)
    world.settle()
    status = world.status
    assert (status.phase, status.current_step_index, status.canary_weight) == (Phase.PAUSED, 0, 0)
    assert world.route_weights() == (100, 0), "the stable version keeps serving"
    assert status.message == (
        "step 1/3: weight 0%; held: HTTPRoute shop/web is not accepted by Gateway infra/public: "
        "NoMatchingParent (Gateway infra/public not found)"
    )
    assert condition(world, "Stalled") == ("True", "RouteNotAccepted")
    assert condition(world, "Ready") == ("False", "RouteNotAccepted")
    warnings = [e for e in world.events() if e.reason == "RouteNotAccepted"]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert "Gateway infra/public" in warnings[0].message

    passes = len(world.passes)
    world.advance(600)  # however long: no step, no weight, no rollback, no second Event
    world.settle()
    assert (world.status.current_step_index, world.status.canary_weight) == (0, 0)
    assert world.status.phase == Phase.PAUSED
    assert "RouteNotAccepted" not in world.reasons(since=passes)

    report(world, parent_status())  # the Gateway appeared: the controller accepts the route
    world.settle()
    assert (world.status.phase, world.status.current_step_index, world.status.canary_weight) == (
        Phase.PAUSED,
        1,
        10,
    )
    assert world.route_weights() == (90, 10)
    assert condition(world, "Stalled") == ("False", "PausedByStep")


def test_a_route_no_controller_reported_on_is_no_hold() -> None:
    world = healthy()
    assert "status" not in world.objects[ROUTE_KEY]
    world.set_image(V2)
    world.settle()
    assert (world.status.current_step_index, world.status.canary_weight) == (1, 10)


def test_a_refusal_of_an_earlier_generation_is_no_hold() -> None:
    world = healthy()
    report(world, parent_status(NOT_FOUND))
    world.objects[ROUTE_KEY]["metadata"]["generation"] += 1  # the route changed since
    world.set_image(V2)
    world.settle()
    assert (world.status.current_step_index, world.status.canary_weight) == (1, 10)


def test_a_refusal_mid_release_keeps_the_weight_there_is_and_abort_still_works() -> None:
    world = healthy()
    world.set_image(V2)
    world.settle()
    assert world.status.canary_weight == 10
    missing = ("False", "BackendNotFound", "backendRef web-canary: Service shop/web-canary not found")
    report(world, parent_status(resolved=missing))
    world.annotate(Command.PROMOTE, "1")  # would end the pause: held instead, and told so
    world.settle()
    assert (world.status.current_step_index, world.status.canary_weight) == (1, 10)
    assert world.route_weights() == (90, 10)
    assert condition(world, "Stalled") == ("True", "RouteRefsNotResolved")
    assert world.actions()[-1] == "promote"
    assert world.status.history[0].message.startswith(
        "ignored: the release is held until its route is accepted"
    )

    world.annotate(Command.ABORT, "1")
    world.settle()
    assert world.status.phase == Phase.ABORTED
    assert world.route_weights() == (100, 0)


def test_after_a_hold_the_canary_gets_a_whole_progress_deadline() -> None:
    world = healthy()
    report(world, parent_status(NOT_FOUND))
    world.set_image(V2)
    world.settle()
    world.hold("web-canary")  # its pods take a while once the hold ends
    world.advance(3600)  # held far longer than progressDeadlineSeconds (60s)
    report(world, parent_status())
    world.settle()
    assert world.status.phase == Phase.PROGRESSING, world.status.message
    assert "waiting for canary pods" in world.status.message
    world.advance(30)
    world.release("web-canary")
    world.settle()
    assert (world.status.current_step_index, world.status.canary_weight) == (1, 10)


def test_a_first_deployment_is_not_held() -> None:
    world = World(make_spec([{"setWeight": 10}]))
    world.reconcile()
    world.reconcile()
    report(world, parent_status(NOT_FOUND))
    world.settle()
    assert world.status.phase == Phase.HEALTHY
    assert world.route_weights() == (100, 0)


def test_another_refusal_during_the_hold_is_told_too() -> None:
    world = healthy()
    report(world, parent_status(NOT_FOUND))
    world.set_image(V2)
    world.settle()
    report(world, parent_status(("False", "NotAllowedByListeners", "no listener admits namespace shop")))
    world.settle()
    assert [e.reason for e in world.events() if e.type == "Warning"] == [
        "RouteNotAccepted",
        "RouteNotAccepted",
    ]
    assert world.status.message.endswith("NotAllowedByListeners (no listener admits namespace shop)")
