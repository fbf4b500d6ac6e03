"""A Rollout's traffic: its provider, that provider's configuration, and what it routes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec
from operators.foundation.keys import ObjectKey
from operators.rollout.ownership import CANARY, STABLE, managed_labels
from operators.rollout.render import object_name
from operators.traffic.base import Refusal, TrafficProvider, TrafficTarget, Weights


@dataclass(frozen=True)
class Routing:
    """The provider named in `spec.traffic`, bound to this Rollout's Services."""

    provider: TrafficProvider
    config: Any
    target: TrafficTarget

    def keys(self) -> list[ObjectKey]:
        return self.provider.object_keys(self.target, self.config)

    def desired(self, weights: Weights) -> list[dict[str, Any]]:
        return self.provider.desired_objects(self.target, self.config, weights)

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
        stable_service=object_name(ref, STABLE),
        canary_service=object_name(ref, CANARY),
        port=spec.service.port,
        labels=managed_labels(ref),
        owner_references=(ref.owner_reference(),),
    )
    return Routing(provider, config, target)
