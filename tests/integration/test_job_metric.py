"""A `job` metric gating a release, closed loop: the real operator runs one Job per check in the
sandbox (sluice_sandbox/jobs.py), whose pod exits as its template's annotation says. No metric is
set: the Job's outcome is the check's value (1 succeeded, 0 failed)."""

from __future__ import annotations

import pytest

from tests.harness import status_of
from tests.scenarios import Scene, job_metric_gates_release

pytestmark = pytest.mark.integration


def test_a_job_metric_whose_job_succeeds_lets_the_release_promote(scene: Scene) -> None:
    promoted = status_of(job_metric_gates_release(scene, exit_code=0))
    check = promoted["analysis"]["lastCheck"]
    (smoke,) = check["metrics"]
    assert (smoke["outcome"], smoke["value"]) == ("Passed", 1)
    assert smoke["message"].startswith("Job web-smoke-") and "succeeded" in smoke["message"]


def test_a_job_metric_whose_job_fails_rolls_the_release_back(scene: Scene) -> None:
    degraded = status_of(job_metric_gates_release(scene, exit_code=1))
    assert degraded["canaryWeight"] == 0
    assert scene.routed() == {"web": 100, "web-canary": 0}
    message = degraded["message"]
    assert "smoke=0 Failed" in message and "Job web-smoke-" in message, message
    assert "BackoffLimitExceeded" in message, message
