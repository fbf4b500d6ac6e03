"""The Rollout state machine, driven through a tiny in-memory cluster (tests/unit/engine_world.py).

The engine is always the real one; only the cluster (and Prometheus) is faked.
Each test states one rule of DESIGN.md's Rollout section and checks what a
user would see: objects in the cluster, status, events and history.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from operators.api.rollout import (
    AnalysisStatus,
    Check,
    Outcome,
    Phase,
    RolloutSpec,
    RolloutStatus,
)
from operators.foundation.clock import format_time
from operators.foundation.diff import covers
from operators.foundation.keys import key_of
from operators.rollout import engine
from operators.rollout.commands import Command
from operators.rollout.inventory import managed_keys
from operators.rollout.ownership import REVISION_LABEL, TRACK_LABEL
from operators.rollout.render import pod_template_revision
from tests.unit.engine_world import REF, ROUTE_KEY, T0, World, make_check, make_spec, template

V1 = "ghcr.io/acme/web:1"
V2 = "ghcr.io/acme/web:2"
V3 = "ghcr.io/acme/web:3"
REV1 = pod_template_revision(template(V1))
REV2 = pod_template_revision(template(V2))
REV3 = pod_template_revision(template(V3))
CANARY = REF.canary_name
STABLE = REF.name


def healthy(spec: RolloutSpec) -> World:
    world = World(spec)
    world.settle()
    assert world.status.phase == Phase.HEALTHY, world.status.message
    return world


def release(world: World, image: str = V2) -> engine.Plan:
    world.set_image(image)
    return world.reconcile()


def at_weight(spec: RolloutSpec, weight: int) -> World:
    """A healthy world whose release of V2 has just reached ``weight`` (no check counted yet)."""
    world = healthy(spec)
    release(world)
    world.run_until(lambda w: w.status.canary_weight == weight, follow_requeue=False)
    return world


def conditions(status: RolloutStatus) -> dict[str, str]:
    return {c.type: c.status for c in status.conditions}


def condition_times(status: RolloutStatus) -> dict[str, str | None]:
    return {c.type: c.last_transition_time for c in status.conditions}


def analysis(**fields: Any) -> dict[str, Any]:
    return {"interval": "30s", **fields}


def next_check(world: World, outcome: Outcome | None = None) -> engine.Plan:
    """Let one analysis interval pass and reconcile: the shell runs one check."""
    world.advance(30)
    assert world.analysis_due()
    return world.reconcile(outcome=outcome)


# --- initial deploy -------------------------------------------------------------------------------


def test_initial_deploy_is_initializing_until_the_stable_deployment_is_rolled_out() -> None:
    world = World(make_spec())
    world.hold(STABLE)
    plan = world.reconcile()

    # No route yet: it would send users to a Service with no pod behind it.
    assert [key_of(obj) for obj in plan.objects] == [
        k for k in managed_keys(REF, world.spec) if k != ROUTE_KEY
    ]
    assert [obj["kind"] for obj in plan.objects] == ["Service", "Service", "Deployment", "Deployment"]
    assert world.route_weights() is None
    assert world.replicas(STABLE) == 4
    assert world.replicas(CANARY) == 0
    assert world.revision(STABLE) == REV1
    assert world.image(STABLE) == V1
    assert world.stable["spec"]["template"]["metadata"]["labels"][TRACK_LABEL] == "stable"
    assert world.stable["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] == REV1
    assert world.objects[world.key(STABLE, "Service")]["spec"]["selector"][TRACK_LABEL] == "stable"
    assert world.objects[world.key(CANARY, "Service")]["spec"]["selector"][TRACK_LABEL] == "canary"
    assert plan.status.phase == Phase.INITIALIZING
    assert plan.status.stable_revision == REV1
    assert plan.status.canary_revision is None
    assert plan.status.current_step_index is None
    assert plan.events == []
    world.set_ready(STABLE, 1)
    world.reconcile()
    assert world.route_weights() == (100, 0), "the route comes with the first ready pod"
    assert conditions(plan.status) == {
        "Ready": "False",
        "Reconciling": "True",
        "Stalled": "False",
        "Progressing": "True",
        "Degraded": "False",
    }

    world.set_ready(STABLE, 3)
    plan = world.reconcile()
    assert plan.status.phase == Phase.INITIALIZING
    assert "3/4 replicas ready" in plan.status.message
    assert plan.events == []

    world.release(STABLE)
    plan = world.reconcile()
    assert plan.status.phase == Phase.HEALTHY
    assert [e.reason for e in plan.events] == ["Healthy"]
    assert plan.status.replicas.stable == 4
    assert world.actions() == ["healthy"]
    assert conditions(plan.status) == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "Progressing": "False",
        "Degraded": "False",
    }


@pytest.mark.parametrize(
    ("ready", "updated", "observed_generation_lag", "extra_old_pods", "rolled_out"),
    [
        pytest.param(4, 4, 0, 0, True, id="all-ready"),
        pytest.param(3, 4, 0, 0, False, id="one-not-ready"),
        pytest.param(4, 3, 0, 0, False, id="one-not-updated"),
        pytest.param(4, 4, 1, 0, False, id="controller-has-not-seen-spec"),
        pytest.param(4, 4, 0, 1, False, id="old-pod-still-running"),
    ],
)
def test_stable_counts_as_rolled_out_only_when_fully_updated_and_ready(
    ready: int, updated: int, observed_generation_lag: int, extra_old_pods: int, rolled_out: bool
) -> None:
    world = World(make_spec())
    world.hold(STABLE)
    world.reconcile()
    world.set_ready(STABLE, ready, updated=updated)
    world.stable["status"]["observedGeneration"] -= observed_generation_lag
    world.stable["status"]["replicas"] += extra_old_pods
    plan = world.reconcile()
    assert plan.status.phase == (Phase.HEALTHY if rolled_out else Phase.INITIALIZING)


def test_the_same_revision_again_changes_nothing() -> None:
    world = healthy(make_spec())
    before = world.status.model_copy(deep=True)
    for _ in range(3):
        world.advance(60)
        plan = world.reconcile()
        assert plan.events == []
        assert world.last.writes == []
        assert plan.status == before
        assert plan.requeue_after == engine.RESYNC_SECONDS


def test_scaling_a_healthy_rollout_redeploys_without_a_release() -> None:
    world = healthy(make_spec())
    world.hold(STABLE)
    world.update(replicas=6)
    plan = world.reconcile()
    assert world.replicas(STABLE) == 6
    assert plan.status.canary_revision is None
    assert plan.status.phase == Phase.PROGRESSING  # not Initializing: it was healthy before
    world.release(STABLE)
    assert world.reconcile().status.phase == Phase.HEALTHY


# --- a release starts -----------------------------------------------------------------------------


def test_a_new_template_starts_a_release_and_scales_the_canary_before_any_traffic() -> None:
    world = healthy(make_spec())
    world.hold(CANARY)
    plan = release(world)

    assert [e.reason for e in plan.events] == ["ReleaseStarted"]
    assert plan.events[0].type == "Normal"
    assert REV2 in plan.events[0].message and REV1 in plan.events[0].message
    status = plan.status
    assert (status.phase, status.canary_revision, status.stable_revision) == (Phase.PROGRESSING, REV2, REV1)
    assert (status.current_step_index, status.canary_weight) == (0, 0)
    assert plan.requeue_after == 0
    assert world.route_weights() == (100, 0)
    assert (world.replicas(CANARY), world.image(CANARY), world.revision(CANARY)) == (1, V2, REV2)
    assert (world.replicas(STABLE), world.image(STABLE), world.revision(STABLE)) == (4, V1, REV1)
    assert world.actions()[-1] == "release-started"

    # The canary is not ready: no traffic yet, however often we look.
    for _ in range(3):
        plan = world.reconcile()
        assert plan.status.canary_weight == 0
        assert world.route_weights() == (100, 0)
        assert "waiting for canary pods: 0/1 ready" in plan.status.message

    world.release(CANARY)
    plan = world.reconcile()
    assert plan.status.canary_weight == 10
    assert world.route_weights() == (90, 10)
    assert plan.status.weight_changed_at == format_time(world.now)
    assert "set-weight" in world.actions()


@pytest.mark.parametrize(
    ("canary_replicas", "replicas", "weight", "expected"),
    [
        pytest.param("matchWeight", 4, 10, 1, id="match-weight-at-least-one"),
        pytest.param("matchWeight", 4, 50, 2, id="match-weight-half"),
        pytest.param("matchWeight", 4, 60, 3, id="match-weight-rounds-up"),
        pytest.param("matchWeight", 4, 100, 4, id="match-weight-all"),
        pytest.param("matchWeight", 10, 1, 1, id="match-weight-one-percent"),
        pytest.param(2, 4, 10, 2, id="fixed"),
        pytest.param(2, 4, 100, 2, id="fixed-at-full-weight"),
    ],
)
def test_the_canary_gets_its_replicas_before_its_weight(
    canary_replicas: int | str, replicas: int, weight: int, expected: int
) -> None:
    spec = make_spec(
        [{"setWeight": weight}, {"pause": {}}], replicas=replicas, canary={"canaryReplicas": canary_replicas}
    )
    world = healthy(spec)
    world.hold(CANARY)
    release(world)
    plan = world.reconcile()
    assert world.replicas(CANARY) == expected
    assert plan.status.canary_weight == 0
    world.set_ready(CANARY, expected - 1)
    assert world.reconcile().status.canary_weight == 0, "one pod short must still wait"
    world.set_ready(CANARY)
    plan = world.reconcile()
    assert plan.status.canary_weight == weight
    assert plan.status.replicas.canary == expected
    assert plan.status.replicas.canary_ready == expected
    assert world.route_weights() == (100 - weight, weight)


def test_a_fixed_canary_size_is_kept_at_weight_zero_and_dropped_once_healthy() -> None:
    world = healthy(make_spec([{"setWeight": 50}, {"pause": {}}], canary={"canaryReplicas": 3}))
    assert world.replicas(CANARY) == 0, "no release: no canary pods"
    world.hold(CANARY)
    release(world)
    assert world.replicas(CANARY) == 3
    assert world.status.canary_weight == 0
    world.release(CANARY)
    world.settle()
    assert (world.status.phase, world.status.canary_weight, world.replicas(CANARY)) == (Phase.PAUSED, 50, 3)
    world.annotate(Command.PROMOTE, "1")
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY, follow_requeue=False)
    assert world.replicas(CANARY) == 0


def test_less_traffic_to_the_canary_never_waits_for_pods() -> None:
    world = at_weight(make_spec([{"setWeight": 50}, {"setWeight": 20}, {"pause": {}}]), 50)
    assert world.replicas(CANARY) == 2
    world.hold(CANARY)  # no pod ready at all
    plan = world.settle()
    assert plan.status.current_step_index == 2
    assert plan.status.canary_weight == 20
    assert world.replicas(CANARY) == 1
    assert plan.status.phase == Phase.PAUSED
    # ... and a canary with no ready pod gets no traffic meanwhile (the traffic invariant).
    assert world.route_weights() == (100, 0)
    assert plan.status.routed_canary_weight == 0
    world.release(CANARY)
    plan = world.reconcile()
    assert world.route_weights() == (80, 20)
    assert plan.status.routed_canary_weight is None


# --- pauses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "step", "phase", "requeue"),
    [
        pytest.param(0, 1, Phase.PAUSED, 20.0, id="just-started"),
        pytest.param(5, 1, Phase.PAUSED, 15.0, id="under-way"),
        pytest.param(19.5, 1, Phase.PAUSED, 0.5, id="almost-over"),
        pytest.param(20, 2, Phase.PROGRESSING, 0.0, id="over"),
        pytest.param(3600, 2, Phase.PROGRESSING, 0.0, id="long-over"),
    ],
)
def test_a_timed_pause_holds_until_its_duration_is_over(
    elapsed: float, step: int, phase: Phase, requeue: float
) -> None:
    world = at_weight(make_spec([{"setWeight": 10}, {"pause": {"duration": "20s"}}, {"setWeight": 50}]), 10)
    world.settle()
    assert world.status.current_step_index == 1
    world.advance(elapsed)
    plan = world.reconcile()
    assert plan.status.current_step_index == step
    assert plan.status.phase == phase
    assert plan.requeue_after == pytest.approx(requeue)
    if phase == Phase.PAUSED:
        assert "paused for 20s" in plan.status.message
        assert plan.status.canary_weight == 10


@pytest.mark.parametrize("pause", [{"duration": "20s"}, {}])
def test_entering_a_pause_is_decided_in_the_pass_that_leaves_the_step_before(pause: dict[str, Any]) -> None:
    """One status write per decision: not "step started" now and "paused" on the next pass."""
    # Without analysis, the pass that routes 10% also leaves that step and begins the pause.
    world = at_weight(make_spec([{"setWeight": 10}, {"pause": pause}, {"setWeight": 50}]), 10)
    decided = world.status
    assert (decided.current_step_index, decided.phase) == (1, Phase.PAUSED)
    again = world.reconcile()
    assert again.status == decided, "the pass after it has nothing to write"


def test_a_long_timed_pause_still_looks_again_at_resync() -> None:
    world = at_weight(make_spec([{"setWeight": 10}, {"pause": {"duration": "1h"}}]), 10)
    plan = world.settle()
    assert plan.status.phase == Phase.PAUSED
    assert plan.requeue_after == engine.RESYNC_SECONDS
    assert "3600s left" in plan.status.message


def test_an_indefinite_pause_waits_for_promote() -> None:
    world = at_weight(make_spec([{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]), 10)
    for _ in range(3):
        world.advance(3600)
        plan = world.reconcile()
        assert (plan.status.phase, plan.status.current_step_index) == (Phase.PAUSED, 1)
        assert plan.requeue_after == engine.RESYNC_SECONDS
        assert "kubectl sluice promote web" in plan.status.message
    world.annotate(Command.PROMOTE, "now")
    plan = world.reconcile()
    assert plan.status.current_step_index == 2
    assert plan.status.handled_commands == {"promote": "now"}
    assert world.status.history[1].action == "promote"
    assert world.status.history[1].message == "pause ended by sluice.dev/promote"


@pytest.mark.parametrize(
    ("canary", "with_analysis", "weights"),
    [
        pytest.param({"stepWeight": 25}, False, [25, 50, 75, 100], id="step-25"),
        pytest.param({"stepWeight": 30, "maxWeight": 50}, False, [30, 50, 100], id="step-30-max-50"),
        pytest.param({"stepWeight": 40}, False, [40, 80, 100], id="step-40-tops-at-100"),
        pytest.param({"stepWeight": 50}, True, [50, 100], id="step-50-with-analysis"),
    ],
)
def test_the_step_weight_shorthand_walks_the_expected_weights(
    canary: dict[str, Any], with_analysis: bool, weights: list[int]
) -> None:
    spec = make_spec(None, canary=canary, analysis=analysis() if with_analysis else None)
    world = healthy(spec)
    release(world)
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY, max_passes=100)
    seen = [p.plan.status.canary_weight for p in world.passes]
    walked = [w for i, w in enumerate(seen) if w and (i == 0 or seen[i - 1] != w)]
    assert walked == weights
    if with_analysis:
        # Each weight below 100 is followed by a pause of one interval.
        assert "PausedByStep" in [c.reason for p in world.passes for c in p.plan.status.conditions]


# --- progressDeadlineSeconds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "needed_weight", "message"),
    [
        pytest.param(0, 10, "0/1 pods ready", id="none-ready"),
        pytest.param(1, 50, "1/2 pods ready", id="partly-ready"),
    ],
)
def test_a_canary_not_ready_by_the_deadline_is_rolled_back(
    ready: int, needed_weight: int, message: str
) -> None:
    spec = make_spec([{"setWeight": needed_weight}, {"pause": {}}], progressDeadlineSeconds=20)
    world = healthy(spec)
    world.hold(CANARY)
    release(world)
    world.set_ready(CANARY, ready)
    plan = world.reconcile()
    assert plan.status.phase == Phase.PROGRESSING
    assert plan.requeue_after == pytest.approx(21.0), "wakes up just after the deadline"
    world.advance(20)
    assert world.reconcile().status.phase == Phase.PROGRESSING, "at the deadline, not past it"
    world.advance(1)
    plan = world.reconcile()
    assert plan.status.phase == Phase.DEGRADED
    assert plan.status.canary_weight == 0
    assert world.route_weights() == (100, 0)
    [event] = plan.events
    assert (event.type, event.reason) == ("Warning", "RolledBack")
    assert f"canary {CANARY} not ready within progressDeadlineSeconds (20s)" in event.message
    assert message in event.message
    assert event.message == plan.status.message
    assert world.actions()[-1] == "rolled-back"


def test_the_deadline_counts_from_the_start_of_each_step() -> None:
    spec = make_spec(
        [{"setWeight": 10}, {"pause": {"duration": "1h"}}, {"setWeight": 50}, {"pause": {}}],
        progressDeadlineSeconds=60,
    )
    world = at_weight(spec, 10)
    world.hold(CANARY)
    world.set_ready(CANARY)  # the one pod for 10% stays ready, the second for 50% never comes
    world.advance(3600)
    world.reconcile()
    world.reconcile()
    assert world.status.current_step_index == 2
    world.advance(59)
    assert world.reconcile().status.phase == Phase.PROGRESSING
    world.advance(2)
    assert world.reconcile().status.phase == Phase.DEGRADED


def test_time_held_by_spec_paused_does_not_count_against_the_deadline() -> None:
    world = healthy(make_spec([{"setWeight": 10}, {"pause": {}}], progressDeadlineSeconds=60))
    world.update(paused=True)
    release(world)
    world.settle()
    assert (world.status.phase, world.replicas(CANARY)) == (Phase.PAUSED, 0), "held: no canary pods asked for"
    world.advance(3600)
    world.reconcile()
    world.hold(CANARY)
    world.update(paused=False)
    plan = world.reconcile()
    assert plan.status.phase == Phase.PROGRESSING, plan.status.message
    assert world.replicas(CANARY) == 1
    assert plan.requeue_after == engine.RESYNC_SECONDS  # the deadline (61s away) is past the resync
    world.advance(60)
    assert world.reconcile().status.phase == Phase.PROGRESSING
    world.advance(1)
    plan = world.reconcile()
    assert plan.status.phase == Phase.DEGRADED
    assert "0/1 pods ready" in plan.status.message


def test_time_held_by_inconclusive_analysis_does_not_count_against_the_deadline() -> None:
    spec = make_spec(
        [{"setWeight": 10}, {"setWeight": 50}, {"pause": {}}],
        analysis=analysis(inconclusiveLimit=0),
        progressDeadlineSeconds=60,
    )
    world = at_weight(spec, 10)
    world.hold(CANARY)
    world.set_ready(CANARY, 1)
    next_check(world, Outcome.PASSED)
    world.settle()
    assert (world.status.current_step_index, world.replicas(CANARY)) == (1, 2)
    next_check(world, Outcome.INCONCLUSIVE)
    assert world.status.phase == Phase.PAUSED
    world.advance(600)
    world.reconcile()
    world.annotate(Command.PROMOTE, "1")
    plan = world.reconcile()
    assert plan.status.phase == Phase.PROGRESSING, plan.status.message
    assert "waiting for canary pods: 1/2 ready" in plan.status.message
    world.set_ready(CANARY)
    world.settle()
    assert world.status.canary_weight == 50


# --- analysis -------------------------------------------------------------------------------------


def analysing_status(**fields: Any) -> RolloutStatus:
    base: dict[str, Any] = {
        "phase": Phase.PROGRESSING,
        "canary_revision": REV2,
        "stable_revision": REV1,
        "current_step_index": 0,
        "canary_weight": 10,
        "weight_changed_at": format_time(T0),
    }
    base.update(fields)
    return RolloutStatus(**base)


def check_at(seconds: float, outcome: Outcome = Outcome.PASSED) -> Check:
    return make_check(outcome, T0 + timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("status", "after", "due"),
    [
        pytest.param(analysing_status(), 29, False, id="within-interval-of-weight-change"),
        pytest.param(analysing_status(), 30, True, id="one-interval-after-weight-change"),
        pytest.param(
            analysing_status(analysis=AnalysisStatus(last_check=check_at(40))),
            69,
            False,
            id="within-interval-of-last-check",
        ),
        pytest.param(
            analysing_status(analysis=AnalysisStatus(last_check=check_at(40))),
            70,
            True,
            id="one-interval-after-last-check",
        ),
        pytest.param(
            analysing_status(
                weight_changed_at=format_time(T0 + timedelta(seconds=50)),
                analysis=AnalysisStatus(last_check=check_at(40)),
            ),
            79,
            False,
            id="weight-changed-after-last-check",
        ),
        pytest.param(
            analysing_status(
                weight_changed_at=format_time(T0 + timedelta(seconds=50)),
                analysis=AnalysisStatus(last_check=check_at(40)),
            ),
            80,
            True,
            id="one-interval-after-later-weight-change",
        ),
        pytest.param(analysing_status(canary_weight=0), 3600, False, id="not-before-first-non-zero-weight"),
        pytest.param(analysing_status(current_step_index=2), 3600, False, id="not-while-promoting"),
        pytest.param(analysing_status(phase=Phase.PAUSED), 30, True, id="goes-on-while-paused"),
        pytest.param(analysing_status(phase=Phase.DEGRADED), 3600, False, id="not-when-degraded"),
        pytest.param(analysing_status(phase=Phase.ABORTED), 3600, False, id="not-when-aborted"),
        pytest.param(
            analysing_status(phase=Phase.HEALTHY, canary_revision=None), 3600, False, id="not-when-healthy"
        ),
        pytest.param(analysing_status(weight_changed_at=None), 0, True, id="no-anchor-means-now"),
    ],
)
def test_analysis_due(status: RolloutStatus, after: float, due: bool) -> None:
    spec = make_spec([{"setWeight": 10}, {"setWeight": 50}], analysis=analysis())
    assert engine.analysis_due(spec, status, T0 + timedelta(seconds=after)) is due


def test_analysis_is_never_due_without_analysis() -> None:
    spec = make_spec([{"setWeight": 10}, {"setWeight": 50}])
    assert engine.analysis_due(spec, analysing_status(), T0 + timedelta(hours=1)) is False


def test_the_first_check_waits_one_interval_after_the_first_weight() -> None:
    world = healthy(make_spec([{"setWeight": 10}, {"pause": {}}], analysis=analysis()))
    release(world)
    assert not world.analysis_due(), "weight 0: nothing to measure"
    plan = world.run_until(lambda w: w.status.canary_weight == 10, follow_requeue=False)
    world.settle()
    assert [p.check for p in world.passes if p.check] == []
    assert world.status.current_step_index == 0, "no check passed yet: the step waits"
    assert world.last.plan.requeue_after == pytest.approx(30.0)
    assert plan.status.weight_changed_at == format_time(world.now)
    world.advance(29)
    assert not world.analysis_due()
    world.advance(1)
    assert world.analysis_due()


@pytest.mark.parametrize("min_checks", [0, 1, 2, 3])
def test_a_step_advances_after_min_checks_per_step_passed_checks(min_checks: int) -> None:
    spec = make_spec([{"setWeight": 10}, {"pause": {}}], analysis=analysis(minChecksPerStep=min_checks))
    world = at_weight(spec, 10)
    checks = 0
    while world.status.current_step_index == 0:
        next_check(world, Outcome.PASSED)
        checks += 1
        assert checks <= min_checks, "the step should have advanced by now"
    assert checks == min_checks
    assert world.status.analysis.passed == min_checks
    assert world.status.analysis.passed_at_step == min_checks


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(
            [{"setWeight": 0}, {"pause": {"duration": "10s"}}, {"setWeight": 50}], id="first-step-zero"
        ),
        pytest.param(
            [{"setWeight": 20}, {"setWeight": 0}, {"pause": {"duration": "10s"}}, {"setWeight": 50}],
            id="back-to-zero",
        ),
    ],
)
def test_steps_at_weight_zero_do_not_wait_for_analysis_that_never_runs(steps: list[dict[str, Any]]) -> None:
    world = healthy(make_spec(steps, analysis=analysis(), canary={"canaryReplicas": 1}))
    release(world)
    world.run_until(lambda w: w.status.canary_weight == 50, max_passes=20)
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY, max_passes=20)
    assert all(p.plan.status.canary_weight > 0 for p in world.passes if p.check)


def test_passed_checks_count_per_weight() -> None:
    spec = make_spec(
        [{"setWeight": 10}, {"setWeight": 50}, {"pause": {}}], analysis=analysis(minChecksPerStep=2)
    )
    world = at_weight(spec, 10)
    next_check(world)
    next_check(world)
    world.settle()
    assert (world.status.canary_weight, world.status.current_step_index) == (50, 1)
    assert world.status.analysis.passed_at_step == 0, "a new weight starts counting again"
    assert world.status.analysis.passed == 2
    next_check(world)
    assert world.status.current_step_index == 1
    next_check(world)
    assert world.status.current_step_index == 2


@pytest.mark.parametrize("failure_limit", [0, 1, 2])
def test_failed_checks_beyond_the_failure_limit_roll_back_at_once(failure_limit: int) -> None:
    spec = make_spec([{"setWeight": 10}, {"pause": {}}], analysis=analysis(failureLimit=failure_limit))
    world = at_weight(spec, 10)
    for failures in range(1, failure_limit + 1):
        plan = next_check(world, Outcome.FAILED)
        assert plan.status.phase == Phase.PROGRESSING, f"failure {failures} is within the limit"
        assert plan.status.current_step_index == 0, "a failed check holds the step"
        assert plan.status.canary_weight == 10
        assert plan.events == []
        assert "waiting for analysis" in plan.status.message
    plan = next_check(world, Outcome.FAILED)
    status = plan.status
    assert status.phase == Phase.DEGRADED
    assert status.canary_weight == 0
    assert world.route_weights() == (100, 0)
    assert status.analysis.failed == failure_limit + 1
    assert "error-rate=0.31 Failed (0.31 > max 0.01)" in status.message
    assert f"failureLimit {failure_limit}" in status.message
    [event] = plan.events
    assert (event.type, event.reason, event.message) == ("Warning", "RolledBack", status.message)
    cond = conditions(status)
    assert (cond["Degraded"], cond["Stalled"], cond["Ready"], cond["Reconciling"]) == (
        "True",
        "True",
        "False",
        "False",
    )
    assert not world.analysis_due()


@pytest.mark.parametrize("error_limit", [0, 2])
def test_provider_errors_roll_back_only_past_the_error_limit(error_limit: int) -> None:
    world = at_weight(
        make_spec([{"setWeight": 10}, {"pause": {}}], analysis=analysis(errorLimit=error_limit)), 10
    )
    for errors in range(1, error_limit + 1):
        plan = next_check(world, Outcome.ERROR)
        assert plan.status.phase == Phase.PROGRESSING
        assert plan.status.analysis.consecutive_errors == errors
        assert (plan.status.current_step_index, plan.status.canary_weight) == (0, 10)
        assert plan.events == []
    plan = next_check(world, Outcome.ERROR)
    assert plan.status.phase == Phase.DEGRADED
    assert plan.status.canary_weight == 0
    assert world.route_weights() == (100, 0)
    assert (
        f"metrics provider failed {error_limit + 1} times in a row (errorLimit {error_limit})"
        in plan.status.message
    )
    assert "error-rate=n/a Error (connection refused)" in plan.status.message
    assert [e.reason for e in plan.events] == ["RolledBack"]


@pytest.mark.parametrize("outcome", [Outcome.ERROR, Outcome.FAILED, Outcome.INCONCLUSIVE])
def test_a_bad_last_check_holds_a_step_that_would_otherwise_advance(outcome: Outcome) -> None:
    spec = make_spec(
        [{"setWeight": 10}, {"pause": {"duration": "10s"}}, {"setWeight": 50}],
        analysis=analysis(failureLimit=5, errorLimit=5, inconclusiveLimit=5),
    )
    world = at_weight(spec, 10)
    next_check(world, Outcome.PASSED)
    assert world.status.current_step_index == 1, "one passed check leaves the weight step"
    for _ in range(3):
        plan = next_check(world, outcome)  # the 10s pause is long over
        assert (plan.status.current_step_index, plan.status.canary_weight) == (1, 10)
        assert plan.status.phase == Phase.PROGRESSING
        assert "pause over, waiting for analysis" in plan.status.message
    plan = next_check(world, Outcome.PASSED)
    assert plan.status.current_step_index == 2
    assert plan.status.analysis.consecutive_errors == 0


def test_with_min_checks_zero_steps_do_not_wait_for_a_first_check() -> None:
    world = healthy(
        make_spec(
            [{"setWeight": 10}, {"setWeight": 20}, {"pause": {}}], analysis=analysis(minChecksPerStep=0)
        )
    )
    release(world)
    world.settle()
    assert (world.status.current_step_index, world.status.canary_weight) == (2, 20)
    assert [p.check for p in world.passes if p.check] == []


def test_a_passed_check_resets_consecutive_errors() -> None:
    spec = make_spec([{"setWeight": 10}, {"pause": {}}], analysis=analysis(errorLimit=1))
    world = at_weight(spec, 10)
    next_check(world, Outcome.ERROR)
    assert world.status.analysis.consecutive_errors == 1
    next_check(world, Outcome.PASSED)
    assert world.status.analysis.consecutive_errors == 0
    assert next_check(world, Outcome.ERROR).status.phase == Phase.PAUSED, (
        "one error after a pass is within the limit"
    )
    assert next_check(world, Outcome.ERROR).status.phase == Phase.DEGRADED


def test_inconclusive_checks_beyond_the_limit_pause_and_promote_resumes() -> None:
    spec = make_spec(
        [{"setWeight": 10}, {"setWeight": 50}, {"pause": {}}], analysis=analysis(inconclusiveLimit=1)
    )
    world = at_weight(spec, 10)
    plan = next_check(world, Outcome.INCONCLUSIVE)
    assert plan.status.phase == Phase.PROGRESSING
    assert plan.status.current_step_index == 0
    plan = next_check(world, Outcome.INCONCLUSIVE)
    assert plan.status.phase == Phase.PAUSED
    assert plan.status.canary_weight == 10, "inconclusive pauses, it does not roll back"
    assert "analysis inconclusive 2 time(s) (inconclusiveLimit 1)" in plan.status.message
    assert "error-rate=n/a Inconclusive (no data)" in plan.status.message
    assert {c.reason for c in plan.status.conditions} == {"InconclusiveAnalysis"}
    assert plan.events == []
    # It stays paused, passed checks or not, until someone decides.
    world.advance(3600)
    assert world.reconcile().status.phase == Phase.PAUSED
    world.annotate(Command.PROMOTE, "go")
    plan = world.reconcile()
    assert plan.status.phase == Phase.PROGRESSING
    assert plan.status.analysis.inconclusive == 0
    assert plan.status.handled_commands["promote"] == "go"
    assert any(
        e.action == "promote" and "inconclusive analysis accepted" in e.message for e in world.status.history
    )
    next_check(world, Outcome.PASSED)
    world.settle()
    assert world.status.canary_weight == 50


def test_abort_rolls_back_a_release_paused_on_inconclusive_analysis() -> None:
    world = at_weight(
        make_spec([{"setWeight": 10}, {"pause": {}}], analysis=analysis(inconclusiveLimit=0)), 10
    )
    next_check(world, Outcome.INCONCLUSIVE)
    assert world.status.phase == Phase.PAUSED
    world.annotate(Command.ABORT, "1")
    assert world.reconcile().status.phase == Phase.ABORTED


@pytest.mark.parametrize("outcome", [Outcome.PASSED, Outcome.FAILED])
def test_a_check_in_the_same_round_as_a_new_release_is_ignored(outcome: Outcome) -> None:
    spec = make_spec([{"setWeight": 10}, {"pause": {}}], analysis=analysis())
    world = at_weight(spec, 10)
    world.advance(30)
    assert world.analysis_due()
    world.set_image(V3)
    plan = world.reconcile(outcome=outcome)
    assert world.last.check is not None, "the shell ran the check against the previous canary"
    assert plan.status.canary_revision == REV3
    assert plan.status.phase == Phase.PROGRESSING
    assert (plan.status.current_step_index, plan.status.canary_weight) == (0, 0)
    assert plan.status.analysis == AnalysisStatus()


def test_a_check_outside_a_release_is_ignored() -> None:
    world = healthy(make_spec([{"setWeight": 10}], analysis=analysis()))
    before = world.status.model_copy(deep=True)
    plan = world.plan(make_check(Outcome.FAILED, world.now))
    assert plan.status == before


def test_a_check_before_the_first_weight_is_ignored() -> None:
    world = healthy(make_spec([{"setWeight": 10}, {"pause": {}}], analysis=analysis(failureLimit=0)))
    world.hold(CANARY)
    release(world)
    plan = world.reconcile(make_check(Outcome.FAILED, world.now))
    assert plan.status.phase == Phase.PROGRESSING
    assert plan.status.analysis == AnalysisStatus()


def test_checks_are_asked_for_in_requeue_after() -> None:
    spec = make_spec([{"setWeight": 10}, {"pause": {}}], analysis=analysis())
    world = at_weight(spec, 10)
    world.advance(12)
    assert world.reconcile().requeue_after == pytest.approx(18.0)
    next_check(world)
    world.advance(5)
    assert world.reconcile().requeue_after == pytest.approx(25.0), "a paused release keeps analysing"


# --- rollback -------------------------------------------------------------------------------------


def rolled_back(delay: int = 30, steps: list[dict[str, Any]] | None = None) -> World:
    spec = make_spec(
        steps or [{"setWeight": 50}, {"pause": {}}],
        analysis=analysis(),
        canary={"abortScaleDownDelaySeconds": delay},
    )
    world = at_weight(spec, 50)
    next_check(world, Outcome.FAILED)
    assert world.status.phase == Phase.DEGRADED
    return world


def test_the_canary_keeps_its_pods_for_the_abort_scale_down_delay() -> None:
    world = rolled_back(delay=30)
    assert world.replicas(CANARY) == 2
    assert world.route_weights() == (100, 0)
    assert world.last.plan.requeue_after == 0
    world.advance(10)
    plan = world.reconcile()
    assert world.replicas(CANARY) == 2
    assert plan.requeue_after == pytest.approx(20.0)
    world.advance(19)
    world.reconcile()
    assert world.replicas(CANARY) == 2
    world.advance(1)
    world.reconcile()
    assert world.replicas(CANARY) == 0
    assert world.image(STABLE) == V1 and world.replicas(STABLE) == 4, "stable never stops serving"


def test_without_a_delay_the_canary_goes_to_zero_at_once() -> None:
    world = rolled_back(delay=0)
    assert world.replicas(CANARY) == 0


def test_a_rolled_back_release_stays_degraded() -> None:
    world = rolled_back()
    events_before = len(world.events())
    history_before = list(world.status.history)
    message = world.status.message
    for _ in range(3):
        world.advance(600)
        plan = world.reconcile(outcome=Outcome.PASSED)
        assert plan.status.phase == Phase.DEGRADED
        assert plan.status.canary_weight == 0
        assert plan.status.message == message
        assert world.last.check is None, "no analysis after a rollback"
    assert len(world.events()) == events_before
    assert world.status.history == history_before
    assert world.route_weights() == (100, 0)


def test_retry_restarts_the_same_revision_from_step_zero() -> None:
    world = rolled_back(steps=[{"setWeight": 50}, {"pause": {}}])
    world.advance(60)
    world.reconcile()
    world.annotate(Command.RETRY, "1")
    plan = world.reconcile()
    status = plan.status
    assert (status.phase, status.canary_revision, status.current_step_index) == (Phase.PROGRESSING, REV2, 0)
    assert status.analysis == AnalysisStatus()
    assert status.aborted_at is None
    assert "ReleaseStarted" in [e.reason for e in plan.events]
    assert world.actions()[-2:] == ["retry", "release-started"]
    world.run_until(lambda w: w.status.canary_weight == 50, follow_requeue=False)
    next_check(world, Outcome.PASSED)
    world.settle()
    assert world.status.phase == Phase.PAUSED and world.status.current_step_index == 1
    # The same value again does not restart anything.
    plan = world.reconcile()
    assert "release-started" not in [e.action for e in plan.status.history[:2]]


def test_a_new_template_after_a_rollback_starts_a_new_release() -> None:
    world = rolled_back()
    plan = release(world, V3)
    assert plan.status.phase == Phase.PROGRESSING
    assert plan.status.canary_revision == REV3
    assert plan.status.stable_revision == REV1
    assert world.image(CANARY) == V3
    assert [e.reason for e in plan.events] == ["ReleaseStarted"]


@pytest.mark.parametrize("how", ["in-progress", "rolled-back"])
def test_reverting_the_template_to_stable_cancels_the_release(how: str) -> None:
    if how == "rolled-back":
        world = rolled_back()
    else:
        world = at_weight(make_spec([{"setWeight": 50}, {"pause": {}}]), 50)
    world.set_image(V1)
    plan = world.reconcile()
    status = plan.status
    assert status.phase == Phase.HEALTHY
    assert (status.canary_revision, status.stable_revision, status.current_step_index) == (None, REV1, None)
    assert status.canary_weight == 0
    assert world.route_weights() == (100, 0)
    assert world.replicas(CANARY) == 0
    assert "ReleaseCancelled" in [e.reason for e in plan.events]
    assert "release-cancelled" in world.actions()
    assert conditions(status)["Ready"] == "True"
    assert world.settle().events == []


# --- promotion ------------------------------------------------------------------------------------


@pytest.mark.parametrize("last_weight", [100, 50])
def test_promotion_rolls_out_stable_before_traffic_returns_to_it(last_weight: int) -> None:
    world = healthy(make_spec([{"setWeight": 20}, {"setWeight": last_weight}]))
    world.hold(STABLE)
    release(world)
    world.run_until(lambda w: w.status.current_step_index == 2, follow_requeue=False)
    plan = world.last.plan
    assert "Promoting" in [e.reason for e in plan.events]
    canary_pods = 4 * last_weight // 100
    assert world.replicas(CANARY) == canary_pods, "the canary keeps serving its share"
    # The stable Deployment takes the canary's template and revision; traffic stays where it is.
    assert (world.image(STABLE), world.revision(STABLE)) == (V2, REV2)
    assert world.stable["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] == REV2
    assert world.replicas(STABLE) == 4
    # Held, the stable Deployment reports no ready pod at all: no share for it meanwhile.
    assert world.route_weights() == (0, 100)
    for ready in (0, 2, 3):
        world.set_ready(STABLE, ready)
        plan = world.reconcile()
        assert plan.status.phase == Phase.PROGRESSING
        assert f"stable {ready}/4 updated and ready" in plan.status.message
        assert world.route_weights() == ((0, 100) if ready == 0 else (100 - last_weight, last_weight))
        assert world.replicas(CANARY) == canary_pods
        assert plan.status.canary_revision == REV2
        assert plan.events == []
    world.release(STABLE)
    plan = world.reconcile()
    status = plan.status
    assert world.route_weights() == (100, 0)
    assert world.replicas(CANARY) == 0
    assert (status.stable_revision, status.canary_revision, status.current_step_index) == (REV2, None, None)
    assert (status.phase, status.canary_weight) == (Phase.HEALTHY, 0)
    assert [e.reason for e in plan.events] == ["Promoted"]
    assert world.actions()[-1] == "promoted"
    assert conditions(status)["Ready"] == "True"
    # And from then on, nothing.
    assert world.settle().events == []
    assert world.status.phase == Phase.HEALTHY


def test_a_full_release_history_reads_like_the_release() -> None:
    world = healthy(make_spec([{"setWeight": 10}, {"pause": {"duration": "10s"}}, {"setWeight": 50}]))
    release(world)
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    assert world.actions() == [
        "healthy",
        "release-started",
        "set-weight",
        "step",
        "step",
        "set-weight",
        "step",
        "promoted",
    ]
    assert all(e.revision == REV2 for e in world.status.history[:-1])
    assert world.reasons() == ["Healthy", "ReleaseStarted", "Promoting", "Promoted"]


# --- commands -------------------------------------------------------------------------------------


def test_promote_full_skips_the_remaining_steps() -> None:
    spec = make_spec(
        [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}], analysis=analysis()
    )
    world = at_weight(spec, 10)
    world.annotate(Command.PROMOTE_FULL, "1")
    plan = world.reconcile()
    assert plan.status.current_step_index == 4
    assert world.image(STABLE) == V2
    assert "promote-full" in world.actions()
    assert not world.analysis_due()
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY, follow_requeue=False)
    assert max(p.plan.status.canary_weight for p in world.passes) == 10, "weight 50 was skipped"
    assert world.status.stable_revision == REV2


def test_abort_rolls_back_as_aborted() -> None:
    world = at_weight(
        make_spec([{"setWeight": 30}, {"pause": {}}], canary={"abortScaleDownDelaySeconds": 0}), 30
    )
    world.annotate(Command.ABORT, "x")
    plan = world.reconcile()
    status = plan.status
    assert (status.phase, status.canary_weight) == (Phase.ABORTED, 0)
    assert world.route_weights() == (100, 0)
    assert world.replicas(CANARY) == 0
    [event] = plan.events
    assert (event.type, event.reason) == ("Warning", "Aborted")
    assert "aborted by the sluice.dev/abort annotation" in status.message
    assert world.actions()[-1] == "aborted"
    assert conditions(status)["Stalled"] == "True"
    assert world.reconcile().status.phase == Phase.ABORTED
    world.annotate(Command.RETRY, "1")
    assert world.reconcile().status.phase == Phase.PROGRESSING
    world.settle()
    assert world.status.phase == Phase.PAUSED, "the handled abort value does not abort the retried release"
    assert world.status.canary_weight == 30


def test_abort_is_obeyed_while_spec_paused() -> None:
    world = at_weight(make_spec([{"setWeight": 30}, {"pause": {}}]), 30)
    world.update(paused=True)
    world.reconcile()
    world.annotate(Command.ABORT, "1")
    plan = world.reconcile()
    assert (plan.status.phase, plan.status.canary_weight) == (Phase.ABORTED, 0)


def test_a_command_is_acted_on_once_per_distinct_value() -> None:
    world = at_weight(
        make_spec(
            [
                {"setWeight": 10},
                {"pause": {}},
                {"setWeight": 20},
                {"pause": {}},
                {"setWeight": 30},
                {"pause": {}},
            ]
        ),
        10,
    )
    world.settle()
    world.annotate(Command.PROMOTE, "a")
    world.settle()
    assert (world.status.current_step_index, world.status.canary_weight) == (3, 20)
    world.advance(60)
    world.settle()
    assert world.status.current_step_index == 3, "the same value again ends no pause"
    world.annotate(Command.PROMOTE, "b")
    world.settle()
    assert (world.status.current_step_index, world.status.canary_weight) == (5, 30)
    world.annotate(Command.PROMOTE, "a")  # an old value, but not the last one handled: it counts
    world.settle()
    assert world.status.phase == Phase.HEALTHY


def ready_for(state: str) -> World:
    """Worlds in the states where a command may or may not apply."""
    spec = make_spec([{"setWeight": 10}, {"pause": {}}], analysis=analysis())
    if state == "healthy":
        return healthy(spec)
    if state == "set-weight-step":
        return at_weight(spec, 10)
    if state == "degraded":
        world = at_weight(spec, 10)
        next_check(world, Outcome.FAILED)
        return world
    if state == "promoting":
        world = healthy(make_spec([{"setWeight": 10}]))
        world.hold(STABLE)
        release(world)
        world.run_until(lambda w: w.status.current_step_index == 1, follow_requeue=False)
        return world
    if state == "spec-paused":
        world = at_weight(spec, 10)
        world.update(paused=True)
        world.reconcile()
        return world
    raise AssertionError(state)


@pytest.mark.parametrize(
    ("state", "command", "why"),
    [
        pytest.param("healthy", Command.PROMOTE, "no release in progress", id="promote-when-healthy"),
        pytest.param("healthy", Command.ABORT, "no release in progress", id="abort-when-healthy"),
        pytest.param("healthy", Command.RETRY, "no release in progress", id="retry-when-healthy"),
        pytest.param(
            "healthy", Command.PROMOTE_FULL, "no release in progress", id="promote-full-when-healthy"
        ),
        pytest.param(
            "set-weight-step", Command.PROMOTE, "nothing to do at this step", id="promote-at-weight"
        ),
        pytest.param("set-weight-step", Command.RETRY, "nothing to do at this step", id="retry-in-progress"),
        pytest.param("degraded", Command.PROMOTE, "rolled back", id="promote-when-degraded"),
        pytest.param("degraded", Command.ABORT, "rolled back", id="abort-when-degraded"),
        pytest.param("degraded", Command.PROMOTE_FULL, "rolled back", id="promote-full-when-degraded"),
        pytest.param("promoting", Command.ABORT, "promotion is under way", id="abort-while-promoting"),
        pytest.param(
            "spec-paused", Command.PROMOTE, "spec.paused holds the release", id="promote-when-paused"
        ),
    ],
)
def test_commands_that_do_not_apply_are_recorded_as_ignored(state: str, command: Command, why: str) -> None:
    world = ready_for(state)
    before = world.status.model_copy(deep=True)
    world.annotate(command, "v1")
    plan = world.reconcile()
    assert plan.status.handled_commands[command.value] == "v1"
    entry = plan.status.history[0]
    assert entry.action == command.value
    assert entry.message.startswith("ignored: ")
    assert why in entry.message
    assert (plan.status.phase, plan.status.current_step_index, plan.status.canary_weight) == (
        before.phase,
        before.current_step_index,
        before.canary_weight,
    )
    # Marked handled: the next pass does not record it again.
    assert world.reconcile().status.history[0] == entry


def test_abort_wins_over_promote_when_both_are_new() -> None:
    world = at_weight(make_spec([{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]), 10)
    world.settle()
    assert world.status.phase == Phase.PAUSED
    world.annotate(Command.PROMOTE, "1")
    world.annotate(Command.ABORT, "1")
    plan = world.reconcile()
    assert plan.status.phase == Phase.ABORTED
    assert plan.status.handled_commands == {"abort": "1", "promote": "1"}
    assert [(e.action, e.message) for e in plan.status.history[:2]] == [
        ("promote", "ignored: not applicable now"),
        ("aborted", plan.status.message),
    ]


# --- spec.paused ----------------------------------------------------------------------------------


def test_spec_paused_holds_the_current_step_and_resumes_when_unset() -> None:
    world = at_weight(make_spec([{"setWeight": 10}, {"pause": {"duration": "20s"}}, {"setWeight": 50}]), 10)
    world.reconcile()
    assert world.status.current_step_index == 1
    world.update(paused=True)
    plan = world.reconcile()
    assert (plan.status.phase, plan.status.current_step_index) == (Phase.PAUSED, 1)
    assert "paused by spec.paused" in plan.status.message
    world.advance(3600)  # the timed pause is long over
    world.annotate(Command.PROMOTE, "1")
    plan = world.reconcile()
    assert (plan.status.phase, plan.status.current_step_index, plan.status.canary_weight) == (
        Phase.PAUSED,
        1,
        10,
    )
    assert plan.status.history[0].message.startswith("ignored: spec.paused")
    assert world.route_weights() == (90, 10)
    assert conditions(plan.status)["Reconciling"] == "True"
    assert conditions(plan.status)["Stalled"] == "False"
    world.update(paused=False)
    plan = world.reconcile()
    assert plan.status.current_step_index == 2
    world.settle()
    assert world.status.phase == Phase.HEALTHY


def test_spec_paused_does_not_raise_the_weight() -> None:
    world = healthy(make_spec([{"setWeight": 10}, {"pause": {}}]))
    world.update(paused=True)
    release(world)
    world.settle()
    assert (world.status.phase, world.status.current_step_index, world.status.canary_weight) == (
        Phase.PAUSED,
        0,
        0,
    )
    assert world.replicas(CANARY) == 0
    world.update(paused=False)
    world.settle()
    assert world.status.canary_weight == 10


# --- a release replaced by a newer one ------------------------------------------------------------


def test_the_newest_revision_wins_over_a_release_in_progress() -> None:
    world = at_weight(make_spec([{"setWeight": 50}, {"pause": {}}], analysis=analysis()), 50)
    world.hold(CANARY)
    world.set_ready(CANARY)
    plan = release(world, V3)
    status = plan.status
    assert (status.canary_revision, status.stable_revision) == (REV3, REV1)
    assert (status.current_step_index, status.canary_weight) == (0, 0)
    assert world.route_weights() == (100, 0)
    assert (world.image(CANARY), world.revision(CANARY)) == (V3, REV3)
    assert world.image(STABLE) == V1
    assert world.actions()[-2:] == ["release-superseded", "release-started"]
    # The V3 canary must become ready before it gets any traffic.
    assert world.reconcile().status.canary_weight == 0
    world.release(CANARY)
    assert world.reconcile().status.canary_weight == 50


# --- restart: level-triggered ---------------------------------------------------------------------


def restart_point(name: str) -> World:
    spec = make_spec(
        [{"setWeight": 10}, {"pause": {"duration": "1h"}}, {"setWeight": 50}, {"pause": {}}],
        analysis=analysis(),
    )
    if name == "healthy":
        return healthy(spec)
    if name == "waiting-for-analysis":
        return at_weight(spec, 10)
    if name == "timed-pause":
        world = at_weight(spec, 10)
        next_check(world)
        world.advance(100)
        return world
    if name == "indefinite-pause":
        world = at_weight(spec, 10)
        next_check(world)
        world.advance(3600)
        world.settle()
        next_check(world)
        world.settle()
        assert world.status.current_step_index == 3
        return world
    if name == "waiting-for-canary":
        world = healthy(spec)
        world.hold(CANARY)
        release(world)
        return world
    if name == "promoting":
        world = healthy(make_spec([{"setWeight": 10}]))
        world.hold(STABLE)
        release(world)
        world.run_until(lambda w: w.status.current_step_index == 1, follow_requeue=False)
        world.set_ready(STABLE, 2)
        return world
    if name == "degraded-within-delay":
        world = at_weight(spec, 10)
        next_check(world, Outcome.FAILED)
        return world
    if name == "aborted-after-delay":
        world = at_weight(spec, 10)
        world.annotate(Command.ABORT, "1")
        world.reconcile()
        world.advance(60)
        return world
    raise AssertionError(name)


@pytest.mark.parametrize(
    "point",
    [
        "healthy",
        "waiting-for-analysis",
        "timed-pause",
        "indefinite-pause",
        "waiting-for-canary",
        "promoting",
        "degraded-within-delay",
        "aborted-after-delay",
    ],
)
def test_a_restarted_operator_resumes_without_changing_anything(point: str) -> None:
    world = restart_point(point)
    world.settle()  # runs the checks that are due, as the operator would have
    status = world.status.model_copy(deep=True)
    live = copy.deepcopy(world.objects)
    # A fresh operator: same status, same cluster, nothing remembered.
    replay = engine.reconcile(
        RolloutSpec.model_validate(world.spec.to_api()),
        RolloutStatus.model_validate(status.to_api()),
        world.observed(),
        world.now,
    )
    assert replay.status.current_step_index == status.current_step_index
    assert replay.status.canary_weight == status.canary_weight
    assert replay.status == status
    assert replay.events == []
    for obj in replay.objects:
        assert covers(live[key_of(obj)], obj), f"{key_of(obj)} would be rewritten"


# --- conflicts and invalid specs ------------------------------------------------------------------


def foreign(kind: str, name: str, owner_uid: str | None = None) -> dict[str, Any]:
    api = {"Deployment": "apps/v1", "Service": "v1", "HTTPRoute": "gateway.networking.k8s.io/v1"}[kind]
    meta: dict[str, Any] = {
        "name": name,
        "namespace": REF.namespace,
        "labels": {"app.kubernetes.io/managed-by": "sluice"},
    }
    if owner_uid:
        meta["ownerReferences"] = [
            {"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "other", "uid": owner_uid}
        ]
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": {}}


@pytest.mark.parametrize(
    ("kind", "name", "owner"),
    [
        pytest.param("Deployment", STABLE, None, id="stable-deployment"),
        pytest.param("Deployment", CANARY, None, id="canary-deployment"),
        pytest.param("Service", STABLE, None, id="stable-service"),
        pytest.param("Service", CANARY, "uid-of-another-rollout", id="canary-service-of-another-rollout"),
        pytest.param("HTTPRoute", STABLE, None, id="httproute"),
    ],
)
def test_an_object_we_do_not_own_blocks_everything(kind: str, name: str, owner: str | None) -> None:
    world = World(make_spec())
    world.put(foreign(kind, name, owner))
    plan = world.reconcile()
    assert plan.objects == []
    assert world.last.writes == []
    assert f"{kind} shop/{name} exists and is not managed by this Rollout" in plan.status.message
    [event] = plan.events
    assert (event.type, event.reason, event.message) == ("Warning", "ObjectConflict", plan.status.message)
    cond = conditions(plan.status)
    assert (cond["Stalled"], cond["Ready"], cond["Reconciling"]) == ("True", "False", "False")
    assert {c.reason for c in plan.status.conditions} == {"ObjectConflict"}
    assert plan.status.observed_generation == world.generation
    again = world.reconcile()
    assert again.events == [], "the same conflict is reported once"
    assert again.objects == []
    assert condition_times(again.status) == condition_times(plan.status)
    # Once the object is gone, the Rollout proceeds.
    del world.objects[key_of(foreign(kind, name))]
    world.settle()
    assert world.status.phase == Phase.HEALTHY
    assert conditions(world.status)["Stalled"] == "False"


def test_a_conflict_mid_release_freezes_traffic_where_it_is() -> None:
    world = at_weight(make_spec([{"setWeight": 30}, {"pause": {}}]), 30)
    world.put(foreign("Service", CANARY))
    plan = world.reconcile()
    assert plan.objects == []
    assert (plan.status.canary_weight, plan.status.current_step_index) == (
        30,
        world.passes[-2].plan.status.current_step_index,
    )
    assert world.route_weights() == (70, 30)
    assert [e.reason for e in plan.events] == ["ObjectConflict"]


def test_a_different_conflict_is_reported_again() -> None:
    world = World(make_spec())
    world.put(foreign("Service", STABLE))
    world.reconcile()
    world.put(foreign("Service", CANARY))
    plan = world.reconcile()
    assert [e.reason for e in plan.events] == ["ObjectConflict"]
    assert "Service shop/web exists" in plan.events[0].message
    assert "Service shop/web-canary exists" in plan.events[0].message


@pytest.mark.parametrize(
    ("problems", "spec_fields", "expected"),
    [
        pytest.param(
            ["metric error-rate: undefined variable 'canry'"],
            {},
            "undefined variable 'canry'",
            id="shell-problem",
        ),
        pytest.param(
            [],
            {"selector": {"matchLabels": {"tier": "front"}}},
            "tier=front not found",
            id="selector-not-on-template",
        ),
    ],
)
def test_an_invalid_spec_blocks_everything(
    problems: list[str], spec_fields: dict[str, Any], expected: str
) -> None:
    world = World(make_spec(**spec_fields))
    world.problems = problems
    plan = world.reconcile()
    assert plan.objects == []
    assert expected in plan.status.message
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]
    assert conditions(plan.status)["Stalled"] == "True"
    assert {c.reason for c in plan.status.conditions} == {"InvalidSpec"}
    assert world.reconcile().events == []


def test_a_selector_the_live_stable_template_lacks_is_reported_not_raised() -> None:
    world = healthy(make_spec([{"setWeight": 10}, {"pause": {}}]))
    body = world.spec.to_api()
    body["template"]["metadata"]["labels"]["tier"] = "front"
    body["selector"] = {"matchLabels": {"tier": "front"}}
    world.set_spec(RolloutSpec.model_validate(body))
    plan = world.reconcile()
    assert plan.objects == []
    assert "stable pod template lacks the selector label(s) tier" in plan.status.message
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]
    assert conditions(plan.status)["Stalled"] == "True"
    assert plan.status.canary_revision is None, "no release was started"
    assert world.image(STABLE) == V1


def test_blocked_status_touches_nothing_but_the_report() -> None:
    before = analysing_status(handled_commands={"promote": "1"})
    status = engine.blocked_status(before, 7, "ApplyFailed", "could not apply", T0)
    assert (status.phase, status.canary_weight, status.current_step_index) == (Phase.PROGRESSING, 10, 0)
    assert status.handled_commands == {"promote": "1"}
    assert status.observed_generation == 7
    assert status.message == "could not apply"
    assert conditions(status)["Stalled"] == "True"
    assert conditions(status)["Reconciling"] == "False"
    assert before.message == "" and before.conditions == [], "the input is not mutated"
    assert engine.blocked_status(RolloutStatus(), 1, "InvalidSpec", "bad", T0).phase == Phase.DEGRADED


# --- history, conditions, observedGeneration ------------------------------------------------------


def test_history_is_bounded_and_newest_first() -> None:
    world = healthy(make_spec())
    for value in range(engine.HISTORY_LIMIT + 5):
        world.advance(1)
        world.annotate(Command.PROMOTE, str(value))
        world.reconcile()
    history = world.status.history
    assert len(history) == engine.HISTORY_LIMIT
    times = [entry.time for entry in history]
    assert times == sorted(times, reverse=True)
    assert history[0].time == format_time(world.now)
    assert "healthy" not in [entry.action for entry in history], "the oldest entries went first"


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    world = healthy(make_spec())
    healthy_at = condition_times(world.status)
    world.advance(100)
    world.reconcile()
    assert condition_times(world.status) == healthy_at
    world.hold(CANARY)
    release(world)
    after = condition_times(world.status)
    flipped = format_time(world.now)
    assert after["Ready"] == after["Reconciling"] == after["Progressing"] == flipped
    assert after["Stalled"] == healthy_at["Stalled"]
    assert after["Degraded"] == healthy_at["Degraded"]
    world.advance(5)
    world.reconcile()
    assert condition_times(world.status) == after


def test_observed_generation_follows_the_generation() -> None:
    world = healthy(make_spec([{"setWeight": 10}, {"pause": {}}]))
    assert world.status.observed_generation == 1
    release(world)
    assert world.status.observed_generation == 2
    world.update(paused=True)
    world.reconcile()
    assert world.status.observed_generation == 3
    assert all(c.observed_generation == 3 for c in world.status.conditions)
    world.generation = 9
    world.put(foreign("Service", CANARY))
    assert world.reconcile().status.observed_generation == 9


# --- no traffic provider --------------------------------------------------------------------------


def test_without_traffic_there_is_no_route_and_the_stable_service_selects_both_tracks() -> None:
    world = World(make_spec([{"setWeight": 25}, {"pause": {}}], traffic=False))
    plan = world.reconcile()
    assert [obj["kind"] for obj in plan.objects] == ["Service", "Service", "Deployment", "Deployment"]
    assert ROUTE_KEY not in world.objects
    stable_service = world.objects[world.key(STABLE, "Service")]
    canary_service = world.objects[world.key(CANARY, "Service")]
    assert TRACK_LABEL not in stable_service["spec"]["selector"]
    assert canary_service["spec"]["selector"][TRACK_LABEL] == "canary"
    world.settle()
    release(world)
    world.settle()
    # Traffic follows pods: 25% of 4 replicas is one canary pod next to 4 stable ones.
    assert (world.status.canary_weight, world.replicas(CANARY), world.replicas(STABLE)) == (25, 1, 4)
    assert world.status.phase == Phase.PAUSED


def test_first_deployment_after_a_blocked_spec_is_initializing() -> None:
    world = World(make_spec())
    world.problems = ["metric \"error-rate\": query uses undefined variable 'canry'"]
    blocked = world.reconcile()
    assert blocked.objects == [] and blocked.status.phase == Phase.DEGRADED
    world.problems = []
    world.hold(STABLE)
    plan = world.reconcile()
    assert plan.status.phase == Phase.INITIALIZING
    assert conditions(plan.status)["Stalled"] == "False"


def test_a_rollout_without_service_or_traffic_renders_only_deployments() -> None:
    world = World(make_spec(traffic=False, service=None))
    plan = world.reconcile()
    assert [obj["kind"] for obj in plan.objects] == ["Deployment", "Deployment"]
    assert managed_keys(REF, world.spec) == [world.key(STABLE), world.key(CANARY)]


# --- traffic drift --------------------------------------------------------------------------------


def test_a_route_changed_by_someone_else_is_restored_with_a_warning() -> None:
    world = at_weight(make_spec([{"setWeight": 20}, {"pause": {}}]), 20)
    route = copy.deepcopy(world.objects[ROUTE_KEY])
    for backend in route["spec"]["rules"][0]["backendRefs"]:
        backend["weight"] = 0 if backend["name"] == "web" else 100  # everyone on the canary
    world.put(route)
    plan = world.reconcile()
    drift = [e for e in plan.events if e.reason == "TrafficDrift"]
    assert [(e.type, e.message) for e in drift] == [
        ("Warning", "HTTPRoute shop/web was changed to send 100% to the canary (expected 20%): restored")
    ]
    assert world.route_weights() == (80, 20)
    assert not [e for e in world.reconcile().events if e.reason == "TrafficDrift"], (
        "said once, not every pass"
    )


def test_weights_the_engine_itself_moves_are_no_drift() -> None:
    world = healthy(make_spec([{"setWeight": 20}, {"setWeight": 60}, {"pause": {}}]))
    release(world)
    world.settle()
    assert world.route_weights() == (40, 60)
    assert "TrafficDrift" not in world.reasons()


# --- commands and failed checks -------------------------------------------------------------------


def paused_after(outcome: Outcome) -> World:
    """At an indefinite pause after weight 20, the last check `outcome` (failureLimit 2: no rollback)."""
    spec = make_spec([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}], analysis={"failureLimit": 2})
    world = at_weight(spec, 20)
    world.metrics = Outcome.PASSED
    world.run_until(lambda w: w.status.phase == Phase.PAUSED)
    world.advance(30)
    world.reconcile(outcome=outcome)
    assert world.status.analysis.last_check is not None
    assert world.status.analysis.last_check.outcome == outcome
    return world


def test_promote_at_a_pause_never_overrides_a_failed_check() -> None:
    world = paused_after(Outcome.FAILED)
    world.annotate(Command.PROMOTE, "1")
    plan = world.reconcile()
    assert (plan.status.phase, plan.status.current_step_index, plan.status.canary_weight) == (
        Phase.PAUSED,
        1,
        20,
    )
    [told] = [e for e in plan.events if e.reason == "CommandIgnored"]
    assert told.type == "Normal"
    assert told.message.startswith("sluice.dev/promote=1 ignored: the last analysis check failed (error-rate")
    assert plan.status.history[0].message.startswith("ignored: the last analysis check failed")


@pytest.mark.parametrize("outcome", [Outcome.PASSED, Outcome.INCONCLUSIVE, Outcome.ERROR])
def test_promote_at_a_pause_goes_on_after_any_other_check(outcome: Outcome) -> None:
    world = paused_after(outcome)
    world.annotate(Command.PROMOTE, "1")
    assert world.reconcile().status.current_step_index == 2


def test_an_abort_during_promotion_is_refused_with_a_warning() -> None:
    world = at_weight(make_spec([{"setWeight": 50}]), 50)
    world.hold(STABLE)
    world.run_until(lambda w: w.status.message.startswith("promoting revision"), follow_requeue=False)
    world.annotate(Command.ABORT, "now")
    plan = world.reconcile()
    assert plan.status.phase == Phase.PROGRESSING
    [told] = [e for e in plan.events if e.reason == "CommandIgnored"]
    assert told.type == "Warning"
    assert told.message.startswith("sluice.dev/abort=now ignored: promotion is under way")


def test_a_check_that_started_before_the_weight_changed_is_not_counted() -> None:
    world = at_weight(make_spec([{"setWeight": 20}, {"setWeight": 50}, {"pause": {}}], analysis={}), 20)
    stale = make_check(Outcome.FAILED, world.now - timedelta(seconds=5))
    plan = world.reconcile(stale)
    assert (plan.status.analysis.failed, plan.status.phase) == (0, Phase.PROGRESSING)


# --- the traffic invariant: no share for a track without ready pods ------------------------------


def test_a_deleted_stable_comes_back_as_the_stable_revision_and_the_canary_serves_meanwhile() -> None:
    world = at_weight(make_spec([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]), 20)
    assert set(world.history) == {REV1, REV2}, "both revisions recorded when the release started"
    world.hold(STABLE)
    world.delete(STABLE)
    plan = world.reconcile()
    # Recreated from the stable revision's template, never the unchecked canary's.
    assert (world.image(STABLE), world.revision(STABLE), world.replicas(STABLE)) == (V1, REV1, 4)
    # The release stays where it was: same step, same weight, the canary keeps its pods ...
    status = plan.status
    assert (status.phase, status.current_step_index, status.canary_weight) == (Phase.PAUSED, 1, 20)
    assert (status.stable_revision, status.canary_revision) == (REV1, REV2)
    assert world.replicas(CANARY) == 1
    # ... and, the stable having no ready pod, the canary takes all traffic until it has.
    assert world.route_weights() == (0, 100)
    reasons = [e.reason for e in plan.events]
    assert "StableRecreated" in reasons and "TrafficRerouted" in reasons
    world.release(STABLE)
    plan = world.reconcile()
    assert world.route_weights() == (80, 20)
    assert plan.status.routed_canary_weight is None
    assert world.image(STABLE) == V1


def test_a_deleted_canary_loses_its_share_in_the_same_pass_and_gets_it_back_when_ready() -> None:
    world = at_weight(make_spec([{"setWeight": 20}, {"pause": {}}]), 20)
    world.hold(CANARY)
    world.delete(CANARY)
    plan = world.reconcile()
    assert world.route_weights() == (100, 0)
    assert (plan.status.canary_weight, plan.status.routed_canary_weight) == (20, 0)
    assert world.replicas(CANARY) == 1, "recreated at once"
    world.release(CANARY)
    world.reconcile()
    assert world.route_weights() == (80, 20)


def test_a_deleted_stable_without_a_release_is_recreated_as_it_was() -> None:
    world = healthy(make_spec([{"setWeight": 20}]))
    world.delete(STABLE)
    plan = world.reconcile()
    assert (world.image(STABLE), world.revision(STABLE)) == (V1, REV1)
    assert plan.status.canary_revision is None
    assert world.settle().status.phase == Phase.HEALTHY


# --- scaling through the /scale subresource (kubectl scale, an HPA) ------------------------------------


def paused_at_half(replicas: int = 4, **canary: Any) -> World:
    """A release of V2 holding at 50% on an indefinite pause, as `kubectl scale` finds it mid-release."""
    world = healthy(
        make_spec([{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}], replicas=replicas, canary=canary)
    )
    release(world)
    world.run_until(lambda w: w.status.phase == Phase.PAUSED, follow_requeue=False)
    assert (world.status.current_step_index, world.status.canary_weight) == (1, 50)
    return world


@pytest.mark.parametrize(
    ("replicas", "stable", "canary"),
    [
        pytest.param(8, 8, 4, id="up"),
        pytest.param(3, 3, 2, id="down-rounds-the-canary-up"),
        pytest.param(1, 1, 1, id="down-to-one-keeps-a-canary-pod"),
    ],
)
def test_scaling_mid_release_resizes_both_tracks_at_the_current_weight(
    replicas: int, stable: int, canary: int
) -> None:
    world = paused_at_half()
    before = world.status.model_copy(deep=True)
    world.update(replicas=replicas)
    world.settle()
    status = world.status
    assert (world.replicas(STABLE), world.replicas(CANARY)) == (stable, canary)
    assert (world.image(STABLE), world.image(CANARY)) == (V1, V2), "no pod template changes"
    # The same release, at the same step and weight: replicas are not part of the revision.
    assert (status.phase, status.current_step_index, status.canary_weight) == (Phase.PAUSED, 1, 50)
    assert (status.canary_revision, status.stable_revision) == (
        before.canary_revision,
        before.stable_revision,
    )
    assert status.weight_changed_at == before.weight_changed_at
    assert world.actions().count("release-started") == 1
    assert world.route_weights() == (50, 50)
    assert (status.replicas.canary, status.replicas.stable, status.replicas.total) == (
        canary,
        stable,
        stable + canary,
    )
    assert status.observed_generation == world.generation

    world.annotate(Command.PROMOTE, "1")
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    assert (world.replicas(STABLE), world.image(STABLE), world.replicas(CANARY)) == (stable, V2, 0)
    # The status reports the pods seen at the start of a pass: the canary's go in the pass after.
    world.settle()
    assert world.status.replicas.total == stable


def test_scaling_up_while_a_weight_step_waits_for_the_canary_waits_for_the_new_count() -> None:
    world = healthy(make_spec([{"setWeight": 50}, {"pause": {}}]))
    world.hold(CANARY)
    release(world)
    world.reconcile()
    assert world.replicas(CANARY) == 2
    world.update(replicas=10)
    plan = world.reconcile()
    assert (world.replicas(STABLE), world.replicas(CANARY)) == (10, 5)
    world.set_ready(CANARY, 2)
    assert world.reconcile().status.canary_weight == 0, "the pods of the old count are not enough"
    assert "waiting for canary pods: 2/5 ready" in world.status.message
    world.release(CANARY)
    plan = world.reconcile()
    assert (plan.status.canary_weight, plan.status.current_step_index) == (50, 1)


def test_scaling_to_zero_mid_release_and_back_keeps_the_release() -> None:
    world = paused_at_half()
    world.update(replicas=0)
    world.settle()
    assert (world.replicas(STABLE), world.replicas(CANARY)) == (0, 0)
    status = world.status
    assert (status.phase, status.current_step_index, status.canary_weight) == (Phase.PAUSED, 1, 50)
    assert status.replicas.total == 0
    # Neither track has a ready pod: the route keeps the split (there is nothing better to send to).
    assert world.route_weights() == (50, 50)

    world.update(replicas=6)
    world.settle()
    assert (world.replicas(STABLE), world.replicas(CANARY)) == (6, 3)
    status = world.status
    assert (status.phase, status.current_step_index, status.canary_weight) == (Phase.PAUSED, 1, 50)
    assert world.route_weights() == (50, 50)
    assert world.actions().count("release-started") == 1
    world.annotate(Command.PROMOTE, "1")
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    assert (world.replicas(STABLE), world.image(STABLE), world.replicas(CANARY)) == (6, V2, 0)


def test_a_fixed_canary_size_does_not_follow_a_scale() -> None:
    world = paused_at_half(canaryReplicas=1)
    world.update(replicas=9)
    world.settle()
    assert (world.replicas(STABLE), world.replicas(CANARY)) == (9, 1)
    assert world.status.replicas.total == 10


def test_scale_status_counts_the_pods_of_both_tracks_and_names_their_selector() -> None:
    world = healthy(make_spec(selector={"matchLabels": {"app": "web"}}))
    assert world.status.replicas.total == 4
    assert world.status.selector == "app=web,sluice.dev/rollout=web"
    world.hold(CANARY)
    release(world)
    world.reconcile()
    # The canary's pod exists (status.replicas) before it is ready: an autoscaler counts it.
    world.set_ready(CANARY, 0)
    world.canary["status"]["replicas"] = 1
    plan = world.reconcile()
    assert (plan.status.replicas.total, plan.status.replicas.canary_ready) == (5, 0)
    assert plan.status.selector == "app=web,sluice.dev/rollout=web"


def test_scale_status_selector_without_an_explicit_selector_is_the_rollout_label() -> None:
    world = healthy(make_spec())
    assert world.status.selector == "sluice.dev/rollout=web"
