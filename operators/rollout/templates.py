"""Where a Rollout's effective pod template comes from: `spec.template`, or a source that adds to it.

The Rollout shell asks an `EffectiveTemplates` for the template its pods
should run. Without one, that is `spec.template` as written; the SidecarSet
layer above provides one that adds the sidecars of matching SidecarSets
(`operators.sidecarset.rollouts`), so this layer never imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec
from operators.foundation.keys import ObjectKey


@dataclass(frozen=True)
class Effective:
    template: Mapping[str, Any]
    # None: the engine hashes the template itself (no sidecars involved).
    revision: str | None = None


class EffectiveTemplates(Protocol):
    def effective(
        self,
        ref: RolloutRef,
        body: Mapping[str, Any],
        spec: RolloutSpec,
        objects: Mapping[ObjectKey, Mapping[str, Any] | None],
    ) -> Effective:
        """The template the Rollout's pods should run, read from the cluster as needed."""
        ...
