"""MetricTemplate (namespaced) and ClusterMetricTemplate (cluster-scoped): a metric written once.

A template's spec is a metric without its name and verdict: the `query`
(Jinja2, rendered in the same sandbox as a Rollout's own), at most one
provider block (`prometheus: {...}` and every other provider registered in
`operators.metrics.registry` that takes a query, added from the registry
exactly as the Rollout's `Metric` gets them) and default `args`. A Rollout's metric names one
with `template: NAME` and adds its own `thresholdRange` (and may override the
args and the provider block). Both kinds share one spec model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from operators.api.base import ApiModel
from operators.api.rollout import provider_blocks, with_provider_blocks
from operators.metrics.base import MetricProvider, takes_query
from operators.metrics.registry import PROVIDERS

# A template is a query: only the providers that take one (not `web` or `job`, whose block says it all).
QUERY_PROVIDERS = {name: provider for name, provider in PROVIDERS.items() if takes_query(provider)}

KIND = "MetricTemplate"
PLURAL = "metrictemplates"
SINGULAR = "metrictemplate"
SHORT_NAMES = ["smt"]

CLUSTER_KIND = "ClusterMetricTemplate"
CLUSTER_PLURAL = "clustermetrictemplates"
CLUSTER_SINGULAR = "clustermetrictemplate"
CLUSTER_SHORT_NAMES = ["csmt"]

# The field of a provider block that says where it asks, shown by `kubectl get`.
ADDRESS_FIELD = "address"


class MetricTemplateSpecBase(ApiModel):
    """A metric without its name and verdict: a Jinja2 `query`, default `args`, at most one provider."""

    query: str = Field(
        min_length=1,
        description="The query as a sandboxed Jinja2 template (the variables of a metric's own query).",
    )
    args: dict[str, str] = Field(
        default_factory=dict, description="Default `args`; a metric's own args override them one by one."
    )

    @model_validator(mode="after")
    def _at_most_one_provider(self) -> MetricTemplateSpecBase:
        given = provider_blocks(self, QUERY_PROVIDERS)
        if len(given) > 1:
            names = ", ".join(provider.field for provider, _ in given)
            raise ValueError(f"a metric template names at most one provider, not {names}")
        return self

    def provider_block(self) -> tuple[MetricProvider, Any] | None:
        """The provider block the template gives, or None (then the metric's, or the default)."""
        given = provider_blocks(self, QUERY_PROVIDERS)
        return given[0] if given else None


if TYPE_CHECKING:
    MetricTemplateSpec = MetricTemplateSpecBase
else:
    MetricTemplateSpec = with_provider_blocks(
        MetricTemplateSpecBase,
        QUERY_PROVIDERS,
        "A metric without its name and verdict: a Jinja2 `query`, default `args`, at most one provider.",
    )


class MetricTemplateStatus(ApiModel):
    """Nothing yet: a template is read when a check starts, and has no state of its own."""


def address_columns() -> list[tuple[str, str]]:
    """(column name, JSON path) of each registered provider's address field, for `kubectl get`."""
    columns = []
    for name, provider in QUERY_PROVIDERS.items():
        fields = provider.config_model.model_fields
        if ADDRESS_FIELD in fields:
            alias = fields[ADDRESS_FIELD].alias or ADDRESS_FIELD
            columns.append((name[:1].upper() + name[1:], f".spec.{name}.{alias}"))
    return columns
