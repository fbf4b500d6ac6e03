"""The Grafana dashboard in manifests/grafana/: its panels, and their PromQL as Prometheus runs it.

Grafana fills in variables before it sends a query; `concrete` does the same with fixed values,
so that the unit tests can parse each expression and the integration test can run it.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "manifests" / "grafana" / "sluice.json"
# A window with a few of the sandbox's 1s scrapes in it (Grafana's $__rate_interval is at least
# four scrape intervals), and the dashboard's time range.
RATE_INTERVAL = "15s"
RANGE = "10m"


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those in collapsed rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query target."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def concrete(expr: str, namespace: str = ".*") -> str:
    """`expr` as Grafana sends it, with $namespace (a regex: All is .*) chosen.

    A Kubernetes namespace ([a-z0-9-]) is a regex matching itself, as Grafana sends one chosen value.
    """
    values = {
        "__rate_interval": RATE_INTERVAL,
        "__interval": RATE_INTERVAL,
        "__range": RANGE,
        "namespace": namespace,
    }

    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", fill, expr)


def query_result(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """The series an instant query returns now (an error answer raises)."""
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])
