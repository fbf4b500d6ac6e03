"""Argo CD's resource actions, as Argo CD runs them, for the scripts we ship in manifests/argocd/.

Argo CD runs an action's Lua (gopher-lua, a Lua 5.1) with the live object in
the global ``obj`` and only the base and table libraries plus a safe ``os``
(``time`` and ``date``): no ``string``, ``math``, ``io`` or ``debug``. It turns
the returned table into JSON, puts back the empty objects Lua cannot tell from
empty arrays, and patches the live object with the JSON merge patch from the
live object to the returned one. This module does the same with lupa's Lua 5.1,
so the tests run the very scripts of the shipped ConfigMap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from lupa import lua51

PATCH = Path(__file__).resolve().parents[1] / "manifests" / "argocd" / "argocd-cm-patch.yaml"
ACTIONS_KEY = "resource.customizations.actions.sluice.dev_Rollout"

# Takes away what Argo CD's Lua does not offer; what is left would run there too.
_ARGOCD_SANDBOX = """
local date, time = os.date, os.time
os = {date = date, time = time}
string, math, io, debug, coroutine = nil, nil, nil, nil, nil
getmetatable("").__index = nil
"""


def rollout_actions() -> dict[str, Any]:
    """The `discovery.lua` and `definitions` of the Rollout's actions in the shipped argocd-cm patch."""
    configmap = yaml.safe_load(PATCH.read_text())
    assert (configmap["kind"], configmap["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    actions: dict[str, Any] = yaml.safe_load(configmap["data"][ACTIONS_KEY])
    return actions


def action_script(name: str) -> str:
    found = [d["action.lua"] for d in rollout_actions()["definitions"] if d["name"] == name]
    assert len(found) == 1, f"action {name}: {len(found)} definitions"
    script: str = found[0]
    return script


def run_lua(script: str, obj: dict[str, Any], date: Callable[..., str] | None = None) -> Any:
    """Run `script` as Argo CD does, with `obj` as the global ``obj``; `date` stands in for os.date."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.execute(_ARGOCD_SANDBOX)
    if date is not None:
        lua.globals().os.date = date
    lua.globals().obj = lua.table_from(obj, recursive=True)
    return lua.execute(script)


def discover(obj: dict[str, Any]) -> dict[str, bool]:
    """Each action discovery.lua offers for `obj`, and whether it is enabled."""
    result = run_lua(rollout_actions()["discovery.lua"], obj)
    return {str(name): not entry["disabled"] for name, entry in result.items()}


def enabled(obj: dict[str, Any]) -> set[str]:
    return {name for name, on in discover(obj).items() if on}


def run_action(name: str, obj: dict[str, Any], date: Callable[..., str] | None = None) -> dict[str, Any]:
    """The object action `name` returns for `obj`, as Argo CD reads it back."""
    result = run_lua(action_script(name), obj, date)
    returned: dict[str, Any] = from_lua(result, obj)
    return returned


def from_lua(value: Any, original: Any) -> Any:
    """A Lua value as JSON data: a table with keys 1..n is an array, and an empty table takes the
    type it had in `original` (Argo CD's cleanReturnedObj: `{}` stays an object)."""
    if lua51.lua_type(value) != "table":
        return value
    items = dict(value.items())
    if not items:
        return {} if isinstance(original, dict) else []
    if all(isinstance(key, int) for key in items) and sorted(items) == list(range(1, len(items) + 1)):
        old = original if isinstance(original, list) else []
        return [from_lua(items[i + 1], old[i] if i < len(old) else None) for i in range(len(items))]
    old_map = original if isinstance(original, dict) else {}
    return {str(key): from_lua(item, old_map.get(key)) for key, item in items.items()}


def merge_patch(live: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `live` into `new`, as Argo CD sends it."""
    if not (isinstance(live, dict) and isinstance(new, dict)):
        return new
    patch: dict[str, Any] = {key: None for key in live if key not in new}
    for key, value in new.items():
        if key not in live:
            patch[key] = value
        elif live[key] != value:
            patch[key] = merge_patch(live[key], value)
    return patch
