"""The traffic-provider interface, and the registry that picks a provider for a Rollout.

A provider turns "send N% to the canary" into the objects of one traffic
system (Gateway API today; Istio, SMI, NGINX later), and reads back what the
live objects route now. One module per provider, one line in `_registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, Protocol

from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec


@dataclass(frozen=True)
class Weights:
    """Percent of traffic to each track; always adds up to 100."""

    stable: int
    canary: int

    def __post_init__(self) -> None:
        for track, value in (("stable", self.stable), ("canary", self.canary)):
            # bool is an int in Python; True% of traffic is a bug, not a weight.
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise ValueError(f"{track} weight must be an integer between 0 and 100, got {value!r}")
        if self.stable + self.canary != 100:
            raise ValueError(f"weights must add up to 100, got stable {self.stable} + canary {self.canary}")

    @classmethod
    def to_canary(cls, canary: int) -> Weights:
        """`canary` percent to the canary, the rest to stable."""
        return cls(stable=100 - canary, canary=canary)


@dataclass(frozen=True)
class ObjectKey:
    """Identity of a Kubernetes object a provider manages."""

    api_version: str
    kind: str
    namespace: str
    name: str


class TrafficProvider(Protocol):
    """What every traffic provider guarantees.

    - `name` is the provider's field under `spec.traffic` (e.g. `gatewayAPI`).
    - Pure and idempotent: the same (ref, spec, weights) always gives the same
      objects, so applying them twice changes nothing.
    - Only its own objects: `desired_objects` returns exactly the objects
      `object_keys` names, each carrying the managed metadata and an owner
      reference to the Rollout. The operator reads those keys first and refuses
      to touch any object it does not own, so a provider never names an object
      it merely wants to patch (e.g. a shared Gateway).
    - Weight 0 to the canary routes nothing there (not "a little"), and weight
      100 to stable is the state a healthy, finished Rollout is left in.
    - `observed_weights` never guesses: None when the live objects are missing
      or do not express a stable/canary split this provider understands.
    """

    name: str

    def object_keys(self, ref: RolloutRef, spec: RolloutSpec) -> list[ObjectKey]:
        """The objects this provider manages for the Rollout."""
        ...

    def desired_objects(self, ref: RolloutRef, spec: RolloutSpec, weights: Weights) -> list[dict[str, Any]]:
        """The full desired objects routing `weights`."""
        ...

    def observed_weights(
        self, ref: RolloutRef, spec: RolloutSpec, observed: Mapping[ObjectKey, dict[str, Any]]
    ) -> Weights | None:
        """What the live objects (by key, as read from the cluster) route now; None if unknown."""
        ...


@cache
def _registry() -> Mapping[str, TrafficProvider]:
    # Imported here, not at module level: provider modules import this one for Weights and ObjectKey.
    from operators.traffic.gateway_api import GatewayAPIProvider

    providers: list[TrafficProvider] = [GatewayAPIProvider()]
    return MappingProxyType({provider.name: provider for provider in providers})


def providers() -> Mapping[str, TrafficProvider]:
    """Every registered provider, keyed by its field name under `spec.traffic`."""
    return _registry()


def provider_for(spec: RolloutSpec) -> TrafficProvider | None:
    """The provider named in `spec.traffic`, or None without `traffic` (weights follow replica counts)."""
    if spec.traffic is None:
        return None
    configured = list(spec.traffic.to_api())
    if len(configured) != 1:  # the model already refuses this; keep the registry honest anyway
        raise ValueError(f"traffic needs exactly one provider, got {configured or 'none'}")
    (field,) = configured
    try:
        return _registry()[field]
    except KeyError:
        raise LookupError(f"no traffic provider registered for traffic.{field}") from None
