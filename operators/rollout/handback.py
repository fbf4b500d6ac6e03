"""Handing adopted objects back: what to apply so that everything a Rollout adopted is its owner's again.

Pure: the shell reads the live adopted objects (and what the Rollout recorded
when it adopted them) and applies what these functions return. Two callers:

- the Rollout is being deleted (its finalizer holds it until the handback is
  done, `RolloutReconciler.hand_back`): every adopted object is handed back, the
  traffic objects here (`hand_back_traffic`), the Deployment and Service in
  steps, each true in the cluster before the next (`adoption.hand_back`);
- the Rollout no longer names an object it adopted (`traffic.gatewayAPI.httpRoute`
  changed, `traffic` removed): that object alone is handed back
  (`hand_back_traffic` with the keys it still manages as `keep`).

Traffic objects are handed back first and in one step: their traffic goes back
to the stable Service alone, which serves until the Rollout's objects are gone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from operators.foundation.keys import ObjectKey, key_of
from operators.rollout.adoption import adopted_by
from operators.traffic.base import TrafficProvider
from operators.traffic.registry import PROVIDERS

# The provider that adopts each kind of traffic object, by (apiVersion, kind).
TRAFFIC_KINDS: Mapping[tuple[str, str], TrafficProvider] = MappingProxyType(
    {
        (f"{group}/{version}" if group else version, kind): provider
        for provider in PROVIDERS.values()
        for group, version, _, kind in provider.resources
    }
)


def hand_back_traffic(
    rollout: str, live: Iterable[Mapping[str, Any]], keep: Collection[ObjectKey] = ()
) -> list[dict[str, Any]]:
    """The apply bodies giving back each traffic object `rollout` adopted, except those in `keep`.

    Objects another Rollout adopted, or that nobody adopted, are not `rollout`'s to give back.
    """
    bodies: list[dict[str, Any]] = []
    for obj in live:
        key = key_of(obj)
        provider = TRAFFIC_KINDS.get((key.api_version, key.kind))
        if provider is not None and adopted_by(obj) == rollout and key not in keep:
            bodies.append(provider.hand_back(obj))
    return bodies
