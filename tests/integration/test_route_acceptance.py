"""A release waits for its Gateway: the real operator, the sandbox and its Gateway controller.

The sandbox serves the Gateway API (the upstream HTTPRoute CRD, the sandbox's own Gateway and
GatewayClass) with its simulated Gateway controller, which reports in each route's status whether
its Gateway accepted it. A Rollout whose route names a Gateway that does not exist is deployed
(a first deployment is never held), but its next release holds at its first step, the stable
version serving, and says why in its status and an Event; once the Gateway is created the
controller accepts the route, and the release goes on by itself to the end.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice_sandbox.apiserver import SandboxThread, with_controllers
from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.gateway import CONTROLLER_NAME, DEFAULT_CLASS, install_gateway_api
from sluice_sandbox.gateway_controller import GatewayController
from sluice_sandbox.workloads import WorkloadSimulator
from tests import scenarios
from tests.harness import httproute, httproute_crd, route_weights, sluice_crds, status_of

GATEWAY_NAMESPACE = "default"
GATEWAY = "edge"  # not the sandbox's own `public`: this one is created by the test
NO_PROMETHEUS = "http://127.0.0.1:9"  # no analysis here: never queried


@pytest.fixture
def scene(
    tmp_path: Path, metrics_exporter: MetricsExporter, metrics_namespace: str
) -> Iterator[scenarios.Scene]:
    """The real operator on a sandbox with the Gateway API served and its Gateway controller running."""
    factory = with_controllers(functools.partial(WorkloadSimulator, ready_delay=0.2), GatewayController)
    with SandboxThread(kubeconfig=tmp_path / "kubeconfig", server_factory=factory) as sandbox:
        for crd in sluice_crds():
            sandbox.run(sandbox.server.install_crd(crd))
        sandbox.run(install_gateway_api(sandbox.server.store, httproute_crd=httproute_crd()))
        with scenarios.running_scene(
            sandbox.kubeconfig, metrics_exporter, NO_PROMETHEUS, metrics_namespace
        ) as running:
            yield running


def parents(route: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(((route or {}).get("status") or {}).get("parents") or [])


def accepted(route: dict[str, Any] | None, truth: str) -> bool:
    """The controller reported Accepted=`truth` for the route's current generation."""
    generation = (route or {}).get("metadata", {}).get("generation")
    return any(
        c["type"] == "Accepted" and c["status"] == truth and c.get("observedGeneration") == generation
        for parent in parents(route)
        for c in parent["conditions"]
    )


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status_of(body).get("conditions") or [] if c["type"] == kind)


def held(body: dict[str, Any]) -> bool:
    return condition(body, "Stalled")["reason"] == "RouteNotAccepted"


def test_a_release_waits_for_its_gateway_then_completes(scene: scenarios.Scene) -> None:
    h, ns = scene.harness, scene.namespace
    body = scenarios.web_rollout()
    body["spec"]["traffic"]["gatewayAPI"]["parentRefs"] = [{"name": GATEWAY, "namespace": GATEWAY_NAMESPACE}]
    first = scenarios.deploy_stable(scene, body)  # a first deployment is not held
    route = h.wait_object(
        httproute(ns, "web"),
        lambda r: accepted(r, "False"),
        scenarios.RELEASE_TIMEOUT,
        "the Gateway controller to refuse the route",
    )
    [parent] = parents(route)
    assert parent["controllerName"] == CONTROLLER_NAME
    assert {c["type"]: c["reason"] for c in parent["conditions"]} == {
        "Accepted": "NoMatchingParent",
        "ResolvedRefs": "ResolvedRefs",
    }

    h.set_image(ns, "web", scene.images[1])
    holding = h.wait_rollout(ns, "web", held, scenarios.RELEASE_TIMEOUT, "the release to be held")
    expected = (
        f"HTTPRoute {ns}/web is not accepted by Gateway {GATEWAY_NAMESPACE}/{GATEWAY}: "
        f"NoMatchingParent (Gateway {GATEWAY_NAMESPACE}/{GATEWAY} not found)"
    )
    status = status_of(holding)
    assert status["message"] == f"step 1/4: weight 0%; held: {expected}"
    assert condition(holding, "Stalled")["status"] == "True"
    assert (status["phase"], status["currentStepIndex"], status["canaryWeight"]) == ("Paused", 0, 0)
    warnings = [e for e in h.events(ns, "web") if e.get("reason") == "RouteNotAccepted"]
    assert warnings and expected in warnings[0]["message"]

    # Made to look again (a spec change that moves neither revision nor weights): still held there.
    again = status_of(scenarios.looked_at(h, ns, "web", scenarios.RELEASE_TIMEOUT, "another pass"))
    assert (again["phase"], again["currentStepIndex"], again["canaryWeight"]) == ("Paused", 0, 0)
    assert route_weights(h.get(httproute(ns, "web"))) == {"web": 100, "web-canary": 0}

    h.cluster.create(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY, "namespace": GATEWAY_NAMESPACE},
            "spec": {
                "gatewayClassName": DEFAULT_CLASS,
                "listeners": [
                    {
                        "name": "http",
                        "port": 80,
                        "protocol": "HTTP",
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        },
    )
    done = h.wait_rollout(
        ns,
        "web",
        lambda r: scenarios.promoted(status_of(r), first),
        scenarios.RELEASE_TIMEOUT,
        "the release to go on once the Gateway accepts the route, and complete",
    )
    assert scenarios.history_messages(done, "set-weight") == [
        "canary weight 0% -> 20%",
        "canary weight 20% -> 50%",
        "canary weight 50% -> 100%",
    ]
    assert condition(done, "Ready")["status"] == "True"
    assert accepted(h.get(httproute(ns, "web")), "True")
