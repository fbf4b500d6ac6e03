"""The `sluice` command in-process: help texts, `sluice crds`, and how a status reads.

Commands that talk to an API server are in tests/integration/test_cli_commands.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.api.crdgen import render_crds
from operators.cli.release import format_status
from tests.cli import run_cli


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse wraps help to the terminal width; a wide one keeps phrases on one line."""
    monkeypatch.setenv("COLUMNS", "200")


# ---- help -----------------------------------------------------------------------------------------


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert out.startswith("usage: sluice ")
    assert "progressive delivery for Kubernetes" in out
    for command, summary in [
        ("run", "run the operator"),
        ("crds", "generate the CRDs from the API models"),
        ("status", "show a Rollout's release"),
        ("promote", "end the current pause"),
        ("abort", "roll the release back now"),
        ("retry", "start a rolled-back release again"),
    ]:
        assert any(line.split() == [command, *summary.split()] for line in out.splitlines()), command
    assert "kubectl sluice promote web" in out, "the examples are shown"


@pytest.mark.parametrize(
    ("command", "phrases"),
    [
        (
            "run",
            [
                "usage: sluice run",
                "Run the Sluice operator",
                "--all-namespaces",
                "--prometheus-url",
                "--liveness",
                "'off' to disable",
            ],
        ),
        ("crds", ["usage: sluice crds", "Print the CRDs", "--output-dir DIR", "--check [DIR]"]),
        (
            "status",
            [
                "usage: sluice status",
                "Show a Rollout's release.",
                "--watch",
                "--timeout SECONDS",
                "exit 0 only for Healthy",
                "-n NAMESPACE",
                "--kubeconfig PATH",
            ],
        ),
        (
            "promote",
            [
                "usage: sluice promote",
                "sets the annotation sluice.dev/promote; with --full, sluice.dev/promote-full",
                "--full",
                "skip all remaining steps and analysis",
            ],
        ),
        (
            "abort",
            ["usage: sluice abort", "roll the release back now (sets the annotation sluice.dev/abort)"],
        ),
        (
            "retry",
            [
                "usage: sluice retry",
                "start a rolled-back release again (sets the annotation sluice.dev/retry)",
            ],
        ),
    ],
)
def test_each_command_describes_itself(
    capsys: pytest.CaptureFixture[str], command: str, phrases: list[str]
) -> None:
    code, out, err = run_cli(capsys, command, "--help")
    assert code == 0
    assert err == ""
    for phrase in phrases:
        assert phrase in out


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys)
    assert code == 2
    assert out == ""
    assert "usage: sluice" in err and "required: COMMAND" in err


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "deploy")
    assert code == 2
    assert "invalid choice: 'deploy'" in err


def test_release_commands_need_a_rollout_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "promote")
    assert code == 2
    assert "the following arguments are required: name" in err


# ---- crds -----------------------------------------------------------------------------------------


def test_crds_prints_every_crd_as_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "crds")
    assert code == 0
    documents = [d for d in yaml.safe_load_all(out) if d]
    names = {d["metadata"]["name"] for d in documents}
    assert "rollouts.sluice.dev" in names
    assert len(documents) == len(render_crds())
    assert all(d["kind"] == "CustomResourceDefinition" for d in documents)
    rollout = next(d for d in documents if d["metadata"]["name"] == "rollouts.sluice.dev")
    assert rollout["spec"]["names"]["shortNames"] == ["sro"]


def test_crds_check_passes_on_what_output_dir_wrote(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    directory = tmp_path / "crds"
    code, out, _ = run_cli(capsys, "crds", "--output-dir", str(directory))
    assert code == 0
    written = sorted(p.name for p in directory.iterdir())
    assert written == sorted(render_crds())
    assert all(f"wrote {directory / name}" in out for name in written)

    code, out, err = run_cli(capsys, "crds", "--check", str(directory))
    assert (code, err) == (0, "")
    assert "up to date" in out


@pytest.mark.parametrize("damage", ["edit", "remove"])
def test_crds_check_fails_on_an_edited_or_missing_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, damage: str
) -> None:
    directory = tmp_path / "crds"
    run_cli(capsys, "crds", "--output-dir", str(directory))
    victim = directory / "rollout.yaml"
    assert victim.exists(), sorted(render_crds())
    if damage == "edit":
        victim.write_text(victim.read_text().replace("minimum: 0", "minimum: 1", 1))
        assert victim.read_text() != render_crds()["rollout.yaml"]
    else:
        victim.unlink()

    code, out, err = run_cli(capsys, "crds", "--check", str(directory))
    assert code == 1
    assert out == ""
    assert "rollout.yaml" in err
    assert f"sluice crds --output-dir {directory}" in err, "says how to regenerate them"
    others = [name for name in render_crds() if name != "rollout.yaml"]
    assert not any(name in err for name in others), "only the damaged file is named"


def test_crds_check_on_a_missing_directory_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "crds", "--check", str(tmp_path / "nowhere"))
    assert code == 1
    assert all(name in err for name in render_crds())


# ---- format_status ----------------------------------------------------------------------------------


def rollout_body(status: dict[str, Any] | None, steps: int = 4) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "generation": 3},
        "spec": {"strategy": {"canary": {"steps": [{"setWeight": 25 * (i + 1)} for i in range(steps)]}}},
    }
    if status is not None:
        body["status"] = status
    return body


def lines_of(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_status_of_a_release_under_analysis() -> None:
    text = format_status(
        rollout_body(
            {
                "observedGeneration": 3,
                "phase": "Progressing",
                "stableRevision": "5d8f9c7b6a",
                "canaryRevision": "7c4e1a2b3f",
                "currentStepIndex": 1,
                "canaryWeight": 50,
                "replicas": {"stable": 4, "canary": 2, "canaryReady": 1},
                "analysis": {
                    "passed": 3,
                    "failed": 0,
                    "inconclusive": 1,
                    "consecutiveErrors": 0,
                    "lastCheck": {
                        "time": "2024-05-01T10:00:00Z",
                        "outcome": "Inconclusive",
                        "metrics": [
                            {"name": "error-rate", "value": 0.0021, "outcome": "Passed"},
                            {"name": "latency-p99", "outcome": "Inconclusive", "message": "no data"},
                        ],
                    },
                },
                "history": [
                    {
                        "time": "2024-05-01T09:59:00Z",
                        "action": "set-weight",
                        "message": "canary weight 25% -> 50%",
                    },
                    {
                        "time": "2024-05-01T09:58:00Z",
                        "action": "release-started",
                        "message": "revision 7c4e1a2b3f",
                    },
                ],
                "message": "step 2/4: weight 50%, 3 checks passed",
            }
        )
    )
    lines = lines_of(text)
    assert lines[0] == "Rollout shop/web: Progressing"
    assert "Step:      2/4" in lines
    assert "Traffic:   stable 50%  canary 50%" in lines
    assert "Stable:    5d8f9c7b6a  (4 ready)" in lines
    assert "Canary:    7c4e1a2b3f  (1/2 ready)" in lines
    assert "Analysis:  3 passed, 0 failed, 1 inconclusive, 0 errors in a row" in lines
    assert "error-rate = 0.0021  Passed" in lines
    assert "latency-p99 = n/a  Inconclusive no data" in lines
    assert "Message:   step 2/4: weight 50%, 3 checks passed" in lines
    # history, newest first, as stored
    assert lines.index("2024-05-01T09:59:00Z  set-weight: canary weight 25% -> 50%") < lines.index(
        "2024-05-01T09:58:00Z  release-started: revision 7c4e1a2b3f"
    )


def test_status_of_a_rolled_back_release() -> None:
    message = "analysis failed: error-rate=0.31 > max 0.1 (failureLimit 0); canary weight 20% -> 0%"
    text = format_status(
        rollout_body(
            {
                "phase": "Degraded",
                "stableRevision": "5d8f9c7b6a",
                "canaryRevision": "7c4e1a2b3f",
                "currentStepIndex": 0,
                "canaryWeight": 0,
                "replicas": {"stable": 4, "canary": 0, "canaryReady": 0},
                "analysis": {
                    "passed": 0,
                    "failed": 1,
                    "lastCheck": {
                        "time": "2024-05-01T10:00:00Z",
                        "outcome": "Failed",
                        "metrics": [
                            {
                                "name": "error-rate",
                                "value": 0.3125,
                                "outcome": "Failed",
                                "message": "0.3125 > max 0.1",
                            }
                        ],
                    },
                },
                "message": message,
            }
        )
    )
    lines = lines_of(text)
    assert lines[0] == "Rollout shop/web: Degraded"
    assert "Traffic:   stable 100%  canary 0%" in lines
    assert "Canary:    7c4e1a2b3f  (0/0 ready)" in lines
    assert "Analysis:  0 passed, 1 failed, 0 inconclusive, 0 errors in a row" in lines
    assert "error-rate = 0.3125  Failed 0.3125 > max 0.1" in lines
    assert f"Message:   {message}" in lines


def test_status_of_a_healthy_rollout() -> None:
    history = [
        {"time": f"2024-05-01T10:00:0{i}Z", "action": "step", "message": f"entry {i}"} for i in range(8)
    ]
    text = format_status(
        rollout_body(
            {
                "phase": "Healthy",
                "stableRevision": "7c4e1a2b3f",
                "canaryWeight": 0,
                "replicas": {"stable": 4},
                "history": history,
                "message": "revision 7c4e1a2b3f: 4/4 ready",
            }
        )
    )
    lines = lines_of(text)
    assert lines[0] == "Rollout shop/web: Healthy"
    assert "Traffic:   stable 100%  canary 0%" in lines
    assert "Stable:    7c4e1a2b3f  (4 ready)" in lines
    assert "Message:   revision 7c4e1a2b3f: 4/4 ready" in lines
    assert not any(line.startswith(("Canary:", "Analysis:", "Step:")) for line in lines), text
    shown = [line for line in lines if "step: entry" in line]
    assert shown == [f"2024-05-01T10:00:0{i}Z  step: entry {i}" for i in range(5)], "the 5 newest only"


def test_status_before_the_operator_wrote_any() -> None:
    lines = lines_of(format_status(rollout_body(None)))
    assert lines == [
        "Rollout shop/web: Pending",
        "Traffic:   stable 100%  canary 0%",
        "Stable:    -  (0 ready)",
    ]
    assert format_status(rollout_body({})) == format_status(rollout_body(None))


def test_status_step_after_the_last_step_and_with_the_shorthand() -> None:
    after_last = format_status(rollout_body({"phase": "Progressing", "currentStepIndex": 4}, steps=4))
    assert "Step:      4/4" in lines_of(after_last), "promoting: past the last step, shown as the last"
    shorthand = rollout_body({"phase": "Progressing", "currentStepIndex": 0})
    shorthand["spec"]["strategy"]["canary"] = {"stepWeight": 10}
    assert "Step:      1/?" in lines_of(format_status(shorthand))
