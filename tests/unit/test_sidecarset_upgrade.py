"""Who takes a SidecarSet's new revision: Rollouts (maxUnavailable, partition, paused, NotUpdate,
rollbacks) and other pods (in place, image-only)."""

from __future__ import annotations

from typing import Any

import pytest

from operators.sidecarset.facts import PodFacts, RolloutFacts
from operators.sidecarset.inject import Record
from operators.sidecarset.upgrade import Choice, decide, needs_plan, plan_pods, plan_rollouts
from tests.unit.sidecar_world import rollout, sidecarset_spec

S = "log-agent"
OLD, NEW = "old0000000", "new0000000"


def on_old(name: str, **kwargs: Any) -> RolloutFacts:
    return rollout(name, stable={S: OLD}, **kwargs)


def releasing(name: str) -> RolloutFacts:
    return rollout(name, phase="Progressing", stable={S: OLD}, canary={S: NEW})


def updated(name: str) -> RolloutFacts:
    return rollout(name, stable={S: NEW})


def rolled_back(name: str) -> RolloutFacts:
    return rollout(name, phase="Degraded", stable={S: OLD}, canary={S: NEW})


def choices(fleet: list[RolloutFacts], app_release: bool = False, **strategy: Any) -> dict[str, str]:
    spec = sidecarset_spec(updateStrategy=strategy) if strategy else sidecarset_spec()
    plan = plan_rollouts(S, spec, NEW, fleet)
    return {r.name: decide(S, spec, NEW, r, plan, app_release=app_release).choice.value for r in fleet}


C, K = Choice.CURRENT.value, Choice.KEEP.value


@pytest.mark.parametrize(
    ("fleet", "strategy", "expected"),
    [
        pytest.param(
            [on_old("a"), on_old("b"), on_old("c")],
            {},
            {"a": C, "b": K, "c": K},
            id="one-at-a-time-in-name-order",
        ),
        pytest.param(
            [on_old("a"), on_old("b"), on_old("c")],
            {"maxUnavailable": 2},
            {"a": C, "b": C, "c": K},
            id="max-unavailable-2",
        ),
        pytest.param(
            [on_old("a"), on_old("b"), on_old("c"), on_old("d")],
            {"maxUnavailable": "50%"},
            {"a": C, "b": C, "c": K, "d": K},
            id="max-unavailable-percent",
        ),
        pytest.param(
            [releasing("b"), on_old("a"), on_old("c")],
            {},
            {"a": K, "b": C, "c": K},
            id="a-release-under-way-holds-the-slot",
        ),
        pytest.param(
            [updated("a"), on_old("b"), on_old("c")], {}, {"a": C, "b": C, "c": K}, id="done-frees-the-slot"
        ),
        pytest.param(
            [on_old("a"), on_old("b"), on_old("c")],
            {"partition": 2},
            {"a": C, "b": K, "c": K},
            id="partition-keeps-the-last-two",
        ),
        pytest.param(
            [updated("a"), on_old("b"), on_old("c")],
            {"partition": 2},
            {"a": C, "b": K, "c": K},
            id="partition-reached",
        ),
        pytest.param([on_old("a"), on_old("b")], {"paused": True}, {"a": K, "b": K}, id="paused"),
        pytest.param(
            [releasing("a"), on_old("b")],
            {"paused": True},
            {"a": C, "b": K},
            id="paused-lets-a-release-under-way-finish",
        ),
        pytest.param(
            [releasing("a"), rolled_back("b")],
            {"maxUnavailable": 2},
            {"a": K, "b": C},
            id="a-rollback-elsewhere-cancels-a-release-under-way",
        ),
        pytest.param([on_old("a"), on_old("b")], {"type": "NotUpdate"}, {"a": K, "b": K}, id="not-update"),
        pytest.param(
            [on_old("a", labels={"tier": "web"}), on_old("b", labels={"tier": "web", "ring": "0"})],
            {"selector": {"matchLabels": {"ring": "0"}}},
            {"a": K, "b": C},
            id="update-selector",
        ),
        pytest.param(
            [rolled_back("a"), on_old("b"), on_old("c")],
            {"maxUnavailable": 3},
            {"a": C, "b": K, "c": K},
            id="rollback-halts-the-revision",
        ),
        pytest.param(
            [on_old("a", phase="Degraded"), on_old("b")],
            {},
            {"a": K, "b": C},
            id="stuck-on-its-own-release-is-skipped",
        ),
        pytest.param(
            [on_old("a", paused=True), on_old("b")], {}, {"a": K, "b": C}, id="spec-paused-is-skipped"
        ),
        pytest.param(
            [rollout("a", has_stable=False), on_old("b")],
            {},
            {"a": C, "b": C},
            id="first-deployment-takes-it-without-a-slot",
        ),
        pytest.param(
            [rollout("a"), on_old("b")], {}, {"a": C, "b": K}, id="never-had-it-counts-like-an-update"
        ),
    ],
)
def test_rollout_decisions(
    fleet: list[RolloutFacts], strategy: dict[str, Any], expected: dict[str, str]
) -> None:
    assert choices(fleet, **strategy) == expected


def test_rolled_back_rollout_with_a_new_app_release_keeps_the_old_sidecar() -> None:
    fleet = [rolled_back("a")]
    assert choices(fleet) == {"a": C}, "stays rolled back (Degraded) while nothing else changed"
    assert choices(fleet, app_release=True) == {"a": K}, "the app's new release goes out with the old sidecar"


def test_not_update_rides_along_with_an_app_release() -> None:
    assert choices([on_old("a")], app_release=True, type="NotUpdate") == {"a": C}


def test_injection_paused() -> None:
    spec = sidecarset_spec(injectionStrategy={"paused": True})
    fleet = [rollout("new", has_stable=False), rollout("never"), on_old("carrying")]
    plan = plan_rollouts(S, spec, NEW, fleet)
    got = {r.name: decide(S, spec, NEW, r, plan, app_release=False).choice for r in fleet}
    assert got == {"new": Choice.KEEP, "never": Choice.KEEP, "carrying": Choice.CURRENT}


def test_the_plan_never_starts_more_than_max_unavailable_from_any_view() -> None:
    # Whatever subset of the fleet has already started, the chosen plus the releasing stay within 2.
    names = ["a", "b", "c", "d", "e"]
    for started in range(len(names) + 1):
        fleet = [releasing(n) for n in names[:started]] + [on_old(n) for n in names[started:]]
        plan = plan_rollouts(S, sidecarset_spec(updateStrategy={"maxUnavailable": 2}), NEW, fleet)
        assert len(plan.releasing()) + len(plan.chosen) <= max(2, started)


def test_needs_plan() -> None:
    assert not needs_plan(S, NEW, rollout("a", has_stable=False))
    assert not needs_plan(S, NEW, updated("a"))
    assert needs_plan(S, NEW, on_old("a"))
    with pytest.raises(ValueError, match="fleet-wide plan"):
        decide(S, sidecarset_spec(), NEW, on_old("a"), None, app_release=False)


def test_rollouts_not_matching_are_not_counted() -> None:
    fleet = [on_old("a", labels={"tier": "db"}), on_old("b")]
    plan = plan_rollouts(S, sidecarset_spec(), NEW, fleet)
    assert [r.name for r in plan.matched] == ["b"] and plan.chosen == {"shop/b"}


# ---- pods -----------------------------------------------------------------------------------------

IMAGE_FREE = "free000000"


def pod(
    name: str,
    revision: str | None = OLD,
    ready: bool = True,
    restarting: bool = False,
    image_free: str = IMAGE_FREE,
    labels: dict[str, str] | None = None,
) -> PodFacts:
    record = None if revision is None else Record(revision=revision, image_free=image_free, before=(S,))
    return PodFacts(
        "shop", name, labels or {"tier": "web"}, ready=ready, record=record, restarting=restarting
    )


def patched(pods: list[PodFacts], **strategy: Any) -> list[str]:
    spec = sidecarset_spec(updateStrategy=strategy) if strategy else sidecarset_spec()
    return [p.name for p in plan_pods(S, spec, NEW, IMAGE_FREE, pods).patch]


@pytest.mark.parametrize(
    ("pods", "strategy", "expected"),
    [
        pytest.param([pod("a"), pod("b"), pod("c")], {}, ["a"], id="one-at-a-time"),
        pytest.param([pod("a"), pod("b"), pod("c")], {"maxUnavailable": 2}, ["a", "b"], id="two-at-a-time"),
        pytest.param(
            [pod("a"), pod("b", ready=False)],
            {"maxUnavailable": 2},
            ["b"],
            id="not-ready-counts-as-unavailable-and-goes-first",
        ),
        pytest.param([pod("a", NEW, restarting=True), pod("b")], {}, [], id="restarting-sidecar-holds"),
        pytest.param([pod("a", NEW), pod("b"), pod("c")], {}, ["b"], id="updated-frees-the-slot"),
        pytest.param(
            [pod("a"), pod("b"), pod("c")], {"partition": 2, "maxUnavailable": 3}, ["a"], id="partition"
        ),
        pytest.param([pod("a"), pod("b")], {"paused": True}, [], id="paused"),
        pytest.param([pod("a"), pod("b")], {"type": "NotUpdate"}, [], id="not-update"),
        pytest.param(
            [pod("a", image_free="other00000"), pod("b")],
            {"maxUnavailable": 2},
            ["b"],
            id="more-than-images-waits-for-recreation",
        ),
        pytest.param(
            [pod("a", labels={"tier": "web"}), pod("b", labels={"tier": "web", "ring": "0"})],
            {"selector": {"matchLabels": {"ring": "0"}}, "maxUnavailable": 2},
            ["b"],
            id="update-selector",
        ),
        pytest.param([pod("a", revision=None), pod("b")], {}, ["b"], id="pods-without-the-sidecar-are-left"),
    ],
)
def test_pod_plan(pods: list[PodFacts], strategy: dict[str, Any], expected: list[str]) -> None:
    assert patched(pods, **strategy) == expected


def test_pod_plan_counts_pods_that_need_recreation() -> None:
    plan = plan_pods(
        S, sidecarset_spec(), NEW, IMAGE_FREE, [pod("a", image_free="x"), pod("b"), pod("c", NEW)]
    )
    assert (plan.need_recreate, plan.updated) == (1, 1)
