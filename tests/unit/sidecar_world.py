"""Small builders for SidecarSet unit tests: specs, pod templates and Rollout facts."""

from __future__ import annotations

from typing import Any

from operators.api.sidecarset import SidecarSetSpec
from operators.sidecarset.facts import RolloutFacts
from operators.sidecarset.inject import Sidecar, sidecar_from_spec


def sidecarset_spec(image: str = "fluent-bit:3.1", **overrides: Any) -> SidecarSetSpec:
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"tier": "web"}},
        "containers": [{"name": "log-agent", "image": image}],
    }
    body.update(overrides)
    return SidecarSetSpec.model_validate(body)


def sidecar(name: str = "log-agent", image: str = "fluent-bit:3.1", **overrides: Any) -> Sidecar:
    return sidecar_from_spec(name, sidecarset_spec(image, **overrides))


def pod_template(
    *containers: str, labels: dict[str, str] | None = None, volumes: tuple[str, ...] = ()
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": c, "image": f"{c}:1"} for c in containers or ("app",)]}
    if volumes:
        spec["volumes"] = [{"name": v, "emptyDir": {}} for v in volumes]
    return {"metadata": {"labels": labels or {"tier": "web"}}, "spec": spec}


def rollout(
    name: str,
    *,
    namespace: str = "shop",
    phase: str | None = "Healthy",
    stable: dict[str, str] | None = None,
    canary: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    paused: bool = False,
    has_stable: bool = True,
) -> RolloutFacts:
    return RolloutFacts(
        namespace=namespace,
        name=name,
        labels=labels or {"tier": "web"},
        namespace_labels={"env": "prod"},
        phase=phase,
        paused=paused,
        has_stable=has_stable,
        stable=stable or {},
        canary=canary or {},
    )
