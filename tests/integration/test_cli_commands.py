"""`sluice status|promote|abort|retry` in-process against the real sandbox API server.

No operator runs here: the tests write the Rollout's status themselves, so
what is checked is exactly what the command reads and writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.rollout.inventory import rollout_key
from sluice_sandbox.apiserver import SandboxThread
from tests.cli import run_cli
from tests.harness import Harness, sluice_crds
from tests.scenarios import web_rollout

NS = "shop"


@pytest.fixture
def harness(sandbox_api: SandboxThread) -> Harness:
    for crd in sluice_crds():
        sandbox_api.run(sandbox_api.server.install_crd(crd))
    harness = Harness(sandbox_api.kubeconfig)
    harness.ensure_namespace(NS)
    harness.apply_rollout(NS, web_rollout())
    return harness


def set_status(harness: Harness, name: str, status: dict[str, Any], namespace: str = NS) -> None:
    """Write the status as the operator would (observedGeneration defaults to the current one)."""
    generation = harness.rollout(namespace, name)["metadata"]["generation"]
    status = {"observedGeneration": generation, **status}
    harness.cluster.merge_patch(rollout_key(namespace, name), {"status": status}, subresource="status")


def annotations_of(harness: Harness, name: str = "web") -> dict[str, str]:
    return dict(harness.rollout(NS, name)["metadata"].get("annotations") or {})


# ---- promote / abort / retry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "annotation"),
    [
        (["promote"], "sluice.dev/promote"),
        (["promote", "--full"], "sluice.dev/promote-full"),
        (["abort"], "sluice.dev/abort"),
        (["retry"], "sluice.dev/retry"),
    ],
)
def test_command_sets_its_annotation_with_a_fresh_value(
    capsys: pytest.CaptureFixture[str], harness: Harness, argv: list[str], annotation: str
) -> None:
    common = ["web", "-n", NS, "--kubeconfig", str(harness.kubeconfig)]
    harness.annotate(NS, "web", "team", "payments")

    code, out, err = run_cli(capsys, *argv, *common)
    assert (code, err) == (0, "")
    first = annotations_of(harness)
    assert first.get(annotation), first
    assert out.strip() == f"rollout {NS}/web: {annotation}={first[annotation]}"
    assert first["team"] == "payments", "other annotations are kept"
    commands = {key for key in first if key.startswith("sluice.dev/")}
    assert commands == {annotation}, "only this command's annotation is set"

    code, _, _ = run_cli(capsys, *argv, *common)
    assert code == 0
    second = annotations_of(harness)[annotation]
    assert second != first[annotation], "each call is a new command: the operator acts once per value"


def test_command_on_a_missing_rollout_fails_clearly(
    capsys: pytest.CaptureFixture[str], harness: Harness
) -> None:
    code, out, err = run_cli(capsys, "promote", "nope", "-n", NS, "--kubeconfig", str(harness.kubeconfig))
    assert code == 1
    assert out == ""
    assert err.startswith(f"sluice: promote {NS}/nope failed: ")
    assert "not found" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert harness.get(rollout_key(NS, "nope")) is None, "nothing was created"


def test_namespace_defaults_to_the_kubeconfig_context(
    capsys: pytest.CaptureFixture[str], harness: Harness, tmp_path: Path
) -> None:
    config = yaml.safe_load(harness.kubeconfig.read_text())
    context = config["contexts"][0]
    config["contexts"] = [
        {"name": "elsewhere", "context": {**context["context"], "namespace": "default"}},
        {"name": "shop", "context": {**context["context"], "namespace": NS}},
    ]
    config["current-context"] = "shop"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    code, out, _ = run_cli(capsys, "abort", "web", "--kubeconfig", str(kubeconfig))
    assert code == 0 and out.startswith(f"rollout {NS}/web: ")
    assert "sluice.dev/abort" in annotations_of(harness)

    code, _, err = run_cli(capsys, "abort", "web", "--kubeconfig", str(kubeconfig), "--context", "elsewhere")
    assert code == 1 and "default/web" in err, "--context picks that context's namespace"


# ---- status ---------------------------------------------------------------------------------------


def test_status_prints_the_status(capsys: pytest.CaptureFixture[str], harness: Harness) -> None:
    set_status(
        harness,
        "web",
        {
            "phase": "Paused",
            "stableRevision": "aaa111",
            "canaryRevision": "bbb222",
            "currentStepIndex": 1,
            "canaryWeight": 20,
            "replicas": {"stable": 4, "canary": 1, "canaryReady": 1},
            "message": "step 2/4: paused for 1s",
        },
    )
    code, out, err = run_cli(capsys, "status", "web", "-n", NS, "--kubeconfig", str(harness.kubeconfig))
    assert (code, err) == (0, "")
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == f"Rollout {NS}/web: Paused"
    assert "Step:      2/4" in lines
    assert "Traffic:   stable 80%  canary 20%" in lines
    assert "Stable:    aaa111  (4 ready)" in lines
    assert "Canary:    bbb222  (1/1 ready)" in lines
    assert "Message:   step 2/4: paused for 1s" in lines


def test_status_of_a_missing_rollout(capsys: pytest.CaptureFixture[str], harness: Harness) -> None:
    code, out, err = run_cli(capsys, "status", "nope", "-n", NS, "--kubeconfig", str(harness.kubeconfig))
    assert (code, out) == (1, "")
    assert err == f"sluice: rollout {NS}/nope not found\n"


def test_status_watch_gives_up_on_a_release_that_stays_progressing(
    capsys: pytest.CaptureFixture[str], harness: Harness
) -> None:
    set_status(harness, "web", {"phase": "Progressing", "canaryWeight": 20, "message": "step 1/4"})
    started = time.monotonic()
    code, out, err = run_cli(
        capsys,
        "status",
        "web",
        "-n",
        NS,
        "--kubeconfig",
        str(harness.kubeconfig),
        "--watch",
        "--timeout",
        "2",
    )
    elapsed = time.monotonic() - started
    assert code == 2
    assert 2 <= elapsed < 5
    assert err == "sluice: still Progressing after 2s\n"
    assert out.count(f"Rollout {NS}/web: Progressing") == 1, "an unchanged status is printed once"


@pytest.mark.parametrize(("phase", "expected"), [("Healthy", 0), ("Degraded", 1), ("Aborted", 1)])
def test_status_watch_ends_on_a_final_phase(
    capsys: pytest.CaptureFixture[str], harness: Harness, phase: str, expected: int
) -> None:
    set_status(harness, "web", {"phase": phase, "message": f"it is {phase}"})
    started = time.monotonic()
    code, out, _ = run_cli(
        capsys, "status", "web", "-n", NS, "--kubeconfig", str(harness.kubeconfig), "-w", "--timeout", "10"
    )
    assert code == expected
    assert time.monotonic() - started < 1, "no waiting once the phase is final"
    assert f"Rollout {NS}/web: {phase}" in out


def test_status_watch_does_not_trust_a_final_phase_of_an_older_generation(
    capsys: pytest.CaptureFixture[str], harness: Harness
) -> None:
    # The image just changed: the operator has not looked yet, so "Healthy" is about the old spec.
    set_status(harness, "web", {"phase": "Healthy"})
    harness.set_image(NS, "web", "ghcr.io/acme/web:2.0.0")
    code, _, err = run_cli(
        capsys, "status", "web", "-n", NS, "--kubeconfig", str(harness.kubeconfig), "-w", "--timeout", "1"
    )
    assert code == 2
    assert "still Healthy after 1s" in err


@pytest.mark.parametrize("phase", ["Healthy", "Paused"])
def test_status_watch_fails_on_a_stalled_rollout_whatever_its_phase(
    capsys: pytest.CaptureFixture[str], harness: Harness, phase: str
) -> None:
    # A spec the operator refused keeps the phase it had (Healthy: the old revision still serves),
    # but the release just applied will not happen: a pipeline waiting on it must fail, not pass.
    message = "selector.matchLabels team=x not found in template.metadata.labels"
    stalled = {
        "type": "Stalled",
        "status": "True",
        "reason": "InvalidSpec",
        "message": message,
        "lastTransitionTime": "2024-05-01T10:00:00Z",
    }
    ready = {**stalled, "type": "Ready", "status": "False"}
    set_status(harness, "web", {"phase": phase, "message": message, "conditions": [ready, stalled]})
    started = time.monotonic()
    code, out, _ = run_cli(
        capsys, "status", "web", "-n", NS, "--kubeconfig", str(harness.kubeconfig), "-w", "--timeout", "10"
    )
    assert code == 1
    assert time.monotonic() - started < 1
    assert f"Message:   {message}" in out


def test_status_watch_waits_for_a_stall_of_the_current_generation(
    capsys: pytest.CaptureFixture[str], harness: Harness
) -> None:
    stalled = {
        "type": "Stalled",
        "status": "True",
        "reason": "InvalidSpec",
        "message": "old problem",
        "lastTransitionTime": "2024-05-01T10:00:00Z",
    }
    set_status(harness, "web", {"phase": "Progressing", "conditions": [stalled]})
    harness.set_image(NS, "web", "ghcr.io/acme/web:2.0.0")  # perhaps the fix: not looked at yet
    code, _, err = run_cli(
        capsys, "status", "web", "-n", NS, "--kubeconfig", str(harness.kubeconfig), "-w", "--timeout", "1"
    )
    assert code == 2 and "still Progressing" in err
