"""The Argo CD health checks we ship (manifests/argocd/), run with Lua 5.1 against sample objects.

Argo CD runs health customizations in gopher-lua, a Lua 5.1: the script is a
function body with the live object in the global ``obj``, returning a table
with ``status`` and ``message``. lupa's Lua 5.1 runs the very scripts of the
shipped ConfigMap here. The Application samples carry statuses made by
``health.application_status``, so the scripts read what the operator writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from operators.api.application import ApplicationStatus
from operators.application.health import ComponentOutcome, application_status

PATCH = Path(__file__).resolve().parents[2] / "manifests" / "argocd" / "argocd-cm-patch.yaml"
KEY = "resource.customizations.health.sluice.dev_{kind}"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def script(kind: str) -> str:
    configmap = yaml.safe_load(PATCH.read_text())
    assert (configmap["kind"], configmap["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    text: str = configmap["data"][KEY.format(kind=kind)]
    return text


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """What Argo CD would show for `obj`: its health check run in a fresh Lua 5.1."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script(kind))
    return {"status": result["status"], "message": result["message"] or ""}


def rollout_status(phase: str, message: str = "", **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "message": message, "observedGeneration": 2, **extra}


def component(name: str, phase: str, message: str = "", generation: int = 2) -> ComponentOutcome:
    rollout = {"metadata": {"name": name, "generation": generation}, "status": rollout_status(phase, message)}
    return ComponentOutcome(name, rollout=rollout)


def application(*outcomes: ComponentOutcome, generation: int = 5, observed: int = 5) -> dict[str, Any]:
    status = application_status(ApplicationStatus(), observed, list(outcomes), NOW)
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "shop", "namespace": "shop", "generation": generation},
        "status": status.model_dump(by_alias=True, mode="json"),
    }


def rollout(status: dict[str, Any] | None, generation: int = 2) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "generation": generation},
    }
    if status is not None:
        body["status"] = status
    return body


WORKER = component("worker", "Healthy", "revision aaa: 2/2 ready")


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [
        (application(component("web", "Healthy"), WORKER), "Healthy", "2/2 components healthy"),
        (
            application(component("web", "Progressing", "step 1/5: weight 10%"), WORKER),
            "Progressing",
            "web Progressing: step 1/5: weight 10%",
        ),
        (
            application(component("web", "Paused", "paused until promoted"), WORKER),
            "Suspended",
            "web is paused: paused until promoted",
        ),
        (
            application(component("web", "Degraded", "rolled back revision bbb: error-rate=0.5"), WORKER),
            "Degraded",
            "web Degraded: rolled back revision bbb: error-rate=0.5",
        ),
        (application(component("web", "Aborted", "aborted"), WORKER), "Degraded", "web Aborted: aborted"),
        # Committed a moment ago: the status still describes the previous generation.
        (
            application(component("web", "Healthy"), WORKER, generation=6, observed=5),
            "Progressing",
            "Waiting for Sluice to observe the Application",
        ),
        # Observed, but the Rollout has not taken its new spec yet.
        (
            application(component("web", "Healthy", generation=3), WORKER),
            "Progressing",
            "web Pending: waiting for Rollout web to take generation 3",
        ),
        (
            {"metadata": {"name": "shop", "generation": 1}},
            "Progressing",
            "Waiting for Sluice to observe the Application",
        ),
    ],
    ids=["healthy", "progressing", "suspended", "degraded", "aborted", "stale", "rollout-stale", "no-status"],
)
def test_application_health(obj: dict[str, Any], status: str, message: str) -> None:
    assert health("Application", obj) == {"status": status, "message": message}


STALLED = [{"type": "Stalled", "status": "True", "reason": "ObjectConflict", "message": "conflict"}]


@pytest.mark.parametrize(
    ("obj", "status"),
    [
        (rollout(rollout_status("Healthy")), "Healthy"),
        (rollout(rollout_status("Progressing")), "Progressing"),
        (rollout(rollout_status("Initializing")), "Progressing"),
        (rollout(rollout_status("Paused")), "Suspended"),
        (rollout(rollout_status("Degraded")), "Degraded"),
        (rollout(rollout_status("Aborted")), "Degraded"),
        (rollout(rollout_status("Healthy", conditions=STALLED)), "Degraded"),
        (rollout(rollout_status("Healthy"), generation=3), "Progressing"),
        (rollout(None), "Progressing"),
    ],
    ids=[
        "healthy",
        "progressing",
        "initializing",
        "suspended",
        "degraded",
        "aborted",
        "stalled",
        "stale",
        "no-status",
    ],
)
def test_rollout_health(obj: dict[str, Any], status: str) -> None:
    assert health("Rollout", obj)["status"] == status


def test_rollout_health_says_what_the_rollout_says() -> None:
    obj = rollout(rollout_status("Paused", "step 2/5: weight 10%; paused until promoted"))
    assert health("Rollout", obj) == {
        "status": "Suspended",
        "message": "step 2/5: weight 10%; paused until promoted",
    }


def test_the_scripts_are_lua_5_1() -> None:
    # gopher-lua is Lua 5.1: no goto, no integer division, no bitwise operators.
    for kind in ("Application", "Rollout"):
        text = script(kind)
        assert "goto" not in text and "//" not in text and "<<" not in text
        lua51.LuaRuntime().compile(text)
