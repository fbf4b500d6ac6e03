"""The Rollout resource: spec and status, exactly as DESIGN.md names them."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, create_model, model_validator

from operators.api.base import ApiModel, Condition, Duration, LabelSelector, parse_duration
from operators.api.hooks import HookRun, Hooks
from operators.api.notifications import Notifications
from operators.metrics.base import MetricProvider, takes_query
from operators.metrics.registry import DEFAULT_PROVIDER as DEFAULT_METRIC_PROVIDER
from operators.metrics.registry import PROVIDERS as METRIC_PROVIDERS
from operators.traffic.base import TrafficProvider
from operators.traffic.registry import PROVIDERS as TRAFFIC_PROVIDERS
from operators.traffic.routes import HeaderRoute, MirrorRoute

KIND = "Rollout"
PLURAL = "rollouts"
SINGULAR = "rollout"
SHORT_NAMES = ["sro"]

# A Rollout's name is in the names of everything Sluice makes for it: Deployments and
# Services <name> and <name>-canary, the HTTPRoute <name> (by default), and the pod label
# sluice.dev/rollout=<name>. Service names are DNS-1035 labels (a letter first, at most 63
# characters), so the name must be one with room for "-canary".
CANARY_SUFFIX = "-canary"
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 63 - len(CANARY_SUFFIX)
NAME_MESSAGE = (
    f"a Rollout's name must be a DNS-1035 label of at most {NAME_MAX} characters "
    "(lowercase letters, digits and '-', starting with a letter): "
    f"its canary Service is <name>{CANARY_SUFFIX}"
)
# The same rule for the API server, on the root schema (only there may CEL read metadata.name).
NAME_RULE: dict[str, str] = {
    "rule": f"size(self.metadata.name) <= {NAME_MAX} && self.metadata.name.matches('{NAME_PATTERN}')",
    "message": NAME_MESSAGE,
}

# The pod template is a PodTemplateSpec: kept whole (unknown fields preserved)
# so users can write anything a Deployment accepts, with the few checks that
# catch the common mistakes at `kubectl apply` time.
POD_TEMPLATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The pod template (a PodTemplateSpec) of the released workload.",
    "required": ["spec"],
    "properties": {
        "metadata": {
            "type": "object",
            "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "x-kubernetes-preserve-unknown-fields": True,
        },
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "image": {"type": "string"}},
                        "x-kubernetes-preserve-unknown-fields": True,
                    },
                },
            },
            "x-kubernetes-preserve-unknown-fields": True,
        },
    },
}

INT_OR_STRING: dict[str, Any] = {"x-kubernetes-int-or-string": True}


class ServiceSpec(ApiModel):
    """The Services `<name>` (stable) and `<name>-canary` in front of the pods."""

    name: str | None = Field(
        default=None,
        max_length=63,
        pattern=NAME_PATTERN,
        description="The stable Service's name (default: the Rollout's). When a Service of that name "
        "exists and is not Sluice's, Sluice adopts it: it moves its selector to Sluice's stable pods, "
        "and puts the selector back when the Rollout is deleted.",
    )
    port: int = Field(default=80, ge=1, le=65535, description="Port the Services listen on.")
    target_port: int | str = Field(
        default="http",
        description="Container port (number or name) the Services send traffic to.",
        json_schema_extra=INT_OR_STRING,
    )


WORKLOAD_API_VERSION = "apps/v1"
WORKLOAD_KIND = "Deployment"
WORKLOAD_KIND_MESSAGE = f"workloadRef must name an {WORKLOAD_API_VERSION} {WORKLOAD_KIND}"


class WorkloadRef(ApiModel):
    """A Deployment the user keeps owning and applying, whose pod template Sluice releases."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": f"self.apiVersion == '{WORKLOAD_API_VERSION}' && self.kind == '{WORKLOAD_KIND}'",
                    "message": WORKLOAD_KIND_MESSAGE,
                }
            ]
        }
    }

    api_version: str = Field(default=WORKLOAD_API_VERSION, description="apps/v1 (the only one supported).")
    kind: str = Field(default=WORKLOAD_KIND, description="Deployment (the only one supported).")
    name: str = Field(min_length=1, max_length=253, description="The Deployment, in the Rollout's namespace.")

    @model_validator(mode="after")
    def _a_deployment(self) -> WorkloadRef:
        if (self.api_version, self.kind) != (WORKLOAD_API_VERSION, WORKLOAD_KIND):
            raise ValueError(f"{WORKLOAD_KIND_MESSAGE}, not {self.api_version} {self.kind}")
        return self


Provider = TypeVar("Provider", TrafficProvider, MetricProvider)
Base = TypeVar("Base", bound=ApiModel)


def with_provider_blocks(base: type[Base], providers: Mapping[str, Provider], doc: str) -> type[Base]:
    """`base` with one optional field per registered provider, named (and aliased) by its field."""
    fields: dict[str, Any] = {
        name: (provider.config_model | None, Field(default=None, alias=name))
        for name, provider in providers.items()
    }
    return create_model(
        base.__name__.removesuffix("Base"), __base__=base, __module__=__name__, __doc__=doc, **fields
    )


def provider_blocks(model: ApiModel, providers: Mapping[str, Provider]) -> list[tuple[Provider, Any]]:
    """The providers whose block `model` has, with the block, in registry order."""
    return [
        (p, getattr(model, name)) for name, p in providers.items() if getattr(model, name, None) is not None
    ]


class TrafficBase(ApiModel):
    """Exactly one traffic provider. Without `traffic`, weights follow replica counts.

    The fields are the registered providers' blocks (`operators.traffic.registry`),
    added by `_traffic_model` below: one per provider, named by its `field`.
    """

    model_config = {"json_schema_extra": {"minProperties": 1, "maxProperties": 1}}

    @model_validator(mode="after")
    def _exactly_one(self) -> TrafficBase:
        configured = provider_blocks(self, TRAFFIC_PROVIDERS)
        if len(configured) != 1:
            known = ", ".join(TRAFFIC_PROVIDERS)
            raise ValueError(f"traffic needs exactly one provider ({known}), got {len(configured)}")
        return self

    def provider(self) -> tuple[TrafficProvider, Any]:
        """The configured provider and its configuration block."""
        (configured,) = provider_blocks(self, TRAFFIC_PROVIDERS)  # the validator ensures exactly one
        return configured


if TYPE_CHECKING:
    Traffic = TrafficBase
else:
    Traffic = with_provider_blocks(
        TrafficBase,
        TRAFFIC_PROVIDERS,
        "Exactly one traffic provider. Without `traffic`, weights follow replica counts.",
    )


class Pause(ApiModel):
    """Hold the release: for `duration`, or until promoted when no duration is given."""

    duration: Duration | None = None


STEP_KINDS = "setWeight, pause, setHeaderRoute or setMirrorRoute"


class Step(ApiModel):
    """One canary step: exactly one of setWeight, pause, setHeaderRoute or setMirrorRoute."""

    model_config = {"json_schema_extra": {"minProperties": 1, "maxProperties": 1}}

    set_weight: int | None = Field(
        default=None, ge=0, le=100, description="Percent of traffic to the canary."
    )
    pause: Pause | None = None
    set_header_route: HeaderRoute | None = Field(
        default=None,
        description="From this step on, requests that match go to the canary only (a traffic provider is "
        "needed); without matches, the header route of that name is removed.",
    )
    set_mirror_route: MirrorRoute | None = Field(
        default=None,
        description="From this step on, a copy of percent of the matching requests also goes to the canary, "
        "its answers discarded; without percent, the mirror route of that name is removed.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        given = [self.set_weight, self.pause, self.set_header_route, self.set_mirror_route]
        if sum(value is not None for value in given) != 1:
            raise ValueError(f"a step has exactly one of {STEP_KINDS}")
        return self

    def sets_routes(self) -> bool:
        return self.set_header_route is not None or self.set_mirror_route is not None


class ThresholdRange(ApiModel):
    """The SLO: a value outside [min, max] fails the check."""

    model_config = {"json_schema_extra": {"minProperties": 1}}

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> ThresholdRange:
        if self.min is None and self.max is None:
            raise ValueError("thresholdRange needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"thresholdRange min {self.min} is above max {self.max}")
        return self


COMPARE_NEEDS_A_LIMIT = "compare needs maxIncrease, maxRatio or both"


class Compare(ApiModel):
    """Canary against stable: one query asked of both tracks, the canary judged by the stable's value.

    Higher is worse (an error rate, a latency): the canary passes while its value
    is at most the stable's plus maxIncrease and, when given, at most maxRatio
    times the stable's.
    """

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "has(self.maxIncrease) || has(self.maxRatio)", "message": COMPARE_NEEDS_A_LIMIT}
            ]
        }
    }

    against: Literal["stable"] = Field(default="stable", description="The track to compare with.")
    max_increase: float | None = Field(
        default=None, ge=0, description="How much higher than the stable's the canary's value may be."
    )
    max_ratio: float | None = Field(
        default=None, gt=0, description="How many times the stable's value the canary's may be at most."
    )

    @model_validator(mode="after")
    def _a_limit(self) -> Compare:
        if self.max_increase is None and self.max_ratio is None:
            raise ValueError(COMPARE_NEEDS_A_LIMIT)
        return self


class NoDataPolicy(StrEnum):
    INCONCLUSIVE = "inconclusive"
    FAIL = "fail"
    PASS = "pass"


# A metric has a query, or a template, or the block of a provider that takes neither (`web`).
_METRIC_SOURCES: list[Any] = [
    {"required": ["query"]},
    {"required": ["template"]},
    *[{"required": [field]} for field, p in METRIC_PROVIDERS.items() if not takes_query(p)],
]

VERDICT_NEEDED = "a metric needs thresholdRange, compare or both"

# A job metric (`job: {spec}`) passes when its Job succeeds: its thresholdRange defaults to {min: 1}.
JOB_METRIC_FIELD = "job"
JOB_METRIC_THRESHOLD = {"min": 1}


class MetricBase(ApiModel):
    """One health check: a Jinja2 `query`, or a built-in `template` with `args`, asked of one provider.

    The provider blocks (`prometheus: {...}`, one per registered provider in
    `operators.metrics.registry`) are added by `_metric_model` below; at most
    one is given, and none means the default provider with its defaults.
    """

    model_config = {
        "json_schema_extra": {
            "oneOf": _METRIC_SOURCES,
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.thresholdRange) || has(self.compare) || has(self.job)",
                    "message": VERDICT_NEEDED,
                }
            ],
        }
    }

    name: str = Field(min_length=1)
    query: str | None = Field(default=None, description="The query as a sandboxed Jinja2 template.")
    template: str | None = Field(
        default=None,
        description="Instead of query: a MetricTemplate in the Rollout's namespace, else a "
        "ClusterMetricTemplate, else a built-in template, of this name.",
    )
    args: dict[str, str] = Field(default_factory=dict, description="Extra template variables, as `args`.")
    threshold_range: ThresholdRange | None = Field(
        default=None, description="The canary's value must be inside it (optional with compare)."
    )
    compare: Compare | None = Field(
        default=None, description="The canary's value judged against the stable's, by the same query."
    )
    no_data: NoDataPolicy = NoDataPolicy.INCONCLUSIVE
    dry_run: bool = Field(
        default=False,
        description="Evaluated and recorded (status, Events), but never gates the release or rolls it back.",
    )

    @model_validator(mode="before")
    @classmethod
    def _job_threshold(cls, data: Any) -> Any:
        """A job metric passes when its Job succeeds (value 1) unless it says otherwise."""
        given = isinstance(data, dict) and ("thresholdRange" in data or "threshold_range" in data)
        if isinstance(data, dict) and data.get(JOB_METRIC_FIELD) is not None and not given:
            return {**data, "thresholdRange": JOB_METRIC_THRESHOLD}
        return data

    @model_validator(mode="after")
    def _query_or_template(self) -> MetricBase:
        given = provider_blocks(self, METRIC_PROVIDERS)
        queryless = [p.field for p, _ in given if not takes_query(p)]
        if queryless and (self.query is not None or self.template is not None):
            raise ValueError(f"metric {self.name!r}: a {queryless[0]} metric takes no query or template")
        if queryless and self.compare is not None:  # one answer, whatever the track: nothing to compare
            raise ValueError(f"metric {self.name!r}: a {queryless[0]} metric cannot compare against stable")
        if not queryless and (self.query is None) == (self.template is None):
            raise ValueError(f"metric {self.name!r} needs exactly one of query or template")
        if len(given) > 1:
            names = ", ".join(provider.field for provider, _ in given)
            raise ValueError(f"metric {self.name!r} names more than one provider: {names}")
        if self.threshold_range is None and self.compare is None:
            raise ValueError(f"metric {self.name!r}: {VERDICT_NEEDED}")
        return self

    def source(self) -> tuple[MetricProvider, Any]:
        """The provider this metric asks, and its block (the default provider's defaults if none)."""
        for provider, config in provider_blocks(self, METRIC_PROVIDERS):
            return provider, config
        provider = METRIC_PROVIDERS[DEFAULT_METRIC_PROVIDER]
        return provider, provider.config_model()


if TYPE_CHECKING:
    Metric = MetricBase
else:
    Metric = with_provider_blocks(
        MetricBase,
        METRIC_PROVIDERS,
        "One health query: a Jinja2 `query`, or a built-in `template` with `args`, asked of one provider.",
    )


class Analysis(ApiModel):
    """Background analysis: runs from the first non-zero weight until promotion."""

    interval: Duration = "60s"
    failure_limit: int = Field(default=0, ge=0)
    inconclusive_limit: int = Field(default=3, ge=0)
    error_limit: int = Field(default=4, ge=0)
    min_checks_per_step: int = Field(default=1, ge=0)
    min_requests: int | None = Field(
        default=None,
        ge=1,
        description="A check whose canary served fewer requests (http_requests_total) in its window is "
        "Inconclusive, never Passed.",
    )
    metrics: list[Metric] = Field(min_length=1)

    @model_validator(mode="after")
    def _interval_at_least_a_second(self) -> Analysis:
        if parse_duration(self.interval).total_seconds() < 1:
            raise ValueError(f"analysis interval {self.interval} is below the minimum of 1s")
        names = [m.name for m in self.metrics]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"metric names must be unique: {', '.join(duplicated)}")
        return self


class PostPromotionAnalysis(Analysis):
    """Analysis after promotion: blue-green's after the switch, while the old pods are still there to
    switch back to; a canary's on the new stable, while the previous revision is kept to roll back to."""

    duration: Duration = Field(
        default="5m",
        description="How long after the switch (or promotion) the checks run before the release completes.",
    )


MATCH_WEIGHT = "matchWeight"


class Canary(ApiModel):
    """The canary strategy: explicit steps, or the shorthand stepWeight + maxWeight."""

    model_config = {"json_schema_extra": {"oneOf": [{"required": ["steps"]}, {"required": ["stepWeight"]}]}}

    steps: list[Step] | None = Field(default=None, min_length=1)
    step_weight: int | None = Field(default=None, ge=1, le=100)
    max_weight: int | None = Field(default=None, ge=1, le=100)
    canary_replicas: int | str = Field(
        default=MATCH_WEIGHT,
        description='"matchWeight" (canary pods in proportion to its weight) or a fixed number.',
        json_schema_extra=INT_OR_STRING,
    )
    abort_scale_down_delay_seconds: int = Field(default=30, ge=0)
    analysis: Analysis | None = None
    post_promotion_analysis: PostPromotionAnalysis | None = Field(
        default=None,
        description="Checks of the new stable for `duration` after promotion (`canary.*` in queries then "
        "names the stable Service); a failure rolls the stable back to the previous revision.",
    )
    hooks: Hooks | None = Field(
        default=None, description="Web calls before the canary gets traffic, before promotion, and after."
    )

    @model_validator(mode="after")
    def _check(self) -> Canary:
        if (self.steps is None) == (self.step_weight is None):
            raise ValueError("canary needs exactly one of steps or stepWeight")
        if self.max_weight is not None and self.step_weight is None:
            raise ValueError("maxWeight goes with stepWeight")
        if isinstance(self.canary_replicas, str) and self.canary_replicas != MATCH_WEIGHT:
            raise ValueError(
                f'canaryReplicas must be "{MATCH_WEIGHT}" or a number, not {self.canary_replicas!r}'
            )
        if isinstance(self.canary_replicas, int) and self.canary_replicas < 0:
            raise ValueError("canaryReplicas cannot be negative")
        return self

    def effective_steps(self) -> list[Step]:
        """The explicit steps, or the ones the stepWeight/maxWeight shorthand stands for.

        The shorthand climbs by stepWeight up to maxWeight (default 100), each
        weight followed by a wait of one analysis interval when analysis is set.
        """
        if self.steps is not None:
            return self.steps
        assert self.step_weight is not None
        top = self.max_weight or 100
        weights = [*range(self.step_weight, top, self.step_weight), top]
        steps: list[Step] = []
        for weight in weights:
            steps.append(Step(set_weight=weight))
            if self.analysis is not None and weight < 100:
                steps.append(Step(pause=Pause(duration=self.analysis.interval)))
        if weights[-1] < 100:
            steps.append(Step(set_weight=100))
        return steps


BLUE_GREEN_PREVIEW_SUFFIX = "-preview"


class BlueGreen(ApiModel):
    """The blue-green strategy: the new version runs at full size behind a preview Service, then the
    active (stable) Service switches to it in one write; all requests go to all-old or all-new pods."""

    preview_service: str | None = Field(
        default=None,
        max_length=63,
        pattern=NAME_PATTERN,
        description=f"The Service in front of the new version before the switch (default <name>"
        f"{BLUE_GREEN_PREVIEW_SUFFIX}); analysis and test traffic read it.",
    )
    auto_promotion_seconds: int | None = Field(
        default=None,
        ge=0,
        description="Switch this many seconds after the new version is ready and its pre-promotion "
        "analysis passed. Absent: wait for the sluice.dev/promote annotation.",
    )
    pre_promotion_analysis: Analysis | None = Field(
        default=None, description="Checks of the preview that must pass before the switch."
    )
    post_promotion_analysis: PostPromotionAnalysis | None = Field(
        default=None, description="Checks after the switch; a failure switches back to the old pods."
    )
    scale_down_delay_seconds: int = Field(
        default=30,
        ge=0,
        description="How long the old pods are kept after the switch (and the new ones after a rollback).",
    )


STRATEGY_ONE_OF = "strategy needs exactly one of canary and blueGreen"


class Strategy(ApiModel):
    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "has(self.canary) != has(self.blueGreen)", "message": STRATEGY_ONE_OF}
            ]
        }
    }

    canary: Canary | None = None
    blue_green: BlueGreen | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Strategy:
        if (self.canary is None) == (self.blue_green is None):
            raise ValueError(STRATEGY_ONE_OF)
        return self

    @property
    def name(self) -> str:
        """What `kubectl get rollouts` shows in its Strategy column."""
        return "BlueGreen" if self.blue_green is not None else "Canary"


TEMPLATE_OR_WORKLOAD = (
    "set exactly one of template (the pods, written here) and workloadRef (an existing Deployment "
    "whose pod template Sluice releases)"
)


HEADER_ROUTES_NEED_TRAFFIC = (
    "setHeaderRoute and setMirrorRoute steps route requests with a traffic provider: set traffic "
    "(e.g. {gatewayAPI: {}})"
)


class RolloutSpec(ApiModel):
    # CEL, checked by the API server (kubectl apply fails with this message).
    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.traffic) || has(self.service)",
                    "message": "traffic routes to the Rollout's Services: set service (e.g. {port: 80})",
                },
                {"rule": "has(self.template) != has(self.workloadRef)", "message": TEMPLATE_OR_WORKLOAD},
            ]
        }
    }

    replicas: int = Field(default=1, ge=0)
    selector: LabelSelector | None = Field(
        default=None,
        description="Extra labels that select this Rollout's pods (they must be on the template). "
        "Sluice always selects by its own sluice.dev/rollout label as well.",
    )
    template: dict[str, Any] | None = Field(default=None, json_schema_extra=POD_TEMPLATE_SCHEMA)
    workload_ref: WorkloadRef | None = Field(
        default=None,
        description="Instead of template: a Deployment you keep applying. Its pod template is what "
        "Sluice releases; Sluice takes its traffic over with zero downtime, scales it to 0, and "
        "hands it back (scaled up, serving) when the Rollout is deleted.",
    )
    service: ServiceSpec | None = Field(
        default=None,
        description="Services <name> (stable) and <name>-canary in front of the pods. Without it, no "
        "Services (a worker that serves no requests); traffic providers need it.",
    )
    traffic: Traffic | None = None
    paused: bool = Field(default=False, description="User intent: hold the release at its current step.")
    progress_deadline_seconds: int = Field(default=600, ge=1)
    strategy: Strategy
    notifications: Notifications | None = Field(
        default=None,
        description="Tell chat rooms and webhooks about this Rollout's releases (targets in a Secret).",
    )

    @model_validator(mode="after")
    def _traffic_needs_service(self) -> RolloutSpec:
        if self.traffic is not None and self.service is None:
            raise ValueError("traffic routes to the Rollout's Services: set service (e.g. {port: 80})")
        canary_steps = self.strategy.canary.steps if self.strategy.canary is not None else None
        if any(step.sets_routes() for step in canary_steps or []):
            if self.traffic is None:
                raise ValueError(HEADER_ROUTES_NEED_TRAFFIC)
            provider, _ = self.traffic.provider()
            if not provider.supports_routes:
                raise ValueError(
                    "setHeaderRoute and setMirrorRoute steps are not supported with "
                    f"traffic.{provider.field} yet: use traffic.gatewayAPI"
                )
        if (self.template is None) == (self.workload_ref is None):
            raise ValueError(TEMPLATE_OR_WORKLOAD)
        return self


class Phase(StrEnum):
    INITIALIZING = "Initializing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    ABORTED = "Aborted"


class Outcome(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class MetricResult(ApiModel):
    name: str
    outcome: Outcome
    value: float | None = None
    stable_value: float | None = Field(default=None, description="The stable's value (compare metrics).")
    dry_run: bool | None = Field(
        default=None, description="True: a dry-run metric, recorded only, not counted in the check's outcome."
    )
    message: str = ""


class Check(ApiModel):
    time: str
    outcome: Outcome
    metrics: list[MetricResult] = Field(default_factory=list)
    canary_requests: float | None = Field(
        default=None, description="Requests the canary served in the check's window (with minRequests)."
    )


class AnalysisStatus(ApiModel):
    passed: int = 0
    failed: int = 0
    inconclusive: int = 0
    consecutive_errors: int = 0
    passed_at_step: int = Field(default=0, description="Passing checks since the canary weight last changed.")
    last_check: Check | None = None


class ReplicaStatus(ApiModel):
    stable: int = 0
    canary: int = 0
    canary_ready: int = 0
    total: int = Field(
        default=0,
        description="Pods of both tracks, stable and canary, that exist: the scale subresource's "
        "status.replicas (what `kubectl get --subresource=scale` and an autoscaler read).",
    )


class AdoptionPhase(StrEnum):
    # Recorded and marked; Sluice's stable pods start next to the original ones.
    STARTING = "Starting"
    # Sluice's stable pods are ready: the adopted Service now selects them only.
    SERVICE_MOVED = "ServiceMoved"
    # The user's Deployment is scaled to 0: Sluice serves the workload.
    ADOPTED = "Adopted"


class AdoptionStatus(ApiModel):
    """What Sluice took over, as it found it: enough to hand everything back on deletion."""

    phase: AdoptionPhase = AdoptionPhase.STARTING
    deployment: str | None = Field(default=None, description="The adopted Deployment (workloadRef).")
    replicas: int | None = Field(default=None, description="Its spec.replicas before it was adopted.")
    service: str | None = Field(default=None, description="The adopted Service (not created by Sluice).")
    service_selector: dict[str, str] | None = Field(
        default=None, description="Its spec.selector before it was adopted, put back on handback."
    )


class HistoryEntry(ApiModel):
    time: str
    action: str
    revision: str | None = None
    message: str = ""


CommandName = Literal["promote", "promote-full", "abort", "retry", "restart"]


class PostPromotionStatus(ApiModel):
    """A canary release promoted and under postPromotionAnalysis."""

    promoted_at: str = Field(description="When the stable Deployment finished taking the new revision.")
    previous_revision: str = Field(description="The revision to roll the stable back to if a check fails.")


class RolloutStatus(ApiModel):
    # Status is written by the operator only; unknown keys from older versions are kept.
    model_config = {"extra": "ignore"}

    observed_generation: int | None = None
    phase: Phase | None = None
    stable_revision: str | None = None
    canary_revision: str | None = None
    current_step_index: int | None = None
    canary_weight: int = 0
    routed_canary_weight: int | None = Field(
        default=None,
        description="What the route sends the canary while it differs from canaryWeight: a track with no "
        "ready pods gets no traffic until it has some again.",
    )
    step_started_at: str | None = Field(default=None, description="When the current step began.")
    weight_changed_at: str | None = Field(
        default=None, description="When the canary weight last changed: checks at a weight start from here."
    )
    aborted_at: str | None = Field(default=None, description="When the canary lost its traffic.")
    header_routes: list[HeaderRoute] = Field(
        default_factory=list, description="The header routes in force (setHeaderRoute steps), in order."
    )
    mirror_routes: list[MirrorRoute] = Field(
        default_factory=list, description="The mirror routes in force (setMirrorRoute steps), in order."
    )
    replicas: ReplicaStatus = Field(default_factory=ReplicaStatus)
    adoption: AdoptionStatus | None = Field(
        default=None, description="The Deployment and Service this Rollout adopted, and how far."
    )
    selector: str | None = Field(
        default=None,
        description="The label selector of all this Rollout's pods, both tracks, as text (app=web,"
        "sluice.dev/rollout=web): the scale subresource's status.selector, by which an HPA finds the pods "
        "whose metrics it reads.",
    )
    analysis: AnalysisStatus = Field(default_factory=AnalysisStatus)
    handled_commands: dict[str, str] = Field(
        default_factory=dict, description="The last value of each sluice.dev/ command annotation acted on."
    )
    history: list[HistoryEntry] = Field(default_factory=list)
    post_promotion: PostPromotionStatus | None = Field(
        default=None, description="Set while a promoted canary release is verified (postPromotionAnalysis)."
    )
    hooks: list[HookRun] = Field(
        default_factory=list,
        description="The lifecycle hooks of the latest release: asked for, then answered.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    strategy: str | None = Field(
        default=None, description="The release strategy, Canary or BlueGreen (a kubectl get column)."
    )
    restarted_at: str | None = Field(
        default=None,
        description="The last sluice.dev/restart: on both Deployments' pod templates, so their pods are "
        "replaced (same revision, no release), as `kubectl rollout restart` does.",
    )
    message: str = ""
