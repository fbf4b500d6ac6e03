"""The integration scenarios, on a real cluster: pods really start, the API server is real.

The tests are the integration suite's own, imported so pytest runs them here
too; the `scene` fixture of e2e/conftest.py puts them on kind instead of the
sandbox.
"""

from tests.integration.test_rollout_operator import (
    test_failing_metric_rolls_back,
    test_healthy_release_is_promoted,
    test_restart_resumes_at_the_same_step,
    test_unowned_conflict_is_reported_and_left_alone,
    test_unreachable_prometheus_holds_then_rolls_back,
)

__all__ = [
    "test_failing_metric_rolls_back",
    "test_healthy_release_is_promoted",
    "test_restart_resumes_at_the_same_step",
    "test_unowned_conflict_is_reported_and_left_alone",
    "test_unreachable_prometheus_holds_then_rolls_back",
]
