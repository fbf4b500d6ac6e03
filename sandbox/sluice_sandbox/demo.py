"""`sluice demo`: a good release promoted and a bad one rolled back, live, in the sandbox."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from operators.api.rollout import RolloutStatus
from operators.foundation.cluster import Cluster, KubeError, load_api_client
from operators.rollout.inventory import rollout_key
from sluice_sandbox.environment import Sandbox

NAMESPACE = "demo"
NAME = "web"
GOOD_IMAGE = "ghcr.io/acme/web:2.0.0"
BAD_IMAGE = "ghcr.io/acme/web:3.0.0"
BAD_ERROR_RATE = "0.3"
# Deadline for one release; the demo takes about a minute on two cores.
RELEASE_TIMEOUT = 120.0
POLL_SECONDS = 0.5


def default_manifests() -> Path:
    """examples/demo in the checkout this package runs from (sandbox/sluice_sandbox/ in it), else
    under the current directory (a non-editable `pip install ./sandbox` runs from site-packages)."""
    checkout = Path(__file__).resolve().parents[2] / "examples" / "demo"
    return checkout if checkout.is_dir() else Path("examples") / "demo"


@dataclass
class ReleaseOutcome:
    label: str
    phase: str
    seconds: float
    message: str


@dataclass
class DemoReport:
    releases: list[ReleaseOutcome] = field(default_factory=list)
    stable_outages: list[str] = field(default_factory=list)

    def verdict(self) -> tuple[bool, str]:
        """(passed, why): the good release promoted, the bad rolled back, the stable always serving."""
        phases = {r.label: r.phase for r in self.releases}
        if phases.get("good") != "Healthy":
            return False, f"the good release ended {phases.get('good')}, not Healthy"
        if phases.get("bad") != "Degraded":
            return False, f"the bad release ended {phases.get('bad')}, not Degraded"
        if self.stable_outages:
            return False, "the stable version stopped serving: " + "; ".join(self.stable_outages[:3])
        return (
            True,
            "the good release was promoted, the bad one rolled back, the stable version served throughout",
        )


class Demo:
    def __init__(self, sandbox: Sandbox, out: TextIO, manifests: Path | None = None) -> None:
        self.sandbox = sandbox
        self.out = out
        self.manifests = manifests or default_manifests()
        self.cluster = Cluster(load_api_client(str(sandbox.options.kubeconfig)))
        self.started = time.monotonic()

    def run(self) -> DemoReport:
        report = DemoReport()
        self.say(f"applying {self.manifests}/")
        self.apply_manifests()
        self.follow("first version", lambda s: s.phase is not None and s.phase.value == "Healthy")
        for label, image, behaviour in (
            ("good", GOOD_IMAGE, {}),
            ("bad", BAD_IMAGE, {"sandbox.sluice.dev/error-rate": BAD_ERROR_RATE}),
        ):
            self.say("")
            self.say(f"releasing {image} ({label}{', 30% errors' if behaviour else ''})")
            before = self.status().stable_revision
            self.release(image, behaviour)
            began = time.monotonic()
            final = self.follow(label, functools.partial(_release_over, stable_before=before))
            report.releases.append(
                ReleaseOutcome(
                    label, final.phase.value if final.phase else "?", time.monotonic() - began, final.message
                )
            )
        if self.sandbox.traffic is not None:
            report.stable_outages = self.sandbox.traffic.stable_outages()
        return report

    # ---- cluster ----------------------------------------------------------------------------

    def apply_manifests(self) -> None:
        for path in sorted(self.manifests.glob("*.yaml")):
            for document in yaml.safe_load_all(path.read_text()):
                if document:
                    try:
                        self.cluster.create(document)
                    except KubeError as error:
                        if error.status != 409:
                            raise

    def status(self) -> RolloutStatus:
        body = self.cluster.get(rollout_key(NAMESPACE, NAME)) or {}
        return RolloutStatus.model_validate(body.get("status") or {})

    def release(self, image: str, annotations: Mapping[str, str]) -> None:
        body = self.cluster.get(rollout_key(NAMESPACE, NAME))
        assert body is not None
        template: dict[str, Any] = body["spec"]["template"]
        template["spec"]["containers"][0]["image"] = image
        metadata = template.setdefault("metadata", {})
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
        self.cluster.merge_patch(rollout_key(NAMESPACE, NAME), {"spec": {"template": template}})

    # ---- display ----------------------------------------------------------------------------

    def follow(self, label: str, done: Callable[[RolloutStatus], bool]) -> RolloutStatus:
        """Print each change of the release until ``done`` holds; raise after the deadline."""
        deadline = time.monotonic() + RELEASE_TIMEOUT
        shown = ""
        while time.monotonic() < deadline:
            status = self.status()
            line = progress_line(status)
            if line != shown:
                self.say(line)
                shown = line
            if done(status):
                return status
            time.sleep(POLL_SECONDS)  # polling between reads, bounded by the deadline
        raise TimeoutError(f"the {label} release did not finish within {RELEASE_TIMEOUT:.0f}s: {shown}")

    def say(self, text: str) -> None:
        stamp = f"{time.monotonic() - self.started:6.1f}s " if text else ""
        print(f"{stamp}{text}", file=self.out, flush=True)


def _release_over(status: RolloutStatus, stable_before: str | None) -> bool:
    phase = status.phase.value if status.phase else ""
    if phase in ("Degraded", "Aborted"):
        return True
    return phase == "Healthy" and status.stable_revision != stable_before


def progress_line(status: RolloutStatus) -> str:
    """``Progressing  step 1  canary 20%  error-rate=0.000 Passed  latency-p99=0.024 Passed``."""
    phase = status.phase.value if status.phase else "Pending"
    parts = [f"{phase:<12}"]
    if status.current_step_index is not None:
        parts.append(f"step {status.current_step_index + 1}")
    parts.append(f"canary {status.canary_weight:>3}%")
    check = status.analysis.last_check
    if check is not None and status.canary_revision:
        for metric in check.metrics:
            value = "n/a" if metric.value is None else f"{metric.value:.3f}"
            parts.append(f"{metric.name}={value} {metric.outcome.value}")
    if phase in ("Degraded", "Aborted", "Healthy"):
        parts.append(f"- {status.message}")
    return "  ".join(parts)


def summary(report: DemoReport) -> str:
    lines = ["", "Summary"]
    for release in report.releases:
        lines.append(f"  {release.label:<5} release: {release.phase} after {release.seconds:.0f}s")
    passed, why = report.verdict()
    lines.append(f"  {'PASSED' if passed else 'FAILED'}: {why}")
    return "\n".join(lines)
