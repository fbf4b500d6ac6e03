"""The built-in template ``slo-burn-rate``: how fast a track spends its SLO's error budget.

After the multi-window, multi-burn-rate alerting method of the Google SRE
workbook ("Alerting on SLOs"): the burn rate over a window is the window's
error ratio divided by the error budget (1 - objective); a burn rate of 1
spends the budget exactly over the SLO period. The value is the LOWER of the
burn rates over the long and the short window, so a threshold on it holds
only while both windows burn: the long window says the spending is real, the
short one that it is still going on. With a 30-day SLO period, the workbook's
page alerts are ``thresholdRange: {max: 14.4}`` with the default windows (1h
and 5m: 2% of the budget in an hour) and ``{max: 6}`` with ``longWindow: 6h,
shortWindow: 30m`` (5% in six hours); its ticket, ``{max: 1}`` with ``72h`` and
``6h`` (10% in three days). Durations are Sluice's (ms, s, m, h).

Requests and errors are read from ``http_requests_total`` (5xx are errors),
as the other built-ins do. Either window without requests gives no data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from operators.foundation.model import parse_duration

NAME = "slo-burn-rate"
DEFAULT_LONG_WINDOW = "1h"
DEFAULT_SHORT_WINDOW = "5m"

# A plain decimal strictly between 0 and 1: also what is pasted into the PromQL, so nothing else passes.
_OBJECTIVE = re.compile(r"^0?\.[0-9]+$")
_PROMQL_DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")


class SloArgsError(ValueError):
    """The template's args are not usable; the message says which and how to fix it."""


def _objective(args: Mapping[str, str]) -> str:
    raw = args.get("objective")
    if raw is None:
        raise SloArgsError(f'{NAME} needs args.objective, the SLO as a ratio, e.g. "0.999"')
    text = raw.strip()
    try:
        valid = bool(_OBJECTIVE.fullmatch(text)) and Decimal(text) > 0
    except InvalidOperation:
        valid = False
    if not valid:
        raise SloArgsError(
            f'args.objective "{raw}" must be a number between 0 and 1 (exclusive), e.g. "0.999" for 99.9%'
        )
    return text


def _window(args: Mapping[str, str], key: str, default: str) -> tuple[str, float]:
    raw = args.get(key, default)
    try:
        seconds = parse_duration(raw).total_seconds()
    except ValueError:
        seconds = 0.0
    if seconds < 1:
        raise SloArgsError(f'args.{key} "{raw}" must be a duration of at least 1s, e.g. "{default}"')
    if _PROMQL_DURATION.fullmatch(raw):
        return raw, seconds
    millis = round(seconds * 1000)  # e.g. "1.5h": not PromQL
    return (f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"), seconds


def slo_args(args: Mapping[str, str]) -> dict[str, str]:
    """The args with defaults filled in and checked: raises SloArgsError on the first problem."""
    objective = _objective(args)
    long_window, long_seconds = _window(args, "longWindow", DEFAULT_LONG_WINDOW)
    short_window, short_seconds = _window(args, "shortWindow", DEFAULT_SHORT_WINDOW)
    if short_seconds >= long_seconds:
        raise SloArgsError(
            f'args.shortWindow "{args.get("shortWindow", DEFAULT_SHORT_WINDOW)}" must be shorter than '
            f'args.longWindow "{args.get("longWindow", DEFAULT_LONG_WINDOW)}"'
        )
    return {**args, "objective": objective, "longWindow": long_window, "shortWindow": short_window}


def _burn_rate(selector: str, window: str, by: str, fallback: str) -> str:
    """One window's burn rate: errors / requests / budget. `by` groups; `fallback` stands in for no 5xx."""
    total = f"sum{by}(rate(http_requests_total{{{selector}}}[{{{{ args.{window} }}}}]))"
    errors = f'sum{by}(rate(http_requests_total{{{selector},code=~"5.."}}[{{{{ args.{window} }}}}]))'
    budget = "(1 - {{ args.objective }})"
    return f"(\n  (({errors}) or {fallback.format(total=total)})\n  /\n  {total}\n  / {budget}\n)"


def burn_rate_query(selector: str, by: str = "") -> str:
    """The lower of the two windows' burn rates (no data when either has none), as a query template.

    ``A < B or B <= A`` is min(A, B) that keeps each side's labels (a grouped form
    matches them one to one) and is empty when either side is: both must burn.
    """
    fallback = "vector(0)" if not by else "({total} * 0)"
    long = _burn_rate(selector, "longWindow", by, fallback)
    short = _burn_rate(selector, "shortWindow", by, fallback)
    return f"{long}\n< {short}\nor\n{short}\n<= {long}"
