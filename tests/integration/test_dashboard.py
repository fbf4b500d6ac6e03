"""`sluice dashboard` end to end: the real command serving the sandbox (real operator, real
Prometheus, closed loop), looked at and clicked in headless chromium (Playwright).

One Rollout, three releases' worth of story in one scene: a release waits at a `pause: {}` step,
the page's promote button sends it on to Healthy, then a version that fails its error rate is
rolled back, followed in the page to Degraded, and screenshot while its rollback is in progress
(kept as a test artefact: see `artifacts_dir`, printed with -s)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice_sandbox.behaviour import ERROR_RATE_ANNOTATION
from sluice_sandbox.environment import Sandbox
from tests.closed_loop import NAME, loop_rollout, release, sandbox_in, scene_on, wait_paused_at
from tests.scenarios import IMAGE_V2, RELEASE_TIMEOUT, deploy_stable

pytestmark = pytest.mark.integration

IMAGE_V3 = "ghcr.io/acme/web:3.0.0"
STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]
PAGE_TIMEOUT_MS = RELEASE_TIMEOUT * 1000
STARTED_WITHIN = 30.0
SLUICE = "import sys; from operators.cli import main; sys.argv[0] = 'sluice'; sys.exit(main())"


@pytest.fixture
def sandbox(prometheus_binary: str, tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox_in(tmp_path) as sandbox:
        yield sandbox


@pytest.fixture
def dashboard(sandbox: Sandbox) -> Iterator[str]:
    """`sluice dashboard --port 0` on the sandbox's kubeconfig, as a user runs it; yields its URL."""
    command = [sys.executable, "-c", SLUICE, "dashboard", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--kubeconfig", str(sandbox.options.kubeconfig)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the first line says where it listens; EOF if it died
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, f"sluice dashboard did not start: {line!r}, exit code {process.poll()}"
        yield match.group(0)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_dashboard_follows_releases_live_and_its_promote_button_sends_one_on(
    sandbox: Sandbox, metrics_namespace: str, dashboard: str, browser_page: Any, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    scene = scene_on(sandbox, metrics_namespace)
    ns = scene.namespace
    page = browser_page
    page.goto(f"{dashboard}#rollout/{ns}/{NAME}")
    expect(page.locator("#connection")).to_have_text("live")
    first = deploy_stable(scene, loop_rollout(scene, steps=STEPS))
    phase = page.locator('#detail [data-field="phase"]')
    expect(phase).to_have_text("Healthy")  # no reload: the page hears of it from the watch

    # A good version waits at the pause only a person ends; the page's button ends it.
    release(scene, IMAGE_V2)
    wait_paused_at(scene, 1, 20, "the release to pause at 20%")
    expect(phase).to_have_text("Paused")
    expect(page.locator('#detail [data-field="progress"]')).to_have_text("step 2/3")
    expect(page.locator('#detail [data-field="weight"]')).to_have_text("canary 20%")
    page.locator('button[data-action="promote"]').click()
    expect(page.locator("#result")).to_have_text("sent promote")
    expect(phase).to_have_text("Healthy")
    promoted = scene.harness.rollout(ns, NAME)["status"]
    assert promoted["stableRevision"] != first and promoted["handledCommands"].get("promote")
    # The checks at 20% and 100% were seen, each drawn against the error-rate threshold.
    error_rate = page.locator('[data-chart="metric-error-rate"]')
    expect(error_rate.locator("h3")).to_contain_text("threshold max 0.1")
    assert error_rate.locator("circle.Passed").count() >= 2
    assert page.locator('[data-chart="weight"] path.weight').count() == 1

    # A version failing its error rate: rolled back at its first check, and the page shows it.
    release(scene, IMAGE_V3, annotations={ERROR_RATE_ANNOTATION: "0.3"})
    expect(phase).to_have_text(re.compile(r"^Degraded"))  # and "(stalled)": it waits for a new version
    expect(page.locator('#detail [data-field="message"]')).to_contain_text("error-rate")
    expect(page.locator('#detail [data-field="weight"]')).to_have_text("canary 0%")
    expect(error_rate.locator("circle.Failed")).to_have_count(1)
    screenshot = artifacts_dir / "dashboard-rollback.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot of the rollback: {screenshot}")
    assert screenshot.stat().st_size > 10_000

    # The list page has the Rollout with its phase, from the same live feed.
    page.goto(dashboard)
    row = page.locator(f'tr[data-id="Rollout/{ns}/{NAME}"]')
    expect(row.locator("td.phase")).to_have_text(re.compile(r"^Degraded"))
