"""The world the shells run against in unit tests: an in-memory API server, a fake Prometheus, a clock.

The real reconcilers (Rollout, Application, SidecarSet) are driven pass by
pass, as Argo Rollouts' controller tests drive the real controller: the API
server is the sandbox's in-memory one (with its Deployment controller, pods
ready at once), metrics come from a fake Prometheus over real HTTP, and time
is a clock the test moves forward by what each pass asked to wait, so pauses
and analysis intervals take no real time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from operators.analysis.check import MetricSources
from operators.foundation.cluster import Cluster, load_api_client
from operators.metrics.hosts import AllowedHosts
from operators.rollout.reconciler import RolloutReconciler
from operators.sidecarset.rollouts import RolloutSidecars
from sluice_sandbox.apiserver import SandboxThread, with_controllers
from sluice_sandbox.workloads import WorkloadSimulator
from tests.fakes.prometheus import FakePrometheus
from tests.harness import httproute_crd, sluice_crds

# Real seconds a test may wait for the world (pods to become ready): a deadline, not a duration.
DEADLINE = 20.0
# The clock moves at most this far per pass, so a long requeue never skips a progress deadline.
MAX_STEP = timedelta(seconds=5)
POLL_SECONDS = 0.02
T = TypeVar("T")


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 30, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += min(timedelta(seconds=max(seconds, 0.0)), MAX_STEP)


@dataclass
class World:
    sandbox: SandboxThread
    cluster: Cluster
    prometheus: FakePrometheus
    clock: Clock = field(default_factory=Clock)

    def install_crd(self, crd: dict[str, Any]) -> None:
        self.sandbox.run(self.sandbox.server.install_crd(crd))

    def rollouts(self, metric_hosts: Sequence[str] = ()) -> RolloutReconciler:
        """The real Rollout shell, as `sluice run --prometheus-url FAKE [--metric-hosts ...]` builds it."""
        sources = MetricSources(
            allowed=AllowedHosts.of([self.prometheus.url], metric_hosts),
            default_addresses={"prometheus": self.prometheus.url},
        )
        return RolloutReconciler(
            self.cluster, sources, clock=self.clock, sidecars=RolloutSidecars(self.cluster)
        )

    def drive(
        self,
        reconcile: Callable[[], float | None],
        read: Callable[[], T],
        done: Callable[[T], bool],
        what: str,
    ) -> T:
        """Run passes until `done(read())`; between passes the clock moves by what the pass asked."""
        deadline = time.monotonic() + DEADLINE
        while True:
            delay = reconcile()
            seen = read()
            if done(seen):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached within {DEADLINE}s; last seen {seen!r}")
            self.clock.advance(delay or 0.0)
            time.sleep(POLL_SECONDS)  # the simulator's pods become ready on the server's thread


@contextmanager
def world(tmp_path: Path, answer: Callable[[str], float | None]) -> Iterator[World]:
    factory = with_controllers(functools.partial(WorkloadSimulator, ready_delay=0.0))
    with SandboxThread(kubeconfig=tmp_path / "kubeconfig", server_factory=factory) as sandbox:
        prometheus = FakePrometheus(answer).start()
        try:
            built = World(sandbox, Cluster(load_api_client(str(sandbox.kubeconfig))), prometheus)
            for crd in [*sluice_crds(), httproute_crd()]:
                built.install_crd(crd)
            built.cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
            yield built
        finally:
            prometheus.stop()
