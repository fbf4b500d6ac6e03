"""A canary's postPromotionAnalysis and lifecycle hooks, driven through the real engine in the
in-memory World (engine_world.py); the hook calls themselves against a real local HTTP server."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from operators.api.hooks import HookKind, HookOutcome, HookRun, WebHook
from operators.api.rollout import Check, MetricResult, Outcome, Phase, RolloutSpec
from operators.metrics.hosts import AllowedHosts
from operators.rollout import engine, hooks
from operators.rollout.bluegreen_stages import analysis_of
from operators.rollout.commands import Command
from operators.rollout.hook_runner import call_web_hook, hook_problems
from tests.unit.engine_world import METRIC, World, make_check, make_spec

V2 = "ghcr.io/acme/web:2"
POST = {"interval": "10s", "duration": "60s", "metrics": [{**METRIC, "name": "stable-errors"}]}
STEPS = [{"setWeight": 50}, {"setWeight": 100}]


class HookWorld(World):
    """The World with the shell's two new duties: the previous revision's record while verifying,
    and answering Pending hooks (each by `answers[name]`, Passed by default), counting the calls."""

    def __init__(self, spec: RolloutSpec) -> None:
        super().__init__(spec)
        self.answers: dict[str, HookOutcome] = {}
        self.calls: list[tuple[HookKind, str]] = []

    def observed(self, check: Check | None = None) -> engine.Observed:
        base = super().observed(check)
        post = self.status.post_promotion
        answered = [
            run.model_copy(
                update={"outcome": self.answers.get(run.name, HookOutcome.PASSED), "message": "HTTP"}
            )
            for run in hooks.pending(self.status.hooks)
        ]
        self.calls += [(run.kind, run.name) for run in answered]
        previous = copy.deepcopy(self.history.get(post.previous_revision)) if post is not None else None
        return engine.Observed(
            **{**base.__dict__, "previous_record": previous, "hook_answers": answered},
        )


def web(name: str) -> dict[str, Any]:
    return {"name": name, "web": {"url": f"http://hooks.example:8080/{name}"}}


def routed_canary_weights(world: HookWorld) -> set[int]:
    """Every canary weight any pass wrote to the HTTPRoute."""
    return {
        ref["weight"]
        for p in world.passes
        for obj in p.plan.objects
        if obj["kind"] == "HTTPRoute"
        for ref in obj["spec"]["rules"][0]["backendRefs"]
        if ref["name"] == "web-canary"
    }


def released(spec: RolloutSpec) -> HookWorld:
    world = HookWorld(spec)
    world.settle()
    assert world.status.phase == Phase.HEALTHY
    world.set_image(V2)
    return world


# ---- postPromotionAnalysis ------------------------------------------------------------------------


def promoted_and_verifying(world: HookWorld) -> str:
    """Runs the release to promotion; returns the previous (v1) revision."""
    old = world.status.stable_revision
    assert old is not None
    world.run_until(lambda w: w.status.post_promotion is not None)
    return old


def test_after_promotion_the_new_stable_is_verified_for_the_duration_then_healthy() -> None:
    world = released(make_spec(STEPS, canary={"postPromotionAnalysis": POST}))
    old = promoted_and_verifying(world)
    new = world.status.canary_revision
    status = world.status
    assert status.phase == Phase.PROGRESSING and status.stable_revision == new
    assert status.post_promotion is not None and status.post_promotion.previous_revision == old
    assert "verifying after promotion, 60s left" in status.message
    assert world.image("web") == V2 and world.replicas("web-canary") == 0
    assert world.route_weights() == (100, 0)
    # The checks are the post-promotion ones, due every interval, on the stable Service (shell).
    assert analysis_of(world.spec, status) is world.spec.strategy.canary.post_promotion_analysis  # type: ignore[union-attr]
    world.advance(10)
    assert world.analysis_due()
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    assert world.status.analysis.passed >= 5  # every 10s for 60s, none skipped
    assert world.status.post_promotion is None and world.status.canary_revision is None
    assert world.actions()[-3:] == ["promoted", "verifying", "verified"]
    assert "Verified" in world.reasons()


def test_a_failing_dry_run_metric_after_promotion_is_told_in_an_event_and_changes_nothing() -> None:
    world = released(make_spec(STEPS, canary={"postPromotionAnalysis": POST}))
    promoted_and_verifying(world)
    world.advance(10)
    dry = MetricResult(name="p99", outcome=Outcome.FAILED, value=0.9, message="0.9 > max 0.5", dry_run=True)
    check = make_check(Outcome.PASSED, world.now)
    world.reconcile(check=check.model_copy(update={"metrics": [*check.metrics, dry]}))
    assert world.events()[-1].reason == "DryRunMetric" and "p99" in world.events()[-1].message
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)


def test_a_failure_after_promotion_rolls_the_stable_back_to_the_previous_revision() -> None:
    world = released(make_spec(STEPS, canary={"postPromotionAnalysis": POST}))
    old = promoted_and_verifying(world)
    new = world.status.stable_revision
    world.metrics = Outcome.FAILED
    world.run_until(lambda w: w.status.phase == Phase.DEGRADED)
    status = world.status
    assert status.stable_revision == old and status.canary_revision == new
    assert world.revision("web") == old and world.image("web") == "ghcr.io/acme/web:1"
    assert world.route_weights() == (100, 0), "one version serves after promotion: the stable"
    assert "after promotion: postPromotionAnalysis: analysis failed 1 time(s)" in status.message
    assert "error-rate=0.31 Failed" in status.message and f"stable back to revision {old}" in status.message
    assert world.actions()[-1] == "rolled-back" and "RolledBack" in world.reasons()
    # It stays rolled back: the spec still names v2, which is never promoted again by itself.
    world.metrics = Outcome.PASSED
    world.advance(120)
    world.settle()
    assert world.status.phase == Phase.DEGRADED and world.revision("web") == old


def test_without_the_previous_template_a_failure_says_the_new_revision_stays() -> None:
    world = released(make_spec(STEPS, canary={"postPromotionAnalysis": POST}))
    old = promoted_and_verifying(world)
    world.history.pop(old)
    world.metrics = Outcome.FAILED
    world.run_until(lambda w: w.status.phase == Phase.DEGRADED)
    assert f"previous revision {old} is not in the revision history" in world.status.message
    world.settle()  # and it stays so: the stable runs the new revision, but it was rolled back
    assert world.status.phase == Phase.DEGRADED and world.actions()[-1] == "rolled-back"


def test_abort_during_verification_rolls_back_and_promote_full_skips_it() -> None:
    world = released(make_spec(STEPS, canary={"postPromotionAnalysis": POST}))
    old = promoted_and_verifying(world)
    world.annotate(Command.ABORT, "1")
    world.reconcile()
    assert world.status.phase == Phase.ABORTED and world.revision("web") == old

    skipped = released(make_spec(STEPS, canary={"postPromotionAnalysis": POST}))
    promoted_and_verifying(skipped)
    skipped.annotate(Command.PROMOTE_FULL, "1")
    skipped.reconcile()
    assert skipped.status.phase == Phase.HEALTHY and skipped.image("web") == V2


def test_a_new_release_during_verification_starts_from_the_promoted_stable() -> None:
    world = released(make_spec(STEPS, canary={"postPromotionAnalysis": POST}))
    promoted_and_verifying(world)
    promoted = world.status.stable_revision
    world.set_image("ghcr.io/acme/web:3")
    world.reconcile()
    assert world.status.post_promotion is None and world.status.stable_revision == promoted
    assert world.actions()[-1] == "release-started"


# ---- hooks ------------------------------------------------------------------------------------------


def hooked(**kinds: list[dict[str, Any]]) -> RolloutSpec:
    return make_spec(STEPS, canary={"hooks": kinds})


def test_a_failing_pre_rollout_hook_rolls_back_before_the_canary_gets_any_traffic() -> None:
    world = released(hooked(preRollout=[web("smoke")], onRollback=[web("page")]))
    world.answers["smoke"] = HookOutcome.FAILED
    world.run_until(lambda w: w.status.phase == Phase.DEGRADED)
    assert all(p.plan.status.canary_weight == 0 for p in world.passes)
    assert routed_canary_weights(world) == {0}
    assert world.replicas("web-canary") <= 1  # the pod the hook tested, kept for the scale-down delay
    assert 'preRollout hook "smoke" failed: HTTP' in world.status.message
    world.settle()
    assert (HookKind.ON_ROLLBACK, "page") in world.calls  # the notification went out
    assert "HookFailed" in world.reasons()


def test_the_release_waits_for_its_pre_rollout_hook_then_goes_on_and_never_runs_it_twice() -> None:
    world = released(hooked(preRollout=[web("smoke")]))
    world.hold("web-canary")
    world.reconcile()  # starts the release: first one canary pod, at weight 0, for the hook to test
    world.reconcile()
    assert world.status.phase == Phase.PROGRESSING and world.status.canary_weight == 0
    assert world.replicas("web-canary") == 1 and world.status.hooks == []
    assert "waiting for canary pods: 0/1 ready" in world.status.message
    world.release("web-canary")
    world.reconcile()  # the pod is ready: the hook is asked; the shell runs it on the next pass
    assert world.status.message.endswith("waiting for preRollout hook(s): smoke")
    assert [(run.name, run.outcome) for run in world.status.hooks] == [("smoke", HookOutcome.PENDING)]
    assert world.status.canary_weight == 0
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    assert world.calls.count((HookKind.PRE_ROLLOUT, "smoke")) == 1
    # A passed hook is recorded; asking again (a restarted operator) adds nothing.
    runs = world.status.hooks
    assert hooks.ask(runs, world.spec, HookKind.PRE_ROLLOUT, runs[0].revision) == runs


def test_a_failing_pre_promotion_hook_rolls_back_and_the_stable_keeps_the_old_version() -> None:
    world = released(hooked(prePromotion=[web("approve")]))
    old = world.status.stable_revision
    world.answers["approve"] = HookOutcome.FAILED
    world.run_until(lambda w: any(h.kind == HookKind.PRE_PROMOTION for h in w.status.hooks))
    assert world.status.message == "all steps done, weight 100%; waiting for prePromotion hook(s): approve"
    assert world.revision("web") == old, "the stable waits for the hook"
    world.run_until(lambda w: w.status.phase == Phase.DEGRADED)
    assert world.revision("web") == old and world.status.canary_weight == 0
    assert world.route_weights() == (100, 0)
    assert 'prePromotion hook "approve" failed' in world.status.message
    assert world.replicas("web-canary") > 0, "kept for abortScaleDownDelaySeconds, as for any rollback"


def test_abort_while_a_pre_promotion_hook_waits_rolls_back_before_the_stable_changes() -> None:
    world = released(hooked(prePromotion=[web("approve")]))
    old = world.status.stable_revision
    world.answers["approve"] = HookOutcome.PENDING  # an approval nobody gives
    world.run_until(lambda w: any(h.kind == HookKind.PRE_PROMOTION for h in w.status.hooks))
    world.annotate(Command.ABORT, "1")
    world.reconcile()
    assert world.status.phase == Phase.ABORTED and world.revision("web") == old
    assert world.route_weights() == (100, 0)


def test_a_failing_post_rollout_hook_is_reported_and_changes_nothing() -> None:
    world = released(hooked(postRollout=[web("notify")]))
    world.answers["notify"] = HookOutcome.FAILED
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    world.settle()
    assert world.status.phase == Phase.HEALTHY and world.image("web") == V2
    (run,) = world.status.hooks
    assert (run.kind, run.outcome) == (HookKind.POST_ROLLOUT, HookOutcome.FAILED)
    assert any(
        e.reason == "HookFailed" and 'postRollout hook "notify" failed' in e.message for e in world.events()
    )
    assert world.actions()[-1] == "hook"


def test_merge_takes_only_answers_to_pending_runs() -> None:
    pending = HookRun(kind=HookKind.PRE_ROLLOUT, name="a", revision="r1")
    answered = pending.model_copy(update={"outcome": HookOutcome.PASSED})
    merged, taken = hooks.merge([pending], [answered, answered.model_copy(update={"revision": "r0"})])
    assert merged == [answered] and taken == [answered]
    assert hooks.merge(merged, [answered.model_copy(update={"outcome": HookOutcome.FAILED})]) == (merged, [])


def test_hook_urls_must_be_allowed_hosts_and_timeouts_bounded() -> None:
    spec = hooked(preRollout=[web("smoke")], postRollout=[web("notify")])
    assert hook_problems(spec, AllowedHosts.of([], ["hooks.example"])) == []
    problems = hook_problems(spec, AllowedHosts.of([], ["other.example"]))
    assert len(problems) == 2 and problems[0].startswith(
        'preRollout hook "smoke": address http://hooks.example'
    )
    with pytest.raises(ValidationError, match="hook timeout 1m must be above 0s and at most 30s"):
        WebHook(url="http://x", timeout="1m")
    with pytest.raises(ValidationError, match="preRollout hook names must be unique: a"):
        hooked(preRollout=[web("a"), web("a")])


# ---- the calls, against a real HTTP server --------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        _Handler.received.append((self.command, self.path, self.rfile.read(length)))
        code = int(self.path.strip("/").split("/")[0])
        self.send_response(code)
        if code == 302:
            self.send_header("Location", "http://elsewhere.example/")
        self.end_headers()
        self.wfile.write(b"broken: database down" if code >= 500 else b"ok")

    do_GET = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=5)


def test_web_hook_calls_pass_on_2xx_only_and_never_follow_redirects(server: str) -> None:
    allowed = AllowedHosts.of([], ["127.0.0.1"])
    payload = {"rollout": "web", "namespace": "shop", "hook": "smoke", "kind": "preRollout", "revision": "r1"}
    assert call_web_hook(WebHook(url=f"{server}/204"), payload, allowed)[0] == HookOutcome.PASSED
    assert b'"kind": "preRollout"' in _Handler.received[-1][2]
    outcome, message = call_web_hook(WebHook(url=f"{server}/500", method="GET"), payload, allowed)
    assert (
        outcome == HookOutcome.FAILED and message == f"HTTP 500 from GET {server}/500: broken: database down"
    )
    outcome, message = call_web_hook(WebHook(url=f"{server}/302"), payload, allowed)
    assert outcome == HookOutcome.FAILED and message.startswith("HTTP 302")
    sent = len(_Handler.received)
    outcome, message = call_web_hook(WebHook(url=f"{server}/200"), payload, AllowedHosts())
    assert outcome == HookOutcome.FAILED and "not an allowed metric host" in message
    assert len(_Handler.received) == sent, "a refused URL is never called"
    outcome, message = call_web_hook(WebHook(url="http://127.0.0.1:9/x", timeout="1s"), payload, allowed)
    assert outcome == HookOutcome.FAILED and message.startswith("no answer from POST http://127.0.0.1:9/x")


def test_the_post_promotion_clock_starts_at_promotion() -> None:
    world = released(make_spec(STEPS, canary={"postPromotionAnalysis": {**POST, "duration": "20s"}}))
    promoted_and_verifying(world)
    post = world.status.post_promotion
    assert post is not None
    world.advance(19)
    world.reconcile()
    assert world.status.phase == Phase.PROGRESSING
    world.now += timedelta(seconds=2)
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
