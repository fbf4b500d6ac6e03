"""The canary scenarios of test_rollout_operator.py with `traffic.istio`: the real operator, a real
Prometheus, Istio's own VirtualService CRD in the sandbox, and every VirtualService the operator
writes checked against Istio's schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft7Validator

from sluice_sandbox.apiserver import SandboxThread
from sluice_sandbox.store import Change
from tests import scenarios
from tests.integration.test_rollout_operator import closed_port_address
from tests.reference import ISTIO_NETWORKING, upstream_crd_of, upstream_schema


@pytest.fixture
def traffic_under_test() -> scenarios.TrafficUnderTest:
    return scenarios.ISTIO


@pytest.fixture
def written(sandbox_api: SandboxThread) -> Iterator[list[dict[str, Any]]]:
    """Every VirtualService version the sandbox stores; each is checked against Istio's schema at the end."""
    seen: list[dict[str, Any]] = []

    def on_change(change: Change) -> None:
        seen.append(change.obj)  # the store's objects are never changed in place: keeping them is safe

    async def subscribe() -> Any:
        return sandbox_api.store.subscribe(("networking.istio.io", "virtualservices"), on_change)

    unsubscribe = sandbox_api.run(subscribe())
    yield seen
    sandbox_api.loop.call_soon_threadsafe(unsubscribe)
    validator = Draft7Validator(upstream_schema(upstream_crd_of("VirtualService", ISTIO_NETWORKING), "v1"))
    for obj in seen:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]
        assert errors == [], (
            f"VirtualService {obj['metadata']['name']} (rv {obj['metadata'].get('resourceVersion')})"
        )


def test_healthy_release_is_promoted(scene: scenarios.Scene, written: list[dict[str, Any]]) -> None:
    scenarios.healthy_release_is_promoted(scene)
    assert len({obj["metadata"]["resourceVersion"] for obj in written}) >= 4, "0%, 20%, 50%, 100%, back to 0%"
    assert written[-1]["spec"]["hosts"] == ["web"]


def test_failing_metric_rolls_back(scene: scenarios.Scene, written: list[dict[str, Any]]) -> None:
    scenarios.failing_metric_rolls_back(scene)
    assert written


def test_unreachable_prometheus_holds_then_rolls_back(
    scene: scenarios.Scene, written: list[dict[str, Any]]
) -> None:
    scenarios.unreachable_prometheus_holds_then_rolls_back(scene, closed_port_address())
    assert written


def test_restart_resumes_at_the_same_step(scene: scenarios.Scene, written: list[dict[str, Any]]) -> None:
    scenarios.restart_resumes_at_the_same_step(scene)
    assert written


def test_unowned_conflict_is_reported_and_left_alone(
    scene: scenarios.Scene, written: list[dict[str, Any]]
) -> None:
    scenarios.unowned_conflict_is_reported_and_left_alone(scene)
    assert written == [], "nothing half-deployed: no VirtualService either"
