"""`kubectl sluice`'s pure parts: how a Rollout reads (presentation.py), when a watch ends, which revision
`undo` picks, what `set image` patches, and the engine's side of `restart`.

The commands against a real API server and operator are in tests/integration/test_kubectl_plugin.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from operators.api.rollout import Phase
from operators.cli import presentation as p
from operators.cli.verbs import image_patch, parse_images, undo_target
from operators.cli.watching import MetricHistory, verdict
from operators.rollout.commands import Command
from operators.rollout.render import RESTARTED_AT_ANNOTATION
from operators.rollout.revisions import revision_record
from tests.cli import run_cli
from tests.unit.engine_world import REF, World, make_spec

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STEPS = [{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"setWeight": 50}, {"setWeight": 100}]


def rollout(status: dict[str, Any], *, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "generation": generation,
            "creationTimestamp": "2024-05-01T11:57:00Z",
        },
        "spec": {"strategy": {"canary": {"steps": STEPS, **spec}}},
        "status": {"observedGeneration": 1, **status},
    }


def check(time: str, *values: tuple[str, float | None, str]) -> dict[str, Any]:
    metrics = [{"name": name, "value": value, "outcome": outcome} for name, value, outcome in values]
    return {"analysis": {"lastCheck": {"time": time, "outcome": "Passed", "metrics": metrics}}}


# ---- presentation ---------------------------------------------------------------------------------


def test_a_rollout_row_reads_like_kubectl_get() -> None:
    body = rollout(
        {
            "phase": "Paused",
            "strategy": "Canary",
            "currentStepIndex": 1,
            "canaryWeight": 20,
            "stableRevision": "aaa111",
            "canaryRevision": "bbb222",
        }
    )
    assert p.rollout_row(body, NOW) == ["web", "Canary", "Paused", "2/4", "20%", "aaa111", "bbb222", "3m0s"]
    steady = rollout({"phase": "Healthy", "stableRevision": "aaa111"})
    assert p.rollout_row(steady, NOW)[2:7] == ["Healthy", "-", "0%", "aaa111", "-"]


def test_a_stalled_rollout_says_so_whatever_its_phase() -> None:
    body = rollout({"phase": "Healthy", "conditions": [{"type": "Stalled", "status": "True"}]})
    assert p.phase_text(body) == "Healthy (stalled)"


@pytest.mark.parametrize(
    ("seconds", "age"),
    [(5, "5s"), (119, "119s"), (192, "3m12s"), (3600, "60m"), (4 * 3600, "4h"), (50 * 3600, "2d2h")],
)
def test_age_is_kubectls(seconds: int, age: str) -> None:
    created = (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    assert p.age_text(created, NOW) == age


@pytest.mark.parametrize(
    ("metric", "text"),
    [
        ({"thresholdRange": {"max": 0.1}}, "<= 0.1"),
        ({"thresholdRange": {"min": 0.9}}, ">= 0.9"),
        ({"thresholdRange": {"min": 0.9, "max": 1}}, "0.9..1"),
        ({"compare": {"maxIncrease": 0.01, "maxRatio": 1.5}}, "stable +0.01 and x1.5"),
        ({"template": "custom"}, "-"),
        (None, "-"),
    ],
)
def test_threshold_text(metric: dict[str, Any] | None, text: str) -> None:
    assert p.threshold_text(metric) == text


def test_sparkline_scales_between_the_lowest_and_highest_value() -> None:
    assert p.sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert p.sparkline([0.2, None, 0.2]) == "▅ ▅", "no value: a gap; all equal: a middle bar"
    assert p.sparkline([0.0, 0.0]) == "▁▁"
    assert p.sparkline([]) == ""


def test_pause_countdown_runs_from_the_step_start() -> None:
    paused = {"phase": "Paused", "currentStepIndex": 1, "stepStartedAt": "2024-05-01T11:59:50Z"}
    assert p.pause_left(rollout(paused), NOW) == 20.0
    assert p.pause_left(rollout(paused), NOW + timedelta(minutes=5)) == 0.0, "never negative"
    assert p.pause_left(rollout({**paused, "currentStepIndex": 0}), NOW) is None, "a weight step"
    assert p.pause_left(rollout({**paused, "phase": "Progressing"}), NOW) is None


def test_summary_line_has_the_metrics_against_their_thresholds() -> None:
    metrics = [{"name": "error-rate", "thresholdRange": {"max": 0.1}}]
    body = rollout(
        {
            "phase": "Degraded",
            "currentStepIndex": 2,
            "canaryWeight": 0,
            "message": "rolled back: error-rate=0.31",
            **check("t1", ("error-rate", 0.31, "Failed")),
        },
        analysis={"metrics": metrics},
    )
    assert p.summary_line(body) == (
        "shop/web  Degraded  step 3/4  weight 0%  error-rate=0.31 (<= 0.1) Failed  "
        "- rolled back: error-rate=0.31"
    )


# ---- when a watch ends ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ({"phase": "Healthy"}, 0),
        ({"phase": "Degraded"}, 1),
        ({"phase": "Aborted"}, 1),
        ({"phase": "Progressing"}, None),
        ({"phase": "Paused"}, None),
        ({"phase": "Healthy", "conditions": [{"type": "Stalled", "status": "True"}]}, 1),
        ({"phase": "Paused", "conditions": [{"type": "Stalled", "status": "True"}]}, 1),
        ({"phase": "Healthy", "observedGeneration": 1}, None),  # generation 2: about an older spec
    ],
)
def test_verdict(status: dict[str, Any], code: int | None) -> None:
    generation = 2 if status.get("observedGeneration") == 1 else 1
    assert verdict(rollout(status, generation=generation)) == code


def test_the_sparkline_history_takes_each_check_once() -> None:
    history = MetricHistory()
    for body in (
        rollout(check("t1", ("error-rate", 0.01, "Passed"))),
        rollout({"phase": "Paused", **check("t1", ("error-rate", 0.01, "Passed"))}),  # same check
        rollout(check("t2", ("error-rate", None, "Inconclusive"))),
        rollout(check("t3", ("error-rate", 0.02, "Passed"))),
    ):
        history.record(body)
    assert list(history.values["error-rate"]) == [0.01, None, 0.02]


# ---- undo and set image -----------------------------------------------------------------------------


def records(*revisions: str) -> list[dict[str, Any]]:
    template = {"spec": {"containers": [{"name": "web", "image": "x"}]}}
    return [revision_record(REF, rev, template, number) for number, rev in enumerate(revisions, start=1)]


def test_undo_goes_to_the_newest_revision_other_than_the_current() -> None:
    history = records("r1", "r2", "r3")
    assert undo_target(history, "r3", None) == (2, history[1])
    assert undo_target(history, "r2", None) == (3, history[2]), "after an undo, undo again goes forward"
    assert undo_target(history, "r1", 2) == (2, history[1])
    assert undo_target(history, "r2", 2) == "revision 2 (r2) is the current one: nothing to undo"
    assert undo_target(history, "r3", 4) == "no revision 4: `sluice history` lists 1 to 3"
    assert undo_target(records("r1"), "r1", None) == "no previous revision is recorded"


def test_set_image_patches_the_named_containers_after_testing_their_names() -> None:
    template = {
        "spec": {
            "initContainers": [{"name": "migrate", "image": "m:1"}],
            "containers": [{"name": "web", "image": "w:1"}, {"name": "proxy", "image": "p:1"}],
        }
    }
    assert image_patch(template, {"proxy": "p:2", "migrate": "m:2"}) == [
        {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "proxy"},
        {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "p:2"},
        {"op": "test", "path": "/spec/template/spec/initContainers/0/name", "value": "migrate"},
        {"op": "replace", "path": "/spec/template/spec/initContainers/0/image", "value": "m:2"},
    ]
    assert image_patch(template, {"api": "a:1"}) == (
        "no container named api in spec.template; the containers are: migrate, web, proxy"
    )
    assert parse_images(["web=w:2"]) == {"web": "w:2"}
    assert parse_images(["web"]) == "'web' is not CONTAINER=IMAGE"


def test_set_image_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "set", "image", "web", "oops")
    assert code == 2 and err == "sluice set image: 'oops' is not CONTAINER=IMAGE\n"


def test_help_lists_the_plugin_commands(capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in ("get", "pause", "resume", "history", "undo", "restart", "set"):
        assert any(line.split()[:1] == [command] for line in out.splitlines()), command
    code, out, _ = run_cli(capsys, "get", "--help")
    assert code == 0 and all(flag in out for flag in ("-A", "--all-namespaces", "--context", "-o", "--all"))


# ---- restart, in the engine -----------------------------------------------------------------------------


def test_restart_stamps_both_tracks_pods_and_starts_no_release() -> None:
    world = World(make_spec([{"setWeight": 50}]))
    world.settle()
    assert world.status.phase == Phase.HEALTHY
    revision = world.status.stable_revision
    world.annotate(Command.RESTART, "1")
    plan = world.reconcile()
    stamp = plan.status.restarted_at
    assert stamp is not None
    for name in ("web", "web-canary"):
        annotations = world.deployment(name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations[RESTARTED_AT_ANNOTATION] == stamp
    assert plan.status.handled_commands["restart"] == "1"
    assert "Restarted" in [event.reason for event in plan.events]
    world.settle()
    assert (world.status.phase, world.status.stable_revision) == (Phase.HEALTHY, revision)
    assert world.status.canary_revision is None, "no release"
    assert world.reconcile().status.restarted_at == stamp, "acted on once per value"
