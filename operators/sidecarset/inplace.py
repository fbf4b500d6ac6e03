"""The JSON patch that moves a running pod's sidecars to new images, in place.

A merge patch would replace the whole container list; a JSON patch replaces
one image by index. A ``test`` on the record annotation makes the patch fail
(422) instead of landing on a pod that changed since it was read; the next
round reads it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from operators.sidecarset.inject import INJECTED_ANNOTATION, Sidecar, encode_records, records_of


def _pointer(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


ANNOTATION_PATH = f"/metadata/annotations/{_pointer(INJECTED_ANNOTATION)}"


def image_patch(pod: Mapping[str, Any], sidecar: Sidecar) -> list[dict[str, Any]]:
    """Ops replacing the images of `sidecar`'s containers and recording its revision; [] if not applicable."""
    records = records_of(pod)
    record = records.get(sidecar.name)
    if record is None or record.image_free != sidecar.image_free:
        return []  # not carried, or more than images changed: in place is not possible
    containers = (pod.get("spec") or {}).get("containers") or []
    index = {str(c.get("name")): i for i, c in enumerate(containers)}
    wanted = {c["name"]: c["image"] for c in sidecar.containers}
    if set(wanted) != set(record.containers) or not set(wanted) <= set(index):
        return []  # same image-free revision implies the same names; anything else is not ours to fix
    annotation = ((pod.get("metadata") or {}).get("annotations") or {})[INJECTED_ANNOTATION]
    ops: list[dict[str, Any]] = [{"op": "test", "path": ANNOTATION_PATH, "value": annotation}]
    for name, image in sorted(wanted.items()):
        if containers[index[name]].get("image") != image:
            ops.append({"op": "replace", "path": f"/spec/containers/{index[name]}/image", "value": image})
    records[sidecar.name] = sidecar.record()
    ops.append({"op": "replace", "path": ANNOTATION_PATH, "value": encode_records(records)})
    return ops
