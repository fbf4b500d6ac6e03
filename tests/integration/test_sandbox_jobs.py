"""
The sandbox's Jobs (sluice_sandbox/jobs.py and the kubelet's pods that run to completion), through
the real ``kubernetes`` client and the real kubectl: a Job succeeds, fails after its retries, hits
its deadline, and its pods go with it.
"""

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from operators.foundation.keys import ObjectKey
from sluice_sandbox.apiserver import SandboxThread, with_controllers
from sluice_sandbox.jobs import JobController
from sluice_sandbox.workloads import WorkloadSimulator
from tests.harness import Harness

pytestmark = pytest.mark.integration

NS = "jobs"
TIMEOUT = 20.0


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxThread]:
    factory = with_controllers(functools.partial(WorkloadSimulator, ready_delay=0.1), JobController)
    with SandboxThread(kubeconfig=tmp_path / "kubeconfig", server_factory=factory) as thread:
        yield thread


@pytest.fixture
def batch(sandbox: SandboxThread) -> kubernetes.client.BatchV1Api:
    client = kubernetes.config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": NS}})
    return kubernetes.client.BatchV1Api(client)


@pytest.fixture
def harness(sandbox: SandboxThread) -> Harness:
    return Harness(sandbox.kubeconfig)


def job(name: str, *, exit_code: int = 0, run_seconds: float = 0.3, **spec: Any) -> dict[str, Any]:
    annotations = {
        "sandbox.sluice.dev/exit-code": str(exit_code),
        "sandbox.sluice.dev/run-seconds": str(run_seconds),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            **spec,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "smoke", "image": "busybox"}]},
            },
        },
    }


def job_key(name: str) -> ObjectKey:
    return ObjectKey("batch/v1", "Job", NS, name)


def condition(body: dict[str, Any], kind: str) -> dict[str, Any] | None:
    found = [c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == kind]
    return found[0] if found else None


def pods_of(harness: Harness, name: str) -> list[dict[str, Any]]:
    return harness.cluster.list_objects(
        "v1", "Pod", NS, label_selector=f"batch.kubernetes.io/job-name={name}"
    )


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_a_job_whose_pod_exits_0_completes_and_kubectl_waits_for_it(
    sandbox: SandboxThread, batch: kubernetes.client.BatchV1Api, harness: Harness
) -> None:
    created = batch.create_namespaced_job(NS, job("smoke"))
    assert created.spec.backoff_limit == 6  # the API server's default
    waited = subprocess.run(
        [
            "kubectl",
            f"--kubeconfig={sandbox.kubeconfig}",
            "-n",
            NS,
            "wait",
            "--for=condition=complete",
            "job/smoke",
            "--timeout=20s",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert waited.returncode == 0, waited.stderr
    status = batch.read_namespaced_job_status("smoke", NS).status
    assert (status.succeeded, status.failed or 0, status.active or 0) == (1, 0, 0)
    assert status.start_time is not None and status.completion_time is not None
    (pod,) = pods_of(harness, "smoke")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_a_failing_job_is_retried_up_to_its_backoff_limit_then_failed(
    batch: kubernetes.client.BatchV1Api, harness: Harness
) -> None:
    batch.create_namespaced_job(NS, job("flaky", exit_code=3, run_seconds=0.1, backoffLimit=2))
    failed = harness.wait_object(
        job_key("flaky"), lambda body: condition(body, "Failed") is not None, TIMEOUT, "the Job to fail"
    )
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"
    assert condition(failed, "Complete") is None
    assert failed["status"]["failed"] == 3  # the first try and backoffLimit retries
    pods = pods_of(harness, "flaky")
    assert [p["status"]["phase"] for p in pods] == ["Failed"] * 3


def test_a_job_past_its_deadline_fails_and_its_pod_is_stopped(
    batch: kubernetes.client.BatchV1Api, harness: Harness
) -> None:
    batch.create_namespaced_job(NS, job("slow", run_seconds=600, activeDeadlineSeconds=1))
    failed = harness.wait_object(
        job_key("slow"), lambda body: condition(body, "Failed") is not None, TIMEOUT, "the deadline"
    )
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"
    assert failed["status"]["active"] == 0
    harness.wait(lambda: pods_of(harness, "slow"), lambda pods: not pods, TIMEOUT, "the pod to be stopped")


def test_pods_are_deleted_with_their_job_in_the_background(
    batch: kubernetes.client.BatchV1Api, harness: Harness
) -> None:
    batch.create_namespaced_job(NS, job("gone", run_seconds=600))
    harness.wait(lambda: pods_of(harness, "gone"), lambda pods: len(pods) == 1, TIMEOUT, "the Job's pod")
    batch.delete_namespaced_job("gone", NS, propagation_policy="Background")
    harness.wait(lambda: pods_of(harness, "gone"), lambda pods: not pods, TIMEOUT, "the pod to go")


def test_a_job_that_would_restart_forever_is_refused(batch: kubernetes.client.BatchV1Api) -> None:
    body = job("always")
    body["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(kubernetes.client.ApiException) as refused:
        batch.create_namespaced_job(NS, body)
    assert refused.value.status == 422
    assert "spec.template.spec.restartPolicy" in refused.value.body
