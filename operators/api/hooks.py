"""Lifecycle hooks of a canary release (`strategy.canary.hooks`) and their record in the status.

A hook is a named check run at one point of a release: `preRollout` before the canary gets any
request, `prePromotion` before the stable takes the new version (both gate: a failure rolls the
release back), `postRollout` once a release is promoted and `onRollback` once one is rolled back
(both notify: a failure is reported and changes nothing). A `web` hook passes on a 2xx answer, a
`job` hook when its Job succeeds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from operators.api.base import ApiModel, Duration, parse_duration
from operators.metrics.job import JobSource

# No hook call may take longer than this, whatever its timeout says (like a metric query).
MAX_HOOK_SECONDS = 30.0

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


class WebHook(ApiModel):
    """An HTTP call; it passes on a 2xx answer. Redirects are not followed (they fail the hook)."""

    url: str = Field(
        min_length=1,
        description="http:// or https:// URL; its host must be one of the operator's --metric-hosts.",
    )
    method: HttpMethod = Field(default="POST", description="The HTTP method.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    body: str | None = Field(
        default=None,
        description="The request body. Default (for methods with a body): a JSON object naming the "
        "rollout, namespace, hook, kind and revision.",
    )
    timeout: Duration = Field(default="10s", description=f"At most {MAX_HOOK_SECONDS:g}s.")

    @model_validator(mode="after")
    def _timeout_in_bounds(self) -> WebHook:
        seconds = parse_duration(self.timeout).total_seconds()
        if not 0 < seconds <= MAX_HOOK_SECONDS:
            raise ValueError(
                f"hook timeout {self.timeout} must be above 0s and at most {MAX_HOOK_SECONDS:g}s"
            )
        return self


class JobHook(JobSource):
    """A Kubernetes Job run in the Rollout's namespace (the job metric's block); the hook passes when
    the Job succeeds and fails when it fails or runs past its deadline. Sluice deletes it once judged."""

    timeout: Duration = Field(
        default="5m",
        description="The Job's activeDeadlineSeconds unless its spec sets one; past it, the hook fails.",
    )


HOOK_ONE_OF = "a hook needs exactly one of web and job"


class Hook(ApiModel):
    """One named hook: an HTTP call (`web`) or a Job (`job`)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [{"rule": "has(self.web) != has(self.job)", "message": HOOK_ONE_OF}]
        }
    }

    name: str = Field(min_length=1, max_length=63)
    web: WebHook | None = None
    job: JobHook | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Hook:
        if (self.web is None) == (self.job is None):
            raise ValueError(f'hook "{self.name}": {HOOK_ONE_OF}')
        return self


class Hooks(ApiModel):
    """The hooks of a canary release, each a list run in parallel at its point of the release."""

    pre_rollout: list[Hook] = Field(
        default_factory=list,
        description="Once the canary's first pod is ready, before it gets any request; a failure rolls back.",
    )
    pre_promotion: list[Hook] = Field(
        default_factory=list,
        description="After the last step, before the stable takes the new version; a failure rolls back.",
    )
    post_rollout: list[Hook] = Field(
        default_factory=list,
        description="Once a release is promoted (and verified); a failure is reported, nothing else.",
    )
    on_rollback: list[Hook] = Field(
        default_factory=list,
        description="Once a release is rolled back; a failure is reported, nothing else.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Hooks:
        for kind, hooks in self.by_kind().items():
            names = [hook.name for hook in hooks]
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{kind} hook names must be unique: {', '.join(duplicated)}")
        return self

    def by_kind(self) -> dict[HookKind, list[Hook]]:
        return {
            HookKind.PRE_ROLLOUT: self.pre_rollout,
            HookKind.PRE_PROMOTION: self.pre_promotion,
            HookKind.POST_ROLLOUT: self.post_rollout,
            HookKind.ON_ROLLBACK: self.on_rollback,
        }


class HookKind(StrEnum):
    PRE_ROLLOUT = "preRollout"
    PRE_PROMOTION = "prePromotion"
    POST_ROLLOUT = "postRollout"
    ON_ROLLBACK = "onRollback"


class HookOutcome(StrEnum):
    # Due: the engine asked for it, the shell runs it (again after a restart, until it has an answer).
    PENDING = "Pending"
    PASSED = "Passed"
    FAILED = "Failed"


class HookRun(ApiModel):
    """One hook run for one revision: asked for (Pending), then answered."""

    kind: HookKind
    name: str
    revision: str
    outcome: HookOutcome = HookOutcome.PENDING
    message: str = ""
    time: str | None = Field(default=None, description="When it was answered.")
