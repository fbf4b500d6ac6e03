"""What a Rollout's /scale subresource reports: how many pods it runs, and the selector that finds them.

`kubectl scale`, an HPA and KEDA write the Rollout's `spec.replicas` through /scale and read back
`status.replicas.total` and `status.selector` (see `operators.api.resources.ROLLOUT`). Both cover the
two tracks: an HPA averages its metric over every pod the selector finds, canary pods included, so
the count it compares with must include them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def pod_count(*deployments: Mapping[str, Any] | None) -> int:
    """The pods the Deployments have (their status.replicas: created and not yet terminating)."""
    return sum(int(((d or {}).get("status") or {}).get("replicas") or 0) for d in deployments)


def selector_text(labels: Mapping[str, str]) -> str:
    """`matchLabels` as the text form of a label selector (``a=1,b=2``), in a stable order.

    The scale subresource's `status.selector` is a string in this form, which an HPA parses.
    """
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
