"""A Rollout's traffic: its provider, that provider's configuration, and what it routes.

A traffic object that exists and is not this Rollout's own (no ownerReference
to it) is adopted when nothing else claims it: the provider then changes only
what the split needs (`TrafficProvider.adopt`), and the object carries the
`sluice.dev/adopted-by` annotation and Sluice's labels (so its watch delivers
it) but never an ownerReference. One that another Rollout owns or adopted, or
that the provider cannot split without guessing, is a problem the Rollout
reports, touching nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec
from operators.foundation.diff import covers
from operators.foundation.keys import ObjectKey, key_of
from operators.rollout.adoption import ADOPTED_BY, adopted_by, adoption_problem, is_adoptable
from operators.rollout.ownership import CANARY, STABLE, is_owned_by, managed_labels
from operators.rollout.render import service_name
from operators.traffic.base import CannotAdopt, Refusal, TrafficProvider, TrafficTarget, Weights
from operators.traffic.routes import NO_ROUTES, Routes


@dataclass(frozen=True)
class Routing:
    """The provider named in `spec.traffic`, bound to this Rollout's Services."""

    provider: TrafficProvider
    config: Any
    target: TrafficTarget
    ref: RolloutRef

    def keys(self) -> list[ObjectKey]:
        return self.provider.object_keys(self.target, self.config)

    def desired(
        self,
        weights: Weights,
        objects: Mapping[ObjectKey, Mapping[str, Any] | None] | None = None,
        routes: Routes = NO_ROUTES,
    ) -> list[dict[str, Any]]:
        """The objects routing `weights` and `routes`: the provider's own, or, for one that exists and
        is someone else's (`objects` holds the live ones), the adopted form of it. Call `problems` first."""
        adopted = self.adopted(objects or {})
        return [
            self.provider.adopt(self.target, self.config, weights, adopted[key_of(obj)], routes)
            if key_of(obj) in adopted
            else obj
            for obj in self.provider.desired_objects(self.target, self.config, weights, routes)
        ]

    def adopted(
        self, objects: Mapping[ObjectKey, Mapping[str, Any] | None]
    ) -> dict[ObjectKey, Mapping[str, Any]]:
        """The live traffic objects that are not this Rollout's own: adopted, or to be adopted now."""
        return {
            key: obj
            for key in self.keys()
            if (obj := objects.get(key)) is not None and not is_owned_by(obj, self.ref)
        }

    def problems(self, objects: Mapping[ObjectKey, Mapping[str, Any] | None]) -> list[str]:
        """Why a live traffic object cannot be adopted: another Rollout's, or no split to be made of it."""
        found: list[str] = []
        for key, obj in self.adopted(objects).items():
            if not is_adoptable(obj, self.ref):
                found.append(adoption_problem(key.kind, obj, self.ref))
                continue
            try:
                self.provider.adopt(self.target, self.config, Weights.to_canary(0), obj)
            except CannotAdopt as refused:
                found.append(f"cannot adopt {key.kind} {key.namespace}/{key.name}: {refused.message}")
        return found

    def adoption_notes(
        self,
        objects: Mapping[ObjectKey, Mapping[str, Any] | None],
        expected: Collection[int],
        routed: int,
        routes: Routes = NO_ROUTES,
    ) -> list[tuple[str, str]]:
        """(reason, message) of the Events about adopted objects this pass: taken over, or put back.

        Drift is a live object that matches what Sluice wrote at none of the weights it may have
        written (`expected`): someone else (a GitOps tool re-applying the user's copy) changed
        Sluice's part of it. This pass's apply restores it, at `routed` percent to the canary.
        """
        notes: list[tuple[str, str]] = []
        for key, obj in self.adopted(objects).items():
            name = f"{key.kind} {key.namespace}/{key.name}"
            if adopted_by(obj) != self.ref.name:
                notes.append(
                    (
                        "Adopted",
                        f"{name} adopted: its traffic to Service {self.target.stable_service} is now split "
                        f"with Service {self.target.canary_service}; everything else in it is left as it is "
                        "and is handed back when the Rollout is deleted",
                    )
                )
                continue
            written = (
                self.provider.adopt(self.target, self.config, Weights.to_canary(weight), obj, routes)
                for weight in expected
            )
            if not any(covers(obj, body) for body in written):
                notes.append(
                    (
                        "AdoptedDriftRestored",
                        f"{name} was changed by someone else (a GitOps tool re-applying it?): Sluice's part "
                        f"of it (the canary backendRefs, {routed}% to Service {self.target.canary_service}, "
                        f"its labels and {ADOPTED_BY} annotation) is restored; everything else is kept",
                    )
                )
        return notes

    def observed(self, objects: Mapping[ObjectKey, Mapping[str, Any] | None]) -> Weights | None:
        live = {key: obj for key, obj in objects.items() if obj is not None}
        return self.provider.observed_weights(self.target, self.config, live)

    def refusals(self, objects: Mapping[ObjectKey, Mapping[str, Any] | None]) -> list[Refusal]:
        """What the traffic system's controller refuses of the live objects (their status says so)."""
        live = {key: obj for key, obj in objects.items() if obj is not None}
        return self.provider.refusals(self.target, self.config, live)


def routing_of(ref: RolloutRef, spec: RolloutSpec) -> Routing | None:
    """The Rollout's routing, or None without `traffic` (weights then follow replica counts)."""
    if spec.traffic is None or spec.service is None:  # the model refuses traffic without a service
        return None
    provider, config = spec.traffic.provider()
    target = TrafficTarget(
        namespace=ref.namespace,
        name=ref.name,
        stable_service=service_name(ref, spec, STABLE),
        canary_service=service_name(ref, spec, CANARY),
        port=spec.service.port,
        labels=managed_labels(ref),
        owner_references=(ref.owner_reference(),),
        adopted_annotations={ADOPTED_BY: ref.name},
    )
    return Routing(provider, config, target, ref)
