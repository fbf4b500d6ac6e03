"""MetricTemplate and ClusterMetricTemplate: models and CRDs, the lookup order, the expanded metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from operators.analysis.check import MetricSources, validate_metrics
from operators.analysis.template_lookup import (
    BUILTIN,
    TemplateCatalog,
    TemplateProblem,
    expand,
    expand_all,
    lookup,
    uses_templates,
)
from operators.analysis.templates import QueryContext, QueryTemplateError, grouped_query, render_query
from operators.api.crdgen import build_crd
from operators.api.metrictemplate import MetricTemplateSpec
from operators.api.resources import CLUSTER_METRIC_TEMPLATE, METRIC_TEMPLATE
from operators.api.rollout import Metric, RolloutSpec
from operators.metrics.base import takes_query
from operators.metrics.hosts import AllowedHosts
from operators.metrics.registry import PROVIDERS
from tests.unit.test_examples import schema_validator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "analysis" / "metric-template.yaml"
RESOURCE_OF = {"MetricTemplate": METRIC_TEMPLATE, "ClusterMetricTemplate": CLUSTER_METRIC_TEMPLATE}
CONTEXT = QueryContext("shop", "web", "web-canary", "web", "abc123", "30s")
ERRORS = 'sum(rate(errors_total{service="{{ canary.service }}",code=~"{{ args.codes }}"}[{{ interval }}]))'


def template(kind: str, name: str, spec: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


def catalog(*bodies: dict[str, Any]) -> TemplateCatalog:
    return TemplateCatalog.of(
        [b for b in bodies if b["kind"] == "MetricTemplate"],
        [b for b in bodies if b["kind"] == "ClusterMetricTemplate"],
    )


def metric(template_name: str, **extra: Any) -> Metric:
    return Metric.model_validate(
        {"name": "errors", "template": template_name, "thresholdRange": {"max": 0.1}, **extra}
    )


SHOP = template("MetricTemplate", "errors", {"query": "shop_errors", "args": {"codes": "5.."}}, "shop")
CLUSTER = template("ClusterMetricTemplate", "errors", {"query": "cluster_errors"})
SHADOWING_BUILTIN = template("ClusterMetricTemplate", "request-error-rate", {"query": "ours"})


# ---- the lookup order ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "name", "bodies", "origin", "query"),
    [
        ("shop", "errors", [SHOP, CLUSTER], "MetricTemplate shop/errors", "shop_errors"),
        # Another namespace's template is not this one's: the cluster's is.
        ("blog", "errors", [SHOP, CLUSTER], "ClusterMetricTemplate errors", "cluster_errors"),
        (
            "shop",
            "request-error-rate",
            [SHADOWING_BUILTIN],
            "ClusterMetricTemplate request-error-rate",
            "ours",
        ),
        ("shop", "request-error-rate", [SHOP, CLUSTER], BUILTIN, None),
    ],
    ids=["namespace-first", "then-cluster", "cluster-shadows-builtin", "then-builtin"],
)
def test_lookup_order(
    namespace: str, name: str, bodies: list[dict[str, Any]], origin: str, query: str | None
) -> None:
    found = lookup(namespace, name, catalog(*bodies))
    assert found is not None and found.origin == origin
    assert (found.spec.query if found.spec else None) == query


def test_lookup_of_a_template_that_is_nowhere() -> None:
    assert lookup("blog", "errors", catalog(SHOP)) is None


def test_a_missing_template_says_where_it_was_looked_for() -> None:
    with pytest.raises(TemplateProblem) as raised:
        expand(metric("erors"), "shop", catalog(SHOP, CLUSTER))
    assert str(raised.value) == (
        'metric "errors": unknown template "erors": no MetricTemplate "erors" in namespace "shop", '
        'no ClusterMetricTemplate "erors", and no built-in template of that name '
        "(request-count, request-duration-p99, request-error-rate, slo-burn-rate)"
    )


def test_an_invalid_template_is_reported_and_not_passed_over_for_a_farther_one() -> None:
    # Valid for the CRD (a sandbox without the schema, or a newer operator's field), not for the model.
    broken = template("MetricTemplate", "errors", {"query": ""}, "shop")
    with pytest.raises(TemplateProblem) as raised:
        expand(metric("errors"), "shop", catalog(broken, CLUSTER))
    message = str(raised.value)
    assert message.startswith('metric "errors": MetricTemplate shop/errors is invalid: spec.query')


# ---- the expanded metric ------------------------------------------------------------------------


def test_expanded_metric_has_the_templates_query_and_args_under_its_own() -> None:
    found = template(
        "MetricTemplate", "errors", {"query": ERRORS, "args": {"codes": "5..", "x": "1"}}, "shop"
    )
    expanded = expand(metric("errors", args={"codes": "4.."}), "shop", catalog(found))
    assert expanded.query == ERRORS and expanded.args == {"codes": "4..", "x": "1"}
    assert expanded.name == "errors" and expanded.threshold_range.max == 0.1 and expanded.template == "errors"
    assert render_query(expanded, CONTEXT) == (
        'sum(rate(errors_total{service="web-canary",code=~"4.."}[30s]))'
    )


def test_a_user_template_is_one_query_per_rollout_never_grouped() -> None:
    shadow = template(
        "MetricTemplate", "request-error-rate", {"query": ERRORS, "args": {"codes": "5.."}}, "shop"
    )
    builtin = metric("request-error-rate")
    assert grouped_query(builtin, CONTEXT) is not None
    assert grouped_query(expand(builtin, "shop", catalog(shadow)), CONTEXT) is None


def test_builtins_and_inline_queries_are_left_as_they_are() -> None:
    builtin = metric("request-error-rate")
    inline = Metric.model_validate({"name": "q", "query": "up", "thresholdRange": {"min": 1}})
    assert expand(builtin, "shop", catalog(CLUSTER)) is builtin
    assert expand(inline, "shop", catalog(CLUSTER)) is inline
    assert not uses_templates([inline]) and uses_templates([inline, builtin])


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        ({}, "http://tenant-prometheus:9090"),
        ({"prometheus": {"address": "http://mine:9090"}}, "http://mine:9090"),
    ],
    ids=["templates-block", "metrics-own-block-wins"],
)
def test_provider_block(own: dict[str, Any], expected: str) -> None:
    found = template(
        "ClusterMetricTemplate",
        "errors",
        {"query": "up", "prometheus": {"address": "http://tenant-prometheus:9090"}},
    )
    expanded = expand(metric("errors", **own), "shop", catalog(found))
    provider, config = expanded.source()
    assert provider.field == "prometheus" and provider.address(config) == expected


def test_a_template_that_does_not_render_names_metric_and_template() -> None:
    found = template("MetricTemplate", "errors", {"query": "{{ canry.service }}"}, "shop")
    expanded = expand(metric("errors"), "shop", catalog(found))
    with pytest.raises(QueryTemplateError) as raised:
        render_query(expanded, CONTEXT)
    assert str(raised.value).startswith('metric "errors" (template "errors"): ')
    assert "'canry'" in str(raised.value)
    assert validate_metrics([expanded], CONTEXT, MetricSources())[0].startswith('metric "errors" (template')


def test_expand_all_keeps_order_and_reports_each_problem() -> None:
    metrics = [metric("errors"), metric("nope"), metric("request-error-rate")]
    expanded, problems = expand_all(metrics, "shop", catalog(SHOP))
    assert [m.query for m in expanded] == ["shop_errors", None]
    assert len(problems) == 1 and 'unknown template "nope"' in problems[0]


def test_a_check_keeps_the_metric_it_started_with() -> None:
    """The expanded metric is a copy: a catalog read later (a changed template) does not change it."""
    first = expand(metric("errors"), "shop", catalog(SHOP))
    changed = template("MetricTemplate", "errors", {"query": "changed"}, "shop")
    second = expand(metric("errors"), "shop", catalog(changed))
    assert (first.query, second.query) == ("shop_errors", "changed")


# ---- the models and the CRDs ----------------------------------------------------------------------


def test_spec_needs_a_query() -> None:
    with pytest.raises(ValidationError):
        MetricTemplateSpec.model_validate({"args": {"a": "b"}})


def test_spec_refuses_unknown_fields_such_as_a_verdict() -> None:
    with pytest.raises(ValidationError):
        MetricTemplateSpec.model_validate({"query": "up", "thresholdRange": {"max": 1}})


def test_spec_has_a_block_per_registered_provider_that_takes_a_query() -> None:
    spec = MetricTemplateSpec.model_validate({"query": "up", "prometheus": {"address": "http://p:9090"}})
    given = spec.provider_block()
    assert given is not None and given[0].field == "prometheus"
    properties = build_crd(METRIC_TEMPLATE)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    queried = {name for name, provider in PROVIDERS.items() if takes_query(provider)}
    assert queried and queried <= set(properties["spec"]["properties"])
    # A web or job block says it all: a template (a query) has no place for one.
    assert not (set(PROVIDERS) - queried) & set(properties["spec"]["properties"])


@pytest.mark.parametrize(
    ("resource", "scope", "kind"),
    [
        (METRIC_TEMPLATE, "Namespaced", "MetricTemplate"),
        (CLUSTER_METRIC_TEMPLATE, "Cluster", "ClusterMetricTemplate"),
    ],
)
def test_crd_identity(resource: Any, scope: str, kind: str) -> None:
    crd = build_crd(resource)
    assert crd["metadata"]["name"] == f"{kind.lower()}s.sluice.dev"
    assert crd["spec"]["scope"] == scope and crd["spec"]["names"]["kind"] == kind
    assert crd["spec"]["names"]["categories"] == ["sluice"]
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Prometheus"]["jsonPath"] == ".spec.prometheus.address"
    assert columns["Query"]["priority"] == 1 and "Age" in columns


def test_the_examples_templates_are_valid_and_their_rollout_finds_them() -> None:
    documents = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    templates = [d for d in documents if d["kind"] in ("MetricTemplate", "ClusterMetricTemplate")]
    (rollout,) = [d for d in documents if d["kind"] == "Rollout"]
    for body in templates:
        for error in schema_validator(RESOURCE_OF[body["kind"]]).iter_errors(body):
            pytest.fail(f"{body['metadata']['name']}: {error.message}")
    known = TemplateCatalog.of(
        [
            {**d, "metadata": {**d["metadata"], "namespace": "shop"}}
            for d in templates
            if d["kind"] == "MetricTemplate"
        ],
        [d for d in templates if d["kind"] == "ClusterMetricTemplate"],
    )
    spec = RolloutSpec.model_validate(rollout["spec"])
    assert spec.strategy.canary is not None and spec.strategy.canary.analysis is not None
    expanded, problems = expand_all(spec.strategy.canary.analysis.metrics, "shop", known)
    assert not problems and len(expanded) == 3
    assert not validate_metrics(
        expanded, CONTEXT, MetricSources(allowed=AllowedHosts.of(["http://prometheus.monitoring:9090"], []))
    )
