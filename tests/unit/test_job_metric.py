"""The pure parts of job metrics (operators/metrics/job.py, operators/analysis/jobs.py) and of the
sandbox's Jobs (sluice_sandbox/jobs.py, the kubelet's pods that run to completion)."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client as k8s
from pydantic import ValidationError

from operators.analysis.check import NO_JOB_RUNNER, MetricSources, run_check
from operators.analysis.jobs import JobOutcome, JobOwner, JobRunner, analysis_job, job_name, job_result
from operators.analysis.templates import QueryContext
from operators.api.rollout import Metric
from operators.foundation.cluster import Cluster
from operators.metrics.base import ProviderError
from operators.metrics.job import JobSource
from sluice_sandbox.jobs import plan_job
from sluice_sandbox.kubelet import kubelet_status

AT = datetime(2026, 1, 1, tzinfo=UTC)
POD = {"restartPolicy": "Never", "containers": [{"name": "smoke", "image": "curl"}]}


def job_metric(**extra: Any) -> dict[str, Any]:
    return {"name": "smoke", "job": {"spec": {"template": {"spec": POD}}}, **extra}


# ---- the metric ----


def test_a_job_metric_needs_no_query_and_passes_on_a_successful_job_by_default() -> None:
    metric = Metric.model_validate(job_metric())
    assert (metric.threshold_range.min, metric.threshold_range.max) == (1, None)
    assert metric.query is None and metric.template is None


def test_a_job_metric_keeps_its_own_threshold() -> None:
    metric = Metric.model_validate(job_metric(thresholdRange={"max": 0}))
    assert (metric.threshold_range.min, metric.threshold_range.max) == (None, 0)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (job_metric(query="up"), "takes no query or template"),
        (
            {"name": "smoke", "job": {"spec": {"template": {"spec": {"containers": []}}}}},
            "at least one container",
        ),
        ({"name": "smoke", "query": "up"}, "thresholdRange"),
        (
            {"name": "smoke", "job": {"spec": {"template": {"spec": {"containers": POD["containers"]}}}}},
            "restartPolicy must be",
        ),
    ],
)
def test_bad_job_metrics_are_refused_with_a_clear_message(body: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        Metric.model_validate(body)


def test_without_a_job_runner_a_job_metric_is_an_error() -> None:
    context = QueryContext("shop", "web", "web-canary", "web", "abc", "2s")
    check = run_check([Metric.model_validate(job_metric())], context, MetricSources(), AT)
    assert (check.outcome.value, check.metrics[0].message) == ("Error", NO_JOB_RUNNER)


def test_a_job_that_cannot_be_created_for_want_of_an_api_server_is_an_error_not_a_wait() -> None:
    # A refused connection is no KubeError: the check must still end (once), not retry at once for ever.
    configuration = k8s.Configuration()
    configuration.host = f"http://127.0.0.1:{closed_port()}"
    configuration.retries = 0
    runner = JobRunner(Cluster(k8s.ApiClient(configuration)))
    try:
        source = Metric.model_validate(job_metric()).source()[1]
        body = analysis_job(JobOwner("shop", "web", "uid-1"), "smoke", source, AT)
        error = runner.run(body).exception(timeout=30)
        assert isinstance(error, ProviderError) and "could not create Job web-smoke-" in str(error)
    finally:
        runner.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on leaving: nothing listens there


# ---- the Job ----


def test_job_names_are_dns_labels_of_at_most_63_characters_and_differ_per_check() -> None:
    long = job_name("a-very-long-rollout-name-" * 3, "Smoke_Test", AT)
    assert len(long) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)
    assert job_name("web", "smoke", AT) != job_name("web", "smoke", AT.replace(second=5))
    assert job_name("web", "smoke", AT).startswith("web-smoke-")


def test_an_analysis_job_is_owned_labelled_and_has_a_deadline() -> None:
    source = JobSource.model_validate({"spec": {"template": {"spec": POD}}, "timeout": "90s"})
    body = analysis_job(JobOwner("shop", "web", "uid-1"), "smoke", source, AT)
    meta = body["metadata"]
    assert meta["namespace"] == "shop"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "sluice"
    assert meta["labels"]["sluice.dev/rollout"] == "web"
    assert meta["ownerReferences"][0] | {"kind": "Rollout", "uid": "uid-1"} == meta["ownerReferences"][0]
    assert body["spec"]["activeDeadlineSeconds"] == 90
    own = JobSource.model_validate({"spec": {"activeDeadlineSeconds": 7, "template": {"spec": POD}}})
    assert analysis_job(JobOwner("shop", "web", ""), "smoke", own, AT)["spec"]["activeDeadlineSeconds"] == 7


def job_with(kind: str, reason: str = "") -> dict[str, Any]:
    condition = {"type": kind, "status": "True", "reason": reason, "message": "said"}
    return {"metadata": {"name": "j"}, "status": {"conditions": [condition]}}


def test_a_jobs_outcome_is_read_from_its_conditions() -> None:
    assert job_result({"metadata": {"name": "j"}, "status": {"active": 1}}) is None
    assert job_result(job_with("Complete")).outcome == JobOutcome.SUCCEEDED  # type: ignore[union-attr]
    failed = job_result(job_with("Failed", "BackoffLimitExceeded"))
    assert failed is not None and (failed.outcome, failed.message) == (
        JobOutcome.FAILED,
        "BackoffLimitExceeded: said",
    )
    late = job_result(job_with("Failed", "DeadlineExceeded"))
    assert late is not None and late.outcome == JobOutcome.DEADLINE_EXCEEDED


# ---- the sandbox's Job controller and kubelet ----

JOB = {"metadata": {"name": "j", "uid": "u"}, "spec": {"backoffLimit": 1, "completions": 1, "parallelism": 1}}


def pod(phase: str) -> dict[str, Any]:
    return {"metadata": {"name": f"j-{phase}"}, "status": {"phase": phase}}


def test_the_job_controller_starts_a_pod_then_completes_on_its_success() -> None:
    first = plan_job(JOB, [], 100.0)
    assert first.create == 1 and first.status is not None and first.status["active"] == 1
    done = plan_job({**JOB, "status": first.status}, [pod("Succeeded")], 101.0)
    assert done.status is not None and done.status["conditions"][0]["type"] == "Complete"
    assert done.status["succeeded"] == 1 and "completionTime" in done.status


def test_the_job_controller_retries_up_to_the_backoff_limit() -> None:
    assert plan_job(JOB, [pod("Failed")], 100.0).create == 1  # one retry allowed
    failed = plan_job(JOB, [pod("Failed"), pod("Failed")], 100.0)
    assert failed.create == 0 and failed.status is not None
    assert failed.status["conditions"][0]["reason"] == "BackoffLimitExceeded"


def test_the_job_controller_stops_a_job_past_its_deadline() -> None:
    job = {
        **JOB,
        "spec": {**JOB["spec"], "activeDeadlineSeconds": 5},
        "status": {"startTime": "1970-01-01T00:01:40Z"},
    }
    running = plan_job(job, [pod("Running")], 104.0)
    assert running.wake_at == 105.0 and running.create == 0
    late = plan_job(job, [pod("Running")], 105.0)
    assert late.delete == ("j-Running",) and late.status is not None
    assert late.status["conditions"][0]["reason"] == "DeadlineExceeded"


@pytest.mark.parametrize(("code", "phase"), [("0", "Succeeded"), ("3", "Failed")])
def test_a_pod_that_runs_to_completion_ends_with_its_exit_code(code: str, phase: str) -> None:
    annotations = {"sandbox.sluice.dev/exit-code": code, "sandbox.sluice.dev/run-seconds": "2"}
    running = {
        "metadata": {"name": "p", "annotations": annotations},
        "spec": POD,
        "status": {"phase": "Running", "startTime": "1970-01-01T00:01:40Z"},
    }
    assert kubelet_status(running, 101.0, 0.2) == (None, 102.0)
    status, wake = kubelet_status(running, 102.0, 0.2)
    assert status is not None and wake is None and status["phase"] == phase
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == int(code)


def test_a_pod_that_restarts_always_never_ends() -> None:
    serving = {
        "metadata": {"name": "p"},
        "spec": {"containers": POD["containers"]},
        "status": {"phase": "Running", "startTime": "1970-01-01T00:01:40Z", "containerStatuses": []},
    }
    assert kubelet_status(serving, 10_000.0, 0.2) == (None, None)
