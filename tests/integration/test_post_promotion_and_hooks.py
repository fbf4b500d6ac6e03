"""A canary's postPromotionAnalysis and lifecycle hooks, in closed loop in the sandbox.

The real operator, the real Prometheus scraping the traffic simulator, a real local HTTP
server answering the web hooks, and the sandbox's Job controller running the job hooks' Jobs. No
test sets a metric: a version fails requests as its pod template's
``sandbox.sluice.dev/error-rate`` annotation says (a Job's pod exits as its
``sandbox.sluice.dev/exit-code`` says).

Going bad only after promotion, truthfully: the Rollout of the first test has no canary analysis
(its steps only wait for the canary's pods), as a team that verifies only once a version serves
everyone would write it. So the bad version is promoted, and its postPromotionAnalysis, which
reads the stable Service (the built-in template's `canary.service` names the stable Service after
promotion), sees its errors and rolls the stable back to the previous revision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sluice_sandbox.behaviour import ERROR_RATE_ANNOTATION
from sluice_sandbox.environment import Sandbox, SandboxOptions
from tests.closed_loop import (
    CANARY,
    NAME,
    READY_DELAY,
    StableSampler,
    assert_stable_served,
    image_of,
    release,
    release_log,
    scene_on,
    traffic_invariant,
    wait_status,
    warnings,
)
from tests.harness import deployment, httproute, route_weights
from tests.scenarios import (
    IMAGE_V1,
    IMAGE_V2,
    RELEASE_TIMEOUT,
    Scene,
    deploy_stable,
    error_rate_analysis,
    job_metric,
    promoted,
    sluice_jobs,
    web_rollout,
)

pytestmark = pytest.mark.integration

HOOK_HOST = "127.0.0.1"
# No canary analysis: the canary's pods, then all traffic, then promotion.
STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"setWeight": 100}]
BAD = {ERROR_RATE_ANNOTATION: "0.2"}


@pytest.fixture(scope="module")
def sandbox(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The module's sandbox; its operator may call the local hook server (--metric-hosts)."""
    directory = tmp_path_factory.mktemp("post-promotion-and-hooks")
    options = SandboxOptions(
        kubeconfig=Path(directory) / "kubeconfig", ready_delay=READY_DELAY, metric_hosts=(HOOK_HOST,)
    )
    with Sandbox(options) as started:
        yield started


@pytest.fixture
def scene(sandbox: Sandbox, metrics_namespace: str) -> Iterator[Scene]:
    """A namespace of the module's sandbox, its traffic checked throughout (tests/invariants.py)."""
    scene = scene_on(sandbox, metrics_namespace)
    with traffic_invariant(scene):
        yield scene


class HookServer:
    """A real HTTP server answering hooks: 500 with a reason on paths under /fail, 200 on others.

    `probe`, when given, is called as each hook arrives; what it says is kept in `probed` by path.
    """

    def __init__(self, probe: Callable[[], Any] | None = None) -> None:
        self.paths: list[str] = []
        self.probed: dict[str, Any] = {}
        received, probed = self.paths, self.probed

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(self.path)
                if probe is not None:
                    probed[self.path] = probe()
                failing = self.path.startswith("/fail")
                self.send_response(500 if failing else 200)
                self.end_headers()
                self.wfile.write(b"smoke test: checkout broken" if failing else b"ok")

            def log_message(self, *_: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((HOOK_HOST, 0), Handler)
        self.url = f"http://{HOOK_HOST}:{self._httpd.server_port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> HookServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._httpd.shutdown()
        self._thread.join(timeout=5)

    def hook(self, name: str, path: str) -> dict[str, Any]:
        return {"name": name, "web": {"url": f"{self.url}{path}", "timeout": "2s"}}


def hooked_rollout(**hooks: list[dict[str, Any]]) -> dict[str, Any]:
    body = web_rollout(steps=STEPS)
    body["spec"]["strategy"]["canary"]["hooks"] = hooks
    return body


def hook_events(scene: Scene) -> list[str]:
    return [e["message"] for e in warnings(scene, "HookFailed")]


def test_a_failure_after_promotion_rolls_the_stable_back_to_the_previous_revision(
    sandbox: Sandbox, scene: Scene
) -> None:
    body = web_rollout(steps=STEPS)
    post = {**error_rate_analysis(scene.prometheus_url), "duration": "60s"}
    body["spec"]["strategy"]["canary"]["postPromotionAnalysis"] = post
    stable = deploy_stable(scene, body)
    with StableSampler(scene) as sampler:
        release(scene, IMAGE_V2, annotations=BAD)
        verifying = wait_status(
            scene, lambda s: s.get("postPromotion") is not None, "the bad version to be promoted and verified"
        )
        assert verifying["status"]["phase"] == "Progressing", verifying["status"]
        assert "verifying after promotion" in verifying["status"]["message"]
        new = verifying["status"]["stableRevision"]
        assert new != stable and image_of(scene, NAME) == IMAGE_V2
        body = wait_status(scene, lambda s: s.get("phase") == "Degraded", "post-promotion analysis to fail")
        # The stable Deployment rolls back, one surge pod at a time (maxUnavailable 0), serving throughout.
        scene.harness.wait(
            lambda: scene.harness.read(deployment(scene.namespace, NAME)),
            lambda d: (
                (d.get("status") or {}).get("updatedReplicas") == 4
                and (d.get("status") or {}).get("readyReplicas") == 4
                and d["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_V1
            ),
            RELEASE_TIMEOUT,
            "the stable Deployment to roll back to the previous version",
        )
    status = body["status"]
    assert status["stableRevision"] == stable and status["canaryRevision"] == new
    assert "after promotion: postPromotionAnalysis" in status["message"], status["message"]
    assert "error-rate=" in status["message"] and f"stable back to revision {stable}" in status["message"]
    assert route_weights(scene.harness.get(httproute(scene.namespace, NAME))) == {NAME: 100, CANARY: 0}
    actions = [action for action, _ in release_log(body)]
    assert actions[-3:] == ["promoted", "verifying", "rolled-back"], actions
    scene.harness.wait(
        lambda: [e["message"] for e in warnings(scene, "RolledBack")],
        lambda messages: status["message"] in messages,
        RELEASE_TIMEOUT,
        "a RolledBack Warning event",
    )
    assert_stable_served(sandbox, sampler, scene.namespace)


def test_a_failing_pre_rollout_hook_stops_the_release_before_the_canary_gets_any_traffic(
    sandbox: Sandbox, scene: Scene
) -> None:
    def canary_ready() -> int:
        status = scene.harness.read(deployment(scene.namespace, CANARY)).get("status") or {}
        return int(status.get("readyReplicas") or 0)

    with HookServer(probe=canary_ready) as server:
        body = hooked_rollout(
            preRollout=[server.hook("smoke", "/fail/smoke")], onRollback=[server.hook("page", "/rollback")]
        )
        stable = deploy_stable(scene, body)
        release(scene, IMAGE_V2, annotations=BAD)
        degraded = wait_status(scene, lambda s: s.get("phase") == "Degraded", "the preRollout hook to fail")
        status = degraded["status"]
        expected = f'preRollout hook "smoke" failed: HTTP 500 from POST {server.url}/fail/smoke'
        assert expected in status["message"] and "checkout broken" in status["message"], status["message"]
        scene.harness.wait(
            lambda: server.paths, lambda p: "/rollback" in p, RELEASE_TIMEOUT, "onRollback hook"
        )
        assert server.paths.count("/fail/smoke") == 1
    assert status["stableRevision"] == stable and image_of(scene, NAME) == IMAGE_V1
    # The canary's route weight was 0 at every tick of the traffic simulator, and it served nothing.
    assert sandbox.traffic is not None
    canary = [
        r.weight for r in sandbox.traffic.history if (r.namespace, r.service) == (scene.namespace, CANARY)
    ]
    assert canary and set(canary) == {0}, set(canary)
    # What the hook tests, as Flagger's pre-rollout hooks do: the new version's first pod, ready.
    assert server.probed["/fail/smoke"] == 1
    assert scene.harness.read(deployment(scene.namespace, CANARY))["spec"]["replicas"] <= 1
    assert any(expected in message for message in hook_events(scene))


def canary_weights_served(sandbox: Sandbox, scene: Scene) -> set[int]:
    """The canary's route weight at every tick of the traffic simulator."""
    assert sandbox.traffic is not None
    return {
        r.weight for r in sandbox.traffic.history if (r.namespace, r.service) == (scene.namespace, CANARY)
    }


def test_a_failing_pre_rollout_job_hook_stops_the_release_before_the_canary_gets_any_traffic(
    sandbox: Sandbox, scene: Scene
) -> None:
    # The hook's Job runs one pod that exits 1 (its template's sandbox.sluice.dev/exit-code), no retry.
    body = hooked_rollout(preRollout=[job_metric(exit_code=1, name="smoke")])
    stable = deploy_stable(scene, body)
    release(scene, IMAGE_V2)  # a good version: only the hook stops it
    degraded = wait_status(scene, lambda s: s.get("phase") == "Degraded", "the preRollout job hook to fail")
    status = degraded["status"]
    expected = f'preRollout hook "smoke" failed: Job {NAME}-prerollout-smoke-'
    assert expected in status["message"] and "BackoffLimitExceeded" in status["message"], status["message"]
    (run,) = status["hooks"]
    assert (run["kind"], run["name"], run["outcome"]) == ("preRollout", "smoke", "Failed")
    assert status["stableRevision"] == stable and image_of(scene, NAME) == IMAGE_V1
    assert canary_weights_served(sandbox, scene) == {0}
    assert scene.harness.read(deployment(scene.namespace, CANARY))["spec"]["replicas"] <= 1
    assert any(expected in message for message in hook_events(scene))
    scene.harness.wait(
        lambda: sluice_jobs(scene), lambda jobs: not jobs, RELEASE_TIMEOUT, "the hook's Job to be deleted"
    )


def test_a_failing_post_rollout_hook_is_reported_and_changes_nothing(sandbox: Sandbox, scene: Scene) -> None:
    with HookServer() as server:
        body = hooked_rollout(
            preRollout=[server.hook("smoke", "/smoke")],
            prePromotion=[server.hook("approve", "/approve")],
            postRollout=[server.hook("notify", "/fail/notify")],
        )
        stable = deploy_stable(scene, body)
        release(scene, IMAGE_V2)
        healthy = wait_status(scene, lambda s: promoted(s, stable), "the release to be promoted")
        scene.harness.wait(
            lambda: hook_events(scene),
            lambda messages: any('postRollout hook "notify" failed: HTTP 500' in m for m in messages),
            RELEASE_TIMEOUT,
            "a HookFailed Warning event for the postRollout hook",
        )
        assert server.paths == ["/smoke", "/approve", "/fail/notify"]
    body = wait_status(
        scene,
        lambda s: any(h["kind"] == "postRollout" and h["outcome"] == "Failed" for h in s.get("hooks") or []),
        "the postRollout answer in the status",
    )
    status = body["status"]
    assert status["phase"] == "Healthy" and status["stableRevision"] == healthy["status"]["stableRevision"]
    assert image_of(scene, NAME) == IMAGE_V2
    assert any(action == "hook" and "notify" in message for action, message in release_log(body))
