"""`sluice run`'s high availability and sharding flags: what reaches the operator, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from operators.cli import run as run_command
from operators.foundation.leadership import LeaseSettings
from operators.foundation.shard import Shard
from tests.cli import run_cli


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The options `sluice run` would start the operator with (it is not started)."""
    seen: dict[str, Any] = {}

    async def fake_run_operator(options: Any) -> None:
        seen["options"] = options

    monkeypatch.setattr(run_command, "run_operator", fake_run_operator)
    return seen


def test_leader_election_is_on_by_default_with_client_gos_durations(
    capsys: pytest.CaptureFixture[str], started: dict[str, Any]
) -> None:
    assert run_cli(capsys, "run")[0] == 0
    options = started["options"]
    assert options.leader_election == LeaseSettings()
    assert (options.leader_election.lease_duration, options.leader_election.renew_deadline) == (15, 10.0)
    assert options.leader_election.retry_period == 2.0 and options.leader_election.name == "sluice-operator"
    assert options.shard == Shard() and options.identity is None


def test_the_flags_reach_the_operator(capsys: pytest.CaptureFixture[str], started: dict[str, Any]) -> None:
    argv = ["run", "--shard", "1/3", "--lease-name", "sluice-shop", "--lease-namespace", "ops"]
    argv += ["--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5", "--identity", "me"]
    assert run_cli(capsys, *argv)[0] == 0
    options = started["options"]
    assert options.leader_election == LeaseSettings("sluice-shop", "ops", 4, 3.0, 0.5)
    assert options.shard == Shard(1, 3) and options.identity == "me"
    assert options.leader_election.config("me", options.shard).lease_name == "sluice-shop-shard-1-of-3"


def test_no_leader_election(capsys: pytest.CaptureFixture[str], started: dict[str, Any]) -> None:
    assert run_cli(capsys, "run", "--no-leader-election", "--shard", "0/2")[0] == 0
    assert started["options"].leader_election is None and started["options"].shard == Shard(0, 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shard", "2/2"], "argument --shard: shard 2/2: the index must be from 0 to 1"),
        (["--shard", "two"], "argument --shard: 'two' is not I/N"),
        (["--lease-duration", "1.5"], "argument --lease-duration: '1.5': a Lease counts whole seconds"),
        (["--retry-period", "0"], "argument --retry-period: '0': must be more than 0 seconds"),
        (["--renew-deadline", "soon"], "argument --renew-deadline: 'soon' is not a number of seconds"),
        (
            ["--renew-deadline", "15"],
            "error: --renew-deadline (15s) must be shorter than --lease-duration (15s)",
        ),
        (
            ["--retry-period", "9"],
            "error: --retry-period (9s) times 1.2 must be shorter than --renew-deadline",
        ),
        (["--lease-name", "Sluice"], "error: --lease-name 'Sluice': lowercase letters"),
        (["--identity", " "], "error: --identity must not be empty"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_starting(
    capsys: pytest.CaptureFixture[str], started: dict[str, Any], argv: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, "run", *argv)
    assert code == 2 and message in err, err
    assert "options" not in started, "the operator was not started"


def test_help_explains_each_flag(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0
    assert "high availability and sharding:" in out
    for phrase in [
        "--leader-election, --no-leader-election",
        "--lease-name NAME",
        "NAME-shard-I-of-N",
        "--lease-namespace NS",
        "$POD_NAMESPACE",
        "--lease-duration SECONDS",
        "(default: 15)",
        "--renew-deadline SECONDS",
        "(default: 10)",
        "--retry-period SECONDS",
        "(default: 2)",
        "--identity NAME",
        "--shard I/N",
        "SHA-256",
    ]:
        assert phrase in out, phrase
