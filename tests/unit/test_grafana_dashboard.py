"""The Grafana dashboard (manifests/grafana/sluice.json): a valid model whose queries Prometheus parses
and which names only series the operator exports.

Each expression is parsed by Prometheus' own parser, offline: `promtool check rules` on a rule file
with one recording rule per expression (promtool ships with Debian's prometheus package).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import operators.foundation.telemetry  # noqa: F401  (registers the operator's metrics)
from tests.grafana import concrete, expressions, load_dashboard, panels

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but promtool is missing: apt-get install prometheus", pytrace=False)
        pytest.skip("promtool not installed: apt-get install prometheus")
    return found


def test_the_dashboard_is_a_grafana_model_with_a_prometheus_datasource_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        assert all(target["datasource"] == DATASOURCE for target in panel["targets"]), panel["title"]


def test_the_dashboard_has_the_panels_the_issue_asks_for() -> None:
    titles = {panel["title"] for panel in panels(load_dashboard())}
    for wanted in (
        "Releases over time",
        "Canary weight per Rollout",
        "Analysis outcomes",
        "Rollbacks",
        "Reconcile duration (p95)",
        "Reconcile errors",
        "Kubernetes API requests",
    ):
        assert wanted in titles


def test_every_expression_parses_with_prometheus_own_parser(tmp_path: Path) -> None:
    exprs = expressions(load_dashboard())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr{index}", "expr": concrete(expr)}
                    for index, (_, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(exprs)} rules found" in done.stdout


def test_promtool_refuses_a_broken_expression(tmp_path: Path) -> None:
    """The check above can fail: a syntax error is caught."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum(("}]}]}))
    done = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode != 0


def test_every_sluice_series_in_the_dashboard_is_one_the_operator_exports() -> None:
    # A labelled metric has no samples until a child exists: name the families' sample names.
    families = {
        family.name: family.type for family in REGISTRY.collect() if family.name.startswith("sluice_")
    }
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    exported = {name + suffix for name, kind in families.items() for suffix in suffixes.get(kind, [""])}
    named = {
        name for _, expr in expressions(load_dashboard()) for name in re.findall(r"\bsluice_[a-z_]+", expr)
    }
    assert named, "the dashboard queries the operator's metrics"
    assert named <= exported, f"not exported by the operator: {sorted(named - exported)}"
