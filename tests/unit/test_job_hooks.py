"""`job` lifecycle hooks: the model and its CRD rule, the hook's Job, and what its outcome means.

The Job runs for real in the integration test (tests/integration/test_post_promotion_and_hooks.py);
here the pure parts, the API server's CEL rule (the sandbox's admission), and the runner without a
Job runner.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from operators.analysis.jobs import HOOK_LABEL, PURPOSE_LABEL, JobOutcome, JobOwner, JobResult, hook_job
from operators.api.hooks import HOOK_ONE_OF, Hook, HookKind, HookOutcome, HookRun
from operators.api.refs import RolloutRef
from operators.metrics.base import ProviderError
from operators.metrics.hosts import AllowedHosts
from operators.rollout.hook_runner import NO_JOB_RUNNER, HookRunner, hook_problems, job_hook_answer
from tests.unit.engine_world import make_spec
from tests.unit.test_sandbox_cel import causes, example_rollout, refusal, served, sluice_crd, write

AT = datetime(2026, 1, 1, tzinfo=UTC)
POD = {"restartPolicy": "Never", "containers": [{"name": "smoke", "image": "curl"}]}
JOB = {"spec": {"template": {"spec": POD}}, "timeout": "90s"}
WEB = {"url": "http://hooks.example/smoke"}


def job_hook(name: str = "smoke", **job: Any) -> dict[str, Any]:
    return {"name": name, "job": {**JOB, **job}}


# ---- the model --------------------------------------------------------------------------------------


def test_a_hook_is_a_web_call_or_a_job() -> None:
    hook = Hook.model_validate(job_hook())
    assert hook.web is None and hook.job is not None and hook.job.deadline_seconds() == 90
    assert Hook.model_validate({"name": "smoke", "web": WEB}).job is None


@pytest.mark.parametrize("kinds", [{"web": WEB, "job": JOB}, {}], ids=["both", "neither"])
def test_a_hook_needs_exactly_one_of_web_and_job(kinds: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=f'hook "smoke": {HOOK_ONE_OF}'):
        Hook.model_validate({"name": "smoke", **kinds})


def test_a_job_hook_needs_a_runnable_pod() -> None:
    with pytest.raises(
        ValidationError, match=r"job\.spec\.template\.spec\.containers needs at least one container"
    ):
        Hook.model_validate(
            job_hook(spec={"template": {"spec": {"restartPolicy": "Never", "containers": []}}})
        )
    with pytest.raises(ValidationError, match='restartPolicy must be "Never" or "OnFailure"'):
        Hook.model_validate(job_hook(spec={"template": {"spec": {**POD, "restartPolicy": "Always"}}}))


def test_job_hooks_have_no_address_to_allow() -> None:
    spec = make_spec([{"setWeight": 50}], canary={"hooks": {"preRollout": [job_hook()]}})
    assert hook_problems(spec, AllowedHosts()) == []


def hooked_rollout(hook: dict[str, Any]) -> dict[str, Any]:
    rollout = example_rollout()
    rollout["spec"]["strategy"]["canary"]["hooks"] = {"preRollout": [hook]}
    return rollout


def test_the_api_server_refuses_a_hook_with_both_or_neither_kind() -> None:
    rollouts = served(sluice_crd("Rollout"))
    for hook in ({"name": "smoke", "web": WEB, "job": JOB}, {"name": "smoke"}):
        assert causes(refusal(rollouts, hooked_rollout(hook))) == [
            (
                "spec.strategy.canary.hooks.preRollout[0]",
                "FieldValueInvalid",
                f'Invalid value: "object": {HOOK_ONE_OF}',
            )
        ]
    admitted = write(rollouts, hooked_rollout(job_hook()))
    assert admitted["spec"]["strategy"]["canary"]["hooks"]["preRollout"][0]["job"]["timeout"] == "90s"


# ---- the hook's Job -----------------------------------------------------------------------------------


def test_a_hooks_job_is_named_labelled_owned_and_has_a_deadline() -> None:
    source = Hook.model_validate(job_hook("Smoke Test!")).job
    assert source is not None
    body = hook_job(JobOwner("shop", "web", "u1"), "preRollout", "Smoke Test!", source, AT)
    meta = body["metadata"]
    assert meta["name"].startswith("web-prerollout-smoke-test-") and len(meta["name"]) <= 63
    assert meta["namespace"] == "shop"
    assert (meta["labels"][PURPOSE_LABEL], meta["labels"][HOOK_LABEL]) == ("preRollout", "smoke-test")
    assert meta["ownerReferences"][0]["uid"] == "u1"
    assert body["spec"]["activeDeadlineSeconds"] == 90
    later = hook_job(JobOwner("shop", "web", "u1"), "preRollout", "Smoke Test!", source, AT.replace(second=1))
    assert later["metadata"]["name"] != meta["name"], "a hook run again (after a restart) is a new Job"


def finished(result: JobResult | Exception | None) -> Future[JobResult]:
    future: Future[JobResult] = Future()
    if result is None:
        future.cancel()
    elif isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
    return future


def test_what_a_hooks_job_outcome_means() -> None:
    succeeded = JobResult("web-smoke-1", JobOutcome.SUCCEEDED, "")
    assert job_hook_answer(finished(succeeded)) == (HookOutcome.PASSED, "Job web-smoke-1 succeeded")
    failed = JobResult("web-smoke-1", JobOutcome.FAILED, "BackoffLimitExceeded: Job has reached the limit")
    assert job_hook_answer(finished(failed)) == (
        HookOutcome.FAILED,
        "Job web-smoke-1 failed (BackoffLimitExceeded: Job has reached the limit)",
    )
    late = JobResult("web-smoke-1", JobOutcome.DEADLINE_EXCEEDED, "DeadlineExceeded: too long")
    assert job_hook_answer(finished(late)) == (
        HookOutcome.FAILED,
        "Job web-smoke-1 ran past its deadline (DeadlineExceeded: too long)",
    )
    refused = ProviderError("could not create Job web-smoke-1: forbidden")
    assert job_hook_answer(finished(refused)) == (HookOutcome.FAILED, str(refused))
    assert job_hook_answer(finished(RuntimeError("bug"))) == (
        HookOutcome.FAILED,
        "hook Job failed: RuntimeError",
    )
    # The runner stopped (the operator shuts down): no answer; the hook stays Pending and runs again.
    assert job_hook_answer(finished(None)) == (HookOutcome.PENDING, "")


def test_without_a_job_runner_a_job_hook_fails_with_a_clear_message() -> None:
    spec = make_spec([{"setWeight": 50}], canary={"hooks": {"preRollout": [job_hook()]}})
    runner = HookRunner(AllowedHosts())
    done = threading.Event()
    runner.on_done = lambda namespace, name: done.set()
    ref = RolloutRef(name="web", namespace="shop", uid="u1")
    pending = [HookRun(kind=HookKind.PRE_ROLLOUT, name="smoke", revision="r1")]
    assert runner.collect_or_start(ref, spec, pending) == []
    assert done.wait(timeout=10)
    (answer,) = runner.collect_or_start(ref, spec, pending)
    assert (answer.outcome, answer.message) == (HookOutcome.FAILED, NO_JOB_RUNNER)
