"""
The discovery documents (``/api``, ``/apis``, ``/apis/GROUP``, ``/apis/GROUP/VERSION``) built from
the served resources: what kubectl reads to map ``sro``, ``rollout`` or the ``sluice`` category
to a resource, and which verbs and subresources it has.
"""

from collections.abc import Iterable

from sluice_sandbox.resources import SUBRESOURCE_VERBS, JsonObject, ResourceSpec, version_priority


def api_versions(server_address: str) -> JsonObject:
    """``/api``: the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def api_group_list(specs: Iterable[ResourceSpec]) -> JsonObject:
    """``/apis``: every named group with its versions."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_info(group, versions) for group, versions in groups(specs).items()],
    }


def api_group(specs: Iterable[ResourceSpec], group: str) -> JsonObject | None:
    """``/apis/GROUP``, or None if no resource of the group is served."""
    versions = groups(specs).get(group)
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_info(group, versions)} if versions else None


def api_resource_list(specs: Iterable[ResourceSpec], group: str, version: str) -> JsonObject | None:
    """``/api/v1`` or ``/apis/GROUP/VERSION``, or None if nothing is served there."""
    served = [spec for spec in specs if spec.group == group and spec.version == version]
    if not served and (group, version) != ("", "v1"):
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for spec in served for entry in _resource_entries(spec)],
    }


def groups(specs: Iterable[ResourceSpec]) -> dict[str, list[str]]:
    """Served API groups (except the core one) with their versions, preferred first."""
    found: dict[str, set[str]] = {}
    for spec in specs:
        if spec.group:
            found.setdefault(spec.group, set()).add(spec.version)
    return {group: sorted(versions, key=version_priority) for group, versions in sorted(found.items())}


def _group_info(group: str, versions: list[str]) -> JsonObject:
    entries = [{"groupVersion": f"{group}/{version}", "version": version} for version in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def _resource_entries(spec: ResourceSpec) -> list[JsonObject]:
    main: JsonObject = {
        "name": spec.plural,
        "singularName": spec.singular,
        "namespaced": spec.namespaced,
        "kind": spec.kind,
        "verbs": list(spec.verbs),
    }
    if spec.short_names:
        main["shortNames"] = list(spec.short_names)
    if spec.categories:
        main["categories"] = list(spec.categories)
    entries = [main]
    if spec.status:
        entries.append(
            {
                "name": f"{spec.plural}/status",
                "singularName": "",
                "namespaced": spec.namespaced,
                "kind": spec.kind,
                "verbs": list(SUBRESOURCE_VERBS),
            }
        )
    if spec.scale:
        entries.append(
            {
                "name": f"{spec.plural}/scale",
                "singularName": "",
                "namespaced": spec.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": list(SUBRESOURCE_VERBS),
            }
        )
    return entries
