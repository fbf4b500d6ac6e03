"""What the SidecarSet decisions need to know about Rollouts and pods, read from their live objects.

Pure: the shell lists the objects, these functions reduce each to the few
facts that matter, so decisions and tests work on small frozen values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from operators.api.rollout import Phase
from operators.rollout.workload import revision_of
from operators.sidecarset.inject import Record, records_of

RELEASING_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED})
ROLLED_BACK_PHASES = frozenset({Phase.DEGRADED, Phase.ABORTED})


@dataclass(frozen=True)
class RolloutFacts:
    namespace: str
    name: str
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str]
    phase: str | None = None
    paused: bool = False
    has_stable: bool = True
    # SidecarSet name -> revision, as recorded in the stable Deployment's template.
    stable: Mapping[str, str] = field(default_factory=dict)
    # The same for the canary of the release in progress (or rolled back); empty without one.
    canary: Mapping[str, str] = field(default_factory=dict)
    # spec.template, for telling whether a sidecar would collide with the app.
    template: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def releasing(self, sidecarset: str, revision: str) -> bool:
        """Releasing this revision right now: a canary carries it, the stable does not yet."""
        return self._canary_only(sidecarset, revision) and self.phase in RELEASING_PHASES

    def rolled_back(self, sidecarset: str, revision: str) -> bool:
        """Its release of this revision was rolled back (and nothing has replaced that release since)."""
        return self._canary_only(sidecarset, revision) and self.phase in ROLLED_BACK_PHASES

    def updated(self, sidecarset: str, revision: str) -> bool:
        return self.stable.get(sidecarset) == revision

    def _canary_only(self, sidecarset: str, revision: str) -> bool:
        return self.canary.get(sidecarset) == revision and self.stable.get(sidecarset) != revision


def rollout_facts(
    rollout: Mapping[str, Any],
    stable: Mapping[str, Any] | None,
    canary: Mapping[str, Any] | None,
    namespace_labels: Mapping[str, str],
) -> RolloutFacts:
    """Facts of one Rollout from its body and its two Deployments (None when absent)."""
    meta = rollout.get("metadata") or {}
    spec = rollout.get("spec") or {}
    status = rollout.get("status") or {}
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    canary_revision = status.get("canaryRevision")
    # The canary Deployment always runs the current template, even with no release under way; it
    # stands for a release only while the status names its revision.
    in_release = canary is not None and canary_revision and revision_of(canary) == canary_revision
    return RolloutFacts(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        labels=dict(template_meta.get("labels") or {}),
        namespace_labels=dict(namespace_labels),
        phase=status.get("phase"),
        paused=bool(spec.get("paused")),
        has_stable=stable is not None,
        stable=_revisions(stable),
        canary=_revisions(canary) if in_release else {},
        template=spec.get("template") or {},
    )


def _revisions(deployment: Mapping[str, Any] | None) -> dict[str, str]:
    template = ((deployment or {}).get("spec") or {}).get("template")
    return {name: record.revision for name, record in records_of(template).items()}


@dataclass(frozen=True)
class PodFacts:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ready: bool
    # What this SidecarSet injected into the pod, if anything.
    record: Record | None = None
    # Containers of this SidecarSet not yet running the image in the pod's spec: the kubelet has
    # not restarted them yet (the status names the old image), or is starting the new container.
    restarting: bool = False
    # Positions of this SidecarSet's containers in spec.containers, and their images there.
    images: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_facts(pod: Mapping[str, Any], sidecarset: str) -> PodFacts:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    record = records_of(pod).get(sidecarset)
    ours = set(record.containers) if record else set()
    images = {
        str(c.get("name")): (index, str(c.get("image") or ""))
        for index, c in enumerate(spec.get("containers") or [])
        if c.get("name") in ours
    }
    reported = {str(s.get("name")): s for s in status.get("containerStatuses") or []}
    restarting = any(
        name in reported and not running_image(reported[name], image) for name, (_, image) in images.items()
    )
    return PodFacts(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        labels=dict(meta.get("labels") or {}),
        ready=pod_ready(status),
        record=record,
        restarting=restarting,
        images=images,
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def running_image(container_status: Mapping[str, Any], image: str) -> bool:
    """
    Whether the kubelet reports the container running `image`. While it restarts the container
    into a new image, the status names the new image already but the state is ``waiting`` (a
    status written without any state says only which image runs).
    """
    state = container_status.get("state")
    started = not isinstance(state, Mapping) or "running" in state
    return started and same_image(str(container_status.get("image") or ""), image)


def pod_ready(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def pod_active(pod: Mapping[str, Any]) -> bool:
    """Running or about to: finished and terminating pods no longer count."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not (pod.get("metadata") or {}).get("deletionTimestamp")


def same_image(running: str, wanted: str) -> bool:
    """The kubelet reports images fully qualified (docker.io/library/nginx:latest for nginx)."""
    return _qualified(running) == _qualified(wanted)


def _qualified(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    if "/" not in name:
        return "docker.io/library/" + name
    registry = name.split("/", 1)[0]
    if "." in registry or ":" in registry or registry == "localhost":
        return name
    return "docker.io/" + name
