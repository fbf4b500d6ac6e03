"""Which template a metric's `template: NAME` means, and the metric it makes: pure functions.

Looked up in the Rollout's namespace (a MetricTemplate), then cluster-wide (a
ClusterMetricTemplate), then among the built-ins (`templates.BUILTIN_TEMPLATES`):
the nearer one wins, so a team can shadow a cluster's template, and a cluster
a built-in, under the same name.

A metric on a user's template is *expanded* into the metric it stands for: the
template's query, its args under the metric's own, and its provider block unless
the metric gives one. The expanded metric keeps `template` (so that errors name
it) beside the `query` it now has; having a query, it is one query per Rollout,
never grouped by the query fan-in, which knows the labels of built-ins only.

The reconciler expands a Rollout's metrics on every pass and starts a check with
what it expanded then: a template changed afterwards changes the next check,
never the one in flight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from operators.analysis.templates import BUILTIN_TEMPLATES
from operators.api.base import describe_validation_error
from operators.api.metrictemplate import CLUSTER_KIND, KIND, MetricTemplateSpec
from operators.api.rollout import Metric, provider_blocks
from operators.metrics.registry import PROVIDERS as METRIC_PROVIDERS

BUILTIN = "built-in"


@dataclass(frozen=True)
class Found:
    """A template found: where (e.g. ``MetricTemplate shop/errors``), and its spec (None: a built-in)."""

    origin: str
    spec: MetricTemplateSpec | None


@dataclass(frozen=True)
class TemplateCatalog:
    """The templates known: specs, or why one's spec is invalid (a message), by name.

    `namespaced` is keyed by (namespace, name); `cluster` by name.
    """

    namespaced: Mapping[tuple[str, str], MetricTemplateSpec | str] = field(default_factory=dict)
    cluster: Mapping[str, MetricTemplateSpec | str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, namespaced: Iterable[Mapping[str, Any]], cluster: Iterable[Mapping[str, Any]]
    ) -> TemplateCatalog:
        """A catalog of MetricTemplate and ClusterMetricTemplate objects as the API server has them."""
        return cls(
            namespaced={
                (str(meta.get("namespace") or ""), str(meta.get("name"))): _spec(body)
                for body in namespaced
                if (meta := body.get("metadata") or {})
            },
            cluster={str((body.get("metadata") or {}).get("name")): _spec(body) for body in cluster},
        )


def _spec(body: Mapping[str, Any]) -> MetricTemplateSpec | str:
    try:
        return MetricTemplateSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        return describe_validation_error(error)


class TemplateProblem(ValueError):
    """A metric's template is missing or invalid; the message names the metric, the template and where."""


def lookup(namespace: str, name: str, catalog: TemplateCatalog) -> Found | None:
    """The template `name` means in `namespace`, or None when there is none.

    Raises TemplateProblem when the nearest template of that name is invalid
    (a farther one of the same name is not used instead: it would be a surprise).
    """
    candidates: list[tuple[str, MetricTemplateSpec | str | None]] = [
        (f"{KIND} {namespace}/{name}", catalog.namespaced.get((namespace, name))),
        (f"{CLUSTER_KIND} {name}", catalog.cluster.get(name)),
    ]
    for origin, spec in candidates:
        if isinstance(spec, str):
            raise TemplateProblem(f"{origin} is invalid: {spec}")
        if spec is not None:
            return Found(origin, spec)
    return Found(BUILTIN, None) if name in BUILTIN_TEMPLATES else None


def not_found(metric: Metric, namespace: str) -> str:
    """What a metric whose template exists nowhere is told: every place it was looked for."""
    name = metric.template or ""
    builtins = ", ".join(sorted(BUILTIN_TEMPLATES))
    return (
        f'metric "{metric.name}": unknown template "{name}": no {KIND} "{name}" in namespace '
        f'"{namespace}", no {CLUSTER_KIND} "{name}", and no built-in template of that name ({builtins})'
    )


def expand(metric: Metric, namespace: str, catalog: TemplateCatalog) -> Metric:
    """The metric as its template makes it; unchanged for an inline query or a built-in.

    Raises TemplateProblem when the template is missing or invalid.
    """
    if metric.template is None or metric.query is not None:
        return metric
    try:
        found = lookup(namespace, metric.template, catalog)
    except TemplateProblem as problem:
        raise TemplateProblem(f'metric "{metric.name}": {problem}') from None
    if found is None:
        raise TemplateProblem(not_found(metric, namespace))
    if found.spec is None:
        return metric
    update: dict[str, Any] = {"query": found.spec.query, "args": {**found.spec.args, **metric.args}}
    given = found.spec.provider_block()
    if given is not None and not provider_blocks(metric, METRIC_PROVIDERS):
        provider, config = given
        update[provider.field] = config
    return metric.model_copy(update=update)


def expand_all(
    metrics: Sequence[Metric], namespace: str, catalog: TemplateCatalog
) -> tuple[list[Metric], list[str]]:
    """Each metric expanded, and the problems of those that cannot be (left out of the first list)."""
    expanded: list[Metric] = []
    problems: list[str] = []
    for metric in metrics:
        try:
            expanded.append(expand(metric, namespace, catalog))
        except TemplateProblem as problem:
            problems.append(str(problem))
    return expanded, problems


def uses_templates(metrics: Iterable[Metric]) -> bool:
    """Whether any metric names a template (only then are the templates read)."""
    return any(metric.template is not None and metric.query is None for metric in metrics)
