"""PromQL query templates: built-in ones, and users' own rendered in a Jinja2 sandbox.

Queries come from Rollout specs, i.e. from anyone allowed to create a Rollout,
and are rendered inside the operator. So they run in Jinja2's sandbox with
strict undefined variables: a typo such as ``{{ canry.service }}`` is an error
naming the variable, never an empty label matcher that silently selects
every series in the cluster.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from operators.api.base import parse_duration
from operators.api.rollout import Metric

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
_TOP_LEVEL = frozenset(name.split(".")[0] for name in VARIABLES)

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
# Caps for the operators that can allocate or compute without bound in a sandbox.
_MAX_EXPONENT = 64
_MAX_INT_BITS = 4096


class QueryTemplateError(ValueError):
    """A metric's query cannot be rendered; the message names the metric and the cause."""


@dataclass(frozen=True)
class QueryContext:
    """What a query template can refer to, for one Rollout's current canary."""

    namespace: str
    rollout_name: str
    canary_service: str
    stable_service: str
    canary_revision: str
    interval: str
    args: Mapping[str, str] = field(default_factory=dict)


class _Namespace(Mapping[str, Any]):
    """A read-only group of template variables (``canary``, ``args``...).

    It knows its own name so that an undefined attribute is reported as
    ``canary.servce`` rather than Jinja's ``'dict object' has no attribute``.
    """

    def __init__(self, path: str, values: Mapping[str, Any]) -> None:
        self._path = path
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<{self._path}>"


class _Undefined(jinja2.StrictUndefined):
    """StrictUndefined whose message says which variable the template got wrong."""

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        owner = self._undefined_obj
        if owner is jinja2.utils.missing:
            return f"undefined variable {self._undefined_name!r}"
        if isinstance(owner, _Namespace):
            path = owner._path
            known = ", ".join(f"{path}.{key}" for key in owner) or f"no {path} given"
            return f"undefined variable '{path}.{self._undefined_name}' (known: {known})"
        return super()._undefined_message


class _QueryEnvironment(SandboxedEnvironment):
    """Jinja2's sandbox (no attribute escapes), with `*` and `**` capped.

    The sandbox stops code execution, not resource exhaustion: `'a' * 10**10` or
    `9 ** 10**9` would take the operator's memory or CPU. These caps cover the
    one-liners; see render_query for the output cap.
    """

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `args.items` means the arg named "items" when there is one, not Mapping.items.
        if isinstance(obj, _Namespace) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is above the limit of {_MAX_EXPONENT}")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > _MAX_INT_BITS:
                raise SecurityError("power result is too large")
            return operator.pow(left, right)
        # "*": repeating a string or list, or multiplying huge integers (e.g. squared in a loop).
        for seq, times in ((left, right), (right, left)):
            repeats = isinstance(seq, str | list | tuple) and isinstance(times, int)
            if repeats and len(seq) * times > MAX_QUERY_LENGTH:
                raise SecurityError(f"repeating a sequence {times} times exceeds the query size limit")
        both_int = isinstance(left, int) and isinstance(right, int)
        if both_int and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise SecurityError("product is too large")
        return operator.mul(left, right)


_ENVIRONMENT = _QueryEnvironment(undefined=_Undefined, autoescape=False, keep_trailing_newline=False)

_PROMQL_DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")


def promql_range(duration: str) -> str:
    """A Sluice duration as a PromQL range: ``30s`` stays, ``1.5m`` (not PromQL) becomes ``90s``."""
    if _PROMQL_DURATION.fullmatch(duration):
        return duration
    millis = round(parse_duration(duration).total_seconds() * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _variables(context: QueryContext) -> dict[str, Any]:
    try:
        interval = promql_range(context.interval)
    except ValueError:
        interval = context.interval  # already a PromQL range we do not parse, e.g. "1d"
    return {
        "namespace": context.namespace,
        "rollout": _Namespace("rollout", {"name": context.rollout_name}),
        "canary": _Namespace(
            "canary", {"service": context.canary_service, "revision": context.canary_revision}
        ),
        "stable": _Namespace("stable", {"service": context.stable_service}),
        "interval": interval,
        "args": _Namespace("args", context.args),
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


def _compile(metric: Metric, source: str) -> jinja2.Template:
    try:
        tree = _ENVIRONMENT.parse(source)
    except jinja2.TemplateSyntaxError as err:
        raise QueryTemplateError(
            f'metric "{metric.name}": query template has a syntax error on line {err.lineno}: {err.message}'
        ) from None
    # Checked on the whole template, so a typo in a branch not taken today is caught too.
    unknown = sorted(jinja2.meta.find_undeclared_variables(tree) - _TOP_LEVEL)
    if unknown:
        raise QueryTemplateError(
            f'metric "{metric.name}": query uses undefined variable {unknown[0]!r} '
            f"(variables: {', '.join(VARIABLES)})"
        )
    return _ENVIRONMENT.from_string(tree)


def render_query(metric: Metric, context: QueryContext) -> str:
    """The metric's PromQL for this canary; raises QueryTemplateError on any problem."""
    template = _compile(metric, _source(metric))
    variables = _variables(context)
    prefix = f'metric "{metric.name}"'
    try:
        # The query is only returned once fully rendered: an error never yields a partial query.
        query = _render_bounded(template, variables)
    except SecurityError as err:
        raise QueryTemplateError(f"{prefix}: query template is not allowed by the sandbox: {err}") from None
    except jinja2.UndefinedError as err:
        raise QueryTemplateError(f"{prefix}: query uses {err.message}") from None
    except jinja2.TemplateError as err:
        detail = err.message or type(err).__name__
        raise QueryTemplateError(f"{prefix}: query template failed: {detail}") from None
    except Exception as err:  # user code: any Python error (1/0, int('x')...) is the template's fault
        raise QueryTemplateError(f"{prefix}: query template failed: {type(err).__name__}: {err}") from None
    if query is None:
        raise QueryTemplateError(f"{prefix}: query renders to more than {MAX_QUERY_LENGTH} characters")
    if not query:
        raise QueryTemplateError(f"{prefix}: query renders to an empty string")
    return query


def _render_bounded(template: jinja2.Template, variables: Mapping[str, Any]) -> str | None:
    """The stripped output, or None as soon as it grows past MAX_QUERY_LENGTH (a loop gone wild)."""
    chunks: list[str] = []
    size = 0
    for chunk in template.generate(variables):
        size += len(chunk)
        if size > MAX_QUERY_LENGTH:
            return None
        chunks.append(chunk)
    return "".join(chunks).strip()
