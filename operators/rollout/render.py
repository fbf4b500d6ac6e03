"""The desired Deployments and Services of a Rollout, as plain dicts.

Pure functions: they read the spec and return what should exist; the kopf
layer compares that with the cluster and applies it. Nothing here mutates its
inputs or talks to the API server.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from operators.api.refs import RolloutRef
from operators.api.rollout import (
    BLUE_GREEN_PREVIEW_SUFFIX,
    MATCH_WEIGHT,
    NAME_MAX,
    NAME_MESSAGE,
    NAME_PATTERN,
    RolloutSpec,
)
from operators.foundation.diff import plain
from operators.rollout.ownership import (
    PREVIEW_LABEL,
    REVISION_LABEL,
    ROLLOUT_LABEL,
    STABLE,
    TRACK_LABEL,
    TRACKS,
    Track,
    managed_metadata,
)

# Labels Sluice sets on pods itself; a user selector on them would fight the operator.
RESERVED_POD_LABELS = (TRACK_LABEL, REVISION_LABEL, ROLLOUT_LABEL)
REVISION_HISTORY_LIMIT = 2
SERVICE_PORT_NAME = "http"


class RenderError(ValueError):
    """The spec cannot be turned into valid objects; the message says what to change."""


# With workloadRef, the user's Deployment is usually named like the Rollout: Sluice's stable one
# gets this suffix instead.
STABLE_SUFFIX = "-stable"


def object_name(ref: RolloutRef, track: Track) -> str:
    """The default name of a track's Deployment and Service: `<name>` or `<name>-canary`."""
    if track not in TRACKS:
        raise ValueError(f"unknown track {track!r}; expected one of {', '.join(TRACKS)}")
    return ref.name if track == STABLE else ref.canary_name


def deployment_name(ref: RolloutRef, spec: RolloutSpec, track: Track) -> str:
    """Sluice's Deployment of a track: `<name>`, or `<name>-stable` next to an adopted workload."""
    if track == STABLE and spec.workload_ref is not None:
        return f"{ref.name}{STABLE_SUFFIX}"
    return object_name(ref, track)


def service_name(ref: RolloutRef, spec: RolloutSpec, track: Track) -> str:
    """A track's Service: `spec.service.name` (default `<name>`) for stable, `<name>-canary` (with
    blue-green: the preview Service, default `<name>-preview`)."""
    if track == STABLE and spec.service is not None and spec.service.name:
        return spec.service.name
    blue_green = spec.strategy.blue_green
    if track != STABLE and blue_green is not None:
        return blue_green.preview_service or f"{ref.name}{BLUE_GREEN_PREVIEW_SUFFIX}"
    return object_name(ref, track)


def name_problems(ref: RolloutRef) -> list[str]:
    """Why the names derived from this Rollout's cannot exist; empty when they all can.

    The Rollout's name is the stable Deployment's and Service's, and the HTTPRoute's by
    default; with "-canary" added, the canary's; and the value of the pods' label
    sluice.dev/rollout. The tightest of these is the canary Service, a DNS-1035 label of at
    most 63 characters. The CRD says the same in a CEL rule (`NAME_RULE`), but an API server
    that does not evaluate it (an older CRD, a test server) would store such a Rollout.
    """
    if len(ref.name) <= NAME_MAX and re.fullmatch(NAME_PATTERN, ref.name):
        return []
    return [f"invalid name {ref.name!r} ({len(ref.name)} characters): {NAME_MESSAGE}"]


def _template_labels(template: Mapping[str, Any]) -> dict[str, str]:
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise RenderError("template.metadata.labels must map label names to strings")
    return dict(labels)


def _explicit_selector(spec: RolloutSpec) -> dict[str, str]:
    """The user's `selector.matchLabels` (empty when not given), validated against the template."""
    selector = spec.selector
    if selector is not None and selector.match_expressions:
        raise RenderError(
            "selector.matchExpressions is not supported yet; use selector.matchLabels "
            f"(or leave selector out to select by {ROLLOUT_LABEL})"
        )
    explicit = dict(selector.match_labels or {}) if selector is not None else {}
    reserved = sorted(set(explicit) & set(RESERVED_POD_LABELS))
    if reserved:
        raise RenderError(f"selector cannot use {', '.join(reserved)}: Sluice sets these labels itself")
    if spec.template is None:
        return explicit  # a workloadRef's template: render_deployment checks the labels on it
    template_labels = _template_labels(spec.template)
    missing = {key: value for key, value in explicit.items() if template_labels.get(key) != value}
    if missing:
        wanted = ", ".join(f"{key}={value}" for key, value in sorted(missing.items()))
        raise RenderError(
            f"selector.matchLabels {wanted} not found in template.metadata.labels; "
            "every selector label must be on the pods it selects"
        )
    return explicit


def pod_selector(ref: RolloutRef, spec: RolloutSpec) -> dict[str, str]:
    """The labels that identify this Rollout's pods (without the track label).

    `spec.selector.matchLabels` (when given) plus `sluice.dev/rollout: <name>`,
    which rendering puts on every pod. Kubernetes makes a Deployment's
    `spec.selector` immutable, so the selector must not follow the template's
    labels: a release that adds or changes a pod label (`version: 1.2`) would
    otherwise have its Deployment update rejected. The default therefore
    depends on the Rollout's name only, and an explicit selector changes only
    when the user changes it.

    Explicit labels must be on the template with the same values, or Kubernetes
    would reject the Deployment; the labels Sluice sets itself are refused.
    """
    return {**_explicit_selector(spec), ROLLOUT_LABEL: ref.name}


def render_deployment(
    ref: RolloutRef,
    spec: RolloutSpec,
    track: Track,
    template: Mapping[str, Any],
    revision: str,
    replicas: int,
) -> dict[str, Any]:
    """The apps/v1 Deployment of one track, running `template` (the effective pod template).

    `template` is separate from `spec.template` because the stable track keeps
    running the last promoted template while the spec already holds the new one.

    The pods get the track, revision and rollout labels; `spec.selector` is
    `pod_selector` plus the track, which never changes with the template because
    Kubernetes refuses any change to a Deployment's selector.
    """
    if replicas < 0:
        raise RenderError(f"replicas cannot be negative (got {replicas} for the {track} Deployment)")
    explicit = _explicit_selector(spec)
    selector = {**explicit, ROLLOUT_LABEL: ref.name}  # == pod_selector(ref, spec), validated once
    pod_template = plain(template)
    pod_metadata = pod_template.get("metadata") or {}
    pod_template["metadata"] = pod_metadata
    pod_labels = {
        **(pod_metadata.get("labels") or {}),
        ROLLOUT_LABEL: ref.name,
        TRACK_LABEL: track,
        REVISION_LABEL: revision,
    }
    # Checked on the template actually rendered: an old stable template may lack a newer
    # explicit selector label. The rollout label needs no check: it is set just above.
    missing = sorted(key for key, value in explicit.items() if pod_labels.get(key) != value)
    if missing:
        raise RenderError(
            f"the {track} pod template lacks the selector label(s) {', '.join(missing)}; "
            "the Deployment would be rejected"
        )
    pod_metadata["labels"] = pod_labels

    metadata = managed_metadata(ref, deployment_name(ref, spec, track), {TRACK_LABEL: track})
    metadata["annotations"] = {REVISION_LABEL: revision}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {**selector, TRACK_LABEL: track}},
            "template": pod_template,
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            # No pod goes away before its replacement is ready: the track keeps serving while it rolls.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        },
    }


def render_service(
    ref: RolloutRef,
    spec: RolloutSpec,
    track: Track,
    select_all_tracks: bool = False,
    active_revision: str | None = None,
) -> dict[str, Any]:
    """The v1 ClusterIP Service of one track.

    With `select_all_tracks` (a Rollout without a traffic provider) the stable
    Service selects the pods of both tracks, so traffic splits by replica count.
    The canary Service always selects canary pods only: metric queries on it
    must see the canary alone. It is therefore safe to pass the same flag for both.
    Services select `pod_selector` (plus the track), the same stable labels the
    Deployments select by. With `active_revision` (blue-green) the stable Service selects the
    pods of that revision, of either track: moving it is the switch, one write.
    """
    if spec.service is None:
        raise RenderError("the Rollout has no service: nothing to render")
    selector = pod_selector(ref, spec)
    labels: dict[str, str] = {TRACK_LABEL: track}
    if active_revision is not None and track == STABLE:
        selector[REVISION_LABEL] = active_revision
    elif not (select_all_tracks and track == STABLE):
        selector[TRACK_LABEL] = track
    if spec.strategy.blue_green is not None and track != STABLE:
        labels[PREVIEW_LABEL] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": managed_metadata(ref, service_name(ref, spec, track), labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": SERVICE_PORT_NAME,
                    "protocol": "TCP",
                    "port": spec.service.port,
                    "targetPort": spec.service.target_port,
                }
            ],
        },
    }


def canary_replicas(spec: RolloutSpec, weight: int) -> int:
    """How many canary pods to run while the canary gets `weight` percent of traffic.

    - `canaryReplicas: matchWeight` (default): ceil(replicas * weight / 100), at
      least 1 when both weight and replicas are above zero, and 0 at weight 0.
    - `canaryReplicas: <n>`: always n, at every weight including 0. A fixed
      canary size is the user's choice, and keeping the pods at weight 0 lets
      them start and pass readiness (and analysis warm up) before any traffic.
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be between 0 and 100, got {weight}")
    if spec.strategy.canary is None:
        return spec.replicas if weight > 0 else 0  # blue-green: the new version runs at full size
    wanted = spec.strategy.canary.canary_replicas
    if isinstance(wanted, int):
        return wanted
    if wanted != MATCH_WEIGHT:  # the model refuses other strings; guard against a bypassed model
        raise RenderError(f'canaryReplicas must be "{MATCH_WEIGHT}" or a number, not {wanted!r}')
    if weight == 0 or spec.replicas == 0:
        return 0
    return max(1, -(-spec.replicas * weight // 100))  # integer ceil: no float rounding surprises


def pod_template_revision(template: Mapping[str, Any]) -> str:
    """The revision of an effective pod template: 10 hex chars of sha256 over canonical JSON.

    Key order does not matter (keys are sorted). Hash the template before
    rendering: the labels Sluice adds to pods include the revision itself, so a
    live Deployment's revision is read from its annotation, never re-hashed.
    """
    canonical = json.dumps(plain(template), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


RESTARTED_AT_ANNOTATION = "sluice.dev/restartedAt"


def with_restart(deployment: dict[str, Any], restarted_at: str | None) -> dict[str, Any]:
    """The Deployment with its pods stamped by the last restart: a changed stamp replaces every pod by a
    rolling update, as `kubectl rollout restart` does, while the revision (the template's hash) stays."""
    if restarted_at:
        metadata = deployment["spec"]["template"].setdefault("metadata", {})
        metadata["annotations"] = {
            **(metadata.get("annotations") or {}),
            RESTARTED_AT_ANNOTATION: restarted_at,
        }
    return deployment
