"""Injecting sidecars into a pod (or pod template): a pure function, shared by Rollouts and the webhook.

A :class:`Sidecar` is what one SidecarSet injects at one revision: containers
before and after the app's, init containers after the app's (as OpenKruise
does) and volumes. :func:`inject` merges several, ordered by SidecarSet name.
A name that collides with the app's (or with an earlier SidecarSet's) is an
error for that SidecarSet, which is then left out: the app's definition is
never overwritten.

What was injected is recorded in one annotation on the pod (template),
``sidecarset.sluice.dev/injected``: per SidecarSet its revision, its revision
without container images (an image-only change keeps that one, which is how
in-place upgrades are recognised) and the names of what it added. The record
is what tells which sidecar revision a Rollout's stable Deployment runs, and
which containers of a live template belong to which SidecarSet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from operators.api.sidecarset import PodInjectPolicy, SidecarSetSpec
from operators.foundation.diff import plain

INJECTED_ANNOTATION = "sidecarset.sluice.dev/injected"
Json = dict[str, Any]


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Record:
    """What one SidecarSet injected into a pod: its revision and the names of its parts."""

    revision: str
    image_free: str
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    init_containers: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()

    def to_json(self) -> Json:
        return {
            "revision": self.revision,
            "imageFree": self.image_free,
            "before": list(self.before),
            "after": list(self.after),
            "initContainers": list(self.init_containers),
            "volumes": list(self.volumes),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Record:
        return cls(
            revision=str(value["revision"]),
            image_free=str(value.get("imageFree", "")),
            before=tuple(value.get("before") or ()),
            after=tuple(value.get("after") or ()),
            init_containers=tuple(value.get("initContainers") or ()),
            volumes=tuple(value.get("volumes") or ()),
        )

    @property
    def containers(self) -> tuple[str, ...]:
        return (*self.before, *self.after)


@dataclass(frozen=True)
class Sidecar:
    """The injected parts of one SidecarSet at one revision."""

    name: str
    revision: str
    image_free: str
    before: tuple[Json, ...] = ()
    after: tuple[Json, ...] = ()
    init_containers: tuple[Json, ...] = ()
    volumes: tuple[Json, ...] = ()

    @property
    def containers(self) -> tuple[Json, ...]:
        return (*self.before, *self.after)

    def record(self) -> Record:
        return Record(
            revision=self.revision,
            image_free=self.image_free,
            before=tuple(c["name"] for c in self.before),
            after=tuple(c["name"] for c in self.after),
            init_containers=tuple(c["name"] for c in self.init_containers),
            volumes=tuple(v["name"] for v in self.volumes),
        )


def sidecar_from_spec(name: str, spec: SidecarSetSpec) -> Sidecar:
    """The parts a SidecarSet injects now, with their revision hashes."""
    parts = spec.to_api()
    containers = parts.get("containers", [])
    init_containers = parts.get("initContainers", [])
    volumes = parts.get("volumes", [])
    # podInjectPolicy is part of the revision (it moves containers), not of the container itself.
    hashed = {"containers": containers, "initContainers": init_containers, "volumes": volumes}
    without_images = {**hashed, "containers": [{**c, "image": ""} for c in containers]}
    before = [c for c in containers if c.get("podInjectPolicy") != PodInjectPolicy.AFTER_APP_CONTAINER]
    after = [c for c in containers if c.get("podInjectPolicy") == PodInjectPolicy.AFTER_APP_CONTAINER]
    return Sidecar(
        name=name,
        revision=_digest(hashed),
        image_free=_digest(without_images),
        before=tuple(_container(c) for c in before),
        after=tuple(_container(c) for c in after),
        init_containers=tuple(plain(init_containers)),
        volumes=tuple(plain(volumes)),
    )


def _container(sidecar: Mapping[str, Any]) -> Json:
    return {key: plain(value) for key, value in sidecar.items() if key != "podInjectPolicy"}


# ---- the record annotation ---------------------------------------------------------------------


def records_of(template: Mapping[str, Any] | None) -> dict[str, Record]:
    """SidecarSet name -> what it injected, from a pod or pod template (empty: none, or unreadable)."""
    annotations = ((template or {}).get("metadata") or {}).get("annotations") or {}
    text = annotations.get(INJECTED_ANNOTATION)
    if not text:
        return {}
    try:
        raw = json.loads(text)
        return {str(name): Record.from_json(value) for name, value in raw.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}  # hand-edited into nonsense: treat as carrying nothing rather than fail the pod


def revisions_of(template: Mapping[str, Any] | None) -> dict[str, str]:
    return {name: record.revision for name, record in records_of(template).items()}


def encode_records(records: Mapping[str, Record]) -> str:
    return json.dumps(
        {name: records[name].to_json() for name in sorted(records)}, sort_keys=True, separators=(",", ":")
    )


def sidecar_from_template(name: str, template: Mapping[str, Any] | None) -> Sidecar | None:
    """The parts SidecarSet `name` injected into a live pod template, as they are there.

    This is how a Rollout keeps its old sidecar while it waits for its turn: the
    stable Deployment's template holds the old containers, so no old definition
    needs storing. None when the template does not carry it (or no longer holds
    every part its record names).
    """
    record = records_of(template).get(name)
    if record is None or template is None:
        return None
    spec = template.get("spec") or {}
    containers = _by_name(spec.get("containers"))
    init_containers = _by_name(spec.get("initContainers"))
    volumes = _by_name(spec.get("volumes"))
    try:
        return Sidecar(
            name=name,
            revision=record.revision,
            image_free=record.image_free,
            before=tuple(containers[n] for n in record.before),
            after=tuple(containers[n] for n in record.after),
            init_containers=tuple(init_containers[n] for n in record.init_containers),
            volumes=tuple(volumes[n] for n in record.volumes),
        )
    except KeyError:
        return None


def _by_name(items: Any) -> dict[str, Json]:
    return {str(item.get("name")): plain(item) for item in items or () if isinstance(item, Mapping)}


# ---- injection ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Injection:
    """The result of :func:`inject`."""

    # The pod (template) with every injectable sidecar merged in, and the record annotation.
    template: Json
    # The input with only the record annotation added: what the parts are a function of. Hashing it
    # gives a revision that does not depend on how the API server defaulted the injected containers.
    recipe: Json
    injected: tuple[str, ...] = ()
    # SidecarSet name -> why it was left out.
    conflicts: Mapping[str, str] = field(default_factory=dict)


def inject(template: Mapping[str, Any], sidecars: Sequence[Sidecar]) -> Injection:
    """Merge `sidecars` (injected in name order) into a pod or pod template ({metadata, spec}).

    SidecarSets the template already records are skipped, so injecting twice
    changes nothing (a webhook may be called again for the same pod).
    """
    result = plain(template)
    spec = result.setdefault("spec", {})
    records = records_of(result)
    taken_containers = _names(spec.get("containers")) | _names(spec.get("initContainers"))
    taken_volumes = _names(spec.get("volumes"))
    chosen: list[Sidecar] = []
    conflicts: dict[str, str] = {}
    for sidecar in sorted(sidecars, key=lambda s: s.name):
        if sidecar.name in records:
            continue
        problem = _collision(sidecar, taken_containers, taken_volumes)
        if problem:
            conflicts[sidecar.name] = problem
            continue
        chosen.append(sidecar)
        taken_containers |= {c["name"] for c in (*sidecar.containers, *sidecar.init_containers)}
        taken_volumes |= {v["name"] for v in sidecar.volumes}
        records[sidecar.name] = sidecar.record()

    recipe = plain(template)
    if not chosen:
        return Injection(template=result, recipe=recipe, conflicts=conflicts)
    spec["containers"] = [
        *(c for s in chosen for c in s.before),
        *(spec.get("containers") or []),
        *(c for s in chosen for c in s.after),
    ]
    spec["initContainers"] = [
        *(spec.get("initContainers") or []),
        *(c for s in chosen for c in s.init_containers),
    ]
    spec["volumes"] = [*(spec.get("volumes") or []), *(v for s in chosen for v in s.volumes)]
    for name in ("initContainers", "volumes"):
        if not spec[name]:
            del spec[name]  # no empty lists where the app had none: keeps pod templates as written
    encoded = encode_records(records)
    _annotate(result, encoded)
    _annotate(recipe, encoded)
    return Injection(
        template=result, recipe=recipe, injected=tuple(s.name for s in chosen), conflicts=conflicts
    )


def without_record(template: Mapping[str, Any]) -> Json:
    """A pod template minus Sluice's record annotation (users must not be able to fake one)."""
    result: Json = plain(template)
    annotations = (result.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict) and INJECTED_ANNOTATION in annotations:
        del annotations[INJECTED_ANNOTATION]
        if not annotations:
            del result["metadata"]["annotations"]
    return result


def without_sidecars(template: Mapping[str, Any]) -> Json:
    """A pod template minus every part its record says a SidecarSet injected, and the record: the
    user's own template again (`kubectl sluice undo` releases a recorded, effective, template)."""
    records = records_of(template).values()
    injected = {
        "containers": {name for record in records for name in (*record.before, *record.after)},
        "initContainers": {name for record in records for name in record.init_containers},
        "volumes": {name for record in records for name in record.volumes},
    }
    result = without_record(template)
    spec = result.get("spec")
    if isinstance(spec, dict):
        for field, names in injected.items():
            if names and isinstance(spec.get(field), list):
                kept = [
                    item
                    for item in spec[field]
                    if not (isinstance(item, Mapping) and item.get("name") in names)
                ]
                if kept:
                    spec[field] = kept
                else:
                    del spec[field]
    return result


def _named(item: Any, names: set[str]) -> bool:
    return isinstance(item, Mapping) and item.get("name") in names


def _annotate(template: Json, encoded: str) -> None:
    metadata = template.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), INJECTED_ANNOTATION: encoded}


def _names(items: Iterable[Any] | None) -> set[str]:
    return {str(item.get("name")) for item in items or () if isinstance(item, Mapping)}


def _collision(sidecar: Sidecar, containers: set[str], volumes: set[str]) -> str:
    clashing = sorted({c["name"] for c in (*sidecar.containers, *sidecar.init_containers)} & containers)
    clashing_volumes = sorted({v["name"] for v in sidecar.volumes} & volumes)
    parts = []
    if clashing:
        parts.append(f"container(s) {', '.join(clashing)}")
    if clashing_volumes:
        parts.append(f"volume(s) {', '.join(clashing_volumes)}")
    if not parts:
        return ""
    return (
        f"SidecarSet {sidecar.name}: {' and '.join(parts)} already in the pod; "
        "rename the sidecar's (the app's definition is never overwritten)"
    )
