"""The traffic-provider interface: what a provider is given, and what it promises.

A provider turns "send N% to the canary" into the objects of one traffic
system (Gateway API today; Istio, SMI, NGINX later), and reads back what the
live objects route now. It is one module (its configuration model and its
behaviour) plus one entry in `registry.py`; it knows nothing of Rollouts: the
Rollout shell hands it a `TrafficTarget` (the Services to split between, the
metadata every managed object carries) and its own configuration block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from operators.foundation.keys import ObjectKey
from operators.foundation.model import ApiModel
from operators.traffic.routes import NO_ROUTES, Routes


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
class TrafficTarget:
    """What a provider routes: two Services of one release, and how to label what it creates.

    `name` is the release's name (the default name of the traffic object);
    `labels` and `owner_references` go on every object the provider returns, so
    the operator finds its objects and Kubernetes garbage-collects them.
    """

    namespace: str
    name: str
    stable_service: str
    canary_service: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict)
    owner_references: Sequence[Mapping[str, Any]] = ()
    # What an adopted object (someone else's, that the provider splits traffic on) carries instead of
    # the owner references: garbage collection must never delete a user's object with the release.
    adopted_annotations: Mapping[str, str] = field(default_factory=dict)

    def metadata(self, name: str) -> dict[str, Any]:
        """The metadata of an object this target's provider manages."""
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": dict(self.labels),
            "ownerReferences": [dict(reference) for reference in self.owner_references],
        }


class CannotAdopt(Exception):
    """An existing traffic object the provider cannot split without guessing; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Refusal:
    """The traffic system said no: its controller explicitly refused an object the provider manages.

    `reason` is what the Rollout reports it under (a condition reason, e.g. `RouteNotAccepted`),
    `message` a sentence naming the object, who refused it and the reason and message it gave.
    """

    reason: str
    message: str


class TrafficProvider(Protocol):
    """What every traffic provider guarantees.

    - `field` is the provider's key under `spec.traffic` (e.g. `gatewayAPI`),
      `config_model` the model of that block (it becomes part of the CRD).
    - Pure and idempotent: the same (target, config, weights) always gives the
      same objects, so applying them twice changes nothing.
    - Only its own objects: `desired_objects` returns exactly the objects
      `object_keys` names, each with `target.metadata(name)`. The operator
      reads those keys first and refuses to touch an object another release
      owns or adopted; any other existing object is adopted (below).
    - Weight 0 to the canary routes nothing there (not "a little"), and weight
      100 to stable is the state a healthy, finished release is left in.
    - Header and mirror routes (`Routes`) are Sluice's own additions: `observed_weights`
      reads the weights only, never the requests a header route sends to the canary, and
      `hand_back` removes the additions with the rest.
    - `observed_weights` never guesses: None when the live objects are missing
      or do not express a stable/canary split this provider understands.
    - Adoption: an object of `object_keys` that exists and is someone else's is
      adopted, not replaced. `adopt` returns the apply body that changes only
      what the split needs (and records what it changed, so that `hand_back`,
      from the live object alone, can put it back); it raises `CannotAdopt` when
      the object cannot be split without guessing. The body carries
      `target.labels` and `target.adopted_annotations`, never owner references.
    - `refusals` never guesses either: only what the traffic system's own
      controller reported, explicitly, about the objects as they are now (their
      current generation). No report at all (a cluster without such a
      controller) is no refusal.
    """

    @property
    def field(self) -> str: ...

    @property
    def config_model(self) -> type[ApiModel]: ...

    @property
    def supports_routes(self) -> bool:
        """Whether it can route header and mirror routes (`Routes`); if not, such steps are refused."""
        ...

    @property
    def resources(self) -> tuple[tuple[str, str, str, str], ...]:
        """(group, version, plural, kind) of the kinds it manages: the operator watches them for changes."""
        ...

    def object_keys(self, target: TrafficTarget, config: Any) -> list[ObjectKey]:
        """The objects this provider manages for the target."""
        ...

    def desired_objects(
        self, target: TrafficTarget, config: Any, weights: Weights, routes: Routes = NO_ROUTES
    ) -> list[dict[str, Any]]:
        """The full desired objects routing `weights`, and `routes` (header and mirror) to the canary."""
        ...

    def observed_weights(
        self, target: TrafficTarget, config: Any, observed: Mapping[ObjectKey, Mapping[str, Any]]
    ) -> Weights | None:
        """What the live objects (by key, as read from the cluster) route now; None if unknown."""
        ...

    def adopt(
        self,
        target: TrafficTarget,
        config: Any,
        weights: Weights,
        live: Mapping[str, Any],
        routes: Routes = NO_ROUTES,
    ) -> dict[str, Any]:
        """The apply body that makes someone else's live object route `weights` (and `routes`, added
        next to its owner's, never changing them); raises CannotAdopt."""
        ...

    def hand_back(self, live: Mapping[str, Any]) -> dict[str, Any]:
        """The apply body that undoes what `adopt` changed on the live object (and drops its marks)."""
        ...

    def refusals(
        self, target: TrafficTarget, config: Any, observed: Mapping[ObjectKey, Mapping[str, Any]]
    ) -> list[Refusal]:
        """What the traffic system refuses of the live objects (read from their status); [] if nothing."""
        ...
