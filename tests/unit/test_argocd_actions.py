"""The Argo CD resource actions we ship for Rollouts (manifests/argocd/), run with Lua 5.1 as in Argo CD.

discovery.lua must offer exactly the actions that do something in the Rollout's
state; each action.lua must change exactly its annotation or field, with a
value Sluice acts on. tests/argocd.py runs the scripts in a Lua 5.1 stripped to
what Argo CD's offers, and reads the result back as Argo CD does.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from lupa import lua51

from operators.api.rollout import AnalysisStatus, Check, Outcome, Phase, RolloutStatus
from operators.rollout.commands import Command, pending_commands
from tests.argocd import action_script, discover, enabled, merge_patch, rollout_actions, run_action

ACTIONS = {"promote", "promote-full", "abort", "retry", "pause", "resume"}
COMMANDS = ["promote", "promote-full", "abort", "retry"]
SECOND = "2026-01-02T03:04:05Z"
PAUSED_ACTIONS = {"promote", "promote-full", "abort", "pause"}


def rollout(
    phase: Phase | None,
    *,
    paused: bool | None = None,
    last_check: Outcome | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Rollout as Argo CD sees it live: a `pause: {}` step (an empty object), the status Sluice writes."""
    spec: dict[str, Any] = {
        "replicas": 4,
        "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]}},
    }
    if paused is not None:
        spec["paused"] = paused
    metadata: dict[str, Any] = {"name": "web", "namespace": "shop", "generation": 2}
    if annotations is not None:
        metadata["annotations"] = annotations
    body: dict[str, Any] = {"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "metadata": metadata}
    body["spec"] = spec
    if phase is not None:
        status = RolloutStatus(observed_generation=2, phase=phase, current_step_index=1, canary_weight=20)
        if last_check is not None:
            status.analysis = AnalysisStatus(last_check=Check(time=SECOND, outcome=last_check))
        body["status"] = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    return body


# ---- discovery ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (rollout(Phase.HEALTHY), {"pause"}),
        (rollout(None), {"pause"}),
        (rollout(Phase.INITIALIZING), {"pause"}),
        # At a weight step: nothing to promote yet, but the release can be skipped or stopped.
        (rollout(Phase.PROGRESSING), {"promote-full", "abort", "pause"}),
        # At a pause step, with inconclusive analysis, or a blue-green switch awaiting promotion.
        (rollout(Phase.PAUSED), PAUSED_ACTIONS),
        (rollout(Phase.PAUSED, last_check=Outcome.INCONCLUSIVE), PAUSED_ACTIONS),
        # Sluice never promotes past a failed check.
        (rollout(Phase.PAUSED, last_check=Outcome.FAILED), {"promote-full", "abort", "pause"}),
        # Held by spec.paused: Sluice ignores promote until resumed.
        (rollout(Phase.PAUSED, paused=True), {"promote-full", "abort", "resume"}),
        (rollout(Phase.PROGRESSING, paused=True), {"promote-full", "abort", "resume"}),
        (rollout(Phase.HEALTHY, paused=False), {"pause"}),
        (rollout(Phase.DEGRADED), {"retry", "pause"}),
        (rollout(Phase.ABORTED), {"retry", "pause"}),
        (rollout(Phase.DEGRADED, paused=True), {"retry", "resume"}),
    ],
    ids=[
        "healthy",
        "no-status",
        "initializing",
        "progressing",
        "paused-at-step",
        "inconclusive",
        "last-check-failed",
        "held-by-spec-paused",
        "progressing-while-spec-paused",
        "healthy-resumed",
        "degraded",
        "aborted",
        "degraded-and-paused",
    ],
)
def test_discovery_enables_what_makes_sense(obj: dict[str, Any], expected: set[str]) -> None:
    assert enabled(obj) == expected


def test_discovery_offers_every_defined_action_and_no_other() -> None:
    defined = {d["name"] for d in rollout_actions()["definitions"]}
    assert defined == ACTIONS
    assert set(discover(rollout(Phase.HEALTHY))) == ACTIONS, "disabled actions are shown, greyed out"


# ---- the command actions --------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_command_action_sets_only_its_annotation(name: str) -> None:
    live = rollout(Phase.PAUSED, annotations={"team": "payments"})
    formats: list[str] = []

    def date(fmt: str) -> str:
        formats.append(fmt)
        return SECOND

    returned = run_action(name, copy.deepcopy(live), date)

    key = Command(name).annotation
    assert merge_patch(live, returned) == {"metadata": {"annotations": {key: SECOND}}}
    assert formats == ["!%Y-%m-%dT%H:%M:%SZ"], "the UTC time, to the second"
    # Sluice acts on it: a value it has not handled yet.
    handled = {name: "2026-01-01T00:00:00Z"}
    assert pending_commands(returned["metadata"]["annotations"], handled)[0].command == Command(name)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_action_on_a_rollout_without_annotations(name: str) -> None:
    live = rollout(Phase.DEGRADED)
    returned = run_action(name, copy.deepcopy(live))
    value = returned["metadata"]["annotations"][Command(name).annotation]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), value
    assert merge_patch(live, returned) == {"metadata": {"annotations": {Command(name).annotation: value}}}


def test_every_command_action_writes_a_new_value_even_within_one_second() -> None:
    # Sluice acts once per distinct value, keeping the last one it handled: a click in the same
    # second as the one before must still write a value other than the annotation's.
    obj = rollout(Phase.PAUSED)
    values = []
    for _ in range(3):
        handled = {"promote": obj["metadata"].get("annotations", {}).get("sluice.dev/promote", "")}
        obj = run_action("promote", obj, lambda _fmt: SECOND)
        values.append(obj["metadata"]["annotations"]["sluice.dev/promote"])
        assert [p.command for p in pending_commands(obj["metadata"]["annotations"], handled)] == [
            Command.PROMOTE
        ]
    assert values == [SECOND, f"{SECOND}-2", SECOND]
    # A later second is new by itself.
    later = run_action("promote", obj, lambda _fmt: "2026-01-02T03:04:06Z")
    assert later["metadata"]["annotations"]["sluice.dev/promote"] == "2026-01-02T03:04:06Z"


def test_a_command_value_set_by_the_cli_is_replaced() -> None:
    # `sluice promote` writes nanoseconds; the action's value differs from it, so it counts.
    live = rollout(Phase.PAUSED, annotations={"sluice.dev/promote": "1767323045000000000"})
    returned = run_action("promote", copy.deepcopy(live), lambda _fmt: SECOND)
    assert merge_patch(live, returned) == {"metadata": {"annotations": {"sluice.dev/promote": SECOND}}}


# ---- pause and resume -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "before", "after"),
    [("pause", None, True), ("pause", False, True), ("resume", True, False)],
    ids=["pause", "pause-after-resume", "resume"],
)
def test_pause_and_resume_set_spec_paused(name: str, before: bool | None, after: bool) -> None:
    live = rollout(Phase.PROGRESSING, paused=before)
    returned = run_action(name, copy.deepcopy(live))
    assert merge_patch(live, returned) == {"spec": {"paused": after}}


# ---- the scripts ----------------------------------------------------------------------------------


def test_the_scripts_are_lua_5_1_within_argocd_libraries() -> None:
    scripts = [rollout_actions()["discovery.lua"], *(action_script(name) for name in ACTIONS)]
    for text in scripts:
        # gopher-lua is Lua 5.1: no goto, no integer division, no bitwise operators; and Argo CD
        # opens neither the string nor the math library for actions.
        assert "goto" not in text and "//" not in text and "<<" not in text
        assert "string." not in text and "math." not in text
        lua51.LuaRuntime().compile(text)
