"""Adopting a live service: a Deployment, its Service and a two-rule HTTPRoute, with traffic flowing.

Everything real: the sandbox's API server, Deployment controller, Gateway and
traffic simulator, a real Prometheus, the real operator, and the real kubectl
for what a user types. The user's objects are applied by a GitOps-like field
manager (server-side apply, as Flux does). "No failed request" is the
gateway's own count of 503s for the route (tests/closed_loop.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from operators.foundation.cluster import KubeError
from operators.rollout.inventory import rollout_key
from sluice_sandbox.behaviour import ERROR_RATE_ANNOTATION
from sluice_sandbox.environment import Sandbox
from tests.closed_loop import (
    KUBECTL,
    assert_no_gateway_errors,
    gateway_snapshot,
    kubectl,
    sandbox_in,
    scene_on,
)
from tests.harness import Harness, deployment, httproute, service, status_of
from tests.integration.test_gitops_and_sluice import apply_as
from tests.scenarios import IMAGE_V1, IMAGE_V2, RELEASE_TIMEOUT, Scene, error_rate_analysis

pytestmark = pytest.mark.integration

GITOPS = "gitops"
ADOPTED_BY = "sluice.dev/adopted-by"
IMAGE_BAD = "ghcr.io/acme/web:3.0.0"
USER_REPLICAS = 3


def user_deployment(
    ns: str, name: str, image: str = IMAGE_V1, replicas: int = USER_REPLICAS
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": USER_REPLICAS,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": name, "image": image, "ports": [{"name": "http", "containerPort": 8080}]}
                    ]
                },
            },
        },
    }


def user_service(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def user_route(ns: str) -> dict[str, Any]:
    """Everything to `web`; requests with x-admin: 1 on /admin to `web-admin`, with a header added."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "default"}],
            "rules": [
                {"backendRefs": [{"name": "web", "port": 80}]},
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/admin"},
                            "headers": [{"name": "x-admin", "value": "1"}],
                        }
                    ],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-team", "value": "shop"}]},
                        }
                    ],
                    "backendRefs": [{"name": "web-admin", "port": 80}],
                },
            ],
        },
    }


def adopting_rollout(ns: str, prometheus_url: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 4,
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "service": {"port": 80},
            "traffic": {"gatewayAPI": {"httpRoute": "web"}},
            "progressDeadlineSeconds": 60,
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": 25}, {"pause": {"duration": "1s"}}, {"setWeight": 50}],
                    "abortScaleDownDelaySeconds": 0,
                    "analysis": error_rate_analysis(prometheus_url),
                }
            },
            **spec,
        },
    }
    return body


def second_rule(h: Harness, ns: str) -> str:
    return json.dumps(h.read(httproute(ns, "web"))["spec"]["rules"][1], sort_keys=True)


def wait_ready(h: Harness, ns: str, name: str, replicas: int) -> dict[str, Any]:
    return h.wait_object(
        deployment(ns, name),
        lambda d: (
            d["spec"]["replicas"] == replicas
            and int((d.get("status") or {}).get("readyReplicas") or 0) == replicas
            and int((d.get("status") or {}).get("observedGeneration") or 0) >= d["metadata"]["generation"]
        ),
        RELEASE_TIMEOUT,
        f"Deployment {name} with {replicas} ready",
    )


@pytest.fixture
def live(prometheus_binary: str, tmp_path: Path, metrics_namespace: str) -> Iterator[tuple[Sandbox, Scene]]:
    """A sandbox with the user's service running, traffic flowing through its route."""
    with sandbox_in(tmp_path) as sandbox:
        scene = scene_on(sandbox, metrics_namespace)
        h, ns = scene.harness, scene.namespace
        for name in ("web", "web-admin"):
            apply_as(h, GITOPS, user_deployment(ns, name), force=True)
            apply_as(h, GITOPS, user_service(ns, name), force=True)
        apply_as(h, GITOPS, user_route(ns), force=True)
        wait_ready(h, ns, "web", USER_REPLICAS)
        wait_ready(h, ns, "web-admin", USER_REPLICAS)
        yield sandbox, scene


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_a_live_service_is_adopted_released_and_handed_back_without_a_failed_request(
    live: tuple[Sandbox, Scene], tmp_path: Path
) -> None:
    _, scene = live
    h, ns = scene.harness, scene.namespace
    rule = second_rule(h, ns)
    before = gateway_snapshot(scene.exporter, ns, "web")
    rollout = adopting_rollout(ns, scene.prometheus_url)
    manifest = tmp_path / "rollout.json"
    manifest.write_text(json.dumps(rollout))

    kubectl(scene, tmp_path / "cache", "apply", "-f", str(manifest))
    adopted = h.wait_rollout(
        ns,
        "web",
        lambda r: (
            status_of(r).get("phase") == "Healthy"
            and (status_of(r).get("adoption") or {}).get("phase") == "Adopted"
        ),
        RELEASE_TIMEOUT,
        "the service to be adopted",
    )
    assert status_of(adopted)["adoption"]["replicas"] == USER_REPLICAS
    users = h.read(deployment(ns, "web"))
    assert users["spec"]["replicas"] == 0
    assert users["metadata"]["annotations"][ADOPTED_BY] == "web"
    assert not users["metadata"].get("ownerReferences"), "never garbage-collected with the Rollout"
    wait_ready(h, ns, "web-stable", 4)
    assert h.read(service(ns, "web"))["spec"]["selector"]["sluice.dev/rollout"] == "web"
    first = h.read(httproute(ns, "web"))["spec"]["rules"][0]["backendRefs"]
    assert {ref["name"]: ref.get("weight") for ref in first} == {"web": 100, "web-canary": 0}
    assert second_rule(h, ns) == rule
    assert_no_gateway_errors(scene.exporter, ns, "web", before)
    assert {"Adopting", "Adopted"} <= {event["reason"] for event in h.events(ns, "web")}

    # GitOps re-applies the user's copies, replicas and selector included: Sluice restores its part.
    apply_as(h, GITOPS, user_deployment(ns, "web"), force=True)
    apply_as(h, GITOPS, user_service(ns, "web"), force=True)
    h.wait(
        lambda: [
            event["message"] for event in h.events(ns, "web") if event["reason"] == "AdoptedDriftRestored"
        ],
        lambda messages: (
            any(f"Deployment {ns}/web was scaled to 3" in m for m in messages)
            and any(f"Service {ns}/web was changed to select app=web" in m for m in messages)
        ),
        RELEASE_TIMEOUT,
        "the drift on the Deployment and the Service restored and told",
    )
    h.wait_object(deployment(ns, "web"), lambda d: d["spec"]["replicas"] == 0, RELEASE_TIMEOUT, "scaled to 0")
    assert h.read(service(ns, "web"))["spec"]["selector"]["sluice.dev/rollout"] == "web"

    # GitOps pushes a new image to the user's Deployment: a release, step by step, promoted.
    kubectl(scene, tmp_path / "cache", "set", "image", "deployment/web", f"web={IMAGE_V2}")
    stable = status_of(adopted)["stableRevision"]
    promoted = h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("phase") == "Healthy" and status_of(r).get("stableRevision") != stable,
        RELEASE_TIMEOUT,
        "the new image to be promoted",
    )
    actions = [entry["action"] for entry in reversed(status_of(promoted)["history"])]
    assert {"release-started", "set-weight", "promoted"} <= set(actions)
    image = h.read(deployment(ns, "web-stable"))["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == IMAGE_V2
    assert h.read(deployment(ns, "web"))["spec"]["replicas"] == 0
    assert second_rule(h, ns) == rule

    # A bad version: half its requests fail; analysis rolls it back.
    bad = user_deployment(ns, "web", IMAGE_BAD)
    bad["spec"].pop("replicas")  # as Sluice's docs advise: replicas left out of Git
    bad["spec"]["template"]["metadata"]["annotations"] = {ERROR_RATE_ANNOTATION: "0.5"}
    apply_as(h, GITOPS, bad, force=True)
    h.wait_rollout(
        ns, "web", lambda r: status_of(r).get("phase") == "Degraded", RELEASE_TIMEOUT, "the rollback"
    )
    assert second_rule(h, ns) == rule
    served_until = gateway_snapshot(scene.exporter, ns, "web")

    # Deleting the Rollout hands everything back, serving.
    kubectl(scene, tmp_path / "cache", "delete", "rollout", "web", "--wait=false")
    h.wait(lambda: h.get(rollout_key(ns, "web")), lambda r: r is None, RELEASE_TIMEOUT, "the Rollout gone")
    handed = wait_ready(h, ns, "web", USER_REPLICAS)
    assert ADOPTED_BY not in (handed["metadata"].get("annotations") or {})
    users_service = h.read(service(ns, "web"))
    assert users_service["spec"]["selector"] == {"app": "web"}
    assert ADOPTED_BY not in (users_service["metadata"].get("annotations") or {})
    assert second_rule(h, ns) == rule
    h.wait(
        lambda: h.get(deployment(ns, "web-stable")),
        lambda d: d is None,
        RELEASE_TIMEOUT,
        "Sluice's pods gone",
    )
    assert_no_gateway_errors(scene.exporter, ns, "web", served_until)
    assert "HandedBack" in {event["reason"] for event in h.events(ns, "web")}


# ---- bad input: a clear message, nothing touched ------------------------------------------------------


def spec_and_version(h: Harness, ns: str) -> list[tuple[Any, str]]:
    return [
        (body["spec"], body["metadata"]["resourceVersion"])
        for body in (h.read(deployment(ns, "web")), h.read(service(ns, "web")))
    ]


def test_a_missing_or_taken_deployment_is_refused_and_nothing_is_touched(
    live: tuple[Sandbox, Scene],
) -> None:
    _, scene = live
    h, ns = scene.harness, scene.namespace
    untouched = spec_and_version(h, ns)

    missing = adopting_rollout(ns, scene.prometheus_url, workloadRef={"name": "wbe"})
    apply_as(h, GITOPS, missing, force=True)
    body = h.wait_rollout(
        ns, "web", lambda r: bool(status_of(r).get("message")), RELEASE_TIMEOUT, "the missing Deployment told"
    )
    assert status_of(body)["message"].startswith(f"Deployment {ns}/wbe not found: ")
    assert spec_and_version(h, ns) == untouched
    h.cluster.delete(rollout_key(ns, "web"))
    h.wait(lambda: h.get(rollout_key(ns, "web")), lambda r: r is None, RELEASE_TIMEOUT, "the Rollout gone")

    # Another Rollout has it: the annotation says so.
    h.cluster.merge_patch(deployment(ns, "web"), {"metadata": {"annotations": {ADOPTED_BY: "web-v2"}}})
    untouched = spec_and_version(h, ns)
    apply_as(h, GITOPS, adopting_rollout(ns, scene.prometheus_url), force=True)
    body = h.wait_rollout(
        ns, "web", lambda r: bool(status_of(r).get("message")), RELEASE_TIMEOUT, "the taken Deployment told"
    )
    assert f"Deployment {ns}/web is already adopted by Rollout web-v2" in status_of(body)["message"]
    assert spec_and_version(h, ns) == untouched


def test_template_and_workload_together_are_refused_at_admission(live: tuple[Sandbox, Scene]) -> None:
    _, scene = live
    h, ns = scene.harness, scene.namespace
    both = adopting_rollout(ns, scene.prometheus_url, template=user_deployment(ns, "web")["spec"]["template"])
    with pytest.raises(KubeError) as refused:
        apply_as(h, GITOPS, both, force=True)
    assert refused.value.status == 422
    assert "set exactly one of template" in refused.value.message
    other = adopting_rollout(
        ns, scene.prometheus_url, workloadRef={"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web"}
    )
    with pytest.raises(KubeError, match="workloadRef must name an apps/v1 Deployment"):
        apply_as(h, GITOPS, other, force=True)
