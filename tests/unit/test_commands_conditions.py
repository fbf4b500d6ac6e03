"""Annotation commands (once per distinct value) and the kstatus conditions of each phase."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from operators.api.base import Condition
from operators.api.rollout import Phase
from operators.foundation.clock import format_time
from operators.foundation.conditions import merge_conditions
from operators.rollout.commands import Command, PendingCommand, pending_commands
from operators.rollout.conditions import RELEASING, STUCK, rollout_conditions

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
TYPES = ["Ready", "Reconciling", "Stalled", "Progressing", "Degraded"]

# --- commands -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "annotation"),
    [
        (Command.PROMOTE, "sluice.dev/promote"),
        (Command.PROMOTE_FULL, "sluice.dev/promote-full"),
        (Command.ABORT, "sluice.dev/abort"),
        (Command.RETRY, "sluice.dev/retry"),
    ],
    ids=lambda v: str(v),
)
def test_command_annotations(command: Command, annotation: str) -> None:
    assert command.annotation == annotation


ALL = {
    "sluice.dev/promote": "1",
    "sluice.dev/promote-full": "2",
    "sluice.dev/abort": "3",
    "sluice.dev/retry": "4",
}


@pytest.mark.parametrize(
    ("annotations", "handled", "expected"),
    [
        pytest.param({}, {}, [], id="none"),
        pytest.param({"sluice.dev/promote": "1"}, {}, [("promote", "1")], id="new-promote"),
        pytest.param({"sluice.dev/promote": "1"}, {"promote": "1"}, [], id="same-value-again"),
        pytest.param({"sluice.dev/promote": "2"}, {"promote": "1"}, [("promote", "2")], id="new-value"),
        pytest.param({"sluice.dev/promote": ""}, {}, [("promote", "")], id="empty-value-counts"),
        pytest.param(
            {"sluice.dev/promote": "1"}, {"abort": "1"}, [("promote", "1")], id="handled-per-command"
        ),
        pytest.param(
            ALL,
            {},
            [("abort", "3"), ("retry", "4"), ("promote-full", "2"), ("promote", "1")],
            id="abort-first-then-retry-promote-full-promote",
        ),
        pytest.param(
            ALL,
            {"abort": "3", "promote-full": "2"},
            [("retry", "4"), ("promote", "1")],
            id="handled-ones-left-out",
        ),
        pytest.param(
            {
                "sluice.dev/pause": "1",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "promote": "1",
                "example.com/abort": "1",
            },
            {},
            [],
            id="other-annotations-ignored",
        ),
    ],
)
def test_pending_commands(
    annotations: dict[str, str], handled: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    pending = pending_commands(annotations, handled)
    assert [(p.command.value, p.value) for p in pending] == expected
    assert all(isinstance(p, PendingCommand) for p in pending)


def test_pending_commands_does_not_change_its_inputs() -> None:
    annotations, handled = dict(ALL), {"promote": "0"}
    pending_commands(annotations, handled)
    assert annotations == ALL and handled == {"promote": "0"}


# --- conditions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "stalled", "truth"),
    [
        pytest.param(Phase.INITIALIZING, False, "FTFTF", id="initializing"),
        pytest.param(Phase.PROGRESSING, False, "FTFTF", id="progressing"),
        pytest.param(Phase.PAUSED, False, "FTFFF", id="paused"),
        pytest.param(Phase.HEALTHY, False, "TFFFF", id="healthy"),
        pytest.param(Phase.DEGRADED, False, "FFTFT", id="degraded"),
        pytest.param(Phase.ABORTED, False, "FFTFT", id="aborted"),
        pytest.param(Phase.HEALTHY, True, "FFTFT", id="healthy-but-blocked"),
        pytest.param(Phase.PROGRESSING, True, "FFTFT", id="progressing-but-blocked"),
        pytest.param(Phase.PAUSED, True, "FFTFT", id="paused-but-blocked"),
    ],
)
def test_conditions_of_each_phase(phase: Phase, stalled: bool, truth: str) -> None:
    result = rollout_conditions(phase, "Why", "what", 3, [], T0, stalled=stalled)
    assert [c.type for c in result] == TYPES
    assert "".join(c.status[0] for c in result) == truth
    assert all((c.reason, c.message, c.observed_generation) == ("Why", "what", 3) for c in result)
    assert all(c.last_transition_time == format_time(T0) for c in result)


def test_phase_groups() -> None:
    assert RELEASING | STUCK | {Phase.HEALTHY} == set(Phase)
    assert not RELEASING & STUCK


def test_transition_time_is_kept_while_a_condition_does_not_flip() -> None:
    first = rollout_conditions(Phase.PROGRESSING, "Progressing", "step 1", 1, [], T0)
    later = T0 + timedelta(minutes=5)
    same = rollout_conditions(Phase.PROGRESSING, "Analysing", "step 2", 2, first, later)
    assert [c.last_transition_time for c in same] == [format_time(T0)] * 5
    assert {(c.reason, c.message, c.observed_generation) for c in same} == {("Analysing", "step 2", 2)}

    healthy = rollout_conditions(Phase.HEALTHY, "Healthy", "done", 2, same, later)
    times = {c.type: c.last_transition_time for c in healthy}
    assert times == {
        "Ready": format_time(later),  # False -> True
        "Reconciling": format_time(later),  # True -> False
        "Stalled": format_time(T0),  # False all along
        "Progressing": format_time(later),  # True -> False
        "Degraded": format_time(T0),  # False all along
    }


def test_merge_conditions_treats_unknown_and_missing_as_a_change() -> None:
    previous = [
        Condition(type="Ready", status="Unknown", last_transition_time=format_time(T0)),
        Condition(type="Other", status="True", last_transition_time=format_time(T0)),
    ]
    later = T0 + timedelta(seconds=10)
    result = merge_conditions(previous, {"Ready": False, "Stalled": False}, "R", "m", 1, later)
    assert [(c.type, c.status, c.last_transition_time) for c in result] == [
        ("Ready", "False", format_time(later)),
        ("Stalled", "False", format_time(later)),
    ]
