"""The traffic invariant (tests/invariants.py) alone: the sandbox API server and its simulated pods,
routes written by the test, no operator. It must catch weight on a Service without ready pods,
and only when that lasts longer than its grace."""

from __future__ import annotations

from typing import Any

import pytest

from sluice_sandbox.apiserver import SandboxThread
from sluice_sandbox.gateway import HTTPROUTE_CRD
from sluice_sandbox.traffic import selected_ready_pods
from sluice_sandbox.workloads import READY_ANNOTATION
from tests.harness import Harness, httproute, service
from tests.invariants import TrafficInvariant

pytestmark = pytest.mark.integration

TIMEOUT = 30.0
GRACE = 0.5  # short, so that a violation outlasts it soon
LONG_GRACE = 60.0  # far longer than any short violation here takes, however slow the machine


def workload(harness: Harness, namespace: str, name: str, *, ready: bool) -> None:
    """A Deployment of one pod (never ready unless `ready`) and the Service selecting it."""
    labels = {"app": name}
    annotations = {} if ready else {READY_ANNOTATION: "false"}
    harness.cluster.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels, "annotations": annotations},
                    "spec": {"containers": [{"name": "app", "image": "ghcr.io/acme/web:1"}]},
                },
            },
        }
    )
    harness.cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"port": 80}]},
        }
    )


def route_spec(canary_weight: int) -> dict[str, Any]:
    backends = [("web", 100 - canary_weight), ("web-canary", canary_weight)]
    return {"rules": [{"backendRefs": [{"name": n, "port": 80, "weight": w} for n, w in backends]}]}


def set_canary_weight(harness: Harness, namespace: str, weight: int) -> None:
    harness.cluster.merge_patch(httproute(namespace, "web"), {"spec": route_spec(weight)})


@pytest.fixture
def harness(sandbox_api: SandboxThread, metrics_namespace: str) -> Harness:
    """`web` serving (a ready pod), `web-canary` whose pod never gets ready, and a route to both
    with canary weight 0."""
    sandbox_api.run(sandbox_api.server.install_crd(HTTPROUTE_CRD))
    harness = Harness(sandbox_api.kubeconfig)
    ns = metrics_namespace
    harness.ensure_namespace(ns)
    workload(harness, ns, "web", ready=True)
    workload(harness, ns, "web-canary", ready=False)
    web = harness.read(service(ns, "web"))
    harness.wait(
        lambda: harness.cluster.list_objects("v1", "Pod", ns),
        lambda pods: bool(selected_ready_pods(web, pods)),
        TIMEOUT,
        "a ready pod behind web",
    )
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute"}
    harness.cluster.create({**route, "metadata": {"name": "web", "namespace": ns}, "spec": route_spec(0)})
    return harness


def checker(harness: Harness, namespace: str, grace: float) -> TrafficInvariant:
    return TrafficInvariant(Harness(harness.kubeconfig).cluster, namespace, grace=grace)


def wait_polls(harness: Harness, check: TrafficInvariant, more: int) -> None:
    """Until the check has read the cluster `more` more times (it sees what was written before)."""
    target = check.polls + more
    harness.wait(lambda: check.polls, lambda polls: polls >= target, TIMEOUT, f"{more} more polls")


def test_weight_on_a_service_without_ready_pods_past_the_grace_fails(
    harness: Harness, metrics_namespace: str
) -> None:
    ns = metrics_namespace
    check = checker(harness, ns, GRACE)
    with pytest.raises(AssertionError) as failed, check:
        set_canary_weight(harness, ns, 20)
        harness.wait(check.violations, bool, TIMEOUT, "the violation to outlast the grace")
    [violation] = check.violations()
    assert (violation.route, violation.backend, violation.weight) == ("web", f"{ns}/web-canary", 20)
    assert violation.ongoing and violation.seconds > GRACE
    assert f"HTTPRoute web gave weight 20 to Service {ns}/web-canary with no ready pod" in str(failed.value)


def test_a_violation_ended_is_reported_with_its_length(harness: Harness, metrics_namespace: str) -> None:
    ns = metrics_namespace
    check = checker(harness, ns, GRACE)
    with pytest.raises(AssertionError), check:
        set_canary_weight(harness, ns, 30)
        harness.wait(check.violations, bool, TIMEOUT, "the violation to outlast the grace")
        set_canary_weight(harness, ns, 0)
        harness.wait(
            check.violations, lambda found: not found[0].ongoing, TIMEOUT, "the check to see it over"
        )
    [violation] = check.violations()
    assert (violation.weight, violation.ongoing) == (30, False)
    assert GRACE < violation.seconds < TIMEOUT


def test_weight_0_on_it_and_a_violation_shorter_than_the_grace_pass(
    harness: Harness, metrics_namespace: str
) -> None:
    ns = metrics_namespace
    with checker(harness, ns, LONG_GRACE) as check:
        wait_polls(harness, check, 3)  # weight 0 on the unready canary: fine
        set_canary_weight(harness, ns, 20)
        wait_polls(harness, check, 3)  # seen, but shorter than the grace
        set_canary_weight(harness, ns, 0)
        wait_polls(harness, check, 3)
    assert check.violations() == []
    assert check.polls >= 9


def test_the_violations_are_noted_on_the_blocks_own_failure(harness: Harness, metrics_namespace: str) -> None:
    ns = metrics_namespace
    check = checker(harness, ns, GRACE)
    with pytest.raises(RuntimeError) as failed, check:
        set_canary_weight(harness, ns, 20)
        harness.wait(check.violations, bool, TIMEOUT, "the violation to outlast the grace")
        raise RuntimeError("the test's own failure")
    notes = "\n".join(getattr(failed.value, "__notes__", []))
    assert f"Service {ns}/web-canary with no ready pod" in notes
