"""The shell that gives the Rollout reconciler its effective template: reads, then calls effective.compose.

Cheap when SidecarSets do not concern the Rollout: one list of SidecarSets
(and the namespace when any exist). The fleet (every Rollout, every managed
Deployment, every namespace) is read only when a decision needs it, i.e.
while a SidecarSet revision is not yet on this Rollout's stable version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec
from operators.foundation.cluster import Cluster
from operators.foundation.keys import ObjectKey
from operators.rollout.inventory import canary_deployment_key, stable_deployment_key
from operators.rollout.templates import Effective
from operators.rollout.workload import revision_of, template_of
from operators.sidecarset.effective import compose
from operators.sidecarset.facts import rollout_facts
from operators.sidecarset.fleet import list_sidecarsets, namespace_labels, read_rollouts
from operators.sidecarset.inject import records_of, sidecar_from_spec
from operators.sidecarset.selection import matches
from operators.sidecarset.upgrade import RolloutPlan, needs_plan, plan_rollouts

logger = logging.getLogger(__name__)


class RolloutSidecars:
    """The Rollout shell's `EffectiveTemplates`: spec.template plus matching SidecarSets' sidecars."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def effective(
        self,
        ref: RolloutRef,
        body: Mapping[str, Any],
        spec: RolloutSpec,
        objects: Mapping[ObjectKey, Mapping[str, Any] | None],
    ) -> Effective:
        stable = objects.get(stable_deployment_key(ref, spec))
        canary = objects.get(canary_deployment_key(ref, spec))
        stable_template = template_of(stable)
        template = spec.template or {}  # with workloadRef, the shell puts the Deployment's here
        sidecarsets = list_sidecarsets(self.cluster)
        if not sidecarsets and not records_of(stable_template):
            return Effective(template)
        labels_here = self._namespace_labels(ref.namespace)
        template_labels = (template.get("metadata") or {}).get("labels") or {}
        matching = [
            (s.name, s.spec)
            for s in sidecarsets
            if matches(s.spec, template_labels, ref.namespace, labels_here)
        ]
        me = rollout_facts(body, stable, canary, labels_here)
        plans: dict[str, RolloutPlan] = {}
        pending = [(n, s) for n, s in matching if needs_plan(n, sidecar_from_spec(n, s).revision, me)]
        if pending:
            fleet = read_rollouts(self.cluster, namespace_labels(self.cluster))
            for name, sidecar_spec in pending:
                revision = sidecar_from_spec(name, sidecar_spec).revision
                plans[name] = plan_rollouts(name, sidecar_spec, revision, fleet)
        composition = compose(template, matching, me, stable_template, revision_of(stable), plans)
        for name, decision in composition.decisions.items():
            logger.debug(
                "Rollout %s/%s, SidecarSet %s: %s (%s)",
                ref.namespace,
                ref.name,
                name,
                decision.choice,
                decision.reason,
            )
        return Effective(composition.template, composition.revision)

    def _namespace_labels(self, namespace: str) -> dict[str, str]:
        body = self.cluster.get(ObjectKey("v1", "Namespace", "", namespace))
        return dict(((body or {}).get("metadata") or {}).get("labels") or {})
