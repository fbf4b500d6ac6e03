"""
Server-side apply and managedFields in the sandbox, as the API server does them
(https://kubernetes.io/docs/reference/using-api/server-side-apply/): the field sets of objects
(nested maps, list-maps by key, sets, atomic lists), their ``fieldsV1`` encoding, and the store's
writes recording who owns what, with conflicts, forced takeovers, shared ownership and the removal
of fields an applier stops applying.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sluice_sandbox.apiserver import SandboxAPIServer
from sluice_sandbox.errors import ApiError
from sluice_sandbox.fieldmanager import manager_from_user_agent
from sluice_sandbox.fieldsets import Shape, applied_fields, changes, decode, encode, merge, render_path
from sluice_sandbox.patching import PatchType
from sluice_sandbox.store import Store

NS = "shop"
BUILTIN = Shape.of_resource(None, builtin=True)

# A CRD schema with the three kinds of lists (and a map-list keyed by two fields).
WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "replicas": {"type": "integer"},
                "routes": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name", "port"],
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "port": {"type": "integer"},
                            "weight": {"type": "integer"},
                        },
                    },
                },
                "hosts": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "args": {"type": "array", "items": {"type": "string"}},  # undeclared: atomic
                "selector": {
                    "type": "object",
                    "x-kubernetes-map-type": "atomic",
                    "additionalProperties": {"type": "string"},
                },
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}
WIDGET_SHAPE = Shape.of_resource(WIDGET_SCHEMA, builtin=False)
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": WIDGET_SCHEMA},
            }
        ],
    },
}


def paths(*dotted: str) -> set[tuple[str, ...]]:
    """Paths written as ``f:spec/f:replicas`` (``/`` between elements: keys hold dots)."""
    return {tuple(path.split("/")) for path in dotted}


# ----- Field sets -----


def test_nested_maps_own_their_leaves_only() -> None:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": NS, "labels": {"app": "web"}, "resourceVersion": "7"},
        "data": {"a": "1", "b": "2"},
    }
    assert applied_fields(config, BUILTIN) == paths(
        "f:metadata/f:labels/f:app", "f:data/f:a", "f:data/f:b"
    ), "no apiVersion, kind, name, namespace or resourceVersion: nobody owns them"


def test_containers_merge_by_name_and_ports_by_container_port() -> None:
    config = {
        "spec": {
            "containers": [
                {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}], "args": ["-v"]},
                {"name": "proxy", "image": "envoy:1"},
            ]
        }
    }
    app, proxy = 'k:{"name":"app"}', 'k:{"name":"proxy"}'
    assert applied_fields(config, BUILTIN) == paths(
        f"f:spec/f:containers/{app}",
        f"f:spec/f:containers/{app}/f:name",
        f"f:spec/f:containers/{app}/f:image",
        f"f:spec/f:containers/{app}/f:args",  # a list of scalars: atomic
        f"f:spec/f:containers/{app}/f:ports",
        f'f:spec/f:containers/{app}/f:ports/k:{{"containerPort":80}}',
        f'f:spec/f:containers/{app}/f:ports/k:{{"containerPort":80}}/f:containerPort',
        f"f:spec/f:containers/{proxy}",
        f"f:spec/f:containers/{proxy}/f:name",
        f"f:spec/f:containers/{proxy}/f:image",
    ) - paths(f"f:spec/f:containers/{app}/f:ports")


def test_a_crd_schema_declares_map_lists_sets_and_atomic_lists() -> None:
    config = {
        "spec": {
            "routes": [{"name": "web", "port": 80, "weight": 90}],
            "hosts": ["a.example.com", "b.example.com"],
            "args": ["x", "y"],
            "selector": {"app": "web"},
        }
    }
    route = 'k:{"name":"web","port":80}'
    assert applied_fields(config, WIDGET_SHAPE) == paths(
        f"f:spec/f:routes/{route}",
        f"f:spec/f:routes/{route}/f:name",
        f"f:spec/f:routes/{route}/f:port",
        f"f:spec/f:routes/{route}/f:weight",
        'f:spec/f:hosts/v:"a.example.com"',
        'f:spec/f:hosts/v:"b.example.com"',
        "f:spec/f:args",
        "f:spec/f:selector",  # x-kubernetes-map-type: atomic
    )


def test_fields_v1_encoding_round_trips() -> None:
    owned = paths(
        "f:metadata/f:labels",
        "f:metadata/f:labels/f:app",
        'f:spec/f:containers/k:{"name":"app"}',
        'f:spec/f:containers/k:{"name":"app"}/f:image',
        "f:spec/f:replicas",
    )
    encoded = encode(owned)
    assert encoded == {
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
        "f:spec": {"f:containers": {'k:{"name":"app"}': {".": {}, "f:image": {}}}, "f:replicas": {}},
    }
    assert decode(encoded) == owned
    with pytest.raises(ValueError):
        decode({"f:spec": "not an object"})


def test_paths_print_as_in_conflicts() -> None:
    assert render_path(("f:spec", "f:replicas")) == ".spec.replicas"
    path = ("f:spec", "f:routes", 'k:{"name":"web","port":80}', "f:weight")
    assert render_path(path) == '.spec.routes[name="web",port=80].weight'
    assert render_path(("f:spec", "f:hosts", 'v:"a"')) == '.spec.hosts[="a"]'


def test_an_update_owns_what_it_added_and_changed() -> None:
    old = {
        "metadata": {"name": "d"},
        "spec": {"replicas": 1, "containers": [{"name": "app", "image": "a:1"}]},
    }
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 2
    new["spec"]["containers"][0]["image"] = "a:2"
    new["metadata"]["labels"] = {"team": "shop"}
    del new["spec"]["containers"][0]["name"]  # the list can no longer be keyed: replaced whole
    changed, removed = changes(old, new, BUILTIN)
    assert paths("f:spec/f:replicas", "f:metadata/f:labels", "f:metadata/f:labels/f:team") <= changed
    assert paths("f:spec/f:containers") <= changed and paths("f:spec/f:containers") <= removed


def test_merge_by_keys_keeps_live_items_and_appends_new_ones() -> None:
    live = {
        "spec": {"routes": [{"name": "a", "port": 1, "weight": 1}, {"name": "b", "port": 1, "weight": 2}]}
    }
    config = {"spec": {"routes": [{"name": "b", "port": 1, "weight": 5}, {"name": "c", "port": 1}]}}
    merged = merge(live, config, WIDGET_SHAPE)
    assert merged["spec"]["routes"] == [
        {"name": "a", "port": 1, "weight": 1},
        {"name": "b", "port": 1, "weight": 5},
        {"name": "c", "port": 1},
    ]
    assert live["spec"]["routes"][1]["weight"] == 2  # never changed in place
    assert merge({"spec": {"args": ["a", "b"]}}, {"spec": {"args": ["c"]}}, WIDGET_SHAPE) == {
        "spec": {"args": ["c"]}
    }
    assert merge({"spec": {"hosts": ["a"]}}, {"spec": {"hosts": ["b", "a"]}}, WIDGET_SHAPE) == {
        "spec": {"hosts": ["a", "b"]}
    }


@pytest.mark.parametrize(
    "user_agent, manager",
    [
        ("kubectl/v1.32.0 (linux/amd64) kubernetes/70d3cc9", "kubectl"),
        ("kopf/1.37.2", "kopf"),
        ("OpenAPI-Generator/31.0.0/python", "OpenAPI-Generator"),
        (None, ""),
    ],
)
def test_managers_named_by_their_user_agent(user_agent: str | None, manager: str) -> None:
    assert manager_from_user_agent(user_agent) == manager


# ----- The store: managedFields on every write, and server-side apply -----

Scenario = Callable[[Store], Awaitable[None]]


def run(scenario: Scenario) -> None:
    async def main() -> None:
        store = SandboxAPIServer().store
        await store.create("namespaces", {"metadata": {"name": NS}})
        await store.install_crd(WIDGET_CRD)
        try:
            await scenario(store)
        finally:
            store.close()

    asyncio.run(main())


def managed(obj: dict[str, Any]) -> dict[tuple[str, str], set[tuple[str, ...]]]:
    """The decoded managedFields by (manager, operation[/subresource])."""
    return {
        (
            entry["manager"],
            entry["operation"] + (f"/{entry['subresource']}" if "subresource" in entry else ""),
        ): decode(entry["fieldsV1"])
        for entry in obj["metadata"].get("managedFields", [])
    }


def widget(**spec: Any) -> dict[str, Any]:
    """A Widget to apply; with no spec at all if no fields are given (an empty map is owned too)."""
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}} | (
        {"spec": spec} if spec else {}
    )


async def apply(store: Store, config: dict[str, Any], manager: str, **options: Any) -> dict[str, Any]:
    obj, _ = await store.apply("widgets", NS, "w", config, field_manager=manager, **options)
    return obj


def test_managed_fields_after_create_update_and_apply() -> None:
    async def scenario(store: Store) -> None:
        created = await store.create(
            "configmaps", {"metadata": {"name": "cm"}, "data": {"a": "1"}}, NS, field_manager="ci"
        )
        (entry,) = created["metadata"]["managedFields"]
        assert {key: entry[key] for key in ("manager", "operation", "apiVersion", "fieldsType")} == {
            "manager": "ci",
            "operation": "Update",
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
        }
        assert entry["fieldsV1"] == {"f:data": {".": {}, "f:a": {}}} and entry["time"].endswith("Z")

        patched = await store.patch(
            "configmaps", NS, "cm", {"data": {"a": "2", "b": "1"}}, field_manager="ops"
        )
        assert managed(patched) == {
            ("ci", "Update"): paths("f:data"),
            ("ops", "Update"): paths("f:data/f:a", "f:data/f:b"),
        }, "the changed fields moved to the updater"

        applied, created_now = await store.apply(
            "configmaps",
            NS,
            "cm",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"c": "3"}},
            field_manager="gitops",
        )
        assert not created_now and applied["data"] == {"a": "2", "b": "1", "c": "3"}
        assert applied["metadata"]["managedFields"][0]["operation"] == "Apply", "Apply entries first"
        assert managed(applied)[("gitops", "Apply")] == paths("f:data/f:c")

        # A no-op write is no write: no new resourceVersion, the same managedFields.
        again = await store.patch("configmaps", NS, "cm", {"data": {"a": "2"}}, field_manager="someone")
        assert again["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"]
        assert again["metadata"]["managedFields"] == applied["metadata"]["managedFields"]

    run(scenario)


def test_apply_creates_then_conflicts_then_forces() -> None:
    async def scenario(store: Store) -> None:
        created, was_created = await store.apply(
            "widgets", NS, "w", widget(replicas=1), field_manager="gitops"
        )
        assert was_created and managed(created) == {("gitops", "Apply"): paths("f:spec/f:replicas")}

        await store.patch("widgets", NS, "w", {"spec": {"replicas": 3}}, field_manager="hpa")
        with pytest.raises(ApiError) as refused:
            await apply(store, widget(replicas=1, args=["a"]), "gitops")
        status = refused.value.as_status()
        assert (status["code"], status["reason"]) == (409, "Conflict")
        assert (
            status["message"]
            == 'Apply failed with 1 conflict: conflict with "hpa" using example.com/v1: .spec.replicas'
        )
        assert status["details"]["causes"] == [
            {
                "reason": "FieldManagerConflict",
                "message": 'conflict with "hpa" using example.com/v1',
                "field": ".spec.replicas",
            }
        ]
        unchanged = await store.get("widgets", NS, "w")
        assert unchanged["spec"] == {"replicas": 3}, "a refused apply changes nothing"

        forced = await apply(store, widget(replicas=1, args=["a"]), "gitops", force=True)
        assert forced["spec"] == {"replicas": 1, "args": ["a"]}
        assert managed(forced) == {("gitops", "Apply"): paths("f:spec/f:replicas", "f:spec/f:args")}, (
            "the takeover left hpa with nothing: its entry is gone"
        )

    run(scenario)


def test_conflicts_with_several_managers_are_listed_by_manager() -> None:
    async def scenario(store: Store) -> None:
        await apply(store, widget(replicas=1, args=["a"]), "gitops")
        await apply(store, widget(replicas=1, args=["a"]), "helm")  # same values: shared, no conflict
        with pytest.raises(ApiError) as refused:
            await apply(store, widget(replicas=2, args=["b"]), "ops")
        assert refused.value.message == (
            "Apply failed with 4 conflicts: "
            'conflicts with "gitops":\n- .spec.args\n- .spec.replicas\n'
            'conflicts with "helm":\n- .spec.args\n- .spec.replicas'
        )

    run(scenario)


def test_shared_ownership_and_removal_of_unapplied_fields() -> None:
    async def scenario(store: Store) -> None:
        route = {"name": "web", "port": 80, "weight": 100}
        await apply(store, widget(replicas=2, routes=[route], hosts=["a"]), "gitops")
        shared = await apply(store, widget(replicas=2), "helm")  # the same value: no conflict
        assert managed(shared)[("helm", "Apply")] == paths("f:spec/f:replicas")
        assert paths("f:spec/f:replicas") <= managed(shared)[("gitops", "Apply")]

        # gitops stops applying all of it: what helm also owns stays, the rest goes.
        pruned = await apply(store, widget(), "gitops")
        assert pruned["spec"] == {"replicas": 2}
        assert ("gitops", "Apply") not in managed(pruned)

        # helm stops applying replicas: nobody owns it any more, so it goes too.
        emptied = await apply(store, widget(hosts=["b"]), "helm")
        assert emptied["spec"] == {"hosts": ["b"]}

    run(scenario)


def test_removal_keeps_list_items_and_fields_that_others_own() -> None:
    async def scenario(store: Store) -> None:
        routes = [{"name": "a", "port": 80, "weight": 90}, {"name": "b", "port": 80, "weight": 10}]
        await apply(store, widget(routes=routes), "gitops")
        # Another manager changes b's weight: that field is its now.
        await store.patch(
            "widgets",
            NS,
            "w",
            [{"op": "replace", "path": "/spec/routes/1/weight", "value": 20}],
            patch_type=PatchType.JSON,
            field_manager="sluice",
        )
        left = await apply(store, widget(routes=[routes[0]]), "gitops")
        # Item b is no longer applied, but its weight is sluice's: the item stays, with its keys.
        assert left["spec"]["routes"] == [routes[0], {"name": "b", "port": 80, "weight": 20}]
        assert managed(left)[("gitops", "Apply")] == applied_fields(widget(routes=[routes[0]]), WIDGET_SHAPE)
        assert managed(left)[("sluice", "Update")] == paths(
            'f:spec/f:routes/k:{"name":"b","port":80}/f:weight'
        )

    run(scenario)


def test_status_applies_go_through_the_status_subresource_only() -> None:
    async def scenario(store: Store) -> None:
        applied = await apply(store, {**widget(replicas=1), "status": {"phase": "Ready"}}, "gitops")
        assert "status" not in applied, "the main resource ignores the status"
        status = {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "status": {"phase": "Ready"},
        }
        reported = await apply(store, {**status, "spec": {"replicas": 9}}, "controller", subresource="status")
        assert reported["status"] == {"phase": "Ready"} and reported["spec"] == {"replicas": 1}
        assert managed(reported)[("controller", "Apply/status")] == paths("f:status/f:phase")
        entry = next(e for e in reported["metadata"]["managedFields"] if e["manager"] == "controller")
        assert entry["subresource"] == "status"

        # Status writes of Update managers are recorded with their subresource too.
        updated = await store.patch_status(
            "widgets", NS, "w", {"status": {"phase": "Done"}}, field_manager="kopf"
        )
        assert managed(updated)[("kopf", "Update/status")] == paths("f:status/f:phase")
        assert ("controller", "Apply/status") not in managed(updated), "its only field moved to kopf"

    run(scenario)


def test_apply_options_and_preconditions() -> None:
    async def scenario(store: Store) -> None:
        with pytest.raises(ApiError) as refused:
            await store.apply("widgets", NS, "w", widget(replicas=1), field_manager=None)
        assert (refused.value.status, refused.value.reason) == (422, "Invalid")
        assert refused.value.message == (
            'PatchOptions.meta.k8s.io "" is invalid: '
            "fieldManager: Required value: is required for apply patch"
        )
        with pytest.raises(ApiError) as refused:
            await store.patch("widgets", NS, "w", {"spec": {}}, force=True)
        assert refused.value.message.endswith("force: Forbidden: may not be specified for non-apply patch")

        dry, created = await store.apply(
            "widgets", NS, "w", widget(replicas=1), field_manager="ci", dry_run=True
        )
        assert created and dry["spec"] == {"replicas": 1}
        with pytest.raises(ApiError) as missing:
            await store.get("widgets", NS, "w")
        assert missing.value.status == 404, "a dry run persists nothing"

        live = await apply(store, widget(replicas=1), "ci")
        stale = widget(replicas=2)
        stale["metadata"]["resourceVersion"] = "1"
        with pytest.raises(ApiError) as conflict:
            await apply(store, stale, "ci")
        assert (conflict.value.status, conflict.value.reason) == (409, "Conflict")
        current = widget(replicas=2)
        current["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        assert (await apply(store, current, "ci"))["spec"]["replicas"] == 2

        with pytest.raises(ApiError) as wrong_name:
            await store.apply("widgets", NS, "other", widget(), field_manager="ci")
        assert wrong_name.value.status == 400

    run(scenario)


def test_a_client_may_clear_managed_fields_with_an_empty_entry() -> None:
    async def scenario(store: Store) -> None:
        await apply(store, widget(replicas=1), "gitops")
        cleared = await store.patch(
            "widgets", NS, "w", {"metadata": {"managedFields": [{}]}}, field_manager="admin"
        )
        assert "managedFields" not in cleared["metadata"]

    run(scenario)
