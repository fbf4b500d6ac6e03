"""The Application resource: components rendered by component types into Rollouts.

The GitOps entry point of DESIGN.md, after OAM and KubeVela. A component says
*what* runs (image, replicas, ports, env, resources, properties); its type (a
Jinja2 template, see ``operators/application/types``) says *how* it becomes
a Rollout's pod template, Services and traffic; ``spec.rollout`` (overridden
per component) says how new versions are released.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator
from pydantic.config import JsonDict

from operators.api.base import ApiModel, Condition, Duration, Image
from operators.api.hooks import Hooks
from operators.api.rollout import (
    CANARY_SUFFIX,
    NAME_MAX,
    NAME_PATTERN,
    Metric,
    Phase,
    PostPromotionAnalysis,
    Step,
)
from operators.traffic.gateway_api import GatewayAPITraffic

KIND = "Application"
PLURAL = "applications"
SINGULAR = "application"
SHORT_NAMES = ["sapp"]

# A component's name is its Rollout's, so it follows a Rollout's name rule: a DNS-1035 label
# (its Services' names) with room for "-canary" added (<= 63).
COMPONENT_NAME_PATTERN = NAME_PATTERN
COMPONENT_NAME_MAX = NAME_MAX
# A component named <other>-canary would share its Deployment and Service names with the
# other's canary: whichever reconciled first would own them.
COMPONENT_COLLISION_MESSAGE = (
    f"a component cannot be named after another with {CANARY_SUFFIX} added: "
    f"<name>{CANARY_SUFFIX} is the other component's canary Deployment and Service"
)
COMPONENT_COLLISION_RULE: JsonDict = {
    "rule": f"self.all(c, !self.exists(d, c.name == d.name + '{CANARY_SUFFIX}'))",
    "message": COMPONENT_COLLISION_MESSAGE,
}
# Bounds the cost the API server estimates for that rule (it compares every pair of components).
COMPONENTS_MAX = 100
# A component type's name is a file name, <type>.yaml.j2, as well.
TYPE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Kubernetes' IANA_SVC_NAME, what a container port's name must be.
PORT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

LIST_MAP_BY_NAME: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


class AnalysisDefaults(ApiModel):
    """The analysis fields of a Rollout's canary strategy, each optional."""

    interval: Duration | None = None
    failure_limit: int | None = Field(default=None, ge=0)
    inconclusive_limit: int | None = Field(default=None, ge=0)
    error_limit: int | None = Field(default=None, ge=0)
    min_checks_per_step: int | None = Field(default=None, ge=0)
    min_requests: int | None = Field(default=None, ge=1)
    metrics: list[Metric] | None = Field(default=None, min_length=1)


class RolloutDefaults(ApiModel):
    """How components are released: a Rollout's canary strategy plus progressDeadlineSeconds and paused.

    Every field is optional here: `spec.rollout` and a component's `rollout`
    are merged field by field (objects deep-merged, lists replaced, and
    `steps` and `stepWeight` replacing each other), and the result must be a
    valid canary strategy. Without steps or stepWeight anywhere, a release is
    the single step `setWeight: 100`.
    """

    steps: list[Step] | None = Field(default=None, min_length=1)
    step_weight: int | None = Field(default=None, ge=1, le=100)
    max_weight: int | None = Field(default=None, ge=1, le=100)
    canary_replicas: int | str | None = Field(
        default=None,
        description='"matchWeight" (canary pods in proportion to its weight) or a fixed number.',
        json_schema_extra={"x-kubernetes-int-or-string": True},
    )
    abort_scale_down_delay_seconds: int | None = Field(default=None, ge=0)
    analysis: AnalysisDefaults | None = None
    # Whole objects here (not field by field): each is a complete verification or set of hooks.
    post_promotion_analysis: PostPromotionAnalysis | None = None
    hooks: Hooks | None = None
    progress_deadline_seconds: int | None = Field(default=None, ge=1)
    paused: bool | None = Field(default=None, description="Hold the releases where they are.")


class ComponentPort(ApiModel):
    """A container port; `expose` publishes it on the component's Services."""

    name: str = Field(
        max_length=15, pattern=PORT_NAME_PATTERN, description="Port name; the Services' targetPort."
    )
    port: int = Field(ge=1, le=65535, description="The port the container listens on.")
    expose: int | None = Field(
        default=None, ge=1, le=65535, description="The port the component's Services listen on."
    )


class EnvVar(ApiModel):
    """An environment variable of the component's container, as in a pod spec."""

    name: str = Field(min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = None


class Component(ApiModel):
    """One workload of the Application, released by its own Rollout named after it."""

    name: str = Field(
        max_length=COMPONENT_NAME_MAX,
        pattern=COMPONENT_NAME_PATTERN,
        description="The component's name, and its Rollout's.",
    )
    type: str = Field(
        pattern=TYPE_NAME_PATTERN,
        description="The component type that renders it: webservice, worker, or one of your own.",
    )
    image: Image
    replicas: int = Field(default=1, ge=0)
    ports: list[ComponentPort] = Field(default_factory=list, json_schema_extra=LIST_MAP_BY_NAME)
    env: list[EnvVar] = Field(default_factory=list)
    resources: dict[str, Any] = Field(
        default_factory=dict, description="The container's resources (requests, limits)."
    )
    properties: dict[str, Any] = Field(
        default_factory=dict, description="Extra inputs for the component type."
    )
    rollout: RolloutDefaults | None = Field(
        default=None, description="Overrides spec.rollout for this component, field by field."
    )
    route: GatewayAPITraffic | None = Field(
        default=None, description="Route traffic to the component through a Gateway API HTTPRoute."
    )


class ApplicationSpec(ApiModel):
    rollout: RolloutDefaults | None = Field(
        default=None, description="How every component is released, unless it says otherwise."
    )
    components: list[Component] = Field(
        default_factory=list,
        max_length=COMPONENTS_MAX,
        json_schema_extra={**LIST_MAP_BY_NAME, "x-kubernetes-validations": [COMPONENT_COLLISION_RULE]},
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ApplicationSpec:
        names = [component.name for component in self.components]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"component names must be unique: {', '.join(duplicated)}")
        collisions = [
            f'components "{name}" and "{name}{CANARY_SUFFIX}"'
            for name in names
            if f"{name}{CANARY_SUFFIX}" in names
        ]
        if collisions:
            raise ValueError(f"{', '.join(collisions)} collide: {COMPONENT_COLLISION_MESSAGE}")
        return self


class ComponentPhase(StrEnum):
    """A Rollout's phase, or where a component stands before it has a Rollout that reports one."""

    PENDING = "Pending"
    INITIALIZING = Phase.INITIALIZING.value
    PROGRESSING = Phase.PROGRESSING.value
    PAUSED = Phase.PAUSED.value
    HEALTHY = Phase.HEALTHY.value
    DEGRADED = Phase.DEGRADED.value
    ABORTED = Phase.ABORTED.value
    FAILED = "Failed"


class ComponentStatus(ApiModel):
    model_config = {"extra": "ignore"}

    name: str
    phase: ComponentPhase
    revision: str | None = Field(
        default=None, description="The revision being released, else the stable one."
    )
    canary_weight: int = 0
    ready: bool = False
    message: str = ""


class ApplicationPhase(StrEnum):
    RUNNING = "Running"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


class ApplicationStatus(ApiModel):
    # Status is written by the operator only; unknown keys from older versions are kept.
    model_config = {"extra": "ignore"}

    observed_generation: int | None = None
    phase: ApplicationPhase | None = None
    component_count: int = Field(default=0, description="Components in the spec.")
    ready_components: str = Field(default="", description="Ready components out of all, e.g. 1/2.")
    components: list[ComponentStatus] = Field(default_factory=list, json_schema_extra=LIST_MAP_BY_NAME)
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    message: str = ""
