"""A Kubernetes Job as a metric: smoke tests, load tests, any check a container can run.

A metric's ``job: {spec: JobSpec, timeout}`` block. Each check runs one Job
from ``spec`` in the Rollout's namespace (`operators.analysis.jobs.JobRunner`):
its value is 1 when the Job succeeds and 0 when it fails, judged by the
metric's ``thresholdRange`` (``{min: 1}`` when not given); a Job that runs
past its deadline, or cannot be created, is an Error. A Job answers no query:
the check starts it and waits for it without holding a thread, so this
provider's `query` is never called.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from operators.foundation.model import ApiModel, Duration, parse_duration
from operators.metrics.base import ProviderError

JOB_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A batch/v1 JobSpec: its template needs at least one container and a restartPolicy "
    "of Never or OnFailure.",
    "required": ["template"],
    "x-kubernetes-preserve-unknown-fields": True,
}


RESTART_POLICIES = ("Never", "OnFailure")


class JobSource(ApiModel):
    spec: dict[str, Any] = Field(json_schema_extra=JOB_SPEC_SCHEMA)
    timeout: Duration = Field(
        default="5m",
        description="The Job's activeDeadlineSeconds unless its spec sets one; past it, "
        "the check is an Error.",
    )

    @field_validator("spec")
    @classmethod
    def _has_containers(cls, spec: dict[str, Any]) -> dict[str, Any]:
        template = spec.get("template")
        pod = template.get("spec") if isinstance(template, dict) else None
        containers = pod.get("containers") if isinstance(pod, dict) else None
        if not isinstance(containers, list) or not containers:
            raise ValueError("job.spec.template.spec.containers needs at least one container")
        if pod.get("restartPolicy") not in RESTART_POLICIES:  # type: ignore[union-attr]
            # The API server refuses any other (a Job's pods run to completion): say so before a check.
            raise ValueError('job.spec.template.spec.restartPolicy must be "Never" or "OnFailure"')
        return spec

    def deadline_seconds(self) -> int:
        """How long the Job may run: its own activeDeadlineSeconds, else the block's timeout."""
        own = self.spec.get("activeDeadlineSeconds")
        if isinstance(own, int) and not isinstance(own, bool) and own > 0:
            return own
        return max(1, round(parse_duration(self.timeout).total_seconds()))


class JobProvider:
    """The registry's entry for `job` blocks; the Job itself is run by the analysis' JobRunner."""

    field = "job"
    config_model = JobSource
    takes_query = False  # the block says it all: no query or template (operators.metrics.base)

    def address(self, config: JobSource) -> str | None:
        return None  # a Job runs in the cluster: no address to allow

    def timeout_seconds(self, config: JobSource) -> float:
        return float(config.deadline_seconds())

    def query(self, config: JobSource, address: str, query: str, timeout_seconds: float) -> float | None:
        raise ProviderError("a job metric runs a Job; it answers no query")
