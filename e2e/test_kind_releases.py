"""Rollouts on kind, reconciled by the operator running in the cluster as manifests/ install it.

The release scenarios are tests/scenarios.py's, as on the sandbox; here the pods really start, the
API server and kube-proxy are real, and the operator reaches Prometheus from its pod.
"""

import pytest

from e2e.cluster import DOWN_PROMETHEUS_URL
from tests import scenarios

pytestmark = pytest.mark.e2e


def test_healthy_release_is_promoted(scene: scenarios.Scene) -> None:
    scenarios.healthy_release_is_promoted(scene)


def test_failing_metric_rolls_back(scene: scenarios.Scene) -> None:
    scenarios.failing_metric_rolls_back(scene)


def test_unreachable_prometheus_holds_then_rolls_back(scene: scenarios.Scene) -> None:
    # A Service without endpoints (e2e/prometheus.yaml): kube-proxy refuses the connection.
    scenarios.unreachable_prometheus_holds_then_rolls_back(scene, DOWN_PROMETHEUS_URL)


def test_restart_resumes_at_the_same_step(scene: scenarios.Scene) -> None:
    # The restart is `kubectl rollout restart`: new pods, and the Lease passes to one of them.
    scenarios.restart_resumes_at_the_same_step(scene)


def test_unowned_conflict_is_reported_and_left_alone(scene: scenarios.Scene) -> None:
    scenarios.unowned_conflict_is_reported_and_left_alone(scene)
