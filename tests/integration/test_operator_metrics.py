"""The operator's own /metrics, scraped by the sandbox's real Prometheus, and every PromQL expression
of the Grafana dashboard (manifests/grafana/sluice.json) answering with data during a release.

One release in the sandbox (sandbox/sluice_sandbox/environment.py), closed loop: the version's
pods behave as their template says, the traffic simulator and Prometheus do the rest, and the
real operator releases it and exports what it did.
"""

from __future__ import annotations

import functools
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from operators.rollout.inventory import rollout_key
from sluice_sandbox.environment import Sandbox
from tests.closed_loop import (
    NAME,
    loop_rollout,
    release,
    running_prometheus,
    sandbox_in,
    scene_on,
    wait_promoted,
)
from tests.grafana import concrete, expressions, load_dashboard, query_result
from tests.scenarios import IMAGE_V2, deploy_stable

pytestmark = pytest.mark.integration

SCRAPED_WITHIN = 30.0  # a few of the sandbox's 1s scrapes, generously


@pytest.fixture
def sandbox(prometheus_binary: str, tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox_in(tmp_path) as sandbox:
        yield sandbox


def operator_metrics(sandbox: Sandbox) -> str:
    assert sandbox.operator_metrics_url is not None
    with urllib.request.urlopen(sandbox.operator_metrics_url, timeout=5) as response:
        return str(response.read().decode())


def test_the_operator_exports_a_release_and_every_dashboard_panel_has_data(
    sandbox: Sandbox, metrics_namespace: str
) -> None:
    scene = scene_on(sandbox, metrics_namespace)
    h, ns = scene.harness, scene.namespace
    prometheus = running_prometheus(sandbox)
    first = deploy_stable(scene, loop_rollout(scene, steps=[{"setWeight": 50}]))
    release(scene, IMAGE_V2)
    wait_promoted(scene, first)

    # Scraped from the operator by the sandbox's Prometheus: the release as it went.
    rollout = f'namespace="{ns}", rollout="{NAME}"'

    def scraped(promql: str, expected: float) -> None:
        prometheus.wait_for(promql, lambda value: value == expected, timeout=SCRAPED_WITHIN)

    scraped(f'sluice_releases_finished_total{{{rollout}, outcome="promoted"}}', 1)
    scraped(f'sluice_releases_finished_total{{{rollout}, outcome="rolled_back"}}', 0)
    scraped(f"max_over_time(sluice_rollout_canary_weight{{{rollout}}}[10m])", 50)
    scraped(f'sluice_rollout_phase{{{rollout}, phase="Healthy"}}', 1)
    scraped(f'sluice_analysis_checks_total{{{rollout}, metric="error-rate", outcome="Failed"}}', 0)
    prometheus.wait_for(
        f'sluice_analysis_checks_total{{{rollout}, metric="error-rate", outcome="Passed"}}',
        lambda passed: passed >= 1,
        timeout=SCRAPED_WITHIN,
    )

    # Every panel of the dashboard, as Grafana would ask for this namespace: data, not a gap.
    exprs = expressions(load_dashboard())
    assert len(exprs) >= 10
    for title, expr in exprs:
        promql = concrete(expr, namespace=ns)
        h.wait(
            functools.partial(query_result, prometheus.url, promql),
            bool,
            SCRAPED_WITHIN,
            f"data for the panel {title!r}: {promql}",
        )

    # A deleted Rollout's series go with it.
    assert f'namespace="{ns}"' in operator_metrics(sandbox)
    h.cluster.delete(rollout_key(ns, NAME))
    h.wait(
        lambda: operator_metrics(sandbox),
        lambda text: f'namespace="{ns}"' not in text,
        SCRAPED_WITHIN,
        "the deleted Rollout's series to be removed from /metrics",
    )
