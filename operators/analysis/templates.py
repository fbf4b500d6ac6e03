"""PromQL query templates: built-in ones, and users' own rendered in a Jinja2 sandbox.

Queries come from Rollout specs, i.e. from anyone allowed to create a Rollout.
So they run in Jinja2's sandbox with strict undefined variables: a typo such as
``{{ canry.service }}`` is an error naming the variable, never an empty label
matcher that silently selects every series in the cluster. And they render in
a worker process bounded in time and memory (``operators.templating.renderer``),
never in the operator itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from operators.api.base import parse_duration
from operators.api.rollout import Metric
from operators.templating import renderer
from operators.templating.renderer import TemplateKind
from operators.templating.sandbox import TemplateProblem, Wording

# The variables a template may use, as users write them (also listed in errors).
VARIABLES = (
    "namespace",
    "rollout.name",
    "canary.service",
    "canary.revision",
    "stable.service",
    "interval",
    "args.<name>",
)

_CANARY = 'namespace="{{ namespace }}",service="{{ canary.service }}"'

_ERROR_RATE = f"""\
(
  sum(rate(http_requests_total{{{_CANARY},code=~"5.."}}[{{{{ interval }}}}]))
  or vector(0)
)
/
sum(rate(http_requests_total{{{_CANARY}}}[{{{{ interval }}}}]))"""

_DURATION_P99 = f"""\
histogram_quantile(0.99, sum by (le) (
  rate(http_request_duration_seconds_bucket{{{_CANARY}}}[{{{{ interval }}}}])
))"""

# The error-rate numerator falls back to 0 because many apps only create the
# 5xx series on their first error: without `or vector(0)` a perfectly healthy
# canary would have "no data". No traffic at all still gives no data (an empty
# denominator), which is the truth.
BUILTIN_TEMPLATES: Mapping[str, str] = {
    "request-error-rate": _ERROR_RATE,
    "request-duration-p99": _DURATION_P99,
}

# A rendered query longer than this is a template bug (or an attack), not PromQL.
MAX_QUERY_LENGTH = 64 * 1024


class QueryTemplateError(ValueError):
    """A metric's query cannot be rendered; the message names the metric and the cause."""


@dataclass(frozen=True)
class QueryContext:
    """What a query template can refer to, for one Rollout's current canary.

    Not `args`: each metric has its own (`Metric.args`), and `render_query` takes them from it.
    """

    namespace: str
    rollout_name: str
    canary_service: str
    stable_service: str
    canary_revision: str
    interval: str


QUERY = TemplateKind(Wording(subject="query", template="query template"), MAX_QUERY_LENGTH)

_PROMQL_DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")


def promql_range(duration: str) -> str:
    """A Sluice duration as a PromQL range: ``30s`` stays, ``1.5m`` (not PromQL) becomes ``90s``."""
    if _PROMQL_DURATION.fullmatch(duration):
        return duration
    millis = round(parse_duration(duration).total_seconds() * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _variables(metric: Metric, context: QueryContext) -> dict[str, Any]:
    """Plain data; each mapping becomes a Namespace (``canary.servce`` is reported by name) in the worker."""
    try:
        interval = promql_range(context.interval)
    except ValueError:
        interval = context.interval  # already a PromQL range we do not parse, e.g. "1d"
    return {
        "namespace": context.namespace,
        "rollout": {"name": context.rollout_name},
        "canary": {"service": context.canary_service, "revision": context.canary_revision},
        "stable": {"service": context.stable_service},
        "interval": interval,
        "args": dict(metric.args),
    }


def _source(metric: Metric) -> str:
    if metric.query is not None:
        return metric.query
    template = metric.template or ""
    if template not in BUILTIN_TEMPLATES:
        known = ", ".join(sorted(BUILTIN_TEMPLATES))
        raise QueryTemplateError(
            f'metric "{metric.name}": unknown template "{template}"; built-in templates: {known}'
        )
    return BUILTIN_TEMPLATES[template]


def render_query(metric: Metric, context: QueryContext) -> str:
    """The metric's PromQL for this canary; raises QueryTemplateError on any problem."""
    prefix = f'metric "{metric.name}"'
    try:
        query = renderer.render(QUERY, _source(metric), VARIABLES, _variables(metric, context))
    except TemplateProblem as problem:
        raise QueryTemplateError(f"{prefix}: {problem}") from None
    if not query:
        raise QueryTemplateError(f"{prefix}: query renders to an empty string")
    return query
