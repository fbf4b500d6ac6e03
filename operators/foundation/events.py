"""Kubernetes Events about a Rollout or an Application, the way `kubectl describe` shows them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from operators.foundation.clock import format_time
from operators.foundation.cluster import Cluster, KubeError, collection_path

logger = logging.getLogger(__name__)

COMPONENT = "sluice"
# The API server refuses longer messages; ours name metrics and values, so cut politely.
MAX_MESSAGE = 1024


def event_body(
    involved: Mapping[str, Any], kind: str, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    meta = involved.get("metadata", {})
    stamp = format_time(now.replace(microsecond=0))
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": event_namespace(involved)},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": kind,
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def event_namespace(involved: Mapping[str, Any]) -> str:
    """Events about cluster-scoped objects (a SidecarSet) live in `default`, as the API server's own do."""
    return str(involved.get("metadata", {}).get("namespace") or "default")


def post_event(
    cluster: Cluster, involved: Mapping[str, Any], kind: str, reason: str, message: str, now: datetime
) -> None:
    namespace = event_namespace(involved)
    cluster.request(
        "POST", collection_path("v1", "Event", namespace), event_body(involved, kind, reason, message, now)
    )


def post_event_or_log(
    cluster: Cluster, involved: Mapping[str, Any], kind: str, reason: str, message: str, now: datetime
) -> None:
    """Post an Event; when that fails, log it instead: an Event is a courtesy, never worth failing over."""
    try:
        post_event(cluster, involved, kind, reason, message, now)
    except KubeError as error:
        name = involved.get("metadata", {}).get("name")
        logger.warning("could not post event %s on %s: %s", reason, name, error)
