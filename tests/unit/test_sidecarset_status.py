"""A SidecarSet's status: counts, rollbacks, conflicts, conditions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from operators.api.sidecarset import Conflict, SidecarSetStatus
from operators.sidecarset.facts import PodFacts, RolloutFacts
from operators.sidecarset.inject import Record
from operators.sidecarset.status import Observation, sidecarset_status
from operators.sidecarset.upgrade import plan_pods, plan_rollouts
from tests.unit.sidecar_world import rollout, sidecarset_spec

S, OLD, NEW, FREE = "log-agent", "old0000000", "new0000000", "free000000"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def pod(name: str, revision: str | None, ready: bool = True, image_free: str = FREE) -> PodFacts:
    record = None if revision is None else Record(revision, image_free, before=(S,))
    return PodFacts("shop", name, {"tier": "web"}, ready=ready, record=record)


def status(
    fleet: list[RolloutFacts], pods: list[PodFacts], conflicts: list[Conflict] = (), **strategy: Any
) -> SidecarSetStatus:
    spec = sidecarset_spec(updateStrategy=strategy) if strategy else sidecarset_spec()
    observation = Observation(
        generation=3,
        revision=NEW,
        rollouts=plan_rollouts(S, spec, NEW, fleet),
        pods=pods,
        pod_plan=plan_pods(S, spec, NEW, FREE, pods),
        conflicts=list(conflicts),
    )
    return sidecarset_status(observation, [], NOW)


def conditions(result: SidecarSetStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in result.conditions}


def test_counts() -> None:
    result = status(
        [
            rollout("a", stable={S: NEW}),
            rollout("b", phase="Progressing", stable={S: OLD}, canary={S: NEW}),
            rollout("c", stable={S: OLD}),
            rollout("x", labels={"tier": "db"}),
        ],
        [pod("p1", NEW), pod("p2", NEW, ready=False), pod("p3", OLD), pod("p4", None)],
    )
    assert (result.matched_rollouts, result.updated_rollouts, result.ready_rollouts) == (3, 1, 2)
    assert (result.updated_ready_rollouts, result.releasing_rollouts) == (1, 1)
    assert (result.matched_pods, result.updated_pods, result.ready_pods, result.updated_ready_pods) == (
        4,
        2,
        3,
        1,
    )
    assert (result.matched, result.updated, result.ready) == (7, 3, 5)
    assert result.revision == NEW and result.observed_generation == 3
    assert conditions(result)["Reconciling"] == ("True", "Updating")
    assert "Rollouts 1/3 updated (1 releasing)" in result.message


def test_all_done_is_ready() -> None:
    result = status([rollout("a", stable={S: NEW})], [pod("p1", NEW)])
    assert conditions(result) == {
        "Ready": ("True", "UpToDate"),
        "Reconciling": ("False", "UpToDate"),
        "Stalled": ("False", "UpToDate"),
        "InPlaceUpdate": ("True", "ImageOnly"),
    }


def test_a_rollback_is_marked_and_stalls() -> None:
    result = status(
        [rollout("a", phase="Degraded", stable={S: OLD}, canary={S: NEW}), rollout("b", stable={S: OLD})], []
    )
    assert [(r.rollout, r.revision) for r in result.rolled_back] == [("shop/a", NEW)]
    assert conditions(result)["Stalled"] == ("True", "RolledBack")
    assert conditions(result)["Ready"][0] == "False"
    assert "goes no further" in result.message


def test_conflicts_stall() -> None:
    result = status(
        [], [], [Conflict(target="Rollout shop/web", message="container(s) app already in the pod")]
    )
    assert conditions(result)["Stalled"] == ("True", "InjectionConflict")
    assert "Rollout shop/web" in result.message


@pytest.mark.parametrize(("image_free", "in_place"), [(FREE, "True"), ("other00000", "False")])
def test_in_place_condition_says_when_pods_wait_for_recreation(image_free: str, in_place: str) -> None:
    result = status([], [pod("p1", OLD, image_free=image_free)])
    assert conditions(result)["InPlaceUpdate"][0] == in_place
    if in_place == "False":
        assert "until recreated" in next(c.message for c in result.conditions if c.type == "InPlaceUpdate")
        assert "get it when recreated" in result.message
