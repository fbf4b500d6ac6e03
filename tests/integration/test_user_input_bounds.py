"""What a Rollout's author controls cannot harm the operator or others, with the real operator.

A query's `args` reach it; a runaway template is refused on its own Rollout
within seconds while another Rollout created at the same moment releases; a
metric naming an address the operator was not told to trust is refused
before any request is sent there.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import scenarios
from tests.fakes.prometheus import fake_prometheus
from tests.harness import deployment, status_of

pytestmark = pytest.mark.integration

# Deadlines for slow machines; each wait normally ends within a few seconds.
REFUSAL_TIMEOUT = 30.0


def args_metric(prometheus_url: str) -> dict[str, Any]:
    series = 'http_requests_total{namespace="{{ namespace }}",service="{{ canary.service }}"'
    return {
        "name": "server-errors",
        "query": f'(sum(rate({series},code=~"{{{{ args.codes }}}}"}}[{{{{ interval }}}}])) or vector(0))'
        f" / sum(rate({series}}}[{{{{ interval }}}}]))",
        "args": {"codes": "5.."},
        "prometheus": {"address": prometheus_url, "timeout": "2s"},
        "thresholdRange": {"max": 0.1},
    }


def analysis(metric: dict[str, Any]) -> dict[str, Any]:
    return {"interval": "2s", "inconclusiveLimit": 20, "metrics": [metric]}


def release(scene: scenarios.Scene, name: str, body: dict[str, Any]) -> dict[str, Any]:
    first = scenarios.deploy_stable(scene, body)
    scene.harness.set_image(scene.namespace, name, scene.images[1])
    return scene.harness.wait_rollout(
        scene.namespace,
        name,
        lambda r: scenarios.promoted(status_of(r), first),
        scenarios.RELEASE_TIMEOUT,
        f"{name}'s release to be promoted",
    )


def refused(scene: scenarios.Scene, name: str, words: str) -> dict[str, Any]:
    return scene.harness.wait_rollout(
        scene.namespace,
        name,
        lambda r: words in status_of(r).get("message", ""),
        REFUSAL_TIMEOUT,
        f"{name} to be refused with {words!r}",
    )


def test_a_query_using_args_releases(scene: scenarios.Scene) -> None:
    scene.exporter.set_service(scene.namespace, "web-canary", rps=50, error_rate=0.0)
    body = scenarios.web_rollout(analysis=analysis(args_metric(scene.prometheus_url)))
    done = release(scene, "web", body)
    [result] = status_of(done)["analysis"]["lastCheck"]["metrics"]
    assert (result["name"], result["outcome"]) == ("server-errors", "Passed")


def test_a_runaway_template_is_refused_while_a_rollout_created_with_it_releases(
    scene: scenarios.Scene,
) -> None:
    h, ns = scene.harness, scene.namespace
    h.ensure_namespace(ns)
    spin = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}up"
    runaway = scenarios.web_rollout(
        analysis=analysis({"name": "spin", "query": spin, "thresholdRange": {"max": 1}})
    )
    runaway["metadata"]["name"] = "runaway"
    runaway["spec"]["template"]["metadata"]["labels"] = {"app": "runaway"}
    h.apply_rollout(ns, runaway)
    scene.exporter.set_service(ns, "web-canary", rps=50, error_rate=0.0)
    release(scene, "web", scenarios.web_rollout(analysis=analysis(args_metric(scene.prometheus_url))))

    blocked = refused(scene, "runaway", "longer than")
    assert "Stalled" in {c["type"] for c in status_of(blocked)["conditions"] if c["status"] == "True"}
    assert h.get(deployment(ns, "runaway")) is None


def test_a_metric_host_not_allowed_is_refused_before_any_request(scene: scenarios.Scene) -> None:
    h, ns = scene.harness, scene.namespace
    # The scene's operator trusts its Prometheus' host (127.0.0.1); 127.0.0.2 is another host.
    with fake_prometheus(lambda query: 0.0, host="127.0.0.2") as elsewhere:
        metric = {
            "name": "errors",
            "query": "up",
            "prometheus": {"address": elsewhere.url},
            "thresholdRange": {"max": 1},
        }
        h.ensure_namespace(ns)
        h.apply_rollout(ns, scenarios.web_rollout(analysis=analysis(metric)))
        blocked = refused(scene, "web", "--metric-hosts")
        host = elsewhere.url.removeprefix("http://")
        assert f"address {elsewhere.url} is not an allowed metric host" in status_of(blocked)["message"]
        assert f"--metric-hosts {host}" in status_of(blocked)["message"]
        assert h.get(deployment(ns, "web")) is None
        assert elsewhere.requests == 0
