"""The read path: the operator reads what its watches delivered, never asks the API server again.

Counted in the sandbox API server's request log, where the operator's own
client says ``sluice-operator/...`` and kopf ``kopf/...``.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter

import pytest

from sluice_sandbox.apiserver import SandboxThread
from sluice_sandbox.requestlog import RequestRecord
from tests import scenarios

OPERATOR = "sluice-operator"
# A single object of a kind the operator watches: /apis/<group>/<v>/namespaces/<ns>/<plural>/<name>.
WATCHED_OBJECT = re.compile(
    r"^/(api/v1|apis/(apps/v1|sluice\.dev/v1alpha1|gateway\.networking\.k8s\.io/v1))"
    r"/namespaces/[^/]+/(deployments|services|httproutes|rollouts)/[^/]+$"
)
PASS_DONE = re.compile(r"^Rollout (\S+)/(\S+): pass done")


def object_reads(records: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.method == "GET" and not r.is_watch and WATCHED_OBJECT.match(r.path)]


def unexplained_reads(records: list[RequestRecord]) -> list[RequestRecord]:
    """GETs of existing objects, except the one re-read a refused write (409) calls for.

    kopf's own write (its finalizer) can land between a pass's read and its status write:
    the write is refused, as it must be, and the object is read again once.
    """
    refused: set[str] = set()
    found = []
    for record in records:
        path = record.path.removesuffix("/status")
        if record.method != "GET" and record.status == 409:
            refused.add(path)
        elif record in object_reads([record]) and record.status != 404:
            if path in refused:
                refused.discard(path)
            else:
                found.append(record)
    return found


def test_a_release_reads_nothing_its_watches_delivered(
    scene: scenarios.Scene, sandbox_api: SandboxThread
) -> None:
    sandbox_api.requests.clear()
    scenarios.healthy_release_is_promoted(scene)  # a first deployment, then a release of 3 steps

    operator = sandbox_api.requests.snapshot(user_agent=OPERATOR)
    reads = object_reads(operator)
    found = [f"{r.path} -> {r.status}" for r in unexplained_reads(operator)]
    assert not found, f"the operator GOT objects its watches had delivered: {found}"
    # What no watch had delivered yet (the canary before the release) is asked for once at most.
    asked_twice = [path for path, n in Counter(r.path for r in reads).items() if n > 1]
    assert not asked_twice, f"asked more than once whether these exist: {asked_twice}"


def test_a_quiet_pass_makes_no_request(
    scene: scenarios.Scene, sandbox_api: SandboxThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="operators.rollout.reconciler")
    h, ns = scene.harness, scene.namespace
    scene.exporter.set_service(ns, "web-canary", rps=50, error_rate=0.0, latency_seconds=0.02)
    scenarios.deploy_stable(scene, scenarios.web_rollout())
    # The pass that reports Healthy posts its Event after writing the status: let it land first.
    h.wait(
        lambda: h.events(ns, "web"),
        lambda events: any(e.get("reason") == "Healthy" for e in events),
        scenarios.RELEASE_TIMEOUT,
        "the Healthy Event",
    )

    # A change a person makes wakes the loop at once; it finds nothing to do.
    woken_at = time.time()
    since = time.monotonic()
    h.annotate(ns, "web", "example.com/note", "nothing to do")
    deadline = time.monotonic() + scenarios.RELEASE_TIMEOUT
    while not any(
        record.created >= woken_at
        and PASS_DONE.match(record.getMessage())
        and PASS_DONE.match(record.getMessage()).groups() == (ns, "web")  # type: ignore[union-attr]
        for record in caplog.records
    ):
        assert time.monotonic() < deadline, "the annotation did not wake the Rollout's loop"
        time.sleep(0.05)

    operator = sandbox_api.requests.snapshot(user_agent=OPERATOR, since=since)
    kopf = sandbox_api.requests.snapshot(user_agent="kopf/", since=since)
    assert [f"{r.method} {r.path}" for r in operator + kopf if not r.is_watch] == []
