"""Reading what SidecarSet decisions need from the cluster (the shell side of facts.py).

Every read is a list, cluster-wide: SidecarSets are cluster-scoped and match
Rollouts and pods in any namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from operators.api.base import API_VERSION
from operators.api.rollout import KIND as ROLLOUT_KIND
from operators.api.sidecarset import KIND, SidecarSetSpec
from operators.foundation.cluster import Cluster, ResourceNotInstalled
from operators.rollout.ownership import (
    CANARY,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ROLLOUT_LABEL,
    STABLE,
    TRACK_LABEL,
)
from operators.sidecarset.facts import RolloutFacts, rollout_facts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SidecarSetObject:
    name: str
    generation: int
    spec: SidecarSetSpec


def parse_sidecarset(body: Mapping[str, Any]) -> SidecarSetObject:
    """Raises ValidationError for a spec the models refuse."""
    meta = body.get("metadata") or {}
    return SidecarSetObject(
        name=str(meta.get("name")),
        generation=int(meta.get("generation") or 0),
        spec=SidecarSetSpec.model_validate(body.get("spec") or {}),
    )


def list_sidecarsets(cluster: Cluster) -> list[SidecarSetObject]:
    """Every valid SidecarSet, by name; none when the CRD is not installed. Invalid ones are skipped."""
    try:
        bodies = cluster.list_objects(API_VERSION, KIND, None)
    except ResourceNotInstalled:
        return []
    found = []
    for body in bodies:
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            continue
        try:
            found.append(parse_sidecarset(body))
        except ValidationError:
            # Its own status loop reports it; Rollouts go on without it.
            logger.debug("skipping invalid SidecarSet %s", (body.get("metadata") or {}).get("name"))
    return sorted(found, key=lambda s: s.name)


def namespace_labels(cluster: Cluster) -> dict[str, dict[str, str]]:
    """Namespace name -> its labels."""
    return {
        str(ns["metadata"]["name"]): dict(ns["metadata"].get("labels") or {})
        for ns in cluster.list_objects("v1", "Namespace", None)
    }


def read_rollouts(
    cluster: Cluster, labels_by_namespace: Mapping[str, Mapping[str, str]]
) -> list[RolloutFacts]:
    """Facts of every Rollout in the cluster, from the Rollouts and the Deployments Sluice manages."""
    rollouts = cluster.list_objects(API_VERSION, ROLLOUT_KIND, None)
    deployments = cluster.list_objects("apps/v1", "Deployment", None, f"{MANAGED_BY_LABEL}={MANAGED_BY}")
    by_track: dict[tuple[str, str, str], dict[str, Any]] = {}
    for deployment in deployments:
        meta = deployment["metadata"]
        labels = meta.get("labels") or {}
        by_track[(meta.get("namespace", ""), labels.get(ROLLOUT_LABEL, ""), labels.get(TRACK_LABEL, ""))] = (
            deployment
        )
    facts = []
    for rollout in rollouts:
        meta = rollout["metadata"]
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        facts.append(
            rollout_facts(
                rollout,
                by_track.get((namespace, name, STABLE)),
                by_track.get((namespace, name, CANARY)),
                labels_by_namespace.get(namespace, {}),
            )
        )
    return facts
