"""The Sluice resource types: what the API server needs to know to serve each one.

One `ResourceType` per kind. The CRDs in ``crds/`` are generated from this
registry (see ``crdgen.py``), so adding a resource is: define its spec and
status models, describe it here, add it to `RESOURCES`, run ``sluice crds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from operators.api import application, metrictemplate, rollout, sidecarset
from operators.api.base import CATEGORY, GROUP

Scope = Literal["Namespaced", "Cluster"]
ColumnType = Literal["string", "integer", "number", "boolean", "date"]


@dataclass(frozen=True)
class PrinterColumn:
    """One column of `kubectl get` output."""

    name: str
    type: ColumnType
    json_path: str
    description: str = ""
    # 0 shows in plain `kubectl get`; higher only with `-o wide`.
    priority: int = 0


@dataclass(frozen=True)
class CelRule:
    """One x-kubernetes-validations rule: a CEL expression, and what the API server says when it is false."""

    rule: str
    message: str

    def to_schema(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class ScaleSubresource:
    """Where the ``/scale`` subresource (``kubectl scale``, an HPA, KEDA) reads and writes.

    Each is a JSON path without array notation: the spec's replica count, the status' integer count
    of pods, and a status string holding the pods' label selector (an HPA's metrics need it).
    """

    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str


# Every resource ends with an Age column, as built-in kinds do.
AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class ResourceType:
    """A Sluice kind: its names, scope, models and `kubectl get` columns."""

    kind: str
    plural: str
    singular: str
    scope: Scope
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    short_names: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = (AGE,)
    categories: tuple[str, ...] = (CATEGORY,)
    group: str = GROUP
    # CEL rules (x-kubernetes-validations) on the whole object: the only place one may read
    # metadata.name. Rules about the spec alone belong on the spec model.
    object_rules: tuple[CelRule, ...] = ()
    # The /scale subresource, for a kind that runs a number of pods; None for the others.
    scale: ScaleSubresource | None = None

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        """The CRD's metadata.name, which Kubernetes requires to be `<plural>.<group>`."""
        return f"{self.plural}.{self.group}"

    @property
    def file_name(self) -> str:
        """The file under ``crds/`` that holds this resource's CRD."""
        return f"{self.singular}.yaml"


ROLLOUT = ResourceType(
    kind=rollout.KIND,
    plural=rollout.PLURAL,
    singular=rollout.SINGULAR,
    scope="Namespaced",
    spec_model=rollout.RolloutSpec,
    status_model=rollout.RolloutStatus,
    description=(
        "A Rollout owns one workload and releases new versions of it in canary steps, "
        "advancing only while Prometheus analysis passes and rolling back when it fails."
    ),
    short_names=tuple(rollout.SHORT_NAMES),
    object_rules=(CelRule(**rollout.NAME_RULE),),
    printer_columns=(
        PrinterColumn("Phase", "string", ".status.phase", "Where the release stands."),
        PrinterColumn("Strategy", "string", ".status.strategy", "Canary or BlueGreen."),
        PrinterColumn("Weight", "integer", ".status.canaryWeight", "Percent of traffic on the canary."),
        PrinterColumn("Step", "integer", ".status.currentStepIndex", "Index of the current canary step."),
        PrinterColumn("Stable", "string", ".status.stableRevision", "Revision serving as stable."),
        PrinterColumn("Canary", "string", ".status.canaryRevision", "Revision being released."),
        PrinterColumn("Desired", "integer", ".spec.replicas", "Replicas wanted: what kubectl scale sets.", 1),
        PrinterColumn("Current", "integer", ".status.replicas.total", "Pods of both tracks that exist.", 1),
        AGE,
    ),
    scale=ScaleSubresource(
        spec_replicas_path=".spec.replicas",
        status_replicas_path=".status.replicas.total",
        label_selector_path=".status.selector",
    ),
)

APPLICATION = ResourceType(
    kind=application.KIND,
    plural=application.PLURAL,
    singular=application.SINGULAR,
    scope="Namespaced",
    spec_model=application.ApplicationSpec,
    status_model=application.ApplicationStatus,
    description=(
        "An Application is the GitOps entry point: a list of components, each rendered by its "
        "component type into a Rollout that releases it."
    ),
    short_names=tuple(application.SHORT_NAMES),
    printer_columns=(
        PrinterColumn("Phase", "string", ".status.phase", "Running, Progressing or Degraded."),
        PrinterColumn("Components", "integer", ".status.componentCount", "Components in the spec."),
        PrinterColumn("Ready", "string", ".status.readyComponents", "Ready components out of all."),
        AGE,
    ),
)

SIDECARSET = ResourceType(
    kind=sidecarset.KIND,
    plural=sidecarset.PLURAL,
    singular=sidecarset.SINGULAR,
    scope="Cluster",
    spec_model=sidecarset.SidecarSetSpec,
    status_model=sidecarset.SidecarSetStatus,
    description=(
        "A SidecarSet defines sidecar containers once and injects them into every matching pod: "
        "Rollouts get them at render time (so a sidecar change is released like any other), "
        "other pods through a mutating admission webhook."
    ),
    short_names=tuple(sidecarset.SHORT_NAMES),
    printer_columns=(
        PrinterColumn("Matched", "integer", ".status.matched", "Rollouts and other pods that match."),
        PrinterColumn("Updated", "integer", ".status.updated", "Of those, how many run the revision."),
        PrinterColumn("Ready", "integer", ".status.ready", "Of those, how many are ready."),
        AGE,
    ),
)

# What `kubectl get` shows of a metric template: where it asks (one column per provider that
# names an address), its query with -o wide, and its age.
_TEMPLATE_COLUMNS = (
    *(
        PrinterColumn(name, "string", path, f"Where the {name} block asks; empty: the operator's default.")
        for name, path in metrictemplate.address_columns()
    ),
    PrinterColumn("Query", "string", ".spec.query", "The query template.", 1),
    AGE,
)

METRIC_TEMPLATE = ResourceType(
    kind=metrictemplate.KIND,
    plural=metrictemplate.PLURAL,
    singular=metrictemplate.SINGULAR,
    scope="Namespaced",
    spec_model=metrictemplate.MetricTemplateSpec,
    status_model=metrictemplate.MetricTemplateStatus,
    description=(
        "A MetricTemplate is a metric written once for a namespace: a query, default args and "
        "a provider, named by the metrics of its Rollouts with `template: NAME`."
    ),
    short_names=tuple(metrictemplate.SHORT_NAMES),
    printer_columns=_TEMPLATE_COLUMNS,
)

CLUSTER_METRIC_TEMPLATE = ResourceType(
    kind=metrictemplate.CLUSTER_KIND,
    plural=metrictemplate.CLUSTER_PLURAL,
    singular=metrictemplate.CLUSTER_SINGULAR,
    scope="Cluster",
    spec_model=metrictemplate.MetricTemplateSpec,
    status_model=metrictemplate.MetricTemplateStatus,
    description=(
        "A ClusterMetricTemplate is a metric written once for every namespace: what a "
        "MetricTemplate is, used when the Rollout's namespace has no MetricTemplate of that name."
    ),
    short_names=tuple(metrictemplate.CLUSTER_SHORT_NAMES),
    printer_columns=_TEMPLATE_COLUMNS,
)

# Every resource the operators serve, in the order `sluice crds` writes them.
RESOURCES: tuple[ResourceType, ...] = (
    ROLLOUT,
    APPLICATION,
    SIDECARSET,
    METRIC_TEMPLATE,
    CLUSTER_METRIC_TEMPLATE,
)
