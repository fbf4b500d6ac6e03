"""Injection into pods Sluice does not manage, from a mutating admission webhook on Pod CREATE.

The decision is the same pure `inject` the Rollouts use. Pods of Rollouts
already carry their sidecars (from the template) and are skipped, and so are
kube-system and kube-public. The webhook's failurePolicy is Ignore: if the
operator is down, pods are created without sidecars rather than not at all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from operators.foundation.cluster import Cluster
from operators.foundation.keys import ObjectKey
from operators.sidecarset.fleet import SidecarSetObject, list_sidecarsets
from operators.sidecarset.inject import Injection, inject, sidecar_from_spec
from operators.sidecarset.selection import EXCLUDED_BY_DEFAULT, managed_by_sluice, matches

logger = logging.getLogger(__name__)

# The handler id is the URL path the MutatingWebhookConfiguration calls: /sidecarset-inject.
WEBHOOK_ID = "sidecarset-inject"
# Set on the pods the webhook injects: the operator watches only these pods (a server-side
# selector), not every pod in the cluster. Rollouts' pods are never labelled: their template,
# hence their revision, stays exactly as rendered.
INJECTED_LABEL = "sidecarset.sluice.dev/injected"


def pod_injection(
    pod: Mapping[str, Any],
    namespace: str,
    namespace_labels: Mapping[str, str],
    sidecarsets: Sequence[SidecarSetObject],
) -> Injection | None:
    """The pod with the sidecars of every matching SidecarSet, or None when none applies."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if managed_by_sluice(labels) or namespace in EXCLUDED_BY_DEFAULT:
        return None
    sidecars = [
        sidecar_from_spec(s.name, s.spec)
        for s in sidecarsets
        if not s.spec.injection_strategy.paused and matches(s.spec, labels, namespace, namespace_labels)
    ]
    return inject(pod, sidecars) if sidecars else None


class PodInjector:
    """Reads what the decision needs (SidecarSets, the namespace's labels) and decides."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def injected(self, pod: Mapping[str, Any], namespace: str) -> dict[str, Any] | None:
        sidecarsets = list_sidecarsets(self.cluster)
        if not sidecarsets:
            return None
        ns = self.cluster.get(ObjectKey("v1", "Namespace", "", namespace)) or {}
        injection = pod_injection(pod, namespace, (ns.get("metadata") or {}).get("labels") or {}, sidecarsets)
        if injection is None:
            return None
        for name, problem in injection.conflicts.items():
            logger.warning("pod in %s created without SidecarSet %s: %s", namespace, name, problem)
        return injection.template if injection.injected else None


def _take_over(injected: Mapping[str, Any], body: MutableMapping[str, Any]) -> None:
    """kopf diffs the body before and after this to build the JSON patch it returns."""
    body["spec"] = injected["spec"]
    metadata = body.setdefault("metadata", {})
    metadata["annotations"] = injected["metadata"]["annotations"]
    metadata["labels"] = {**(metadata.get("labels") or {}), INJECTED_LABEL: "true"}


async def mutate_pod(body: Mapping[str, Any], patch: Any, memo: Any, **_: Any) -> None:
    """kopf's @on.mutate handler: the sidecars go in as a JSON patch in the AdmissionReview response."""
    namespace = (body.get("metadata") or {}).get("namespace")
    if not namespace:
        return  # the API server sets it before admission; without it the namespace selector cannot apply
    injector: PodInjector = memo["context"].pod_injector
    injected = await asyncio.to_thread(injector.injected, dict(body), str(namespace))
    if injected is not None:
        patch.fns.append(functools.partial(_take_over, injected))
