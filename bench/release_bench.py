"""Benchmark: how fast a bad release loses its traffic, and what a step costs in API requests.

Runs the sandbox (API server, simulated pods and traffic, a real Prometheus,
the real operator) and alternates good and bad releases of one Rollout:

- **detection**: from the moment the canary's error rate over its threshold is
  visible in Prometheus (the same built-in query the analysis runs) to the
  moment the HTTPRoute sends the canary 0% — the analysis interval bounds it;
- **API requests per step**: HTTP requests the operator (kopf and the
  reconciler) made to the API server during a good release, divided by the
  steps it took.

It prints figures, median and worst; it asserts nothing. Usage:

    python bench/release_bench.py [--releases 3] [--interval 3s]
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from operators.analysis.templates import QueryContext, render_query
from operators.api.rollout import Metric
from operators.foundation.cluster import Cluster, load_api_client
from operators.rollout.inventory import rollout_key
from sluice_sandbox.environment import Sandbox, SandboxOptions

NAMESPACE, NAME = "bench", "web"
THRESHOLD = 0.05
DEADLINE = 120.0


# The sandbox API server logs one DEBUG line per HTTP request: "GET /api/v1/... -> 200 (0.001s)".
ACCESS_LOGGER = "sluice_sandbox.apiserver"
ACCESS_LINE = re.compile(r"^[A-Z]+ /\S* -> \d{3} ")


class RequestCounter(logging.Handler):
    """Counts the sandbox API server's access-log lines: one per HTTP request."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if ACCESS_LINE.match(record.getMessage()):
            self.count += 1


def rollout(interval: str) -> dict[str, Any]:
    metric = {"name": "error-rate", "template": "request-error-rate", "thresholdRange": {"max": THRESHOLD}}
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "replicas": 4,
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {
                    "containers": [
                        {"name": NAME, "image": "web:0", "ports": [{"name": "http", "containerPort": 80}]}
                    ]
                },
            },
            "service": {"port": 80, "targetPort": "http"},
            "traffic": {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "default"}]}},
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": 20}, {"setWeight": 50}, {"setWeight": 100}],
                    "abortScaleDownDelaySeconds": 0,
                    "analysis": {"interval": interval, "metrics": [metric]},
                }
            },
        },
    }


class Bench:
    def __init__(self, sandbox: Sandbox, interval: str) -> None:
        self.sandbox = sandbox
        self.cluster = Cluster(load_api_client(str(sandbox.options.kubeconfig)))
        self.interval = interval
        self.key = rollout_key(NAMESPACE, NAME)
        context = QueryContext(NAMESPACE, NAME, f"{NAME}-canary", NAME, "", interval)
        metric = Metric.model_validate(
            {"name": "e", "template": "request-error-rate", "thresholdRange": {"max": 1}}
        )
        self.error_rate_query = render_query(metric, context)

    # The bench reads and writes through the store in-process, so the API server's
    # request count is the operator's alone.
    def rollout(self) -> dict[str, Any]:
        assert self.sandbox.api is not None
        api = self.sandbox.api
        return dict(api.run(api.store.get("rollouts", NAMESPACE, NAME)))

    def status(self) -> dict[str, Any]:
        return dict(self.rollout().get("status") or {})

    def release(self, image: str, error_rate: str | None) -> None:
        template = self.rollout()["spec"]["template"]
        template["spec"]["containers"][0]["image"] = image
        # None deletes the annotation in a merge patch: a good version must not inherit the bad one's.
        template.setdefault("metadata", {})["annotations"] = {"sandbox.sluice.dev/error-rate": error_rate}
        assert self.sandbox.api is not None
        api = self.sandbox.api
        api.run(api.store.patch("rollouts", NAMESPACE, NAME, {"spec": {"template": template}}))

    def canary_weight(self) -> int:
        assert self.sandbox.api is not None
        api = self.sandbox.api
        route = api.run(api.store.get("httproutes", NAMESPACE, NAME))
        refs = route["spec"]["rules"][0]["backendRefs"]
        return next(int(ref["weight"]) for ref in refs if ref["name"].endswith("-canary"))

    def breach_visible(self) -> bool:
        assert self.sandbox.prometheus is not None
        value = self.sandbox.prometheus.query(self.error_rate_query)
        return value is not None and value > THRESHOLD

    def good_release(self, image: str, counter: RequestCounter) -> float:
        before, started = counter.count, self.status().get("stableRevision")
        self.release(image, None)
        wait(lambda: _promoted(self.status(), started), "a good release to be promoted")
        status = self.status()
        release_entries = _since_last(status.get("history", []), "release-started")
        steps = sum(1 for entry in release_entries if entry["action"] == "step")
        return (counter.count - before) / max(steps, 1)

    def bad_release(self, image: str) -> float:
        self.release(image, "0.5")
        wait(lambda: self.canary_weight() > 0, "the bad canary to get traffic")
        visible = wait_time(self.breach_visible, "the breach to be visible in Prometheus")
        zero = wait_time(lambda: self.canary_weight() == 0, "the canary to lose its traffic")
        wait(lambda: self.status().get("phase") == "Degraded", "the Rollout to report Degraded")
        return zero - visible


def _promoted(status: dict[str, Any], stable_before: str | None) -> bool:
    return status.get("phase") == "Healthy" and status.get("stableRevision") != stable_before


def _since_last(history: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    """History entries (newest first) up to and including the latest ``action``."""
    for index, entry in enumerate(history):
        if entry["action"] == action:
            return history[: index + 1]
    return history


def wait(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)  # polling between reads, bounded by the deadline
    raise TimeoutError(f"timed out waiting for {what}")


def wait_time(check: Callable[[], bool], what: str) -> float:
    wait(check, what)
    return time.monotonic()


def report(title: str, unit: str, values: list[float]) -> None:
    shown = ", ".join(f"{v:.2f}" for v in values)
    print(f"{title}: median {statistics.median(values):.2f}{unit}, worst {max(values):.2f}{unit}  ({shown})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--releases", type=int, default=3, help="good and bad releases each (default 3)")
    # The rate() window is the interval: keep it at 3 or more scrape intervals (1s here).
    parser.add_argument("--interval", default="3s", help="analysis interval (default 3s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kopf").setLevel(logging.ERROR)
    counter = RequestCounter()
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.DEBUG)
    access.propagate = False
    access.addHandler(counter)

    with tempfile.TemporaryDirectory() as tmp:
        options = SandboxOptions(kubeconfig=Path(tmp) / "kubeconfig", ready_delay=0.2)
        with Sandbox(options) as sandbox:
            bench = Bench(sandbox, args.interval)
            bench.cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
            bench.cluster.create(rollout(args.interval))
            wait(lambda: bench.status().get("phase") == "Healthy", "the first revision")
            per_step, detection = [], []
            for i in range(args.releases):
                per_step.append(bench.good_release(f"web:{2 * i + 1}", counter))
                detection.append(bench.bad_release(f"web:{2 * i + 2}"))
                print(
                    f"release pair {i + 1}: {per_step[-1]:.1f} requests/step, breach to weight 0 in "
                    f"{detection[-1]:.2f}s",
                    flush=True,
                )
    print()
    print(f"analysis interval {args.interval}, {args.releases} good and {args.releases} bad releases")
    report("breach visible in Prometheus -> canary weight 0", "s", detection)
    report("API requests per step (good releases)", "", per_step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
