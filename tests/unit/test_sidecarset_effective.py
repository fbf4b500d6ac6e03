"""A Rollout's effective template: which sidecar revision it carries, and a revision that only
moves when what it runs moves."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from operators.api.refs import RolloutRef
from operators.api.sidecarset import SidecarSetSpec
from operators.rollout.engine import Observed
from operators.rollout.render import pod_template_revision
from operators.sidecarset.effective import Composition, compose
from operators.sidecarset.facts import RolloutFacts
from operators.sidecarset.inject import revisions_of, sidecar_from_spec
from operators.sidecarset.upgrade import plan_rollouts
from tests.unit.sidecar_world import pod_template, rollout, sidecarset_spec

S = "log-agent"
V1, V2 = sidecarset_spec("fluent-bit:1"), sidecarset_spec("fluent-bit:2")


def first_deployment(template: dict[str, Any], spec: SidecarSetSpec = V1) -> Composition:
    return compose(template, [(S, spec)], rollout("web", has_stable=False), None, None, {})


def as_served(template: dict[str, Any]) -> dict[str, Any]:
    """The template as a live stable Deployment holds it: labels added, containers defaulted."""
    live = copy.deepcopy(template)
    live["metadata"]["labels"]["sluice.dev/track"] = "stable"
    for container in live["spec"]["containers"]:
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
    return live


def later(
    template: dict[str, Any],
    spec: SidecarSetSpec,
    stable: Composition,
    fleet_extra: Sequence[RolloutFacts] = (),
    **facts: Any,
) -> Composition:
    """The next pass, with the stable Deployment running `stable`."""
    me = rollout("web", stable=revisions_of(stable.template), **facts)
    revision = sidecar_from_spec(S, spec).revision
    plans = {S: plan_rollouts(S, spec, revision, [me, *fleet_extra])}
    return compose(template, [(S, spec)], me, as_served(stable.template), stable.revision, plans)


def test_without_sidecarsets_the_template_and_its_revision_are_untouched() -> None:
    template = pod_template("app")
    result = compose(template, [], rollout("web", has_stable=False), None, None, {})
    assert result.template == template
    assert result.revision == pod_template_revision(template)


def test_first_deployment_carries_the_sidecar() -> None:
    result = first_deployment(pod_template("app"))
    assert [c["name"] for c in result.template["spec"]["containers"]] == ["log-agent", "app"]
    assert result.revision != pod_template_revision(pod_template("app"))
    assert result.revision == first_deployment(pod_template("app")).revision


def test_waiting_for_its_turn_keeps_the_served_sidecar_and_the_stable_revision() -> None:
    stable = first_deployment(pod_template("app"))
    busy = rollout(
        "other",
        namespace="a-first",
        phase="Progressing",
        stable={S: sidecar_from_spec(S, V1).revision},
        canary={S: sidecar_from_spec(S, V2).revision},
    )
    result = later(pod_template("app"), V2, stable, fleet_extra=[busy])
    assert result.decisions[S].reason.startswith("waiting")
    assert result.revision == stable.revision, "no release while it waits, even with defaulted containers"
    assert result.template["spec"]["containers"][0]["image"] == "fluent-bit:1"


def test_its_turn_starts_a_release_of_the_new_sidecar() -> None:
    stable = first_deployment(pod_template("app"))
    result = later(pod_template("app"), V2, stable)
    assert result.decisions[S].reason == "its turn"
    assert result.revision != stable.revision
    assert result.template["spec"]["containers"][0]["image"] == "fluent-bit:2"


def test_up_to_date_keeps_the_revision() -> None:
    stable = first_deployment(pod_template("app"))
    assert later(pod_template("app"), V1, stable).revision == stable.revision


def test_app_release_is_told_apart_from_a_sidecar_release() -> None:
    not_update = sidecarset_spec("fluent-bit:2", updateStrategy={"type": "NotUpdate"})
    stable = first_deployment(pod_template("app"))
    unchanged = later(pod_template("app"), not_update, stable)
    assert unchanged.revision == stable.revision, "NotUpdate: no release for the sidecar alone"
    new_app = pod_template("app")
    new_app["spec"]["containers"][0]["image"] = "app:2"
    released = later(new_app, not_update, stable)
    assert released.decisions[S].reason.startswith("NotUpdate: goes with")
    assert released.template["spec"]["containers"][0]["image"] == "fluent-bit:2"


def test_a_colliding_new_revision_falls_back_to_the_served_one() -> None:
    stable = first_deployment(pod_template("app"))
    colliding = sidecarset_spec(containers=[{"name": "app", "image": "x:1"}])
    result = later(pod_template("app"), colliding, stable)
    assert S in result.conflicts
    assert result.revision == stable.revision, "the app keeps its old sidecar, no release"


def test_a_colliding_sidecarset_never_blocks_the_first_deployment() -> None:
    result = first_deployment(
        pod_template("app"), sidecarset_spec(containers=[{"name": "app", "image": "x"}])
    )
    assert S in result.conflicts
    assert result.template == pod_template("app")
    assert result.revision == pod_template_revision(pod_template("app"))


def test_a_no_longer_matching_sidecarset_is_removed_by_a_release() -> None:
    stable = first_deployment(pod_template("app"))
    me = rollout("web", stable=revisions_of(stable.template))
    result = compose(pod_template("app"), [], me, as_served(stable.template), stable.revision, {})
    assert [c["name"] for c in result.template["spec"]["containers"]] == ["app"]
    assert result.revision == pod_template_revision(pod_template("app"))


def test_the_engine_takes_the_revision_the_shell_computed() -> None:
    template = first_deployment(pod_template("app"))
    ref = RolloutRef("web", "shop", "uid")
    observed = Observed(ref, 1, {}, template.template, {}, revision=template.revision)
    assert observed.template_revision() == template.revision != pod_template_revision(template.template)
    assert Observed(ref, 1, {}, pod_template("app"), {}).template_revision() == pod_template_revision(
        pod_template("app")
    )
