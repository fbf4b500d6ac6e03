"""Names and images that cannot exist, with the real operator against the sandbox API server.

The CRDs refuse them at admission: a pattern for images (the sandbox checks
patterns, as a real API server does: a 422), CEL rules for names. Where the
rules are not evaluated (an older CRD, an API server without CEL: these tests
install the CRDs without their rules), the operator must say the same on the
resource's status and create nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from operators.api.application import COMPONENT_COLLISION_MESSAGE
from operators.api.base import IMAGE_PATTERN
from operators.api.rollout import NAME_MESSAGE
from operators.application.reconciler import application_key
from operators.foundation.cluster import KubeError
from operators.rollout.inventory import rollout_key
from operators.sidecarset.reconciler import sidecarset_key
from sluice_sandbox.apiserver import SandboxThread
from tests import scenarios
from tests.harness import Harness, httproute_crd, sluice_crds, status_of
from tests.integration.test_rollout_bad_input import (
    NS,
    TIMEOUT,
    assert_nothing_created,
    conditions,
    operator_on,
    wait_blocked,
    wait_warning,
)

LONG = "a" * 60  # its canary Service would be 67 characters; Service names stop at 63


def without_cel(node: Any) -> Any:
    """A copy of a CRD (or any part of one) without its CEL rules, as an older CRD would be."""
    if isinstance(node, dict):
        return {key: without_cel(value) for key, value in node.items() if key != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [without_cel(item) for item in node]
    return copy.deepcopy(node)


@pytest.fixture
def harness(sandbox_api: SandboxThread) -> Iterator[Harness]:
    """Sluice's CRDs without their CEL rules, the Gateway API's CRDs, and the operator; no Prometheus."""
    with operator_on(sandbox_api, [*without_cel(sluice_crds()), httproute_crd()]) as harness:
        yield harness


def test_with_the_rules_the_api_server_refuses_impossible_names_at_admission(
    sandbox_api: SandboxThread,
) -> None:
    for crd in sluice_crds():
        sandbox_api.run(sandbox_api.server.install_crd(crd))
    harness = Harness(sandbox_api.kubeconfig)
    harness.ensure_namespace(NS)
    with pytest.raises(KubeError) as refused:
        harness.apply_rollout(NS, scenarios.web_rollout(name=LONG))
    assert refused.value.status == 422
    assert NAME_MESSAGE in refused.value.message
    assert harness.get(rollout_key(NS, LONG)) is None
    app = {"metadata": {"name": "shop"}, "spec": {"components": [cn("cn"), cn("cn-canary")]}}
    with pytest.raises(KubeError) as refused_app:
        harness.apply_application(NS, app)
    assert refused_app.value.status == 422
    assert COMPONENT_COLLISION_MESSAGE in refused_app.value.message


def test_a_rollout_whose_canary_service_name_is_too_long_is_blocked(harness: Harness) -> None:
    harness.apply_rollout(NS, scenarios.web_rollout(name=LONG))  # admitted: no rule says otherwise

    blocked = wait_blocked(harness, "InvalidSpec", "the impossible name to be reported", name=LONG)
    message = status_of(blocked)["message"]
    assert message == f"invalid name '{LONG}' (60 characters): {NAME_MESSAGE}"
    assert conditions(blocked)["Ready"][0] == "False"
    assert wait_warning(harness, "InvalidSpec", name=LONG)[0]["message"] == message
    assert_nothing_created(harness, name=LONG)


def cn(name: str) -> dict[str, Any]:
    return {"name": name, "type": "worker", "image": scenarios.IMAGE_V1}


def test_components_whose_objects_would_collide_are_refused(harness: Harness) -> None:
    harness.apply_application(
        NS, {"metadata": {"name": "shop"}, "spec": {"components": [cn("cn"), cn("cn-canary")]}}
    )

    app = harness.wait_object(
        application_key(NS, "shop"),
        lambda a: (
            status_of(a).get("observedGeneration") == a["metadata"]["generation"]
            and any(
                c["type"] == "Stalled" and c["status"] == "True" for c in status_of(a).get("conditions", [])
            )
        ),
        TIMEOUT,
        "the Application to be Stalled",
    )
    status = status_of(app)
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "InvalidSpec"  # not RolledBack: nothing was
    assert status["phase"] == "Degraded"
    assert status["message"] == (
        f'invalid Application: spec: components "cn" and "cn-canary" collide: {COMPONENT_COLLISION_MESSAGE}'
    )
    assert stalled["message"] == status["message"]
    # Neither Rollout exists, so neither fights over cn-canary.
    assert harness.get(rollout_key(NS, "cn")) is None and harness.get(rollout_key(NS, "cn-canary")) is None


def test_a_sidecar_image_that_is_no_image_reference_is_refused_at_admission(harness: Harness) -> None:
    body = {
        "metadata": {"name": "log-agent"},
        "spec": {"selector": {}, "containers": [{"name": "log-agent", "image": "NOT A VALID IMAGE::@@"}]},
    }
    with pytest.raises(KubeError) as refused:
        harness.apply_sidecarset(body)
    assert refused.value.status == 422
    assert 'spec.containers[0].image: Invalid value: "NOT A VALID IMAGE::@@"' in refused.value.message
    assert f"should match '{IMAGE_PATTERN}'" in refused.value.message
    assert harness.get(sidecarset_key("log-agent")) is None

    body["spec"]["containers"][0]["image"] = "fluent/fluent-bit:3.1.9"
    assert harness.apply_sidecarset(body)["spec"]["containers"][0]["image"] == "fluent/fluent-bit:3.1.9"


def test_a_blocked_component_rollout_is_not_called_rolled_back(harness: Harness) -> None:
    # Someone else's Deployment has the component's name: its Rollout is blocked, never released.
    # (A Service would be adopted; a Deployment is adopted only when a workloadRef names it.)
    labels = {"app": "other"}
    foreign = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS}}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "x", "image": "nginx:1.27"}]},
    }
    harness.cluster.create({**foreign, "spec": {"selector": {"matchLabels": labels}, "template": template}})
    web = {**cn("web"), "type": "webservice", "ports": [{"name": "http", "port": 8080, "expose": 80}]}
    harness.apply_application(NS, {"metadata": {"name": "shop"}, "spec": {"components": [web]}})

    app = harness.wait_object(
        application_key(NS, "shop"),
        lambda a: stalled_reason(a) is not None and a["status"].get("components"),
        TIMEOUT,
        "the Application to be Stalled",
    )
    assert stalled_reason(app) == "ObjectConflict"  # what the Rollout says, not RolledBack
    [component] = status_of(app)["components"]
    assert "Deployment shop/web exists and is not managed by this Rollout" in component["message"]
    rollout = harness.rollout(NS, "web")
    assert conditions(rollout)["Stalled"] == ("True", "ObjectConflict")
    assert not scenarios.history_messages(rollout, "rolled-back")


def stalled_reason(app: dict[str, Any]) -> str | None:
    for condition in status_of(app).get("conditions") or []:
        if condition["type"] == "Stalled" and condition["status"] == "True":
            return str(condition["reason"])
    return None
