"""`kubectl sluice` against real releases: get, status --watch (in a real terminal: tmux), and the verbs.

One sandbox serves the module (a namespace per test), closed loop: the versions' pods behave as their
template annotations say, the traffic simulator and the real Prometheus do the rest, and the real
operator releases them. The CLI runs in-process (`run_cli`), except the live view, which runs as the
installed `sluice` command inside tmux so it sees a real terminal.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice_sandbox.behaviour import ERROR_RATE_ANNOTATION
from sluice_sandbox.environment import Sandbox
from tests.cli import run_cli
from tests.closed_loop import (
    NAME,
    loop_rollout,
    release,
    sandbox_in,
    scene_on,
    wait_paused_at,
    wait_promoted,
    wait_status,
)
from tests.harness import deployment, status_of
from tests.scenarios import IMAGE_V1, IMAGE_V2, Scene, deploy_stable, history_messages

pytestmark = pytest.mark.integration

IMAGE_V3 = "ghcr.io/acme/web:3.0.0"
WATCH_TIMEOUT = 120.0  # the release's deadline, generously: not an expected duration
ONE_STEP = [{"setWeight": 50}]


@pytest.fixture(scope="module")
def plugin_sandbox(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with sandbox_in(tmp_path_factory.mktemp("kubectl-plugin")) as sandbox:
        yield sandbox


@pytest.fixture
def scene(plugin_sandbox: Sandbox, metrics_namespace: str) -> Scene:
    return scene_on(plugin_sandbox, metrics_namespace)


def sluice(capsys: pytest.CaptureFixture[str], scene: Scene, *argv: str) -> tuple[int, str, str]:
    """`sluice ARGV -n NS --kubeconfig K` in-process."""
    return run_cli(capsys, *argv, "-n", scene.namespace, "--kubeconfig", str(scene.harness.kubeconfig))


def image_in_spec(scene: Scene) -> str:
    return str(
        scene.harness.rollout(scene.namespace, NAME)["spec"]["template"]["spec"]["containers"][0]["image"]
    )


def stable_pods(scene: Scene) -> set[str]:
    """The names of the stable Deployment's pods that are not on their way out."""
    stable = scene.harness.read(deployment(scene.namespace, NAME))
    labels = stable["spec"]["selector"]["matchLabels"]
    selector = ",".join(f"{key}={value}" for key, value in labels.items())
    pods = scene.harness.cluster.list_objects("v1", "Pod", scene.namespace, selector)
    return {pod["metadata"]["name"] for pod in pods if not pod["metadata"].get("deletionTimestamp")}


# ---- get ------------------------------------------------------------------------------------------


def test_get_lists_rollouts_and_shows_one_as_a_tree(capsys: pytest.CaptureFixture[str], scene: Scene) -> None:
    first = deploy_stable(scene, loop_rollout(scene, steps=[{"setWeight": 50}, {"pause": {}}]))
    release(scene, IMAGE_V2)
    paused = wait_paused_at(scene, 1, 50, "the release to pause at 50%")
    canary = status_of(paused)["canaryRevision"]

    code, out, err = sluice(capsys, scene, "get")
    assert (code, err) == (0, "")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "STRATEGY", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"]
    assert row.split()[:7] == [NAME, "Canary", "Paused", "2/2", "50%", first, canary]

    code, out, err = sluice(capsys, scene, "get", NAME)
    assert (code, err) == (0, "")
    assert f"Rollout {scene.namespace}/{NAME}  Canary  Paused  step 2/2  canary weight 50%" in out
    assert f"HTTPRoute {NAME}: {NAME} 50%, {NAME}-canary 50%" in out, out
    assert f"Deployment {NAME} (stable, revision {first}): 4/4 ready" in out
    assert f"Deployment {NAME}-canary (canary, revision {canary}): 2/2 ready" in out
    assert out.count("Running  ready") == 6, "each pod of both tracks, ready"
    assert "error-rate = " in out and "(threshold <= 0.1)  Passed" in out
    assert "\x1b[" not in out, "no escape codes when not a terminal"

    code, out, _ = run_cli(capsys, "get", "-A", "-o", "wide", "--kubeconfig", str(scene.harness.kubeconfig))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:2] == ["NAMESPACE", "NAME"] and header.split()[-1] == "MESSAGE"
    [mine] = [row for row in rows if row.startswith(f"{scene.namespace} ")]
    assert "paused until promoted" in mine, "wide: the status message"

    code, out, _ = sluice(capsys, scene, "get", "--all", "-o", "yaml")
    assert code == 0 and f"name: {NAME}" in out and "kind: Rollout" in out

    code, _, err = sluice(capsys, scene, "get", "nope")
    assert code == 1 and "not found" in err

    assert sluice(capsys, scene, "promote", NAME)[0] == 0
    wait_promoted(scene, first)


# ---- status --watch: exit codes ------------------------------------------------------------------------


def test_status_watch_fails_on_a_degraded_release_and_prints_a_line_per_change(
    capsys: pytest.CaptureFixture[str], scene: Scene
) -> None:
    deploy_stable(scene, loop_rollout(scene, steps=ONE_STEP))
    release(scene, IMAGE_V2, annotations={ERROR_RATE_ANNOTATION: "0.5"})
    code, out, _ = sluice(capsys, scene, "status", NAME, "--watch", "--timeout", str(WATCH_TIMEOUT))
    assert code == 1
    assert status_of(scene.harness.rollout(scene.namespace, NAME))["phase"] == "Degraded"
    lines = out.splitlines()
    assert lines[0].startswith(f"Rollout {scene.namespace}/{NAME}: "), "the full status first"
    last = lines[-1]
    assert f"{scene.namespace}/{NAME}  Degraded" in last, last
    failed = re.search(r"error-rate=(0\.[0-9]+) \(<= 0\.1\) Failed", last)
    assert failed and float(failed.group(1)) > 0.1, f"the failing metric, its value and bound: {last}"


def test_status_watch_fails_at_once_on_a_spec_the_operator_refuses(
    capsys: pytest.CaptureFixture[str], scene: Scene
) -> None:
    deploy_stable(scene, loop_rollout(scene, steps=ONE_STEP))
    # A selector label the template lacks: the operator stalls (InvalidSpec), the old revision serves.
    release(scene, IMAGE_V2, spec={"selector": {"matchLabels": {"team": "payments"}}})
    started = time.monotonic()
    code, out, _ = sluice(capsys, scene, "status", NAME, "--watch", "--timeout", str(WATCH_TIMEOUT))
    assert code == 1
    assert time.monotonic() - started < 30, "a stall ends the watch when the operator reports it"
    assert "(stalled)" in out and "team" in out


# ---- status --watch: the live view in a real terminal --------------------------------------------------

needs_tmux = pytest.mark.skipif(
    shutil.which("tmux") is None and os.environ.get("CI") != "true",
    reason="tmux is not installed (apt-get install tmux); with CI=true this fails instead",
)


class Tmux:
    """A private tmux server (its own socket) running one command in a 200x30 terminal."""

    def __init__(self, socket: Path) -> None:
        self.socket = str(socket)

    def run(self, command: str) -> None:
        self._tmux("new-session", "-d", "-s", "watch", "-x", "200", "-y", "30", command)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "watch")

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], check=False, capture_output=True)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", self.socket, *args], check=True, capture_output=True, text=True)
        return done.stdout


@needs_tmux
def test_status_watch_redraws_progress_and_metrics_in_a_terminal(scene: Scene, tmp_path: Path) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "4s"}}, {"setWeight": 50}]
    first = deploy_stable(scene, loop_rollout(scene, steps=steps))
    release(scene, IMAGE_V2)
    sluice_command = Path(sys.executable).parent / "sluice"
    tmux = Tmux(tmp_path / "tmux.sock")
    kubeconfig = scene.harness.kubeconfig
    # The command's exit code is echoed, then the pane is kept so the last frame can be read.
    tmux.run(
        f"env PYTHONPATH={os.environ.get('PYTHONPATH', '')} {sluice_command} status {NAME} "
        f"-n {scene.namespace} --kubeconfig {kubeconfig} --watch --timeout {WATCH_TIMEOUT:g}; "
        "echo EXIT=$?; sleep 600"
    )
    frames: list[str] = []

    def seen() -> list[str]:
        screen = tmux.screen()
        if not screen.strip():
            return frames  # the command has not drawn yet
        if not frames or frames[-1] != screen:
            frames.append(screen)
        return frames

    try:
        scene.harness.wait(seen, lambda f: bool(f) and "EXIT=" in f[-1], WATCH_TIMEOUT, "the watch to end")
    finally:
        tmux.kill()
    assert "EXIT=0" in frames[-1], frames[-1]
    assert wait_promoted(scene, first)
    text = "\n".join(frames)
    assert "Step 1/3" in text and "Step 3/3" in text, "the step advanced on screen"
    assert "━" in text, "a progress bar is drawn"
    assert "Traffic: stable 80%  canary 20%" in text and "Traffic: stable 50%  canary 50%" in text
    assert "s left" in text, "the timed pause counts down"
    metric_rows = [line.split() for line in text.splitlines() if line.startswith("error-rate ")]
    assert metric_rows, "the metric's row is shown"
    assert all(row[2:4] == ["<=", "0.1"] for row in metric_rows), "against its threshold"
    longest = max(len(row[4]) for row in metric_rows if len(row) >= 6)
    assert longest >= 2, "the sparkline grows with each check seen"
    assert len({tuple(row) for row in metric_rows}) >= 2, "the metric's values update in place"
    assert all(frame.count(f"Rollout {scene.namespace}/{NAME}") == 1 for frame in frames), "redrawn in place"


# ---- verbs --------------------------------------------------------------------------------------------


def test_set_image_pause_resume_restart_history_and_undo(
    capsys: pytest.CaptureFixture[str], scene: Scene
) -> None:
    h, ns = scene.harness, scene.namespace
    first = deploy_stable(scene, loop_rollout(scene, steps=ONE_STEP))

    code, _, err = sluice(capsys, scene, "set", "image", NAME, "nope=x")
    assert code == 1 and f"no container named nope in spec.template; the containers are: {NAME}" in err
    assert image_in_spec(scene) == IMAGE_V1, "nothing changed"

    # Paused before the release starts: it holds, then goes on when resumed.
    assert sluice(capsys, scene, "pause", NAME)[0] == 0
    code, out, _ = sluice(capsys, scene, "set", "image", NAME, f"{NAME}={IMAGE_V2}")
    assert code == 0 and out.strip() == f"rollout {ns}/{NAME}: container {NAME} image set to {IMAGE_V2}"
    wait_status(scene, lambda s: s.get("phase") == "Paused" and "spec.paused" in s.get("message", ""), "held")
    assert h.rollout(ns, NAME)["spec"]["paused"] is True
    assert sluice(capsys, scene, "resume", NAME)[0] == 0
    second = str(status_of(wait_promoted(scene, first))["stableRevision"])

    # Restart: new pods of the same revision, no release.
    before = stable_pods(scene)
    assert sluice(capsys, scene, "restart", NAME)[0] == 0
    h.wait(
        lambda: stable_pods(scene),
        lambda pods: len(pods) == 4 and not pods & before,
        WATCH_TIMEOUT,
        "every stable pod to be replaced",
    )
    restarted = wait_status(
        scene, lambda s: s.get("phase") == "Healthy" and bool(s.get("restartedAt")), "Healthy"
    )
    assert status_of(restarted)["stableRevision"] == second, "the same revision"
    assert len(history_messages(restarted, "release-started")) == 1, "a restart is not a release"
    assert history_messages(restarted, "restart") == [f"pods of revision {second} restarted"]

    code, out, _ = sluice(capsys, scene, "history", NAME)
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [row[1] for row in rows] == [first, second] and rows[1][2] == "*"
    assert rows[0][-1] == f"{NAME}={IMAGE_V1}"

    # Undo: the previous revision again, released through the canary step.
    code, out, _ = sluice(capsys, scene, "undo", NAME)
    assert code == 0 and out.strip() == f"rollout {ns}/{NAME}: releasing revision 1 ({first}) again"
    assert image_in_spec(scene) == IMAGE_V1
    undone = wait_promoted(scene, second)
    assert status_of(undone)["stableRevision"] == first
    assert len(history_messages(undone, "release-started")) == 2, "undo is a release like any"
    assert history_messages(undone, "set-weight").count("canary weight 0% -> 50%") == 2

    code, _, err = sluice(capsys, scene, "undo", NAME, "--to-revision", "9")
    assert code == 1 and "no revision 9: `sluice history` lists 1 to 2" in err
