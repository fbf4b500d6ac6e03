"""A Rollout's metrics with their templates expanded, the templates read from the operator's watches.

Only a Rollout whose metrics name a template reads them; the reads are served
by the watch cache (`foundation.cache`), so a quiet pass asks the API server
nothing. A cluster without these CRDs (Sluice upgraded, CRDs not yet) has no
user templates: the built-ins still work, and a missing one says where it was
looked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operators.analysis.template_lookup import TemplateCatalog, expand_all, uses_templates
from operators.api.base import API_VERSION
from operators.api.metrictemplate import CLUSTER_KIND, KIND
from operators.api.rollout import Metric
from operators.foundation.cluster import Cluster, ResourceNotInstalled


def _listed(cluster: Cluster, kind: str, namespace: str | None) -> list[dict[str, Any]]:
    try:
        return cluster.list_objects(API_VERSION, kind, namespace)
    except ResourceNotInstalled:
        return []


def read_catalog(cluster: Cluster, namespace: str) -> TemplateCatalog:
    """The templates a Rollout in `namespace` may name: its namespace's, and the cluster's."""
    return TemplateCatalog.of(_listed(cluster, KIND, namespace), _listed(cluster, CLUSTER_KIND, None))


def with_templates(
    cluster: Cluster, namespace: str, metrics: Sequence[Metric]
) -> tuple[list[Metric], list[str]]:
    """The metrics expanded (`template_lookup.expand`), and the problems of those that cannot be."""
    if not uses_templates(metrics):
        return list(metrics), []
    return expand_all(metrics, namespace, read_catalog(cluster, namespace))
