"""Query templates: every variable, the built-ins, and each kind of error with its message."""

from __future__ import annotations

from typing import Any

import pytest

from operators.analysis.templates import (
    BUILTIN_TEMPLATES,
    MAX_QUERY_LENGTH,
    QueryContext,
    QueryTemplateError,
    promql_range,
    render_query,
)
from operators.api.rollout import Metric

CONTEXT = QueryContext(
    namespace="shop",
    rollout_name="web",
    canary_service="web-canary",
    stable_service="web",
    canary_revision="7c4e1a2b3f",
    interval="30s",
)
ARGS = {"quantile": "0.95", "items": "x"}


def metric(query: str | None = None, template: str | None = None, **extra: Any) -> Metric:
    extra.setdefault("args", ARGS)
    return Metric(name="error-rate", query=query, template=template, threshold_range={"max": 1}, **extra)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("{{ namespace }}", "shop"),
        ("{{ rollout.name }}", "web"),
        ("{{ canary.service }}", "web-canary"),
        ("{{ canary.revision }}", "7c4e1a2b3f"),
        ("{{ stable.service }}", "web"),
        ("{{ interval }}", "30s"),
        ("{{ args.quantile }}", "0.95"),
        ('{{ args["quantile"] }}', "0.95"),
        # An arg named like a Mapping method is still the arg.
        ("{{ args.items }}", "x"),
        ("{{ args.missing | default('0.99') }}", "0.99"),
        ("{{ args.get('missing', '1') }}", "1"),
        ("{% if canary.revision %}yes{% endif %}", "yes"),
        ("  up  \n", "up"),
    ],
)
def test_variables(query: str, expected: str) -> None:
    assert render_query(metric(query), CONTEXT) == expected


@pytest.mark.parametrize(
    ("interval", "expected"),
    [("30s", "30s"), ("1m30s", "1m30s"), ("500ms", "500ms"), ("1.5m", "90s"), ("0.5s", "500ms")],
)
def test_interval_is_a_promql_range(interval: str, expected: str) -> None:
    assert promql_range(interval) == expected
    context = QueryContext("ns", "r", "r-canary", "r", "abc", interval)
    assert render_query(metric("{{ interval }}"), context) == expected


def test_builtin_error_rate() -> None:
    query = render_query(metric(template="request-error-rate"), CONTEXT)
    assert 'http_requests_total{namespace="shop",service="web-canary",code=~"5.."}[30s]' in query
    assert 'http_requests_total{namespace="shop",service="web-canary"}[30s]' in query
    assert "or vector(0)" in query
    assert "{{" not in query


def test_builtin_duration_p99() -> None:
    query = render_query(metric(template="request-duration-p99"), CONTEXT)
    assert query.startswith("histogram_quantile(0.99, sum by (le) (")
    assert 'http_request_duration_seconds_bucket{namespace="shop",service="web-canary"}[30s]' in query


def test_builtins_exported() -> None:
    assert set(BUILTIN_TEMPLATES) == {
        "request-error-rate",
        "request-duration-p99",
        "request-count",
        "slo-burn-rate",
    }


@pytest.mark.parametrize(
    ("query", "template", "messages"),
    [
        pytest.param(
            None,
            "request-eror-rate",
            [
                'metric "error-rate": unknown template "request-eror-rate"',
                "request-duration-p99, request-error-rate",
            ],
            id="unknown-template",
        ),
        pytest.param(
            "sum({{ namespace }",
            None,
            ['metric "error-rate": query template has a syntax error on line 1', "unexpected '}'"],
            id="syntax",
        ),
        pytest.param(
            "up\n{% if %}",
            None,
            ["syntax error on line 2"],
            id="syntax-line",
        ),
        pytest.param(
            "{{ canry.service }}",
            None,
            ["metric \"error-rate\": query uses undefined variable 'canry'", "canary.service"],
            id="undefined-top-level",
        ),
        pytest.param(
            # A typo in a branch not taken is still caught.
            "{% if false %}{{ namespce }}{% endif %}up",
            None,
            ["query uses undefined variable 'namespce'"],
            id="undefined-in-dead-branch",
        ),
        pytest.param(
            "{{ canary.servce }}",
            None,
            ["query uses undefined variable 'canary.servce'", "known: canary.service, canary.revision"],
            id="undefined-attribute",
        ),
        pytest.param(
            "{{ args.threshold }}",
            None,
            ["query uses undefined variable 'args.threshold'", "args.quantile"],
            id="undefined-arg",
        ),
        pytest.param(
            "{{ ''.__class__.__mro__ }}",
            None,
            ['metric "error-rate": query template is not allowed by the sandbox', "__class__"],
            id="sandbox-attribute",
        ),
        pytest.param(
            "{{ 'a' * 100000000 }}",
            None,
            ["not allowed by the sandbox", "query size limit"],
            id="sandbox-memory",
        ),
        pytest.param(
            "{{ 9 ** 999999999 }}",
            None,
            ["not allowed by the sandbox", "exponent"],
            id="sandbox-cpu",
        ),
        pytest.param(
            "{{ 1 / 0 }}",
            None,
            ['metric "error-rate": query template failed: ZeroDivisionError'],
            id="python-error",
        ),
        pytest.param("", None, ['metric "error-rate": query renders to an empty string'], id="empty"),
        pytest.param(
            "{% if false %}up{% endif %}\n  ",
            None,
            ["query renders to an empty string"],
            id="whitespace",
        ),
        pytest.param(
            "{% for i in range(20000) %}up or {% endfor %}up",
            None,
            [f"query renders to more than {MAX_QUERY_LENGTH} characters"],
            id="too-long",
        ),
    ],
)
def test_errors(query: str | None, template: str | None, messages: list[str]) -> None:
    with pytest.raises(QueryTemplateError) as caught:
        render_query(metric(query, template), CONTEXT)
    for message in messages:
        assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert caught.value.__cause__ is None  # a one-line message, no Jinja traceback chained in


def test_no_args_message() -> None:
    context = QueryContext("ns", "r", "r-canary", "r", "abc", "30s")
    with pytest.raises(QueryTemplateError, match=r"'args\.foo' \(known: no args given\)"):
        render_query(metric("{{ args.foo }}", args={}), context)
