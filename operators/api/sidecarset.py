"""The SidecarSet resource: sidecars defined once, injected into every matching pod.

After OpenKruise's SidecarSet. Containers, init containers and volumes are
kept whole (any field a pod accepts), with the few checks that catch common
mistakes at `kubectl apply` time; the sidecar-specific keys
(`podInjectPolicy`) are the only ones Sluice reads itself.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from operators.api.base import ApiModel, Condition, Image, LabelSelector

KIND = "SidecarSet"
PLURAL = "sidecarsets"
SINGULAR = "sidecarset"
SHORT_NAMES = ["ssc"]

INT_OR_PERCENT: dict[str, Any] = {"x-kubernetes-int-or-string": True}
_PERCENT = re.compile(r"^[0-9]+%$")


class PodInjectPolicy(StrEnum):
    BEFORE_APP_CONTAINER = "BeforeAppContainer"
    AFTER_APP_CONTAINER = "AfterAppContainer"


class Container(ApiModel):
    """A container as in a pod spec: `name` and `image` are required, every other field is kept as is."""

    # Open: a sidecar may use any container field; what Kubernetes does not know it refuses at pod creation.
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=63)
    image: Image


class SidecarContainer(Container):
    """A sidecar container, and where it goes relative to the app's containers."""

    pod_inject_policy: PodInjectPolicy = PodInjectPolicy.BEFORE_APP_CONTAINER


class InjectionStrategy(ApiModel):
    paused: bool = Field(
        default=False,
        description="Inject into no new pod or Rollout; those that already carry the sidecars keep them.",
    )


class UpdateType(StrEnum):
    ROLLING_UPDATE = "RollingUpdate"
    NOT_UPDATE = "NotUpdate"


def scaled(value: int | str, total: int, *, round_up: bool) -> int:
    """An int-or-percent field against `total`: ``"25%"`` of 10 is 3 rounded up, 2 rounded down."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    return -(-total * percent // 100) if round_up else total * percent // 100


def _check_int_or_percent(value: int | str, field: str) -> None:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{field} cannot be negative")
    elif not _PERCENT.fullmatch(value):
        raise ValueError(f"{field} must be a number or a percentage such as 25%, not {value!r}")


class UpdateStrategy(ApiModel):
    """How a change reaches the Rollouts and pods that already carry an older revision."""

    type: UpdateType = Field(
        default=UpdateType.ROLLING_UPDATE,
        description="RollingUpdate: Rollouts release the change (canaried), pods get image changes in place. "
        "NotUpdate: the change goes only into new releases and new pods.",
    )
    paused: bool = Field(default=False, description="Freeze: nothing already injected is updated.")
    partition: int | str = Field(
        default=0,
        description="How many matched Rollouts, and how many matched pods, stay on the old revision "
        "(a number or a percentage).",
        json_schema_extra=INT_OR_PERCENT,
    )
    max_unavailable: int | str = Field(
        default=1,
        description="At most this many Rollouts release the change at once, and at most this many pods are "
        "unavailable (not ready) while images are replaced (a number or a percentage; at least 1).",
        json_schema_extra=INT_OR_PERCENT,
    )
    selector: LabelSelector | None = Field(
        default=None, description="Only Rollouts (by template labels) and pods matching it are updated."
    )

    @model_validator(mode="after")
    def _int_or_percent(self) -> UpdateStrategy:
        _check_int_or_percent(self.partition, "partition")
        _check_int_or_percent(self.max_unavailable, "maxUnavailable")
        return self


VOLUME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}},
    "x-kubernetes-preserve-unknown-fields": True,
}


class SidecarSetSpec(ApiModel):
    selector: LabelSelector = Field(
        description="Pods (and Rollouts, by their template labels) that get the sidecars. "
        "An empty selector matches every pod."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Namespaces (by their labels) whose pods get the sidecars. "
        "Default: every namespace but kube-system and kube-public.",
    )
    containers: list[SidecarContainer] = Field(default_factory=list)
    init_containers: list[Container] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list, json_schema_extra={"items": VOLUME_SCHEMA})
    injection_strategy: InjectionStrategy = Field(default_factory=InjectionStrategy)
    update_strategy: UpdateStrategy = Field(default_factory=UpdateStrategy)

    @model_validator(mode="after")
    def _names_unique(self) -> SidecarSetSpec:
        if not self.containers and not self.init_containers:
            raise ValueError("a SidecarSet needs at least one container or init container")
        for what, names in (
            ("container", [c.name for c in (*self.containers, *self.init_containers)]),
            ("volume", [str(v.get("name")) for v in self.volumes]),
        ):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{what} names must be unique: {', '.join(duplicated)}")
        if any(not isinstance(v.get("name"), str) or not v["name"] for v in self.volumes):
            raise ValueError("every volume needs a name")
        return self


class RolledBack(ApiModel):
    """A Rollout whose release of this SidecarSet's revision was rolled back."""

    rollout: str = Field(description="namespace/name of the Rollout.")
    revision: str
    message: str = ""


class Conflict(ApiModel):
    """A Rollout or pod the sidecars could not be injected into, and why."""

    target: str = Field(description="Rollout namespace/name or Pod namespace/name.")
    message: str


class SidecarSetStatus(ApiModel):
    # Written by the operator only; unknown keys from older versions are kept.
    model_config = {"extra": "ignore"}

    observed_generation: int | None = None
    revision: str | None = Field(default=None, description="Hash of the injected containers and volumes.")
    matched: int = Field(default=0, description="Rollouts plus pods outside Sluice that match.")
    updated: int = Field(default=0, description="Of those, how many carry the current revision.")
    ready: int = Field(default=0, description="Of those, how many are ready (Rollouts: Healthy).")
    matched_rollouts: int = 0
    updated_rollouts: int = Field(
        default=0, description="Rollouts whose stable version carries the revision."
    )
    ready_rollouts: int = 0
    updated_ready_rollouts: int = 0
    releasing_rollouts: int = Field(default=0, description="Rollouts releasing the revision right now.")
    matched_pods: int = 0
    updated_pods: int = 0
    ready_pods: int = 0
    updated_ready_pods: int = 0
    rolled_back: list[RolledBack] = Field(default_factory=list)
    conflicts: list[Conflict] = Field(default_factory=list)
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    message: str = ""
