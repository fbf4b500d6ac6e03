"""The blue-green release, driven through the real engine in the in-memory World (engine_world.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from operators.api.refs import RolloutRef
from operators.api.rollout import Outcome, Phase, RolloutSpec
from operators.rollout.bluegreen_stages import POST_PROMOTION, PRE_PROMOTION
from operators.rollout.commands import Command
from operators.rollout.ownership import PREVIEW_LABEL, REVISION_LABEL, TRACK_LABEL
from tests.unit.engine_world import METRIC, REF, ROUTE_KEY, World, template

ANALYSIS = {"interval": "30s", "minChecksPerStep": 2, "metrics": [METRIC]}


def blue_green_spec(traffic: bool = False, **blue_green: Any) -> RolloutSpec:
    body: dict[str, Any] = {
        "replicas": 3,
        "template": template(),
        "service": {"port": 80},
        "strategy": {"blueGreen": blue_green},
    }
    if traffic:
        body["traffic"] = {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "infra"}]}}
    return RolloutSpec.model_validate(body)


def active_selector(world: World) -> dict[str, str]:
    return dict(world.objects[world.key("web", "Service")]["spec"]["selector"])


def released(world: World) -> World:
    """A world whose first version serves, with a second one being released."""
    world.settle()
    assert world.status.phase == Phase.HEALTHY
    world.set_image("ghcr.io/acme/web:2")
    return world


def switch_writes(world: World, since: int) -> int:
    return sum(world.key("web", "Service") in p.writes for p in world.passes[since:])


def test_the_new_version_runs_in_full_behind_the_preview_while_the_active_service_keeps_the_old() -> None:
    world = released(World(blue_green_spec(prePromotionAnalysis=ANALYSIS)))
    old = world.status.stable_revision
    world.settle()
    new = world.status.canary_revision
    assert new is not None and new != old
    assert world.replicas("web-canary") == 3 and world.revision("web-canary") == new
    assert world.replicas("web") == 3 and world.revision("web") == old
    assert active_selector(world)[REVISION_LABEL] == old
    preview = world.objects[world.key("web-preview", "Service")]
    assert preview["spec"]["selector"][TRACK_LABEL] == "canary"
    assert preview["metadata"]["labels"][PREVIEW_LABEL] == "true"
    assert world.status.current_step_index == PRE_PROMOTION
    assert world.status.strategy == "BlueGreen"


def test_a_good_version_switches_in_one_write_after_analysis_and_promote_then_becomes_stable() -> None:
    world = released(World(blue_green_spec(prePromotionAnalysis=ANALYSIS, scaleDownDelaySeconds=30)))
    old = world.status.stable_revision
    start = len(world.passes)
    world.settle()
    # Two passing checks, then it waits for a person.
    world.run_until(lambda w: w.status.phase == Phase.PAUSED)
    assert world.status.analysis.passed >= 2
    assert active_selector(world)[REVISION_LABEL] == old
    world.annotate(Command.PROMOTE, "1")
    world.reconcile()
    new = world.status.canary_revision
    assert active_selector(world)[REVISION_LABEL] == new
    assert switch_writes(world, start) == 1
    assert world.status.current_step_index == POST_PROMOTION
    assert world.replicas("web") == 3 and world.revision("web") == old  # kept to switch back to
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    assert switch_writes(world, start) == 1  # finishing moved pods, not the Service
    assert world.revision("web") == new and world.replicas("web-canary") == 0
    assert active_selector(world)[REVISION_LABEL] == new
    assert "Switched" in world.reasons(start)


def test_a_bad_version_fails_pre_promotion_analysis_and_the_active_service_never_switches() -> None:
    world = released(World(blue_green_spec(prePromotionAnalysis=ANALYSIS, autoPromotionSeconds=0)))
    old = world.status.stable_revision
    world.metrics = Outcome.FAILED
    start = len(world.passes)
    world.run_until(lambda w: w.status.phase == Phase.DEGRADED)
    assert switch_writes(world, start) == 0
    assert active_selector(world)[REVISION_LABEL] == old
    assert "RolledBack" in world.reasons(start)
    world.advance(31)
    world.settle()
    assert world.replicas("web-canary") == 0


def test_a_post_promotion_failure_switches_back_in_one_write_to_the_old_pods() -> None:
    post = {**ANALYSIS, "duration": "5m"}
    world = released(World(blue_green_spec(autoPromotionSeconds=0, postPromotionAnalysis=post)))
    old = world.status.stable_revision
    start = len(world.passes)
    world.run_until(lambda w: w.status.current_step_index == POST_PROMOTION)
    assert switch_writes(world, start) == 1
    world.metrics = Outcome.FAILED
    world.run_until(lambda w: w.status.phase == Phase.DEGRADED)
    assert switch_writes(world, start) == 2
    assert active_selector(world)[REVISION_LABEL] == old
    assert world.revision("web") == old and world.replicas("web") == 3


def test_auto_promotion_waits_its_seconds_after_the_preview_is_ready() -> None:
    world = released(World(blue_green_spec(autoPromotionSeconds=60)))
    world.settle()
    assert world.status.phase == Phase.PAUSED and "switching in 60s" in world.status.message
    assert world.last.plan.requeue_after == 30.0  # the resync cap; the wake-up is at 60s
    world.advance(60)
    world.reconcile()
    assert world.status.current_step_index == POST_PROMOTION


def test_with_a_route_every_request_goes_to_the_active_service() -> None:
    world = released(World(blue_green_spec(traffic=True, autoPromotionSeconds=0)))
    world.run_until(lambda w: w.status.current_step_index == POST_PROMOTION)
    route = world.objects[ROUTE_KEY]
    weights = {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"web": 100, "web-preview": 0}
    assert "TrafficDrift" not in world.reasons()


@pytest.mark.parametrize("strategy", [{}, {"canary": {"steps": [{"setWeight": 10}]}, "blueGreen": {}}])
def test_a_strategy_has_exactly_one_of_canary_and_blue_green(strategy: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of canary and blueGreen"):
        RolloutSpec.model_validate({"template": template(), "strategy": strategy})


def test_a_default_preview_name_too_long_for_a_service_is_reported() -> None:
    ref = RolloutRef(name="a" * 56, namespace=REF.namespace, uid=REF.uid)
    world = World(blue_green_spec(), ref=ref)
    world.reconcile()
    assert world.status.phase == Phase.DEGRADED
    assert "set strategy.blueGreen.previewService" in world.status.message
    assert not world.objects
