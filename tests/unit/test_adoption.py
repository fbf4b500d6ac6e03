"""Adopting a live Deployment (workloadRef) and its Service, and handing them back.

The engine is the real one, driven through the in-memory cluster of
tests/unit/engine_world.py; ``AdoptionWorld`` adds what adoption needs of it:
the user's Deployment and Service, server-side apply's merge of the few fields
Sluice writes on them, and the user's pod template as the released one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from operators.api.rollout import TEMPLATE_OR_WORKLOAD, AdoptionPhase, Phase, RolloutSpec
from operators.foundation.keys import ObjectKey, key_of
from operators.rollout import engine
from operators.rollout.adoption import ADOPTED_BY, adopted_by, hand_back
from operators.rollout.inventory import managed_keys
from operators.rollout.ownership import MANAGED_BY_LABEL, ROLLOUT_LABEL
from tests.unit.engine_world import REF, World, template

USER = "web"  # the user's Deployment and Service, named like the Rollout
OURS = "web-stable"
V1 = "ghcr.io/acme/web:1"
V2 = "ghcr.io/acme/web:2"
DEPLOYMENT = ObjectKey("apps/v1", "Deployment", REF.namespace, USER)
SERVICE = ObjectKey("v1", "Service", REF.namespace, USER)
USER_SELECTOR = {"app": "web"}
# Without a traffic provider the stable Service selects both tracks (weights follow replica counts).
SLUICE_SELECTOR = {ROLLOUT_LABEL: "web"}


def workload_spec(**fields: Any) -> RolloutSpec:
    body: dict[str, Any] = {
        "replicas": 4,
        "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": USER},
        "service": {"port": 80},
        "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}},
        **fields,
    }
    return RolloutSpec.model_validate(body)


def user_deployment(replicas: int = 3, image: str = V1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": USER, "namespace": REF.namespace, "generation": 1, "resourceVersion": "7"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(USER_SELECTOR)},
            "template": template(image),
        },
        "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas},
    }


def user_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": USER, "namespace": REF.namespace, "resourceVersion": "8"},
        "spec": {"selector": dict(USER_SELECTOR), "ports": [{"port": 80, "targetPort": "http"}]},
    }


def merged(live: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply of `body` onto `live`, as far as these tests need it (selector: atomic)."""
    result = copy.deepcopy(dict(live))
    for name, value in body.items():
        if isinstance(value, Mapping) and isinstance(result.get(name), Mapping) and name != "selector":
            result[name] = merged(result[name], value)
        else:
            result[name] = copy.deepcopy(value)
    return result


class AdoptionWorld(World):
    """A World holding the user's Deployment and Service; Sluice's writes on them merge."""

    def __init__(self, spec: RolloutSpec, *, service: bool = True) -> None:
        super().__init__(spec)
        # The world plays the controller of Deployments named like the Rollout: not of the user's.
        self._held.add(USER)
        self.put(user_deployment())
        if service:
            self.put(user_service())

    @property
    def user(self) -> dict[str, Any]:
        return self.objects[DEPLOYMENT]

    def push_image(self, image: str) -> None:
        """GitOps applies a new image to the user's Deployment (its template; Sluice keeps replicas 0)."""
        self.user["spec"]["template"] = template(image)
        self.user["metadata"]["generation"] += 1

    def observed(self, check: Any = None) -> engine.Observed:
        base = super().observed(check)
        live = self.objects.get(DEPLOYMENT)
        effective = copy.deepcopy(live["spec"]["template"]) if live else {}
        return engine.Observed(
            ref=base.ref,
            generation=base.generation,
            annotations=base.annotations,
            effective_template=effective,
            objects=base.objects,
            check=base.check,
            problems=base.problems,
            stable_record=None,
        )

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> list[ObjectKey]:
        objects = list(objects)
        adopted = [obj for obj in objects if key_of(obj) in (DEPLOYMENT, SERVICE)]
        writes = super().apply(obj for obj in objects if obj not in adopted)
        for body in adopted:
            key = key_of(body)
            after = merged(self.objects[key], body)
            if after != self.objects[key]:
                self.objects[key] = after
                writes.append(key)
        if OURS in {k.name for k in self.objects if k.kind == "Deployment"} and OURS not in self._held:
            self.set_ready(OURS)
        return writes


def adopted_world(**fields: Any) -> AdoptionWorld:
    world = AdoptionWorld(workload_spec(**fields))
    world.settle()
    assert world.status.phase == Phase.HEALTHY, world.status.message
    return world


# --- the API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"template": template(V1)}, TEMPLATE_OR_WORKLOAD, id="both"),
        pytest.param({"workloadRef": None}, TEMPLATE_OR_WORKLOAD, id="neither"),
        pytest.param(
            {"workloadRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web"}},
            "workloadRef must name an apps/v1 Deployment, not apps/v1 StatefulSet",
            id="another-kind",
        ),
    ],
)
def test_a_rollout_sets_exactly_one_of_template_and_a_deployment_reference(
    fields: dict[str, Any], expected: str
) -> None:
    body = workload_spec().model_dump(by_alias=True, exclude_none=True, mode="json")
    body.update(fields)
    with pytest.raises(ValidationError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        RolloutSpec.model_validate({k: v for k, v in body.items() if v is not None})


def test_names_with_a_workload_leave_the_users_deployment_its_name() -> None:
    keys = {(key.kind, key.name) for key in managed_keys(REF, workload_spec())}
    assert ("Deployment", OURS) in keys and ("Deployment", "web-canary") in keys
    assert ("Deployment", USER) in keys, "the user's Deployment is read (and adopted), not rendered"
    assert {("Service", "web"), ("Service", "web-canary")} <= keys
    named = workload_spec(service={"port": 80, "name": "shop-front"})
    assert ("Service", "shop-front") in {(key.kind, key.name) for key in managed_keys(REF, named)}


# --- adopting, one step per pass ---------------------------------------------------------------------


def test_adoption_moves_traffic_one_step_at_a_time_and_ends_healthy() -> None:
    world = AdoptionWorld(workload_spec())
    world.hold(OURS)

    first = world.reconcile()  # 1: record and mark, nothing of Sluice's yet
    assert [key_of(obj).name for obj in first.objects] == [USER, USER]
    assert first.status.adoption is not None
    assert (first.status.adoption.deployment, first.status.adoption.replicas) == (USER, 3)
    assert first.status.adoption.service_selector == USER_SELECTOR
    assert first.status.phase == Phase.INITIALIZING
    for key in (DEPLOYMENT, SERVICE):
        meta = world.objects[key]["metadata"]
        assert meta["annotations"][ADOPTED_BY] == "web"
        assert meta["labels"][ROLLOUT_LABEL] == "web" and meta["labels"][MANAGED_BY_LABEL] == "sluice"
        assert "ownerReferences" not in meta, "an adopted object is never owned: GC would delete it"
    assert world.user["spec"]["replicas"] == 3 and world.objects[SERVICE]["spec"]["selector"] == USER_SELECTOR
    assert first.requeue_after == 0

    world.reconcile()  # 2: Sluice's stable Deployment, with the user's pod labels, next to the original
    ours = world.deployment(OURS)
    assert ours["spec"]["replicas"] == 4
    assert ours["spec"]["template"]["metadata"]["labels"]["app"] == "web", "the user's Service selects it"
    assert world.objects[SERVICE]["spec"]["selector"] == USER_SELECTOR, "not moved before it is ready"
    world.reconcile()
    assert world.status.adoption.phase == AdoptionPhase.STARTING
    assert "waiting for Sluice's stable pods" in world.status.message

    world.release(OURS)
    world.reconcile()  # 3: the Service selects Sluice's stable pods only
    assert world.objects[SERVICE]["spec"]["selector"] == SLUICE_SELECTOR
    assert world.objects[SERVICE]["spec"]["ports"] == user_service()["spec"]["ports"], "ports are the user's"
    assert world.user["spec"]["replicas"] == 3, "the original pods stay until the Service has moved"

    world.reconcile()  # 4: the user's Deployment to 0
    assert world.user["spec"]["replicas"] == 0
    assert world.user["spec"]["template"] == template(V1), "its template is never changed"
    world.settle()
    assert world.status.phase == Phase.HEALTHY
    assert world.status.adoption.phase == AdoptionPhase.ADOPTED
    assert {"Adopting", "Adopted", "Healthy"} <= set(world.reasons())


def test_a_new_image_on_the_adopted_deployment_is_a_release() -> None:
    world = adopted_world()
    world.push_image(V2)
    world.reconcile()
    assert world.status.phase == Phase.PROGRESSING
    assert world.image("web-canary") == V2 and world.image(OURS) == V1
    world.settle()
    assert world.status.phase == Phase.PAUSED
    world.annotate("promote", "1")
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    assert world.image(OURS) == V2
    assert world.user["spec"]["replicas"] == 0 and world.user["spec"]["template"] == template(V2)


def test_a_gitops_reapply_is_undone_and_told() -> None:
    world = adopted_world()
    world.user["spec"]["replicas"] = 3
    world.objects[SERVICE]["spec"]["selector"] = dict(USER_SELECTOR)
    plan = world.reconcile()
    assert world.user["spec"]["replicas"] == 0
    assert world.objects[SERVICE]["spec"]["selector"] == SLUICE_SELECTOR
    drift = [note for note in plan.events if note.reason == "AdoptedDriftRestored"]
    assert [note.type for note in drift] == ["Normal", "Normal"]
    assert any("Deployment shop/web was scaled to 3" in note.message for note in drift)
    assert any("Service shop/web was changed to select app=web" in note.message for note in drift)
    assert world.status.phase == Phase.HEALTHY
    world.settle()
    assert "AdoptedDriftRestored" not in [note.reason for note in world.last.plan.events]


# --- bad input: a clear message, nothing touched ------------------------------------------------------


def untouched(world: AdoptionWorld, before: dict[ObjectKey, dict[str, Any]]) -> None:
    assert world.last.writes == [] and world.last.plan.objects == []
    assert world.objects == before


def test_a_missing_deployment_blocks_with_its_name() -> None:
    world = AdoptionWorld(workload_spec(workloadRef={"name": "wbe"}))
    before = copy.deepcopy(world.objects)
    plan = world.reconcile()
    untouched(world, before)
    assert plan.status.message.startswith("Deployment shop/wbe not found: ")
    assert [(note.type, note.reason) for note in plan.events] == [("Warning", "WorkloadNotFound")]


def test_a_deployment_another_rollout_adopted_is_refused() -> None:
    world = AdoptionWorld(workload_spec())
    world.user["metadata"]["annotations"] = {ADOPTED_BY: "shop-v2"}
    before = copy.deepcopy(world.objects)
    plan = world.reconcile()
    untouched(world, before)
    assert "Deployment shop/web is already adopted by Rollout shop-v2" in plan.status.message
    assert [note.reason for note in plan.events] == ["ObjectConflict"]


def test_both_template_and_workload_blocks_should_one_get_past_admission() -> None:
    spec = workload_spec().model_copy(update={"template": template(V1)})
    world = AdoptionWorld(spec)
    before = copy.deepcopy(world.objects)
    plan = world.reconcile()
    untouched(world, before)
    assert plan.status.message == TEMPLATE_OR_WORKLOAD


# --- handback ----------------------------------------------------------------------------------------


def test_handback_scales_the_deployment_up_then_gives_the_service_back() -> None:
    world = adopted_world()
    world.user["status"] = {"observedGeneration": world.user["metadata"]["generation"], "readyReplicas": 0}
    adoption = world.status.adoption
    first = hand_back(REF, adoption, world.user, world.objects[SERVICE])
    assert first.waiting == "handing back Deployment shop/web: 0/3 ready"
    [body] = first.objects
    assert body["spec"] == {"replicas": 3} and body["metadata"]["annotations"] == {ADOPTED_BY: "web"}

    world.user.update(merged(world.user, body))
    world.user["metadata"]["generation"] += 1
    world.user["status"] = {"observedGeneration": world.user["metadata"]["generation"], "readyReplicas": 2}
    assert hand_back(REF, adoption, world.user, world.objects[SERVICE]).waiting is not None, "2/3 ready"

    world.user["status"]["readyReplicas"] = 3
    last = hand_back(REF, adoption, world.user, world.objects[SERVICE])
    assert last.waiting is None
    service, deployment = last.objects
    assert service["spec"] == {"selector": USER_SELECTOR}
    assert deployment["spec"] == {"replicas": 3}
    for obj in last.objects:
        # Sluice's field manager no longer sends its labels and annotation: apply removes them.
        assert set(obj["metadata"]) == {"name", "namespace"}


def test_handback_of_a_rollout_that_adopted_nothing_is_nothing() -> None:
    assert hand_back(REF, None, None, None).objects == []
    assert adopted_by(user_deployment()) is None
