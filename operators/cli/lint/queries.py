"""Do a Rollout's metric queries render, and is what they render PromQL?

Each metric is expanded as the operator expands it (its template looked up among
the MetricTemplates and ClusterMetricTemplates of the files linted, then the
built-ins), rendered by the operator's sandboxed renderer with a sample context
(the Rollout's own name, namespace and interval), and a Prometheus query is
parsed by promql-parser (the Rust `promql-parser` crate, which follows
Prometheus' own grammar).
"""

from __future__ import annotations

import promql_parser

from operators.analysis.template_lookup import TemplateCatalog, TemplateProblem, expand, lookup
from operators.analysis.templates import (
    CANARY_TRACK,
    STABLE_TRACK,
    QueryContext,
    QueryTemplateError,
    Track,
    render_query,
)
from operators.api.rollout import CANARY_SUFFIX, Metric, RolloutSpec
from operators.cli.lint.analyses import analyses
from operators.cli.lint.documents import Document, FieldPath, Finding, Severity
from operators.metrics.base import takes_query
from operators.metrics.registry import DEFAULT_PROVIDER

PROMETHEUS = DEFAULT_PROVIDER  # the provider whose queries are PromQL
SAMPLE_REVISION = "5d8f7c9b4"


def sample_context(name: str, namespace: str, interval: str) -> QueryContext:
    """What a query is rendered with in the cluster, with the values this Rollout would have."""
    return QueryContext(
        namespace=namespace,
        rollout_name=name,
        canary_service=f"{name}{CANARY_SUFFIX}",
        stable_service=name,
        canary_revision=SAMPLE_REVISION,
        stable_revision=SAMPLE_REVISION,
        interval=interval,
    )


def check_queries(
    document: Document, name: str, namespace: str, spec: RolloutSpec, catalog: TemplateCatalog
) -> list[Finding]:
    findings: list[Finding] = []
    for path, analysis in analyses(spec):
        context = sample_context(name, namespace, analysis.interval)
        for index, metric in enumerate(analysis.metrics):
            findings += _check_metric(document, (*path, "metrics", index), metric, context, catalog)
    return findings


def _check_metric(
    document: Document, path: FieldPath, metric: Metric, context: QueryContext, catalog: TemplateCatalog
) -> list[Finding]:
    source = (*path, "query" if metric.query is not None else "template")
    if metric.template is not None and metric.query is None:
        try:
            found = lookup(context.namespace, metric.template, catalog)
        except TemplateProblem as problem:
            return [document.finding(source, Severity.ERROR, f'metric "{metric.name}": {problem}')]
        if found is None:
            message = (
                f'metric "{metric.name}": template "{metric.template}" is neither built in nor defined in '
                "the files linted: it must exist in the cluster (its query is not checked)"
            )
            return [document.finding(source, Severity.WARNING, message)]
        metric = expand(metric, context.namespace, catalog)
    provider, _ = metric.source()
    if not takes_query(provider):
        return []
    tracks: list[Track] = [CANARY_TRACK, STABLE_TRACK] if metric.compare is not None else [CANARY_TRACK]
    for track in tracks:
        try:
            query = render_query(metric, context, track)
        except QueryTemplateError as error:
            return [document.finding(source, Severity.ERROR, str(error))]
        unparsed = promql_problem(query) if provider.field == PROMETHEUS else None
        if unparsed is not None:
            message = f'metric "{metric.name}": the rendered query is not valid PromQL: {unparsed}'
            return [document.finding(source, Severity.ERROR, message)]
    return []


def promql_problem(query: str) -> str | None:
    """Why `query` is not PromQL (the parser's words), or None when it parses."""
    try:
        promql_parser.parse(query)
    except Exception as error:  # ValueError with the parser's words; anything else is still a no
        return str(error) or "invalid query"
    return None
