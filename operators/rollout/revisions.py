"""A Rollout's revision history, in ControllerRevisions (as StatefulSets and DaemonSets keep theirs).

The stable Deployment's template is the record of the stable version. When
that Deployment is deleted mid-release, the only other copy of the stable
version is here: without it the operator could only recreate the stable
track from the new, unchecked template, promoting what was never checked.
One ControllerRevision per revision, `<rollout>-<revision>`, owned by the
Rollout (garbage-collected with it), at most `HISTORY_LIMIT` kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from operators.api.refs import RolloutRef
from operators.foundation.keys import ObjectKey
from operators.rollout.ownership import REVISION_LABEL, managed_metadata

API_VERSION = "apps/v1"
KIND = "ControllerRevision"
# Revisions kept per Rollout, like a Deployment's default revisionHistoryLimit.
HISTORY_LIMIT = 10


def revision_key(ref: RolloutRef, revision: str) -> ObjectKey:
    return ObjectKey(API_VERSION, KIND, ref.namespace, f"{ref.name}-{revision}")


def revision_record(
    ref: RolloutRef, revision: str, template: Mapping[str, Any], number: int
) -> dict[str, Any]:
    """The ControllerRevision holding `template`; `number` orders the history (newer is larger)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": managed_metadata(ref, revision_key(ref, revision).name, {REVISION_LABEL: revision}),
        "data": {"template": dict(template)},
        "revision": number,
    }


def recorded_template(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The pod template a ControllerRevision holds, or None."""
    if not record:
        return None
    template = (record.get("data") or {}).get("template")
    return dict(template) if isinstance(template, Mapping) else None


def beyond_limit(records: Sequence[Mapping[str, Any]], keep: Sequence[str]) -> list[Mapping[str, Any]]:
    """The oldest records past HISTORY_LIMIT, never one of the revisions in `keep` (stable, canary)."""
    ordered = sorted(records, key=lambda r: int(r.get("revision") or 0), reverse=True)
    spare = [
        r for r in ordered if (r.get("metadata") or {}).get("labels", {}).get(REVISION_LABEL) not in keep
    ]
    room = max(HISTORY_LIMIT - (len(ordered) - len(spare)), 0)
    return spare[room:]


def _revision(record: Mapping[str, Any]) -> str | None:
    labels = (record.get("metadata") or {}).get("labels") or {}
    value = labels.get(REVISION_LABEL)
    return str(value) if value else None
