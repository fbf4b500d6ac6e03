"""A Rollout's effective pod template: `spec.template` plus the sidecars it may carry now (pure).

Each matching SidecarSet contributes either its current revision or what the
stable Deployment already runs (see upgrade.py for who may take what). The
revision of the result is the hash of its *recipe*: `spec.template` plus the
record of which SidecarSet revisions it carries. Hashing the recipe rather
than the merged containers keeps a Rollout's revision unchanged while it
keeps an old sidecar taken from its live stable template, which the API
server may have filled with defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from operators.api.sidecarset import SidecarSetSpec
from operators.rollout.render import pod_template_revision
from operators.sidecarset.facts import RolloutFacts
from operators.sidecarset.inject import (
    Injection,
    Sidecar,
    inject,
    sidecar_from_spec,
    sidecar_from_template,
    without_record,
)
from operators.sidecarset.upgrade import Choice, Decision, RolloutPlan, decide


@dataclass(frozen=True)
class Composition:
    template: dict[str, Any]
    revision: str
    decisions: Mapping[str, Decision] = field(default_factory=dict)
    # SidecarSet name -> why its current revision could not be injected.
    conflicts: Mapping[str, str] = field(default_factory=dict)


def compose(
    template: Mapping[str, Any],
    matching: Sequence[tuple[str, SidecarSetSpec]],
    rollout: RolloutFacts,
    stable_template: Mapping[str, Any] | None,
    stable_revision: str | None,
    plans: Mapping[str, RolloutPlan],
) -> Composition:
    """The effective template of `rollout` given the SidecarSets matching it (`(name, spec)`, any order).

    `plans` holds the fleet-wide plan of every SidecarSet whose decision needs one.
    """
    base = without_record(template)
    current = {name: sidecar_from_spec(name, spec) for name, spec in matching}
    old = {name: sidecar_from_template(name, stable_template) for name, _ in matching}
    kept = [sidecar for sidecar in old.values() if sidecar is not None]
    # Releasing something besides the sidecars: the template with every sidecar as it is on the
    # stable is not the stable revision.
    app_release = stable_revision is not None and _revision(inject(base, kept)) != stable_revision
    decisions = {
        name: decide(name, spec, current[name].revision, rollout, plans.get(name), app_release=app_release)
        for name, spec in matching
    }
    chosen: dict[str, Sidecar | None] = {
        name: current[name] if decision.choice == Choice.CURRENT else old[name]
        for name, decision in decisions.items()
    }
    conflicts: dict[str, str] = {}
    injection = inject(base, [s for s in chosen.values() if s is not None])
    # A colliding SidecarSet falls back to what the stable runs (or to nothing), never blocking the
    # Rollout's own release; each pass removes at least one, so this ends.
    while injection.conflicts:
        for name, message in injection.conflicts.items():
            if chosen[name] is current[name]:
                conflicts[name] = message
            chosen[name] = old[name] if chosen[name] is current[name] else None
        injection = inject(base, [s for s in chosen.values() if s is not None])
    return Composition(
        template=injection.template, revision=_revision(injection), decisions=decisions, conflicts=conflicts
    )


def _revision(injection: Injection) -> str:
    return pod_template_revision(injection.recipe)
