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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from operators.analysis.slo import SloArgsError, burn_rate_query, slo_args
from operators.api.base import parse_duration
from operators.api.rollout import Metric
from operators.templating import renderer
from operators.templating.renderer import TemplateKind
from operators.templating.sandbox import TemplateProblem, Wording

# The variables a template may use, as users write them (also listed in errors).
VARIABLES = (
    "namespace",
    "rollout.name",
    "target.service",
    "target.revision",
    "target.track",
    "canary.service",
    "canary.revision",
    "stable.service",
    "stable.revision",
    "interval",
    "args.<name>",
)

# `target` is the track being asked: the canary, or the stable when a metric compares with it.
_CANARY = 'namespace="{{ namespace }}",service="{{ target.service }}"'

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
# The requests a track served in the check's window: what `analysis.minRequests` counts.
REQUEST_COUNT = "request-count"
_REQUEST_COUNT = f"sum(increase(http_requests_total{{{_CANARY}}}[{{{{ interval }}}}]))"

BUILTIN_TEMPLATES: Mapping[str, str] = {
    "request-error-rate": _ERROR_RATE,
    "request-duration-p99": _DURATION_P99,
    REQUEST_COUNT: _REQUEST_COUNT,
    "slo-burn-rate": burn_rate_query(_CANARY),
}

# --- grouped forms (query fan-in) -------------------------------------------------------------
#
# One query answers the same metric for a whole batch of Rollouts: aggregated
# `by` the labels that tell Rollouts apart, and restricted to the batch's label
# values (`namespace=~"a|b"`) so that Prometheus only touches the series of the
# Rollouts asking. Each Rollout's value is then the series with its own label
# values, and must be exactly what its own query says, edge cases included:
# - no series at all: no group for it, so no data (its own denominator is empty);
# - traffic but no 5xx series: `or vector(0)` has no labels to match a group,
#   so the grouped numerator falls back to the group's own denominator times 0;
# - no requests in the window: 0/0 = NaN in both;
# - the histogram's `by (le)` keeps `le` beside the grouping labels.
# The aggregations sum the same series in the same order (a selector returns
# them sorted by labels), so the values are equal to the bit.

_GROUP_BY = "namespace, service"
_BATCH = 'namespace=~"{{ batch.namespace }}",service=~"{{ batch.service }}"'

_GROUPED_ERROR_RATE = f"""\
(
  sum by ({_GROUP_BY}) (rate(http_requests_total{{{_BATCH},code=~"5.."}}[{{{{ interval }}}}]))
  or
  (sum by ({_GROUP_BY}) (rate(http_requests_total{{{_BATCH}}}[{{{{ interval }}}}])) * 0)
)
/
sum by ({_GROUP_BY}) (rate(http_requests_total{{{_BATCH}}}[{{{{ interval }}}}]))"""

_GROUPED_DURATION_P99 = f"""\
histogram_quantile(0.99, sum by ({_GROUP_BY}, le) (
  rate(http_request_duration_seconds_bucket{{{_BATCH}}}[{{{{ interval }}}}])
))"""

_GROUPED_REQUEST_COUNT = (
    f"sum by ({_GROUP_BY}) (increase(http_requests_total{{{_BATCH}}}[{{{{ interval }}}}]))"
)


@dataclass(frozen=True)
class GroupedTemplate:
    """A template's grouped form: its source, and which label picks a Rollout's series.

    `source` may use only `interval`, `args` and `batch.<label>` (the batch's
    values of that label, as an anchored regular expression): never a Rollout's
    identity, so that every Rollout with the same interval and args renders the
    same text and falls in the same group. `pick` maps each grouping label to
    the variable holding a Rollout's value of it, e.g. ``service: canary.service``.
    """

    source: str
    pick: Mapping[str, str]


# The asked track's series: a compare metric's stable is one more member of the same batch.
_CANARY_SERIES = {"namespace": "namespace", "service": "target.service"}

# Only our built-ins have grouped forms. A user's inline `query:` stays one
# query per Rollout: we cannot know which labels tell its Rollouts apart, nor
# rewrite its text safely. (Shared metric templates, issue #14, could declare one.)
GROUPED_TEMPLATES: Mapping[str, GroupedTemplate] = {
    "request-error-rate": GroupedTemplate(_GROUPED_ERROR_RATE, _CANARY_SERIES),
    "request-duration-p99": GroupedTemplate(_GROUPED_DURATION_P99, _CANARY_SERIES),
    REQUEST_COUNT: GroupedTemplate(_GROUPED_REQUEST_COUNT, _CANARY_SERIES),
    "slo-burn-rate": GroupedTemplate(burn_rate_query(_BATCH, f" by ({_GROUP_BY}) "), _CANARY_SERIES),
}
GROUPED_VARIABLES = ("interval", "args.<name>", "batch.<label>")


def _placeholder(label: str) -> str:
    # Stands for the batch's values of `label` in the rendered text (which is the group's key),
    # replaced when a batch is sent. Rendered from our own templates, next to an interval.
    return f"__sluice_batch_{label}__"


def _promql_alternatives(values: Iterable[str]) -> str:
    """An anchored PromQL regex (RE2) matching exactly these values, as the inside of a "..." string."""
    escaped = (re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value) for value in sorted(set(values)))
    regex = "|".join(escaped)
    return regex.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class GroupedQuery:
    """One Rollout's metric in its grouped form: the group's query and the series that is its own."""

    # Rendered, with a placeholder where each batch's label values go: equal for every Rollout
    # of the group, so it is (with the provider, address and block) the group's key.
    text: str
    labels: tuple[str, ...]
    series: tuple[str, ...]  # this Rollout's values of `labels`

    def for_batch(self, members: Iterable[tuple[str, ...]]) -> str:
        """The query for a batch of Rollouts, given each one's `series`."""
        members = list(members)
        query = self.text
        for index, label in enumerate(self.labels):
            query = query.replace(_placeholder(label), _promql_alternatives(m[index] for m in members))
        return query


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
    stable_revision: str = ""
    # The Rollout's uid: what the Jobs of job metrics name as their owner ("": no owner reference).
    rollout_uid: str = ""


# Which track a query is rendered for: `target.*` in templates.
Track = Literal["canary", "stable"]
CANARY_TRACK: Track = "canary"
STABLE_TRACK: Track = "stable"

# Built-in templates whose args are checked (and completed with defaults) before rendering.
_BUILTIN_ARGS = {"slo-burn-rate": slo_args}


QUERY = TemplateKind(Wording(subject="query", template="query template"), MAX_QUERY_LENGTH)

_PROMQL_DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")


def promql_range(duration: str) -> str:
    """A Sluice duration as a PromQL range: ``30s`` stays, ``1.5m`` (not PromQL) becomes ``90s``."""
    if _PROMQL_DURATION.fullmatch(duration):
        return duration
    millis = round(parse_duration(duration).total_seconds() * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _args(metric: Metric) -> dict[str, str]:
    """The metric's args; a built-in's checked and completed with its defaults (QueryTemplateError)."""
    check = _BUILTIN_ARGS.get(metric.template or "") if metric.query is None else None
    if check is None:
        return dict(metric.args)
    try:
        return check(metric.args)
    except SloArgsError as err:
        raise QueryTemplateError(f'metric "{metric.name}": {err}') from None


def _variables(metric: Metric, context: QueryContext, track: Track = CANARY_TRACK) -> dict[str, Any]:
    """Plain data; each mapping becomes a Namespace (``canary.servce`` is reported by name) in the worker."""
    try:
        interval = promql_range(context.interval)
    except ValueError:
        interval = context.interval  # already a PromQL range we do not parse, e.g. "1d"
    canary = {"service": context.canary_service, "revision": context.canary_revision}
    stable = {"service": context.stable_service, "revision": context.stable_revision}
    return {
        "namespace": context.namespace,
        "rollout": {"name": context.rollout_name},
        "target": {**(stable if track == STABLE_TRACK else canary), "track": track},
        "canary": canary,
        "stable": stable,
        "interval": interval,
        "args": _args(metric),
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


def render_query(metric: Metric, context: QueryContext, track: Track = CANARY_TRACK) -> str:
    """The metric's PromQL for this canary (or `track`); raises QueryTemplateError on any problem."""
    prefix = f'metric "{metric.name}"'
    if metric.template is not None and metric.query is not None:
        prefix += f' (template "{metric.template}")'  # a user's template, expanded: name it too
    try:
        query = renderer.render(QUERY, _source(metric), VARIABLES, _variables(metric, context, track))
    except TemplateProblem as problem:
        raise QueryTemplateError(f"{prefix}: {problem}") from None
    if not query:
        raise QueryTemplateError(f"{prefix}: query renders to an empty string")
    return query


def _lookup(variables: Mapping[str, Any], path: str) -> str:
    value: Any = variables
    for part in path.split("."):
        value = value[part]
    return str(value)


def grouped_query(metric: Metric, context: QueryContext, track: Track = CANARY_TRACK) -> GroupedQuery | None:
    """The metric's grouped form for this canary, or None when it has none (then: one query per Rollout).

    None too when the grouped form does not render (it cannot, for our built-ins:
    a unit test renders them all); the per-Rollout query then says what is wrong.
    """
    grouped = GROUPED_TEMPLATES.get(metric.template or "") if metric.query is None else None
    if grouped is None:
        return None
    try:
        variables = _variables(metric, context, track)
    except QueryTemplateError:
        return None
    labels = tuple(grouped.pick)
    values = {
        "interval": variables["interval"],
        "args": variables["args"],
        "batch": {label: _placeholder(label) for label in labels},
    }
    try:
        text = renderer.render(QUERY, grouped.source, GROUPED_VARIABLES, values)
    except TemplateProblem:
        return None
    series = tuple(_lookup(variables, grouped.pick[label]) for label in labels)
    return GroupedQuery(text=text, labels=labels, series=series)
