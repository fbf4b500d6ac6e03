"""Which events wake a daemon: a person's changes do, the daemon's own status writes do not."""

from __future__ import annotations

from typing import Any

import pytest

from operators.handlers.wiring import intent

BASE: dict[str, Any] = {
    "metadata": {"name": "web", "generation": 3, "annotations": {"team": "shop"}},
    "spec": {"replicas": 4},
    "status": {"phase": "Progressing", "canaryWeight": 20},
}


def changed(**meta: Any) -> dict[str, Any]:
    return {**BASE, "metadata": {**BASE["metadata"], **meta}}


@pytest.mark.parametrize(
    ("other", "wakes"),
    [
        pytest.param({**BASE, "status": {"phase": "Paused", "canaryWeight": 50}}, False, id="status-only"),
        pytest.param(changed(resourceVersion="99"), False, id="resource-version-only"),
        pytest.param(
            changed(annotations={"team": "shop", "kopf.zalando.org/last-handled": "x"}),
            False,
            id="kopf-annotation",
        ),
        pytest.param(changed(generation=4), True, id="spec-changed"),
        pytest.param(changed(annotations={"team": "shop", "sluice.dev/promote": "1"}), True, id="command"),
        pytest.param(changed(deletionTimestamp="2026-01-01T00:00:00Z"), True, id="deleted"),
    ],
)
def test_intent(other: dict[str, Any], wakes: bool) -> None:
    assert (intent(other) != intent(BASE)) is wakes
