"""The part of kustomize that `sluice install` needs to render manifests/ as `kubectl kustomize` does.

A kustomization's ``resources`` (YAML files, or directories holding a kustomization of their own)
and ``images``; the result in kustomize's default ("legacy") order, which is also a safe order to
apply in: namespaces and CRDs first, RBAC before the workloads using it, webhook configurations
last. Any other field is refused by name rather than ignored, so that a kustomization this cannot
reproduce fails loudly instead of installing something other than `kubectl apply -k` would;
tests/unit/test_cli_install.py holds the result to the real `kubectl kustomize`.

Files are read through ``Traversable`` (a ``Path`` or package data, see bundle.py); pure otherwise.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from importlib.resources.abc import Traversable
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "resources", "images"})

# kustomize's legacy sort order (api/resid: orderFirst, orderLast); other kinds go in between.
ORDER_FIRST = (
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
)
ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


class KustomizeError(ValueError):
    """The kustomization cannot be rendered here; the message names the file and the field."""


def build(directory: Traversable) -> list[dict[str, Any]]:
    """The objects of the kustomization in ``directory``, as `kubectl kustomize DIRECTORY` prints them."""
    objects = _load(directory, directory.name)
    _refuse_duplicates(objects)
    return sorted(objects, key=legacy_order)


def legacy_order(obj: Mapping[str, Any]) -> tuple[int, str, str, str]:
    """kustomize's legacy sort key: the kind's rank, then group/version/kind, namespace and name."""
    kind = str(obj.get("kind", ""))
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind) - len(ORDER_FIRST)
    elif kind in ORDER_LAST:
        rank = 1 + ORDER_LAST.index(kind)
    else:
        rank = 0
    meta = obj.get("metadata") or {}
    return rank, _gvk_string(obj), str(meta.get("namespace") or ""), str(meta.get("name") or "")


def set_images(
    objects: Sequence[Mapping[str, Any]], images: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Copies of ``objects`` with the kustomization's ``images`` applied to every container.

    An entry matches containers whose image has its ``name`` (the image without tag or digest);
    ``newName`` replaces the name, ``digest`` or else ``newTag`` the tag, as kustomize does.
    """
    result = [copy.deepcopy(dict(obj)) for obj in objects]
    for obj in result:
        for container in _containers(obj):
            image = container.get("image")
            if not isinstance(image, str):
                continue
            for entry in images:
                if split_image(image)[0] == entry.get("name"):
                    container["image"] = _replaced(image, entry)
                    break
    return result


def split_image(image: str) -> tuple[str, str]:
    """(name, tag or digest with its ``:``/``@``): ``ghcr.io/x/y:1.0`` -> (``ghcr.io/x/y``, ``:1.0``)."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, f"@{digest}"
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:  # a colon after the last slash is a tag; before it, a registry's port
        return image[:colon], image[colon:]
    return image, ""


def _replaced(image: str, entry: Mapping[str, Any]) -> str:
    name, suffix = split_image(image)
    if entry.get("digest"):
        suffix = f"@{entry['digest']}"
    elif entry.get("newTag"):
        suffix = f":{entry['newTag']}"
    return f"{entry.get('newName') or name}{suffix}"


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in an object: kustomize's image field specs."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (item for item in value if isinstance(item, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _load(directory: Traversable, shown: str) -> list[dict[str, Any]]:
    found = [directory / name for name in KUSTOMIZATION_FILES if (directory / name).is_file()]
    if not found:
        raise KustomizeError(f"{shown}: no kustomization.yaml")
    kustomization_file = found[0]
    where = f"{shown}/{kustomization_file.name}"
    kustomization = yaml.safe_load(kustomization_file.read_text()) or {}
    if not isinstance(kustomization, dict):
        raise KustomizeError(f"{where}: not a mapping")
    unsupported = sorted(set(kustomization) - SUPPORTED_FIELDS)
    if unsupported:
        raise KustomizeError(
            f"{where}: {', '.join(unsupported)} not supported here "
            f"(only {', '.join(sorted(SUPPORTED_FIELDS))})"
        )
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources") or []:
        objects.extend(_load_resource(directory, shown, str(resource)))
    images = kustomization.get("images") or []
    return set_images(objects, images) if images else objects


def _load_resource(directory: Traversable, shown: str, resource: str) -> list[dict[str, Any]]:
    # Only what lies inside the directory: package data has no "..", and no URLs are fetched.
    parts = [part for part in resource.split("/") if part not in ("", ".")]
    if not parts or ".." in parts or "://" in resource:
        raise KustomizeError(f"{shown}: resource {resource!r}: only files and directories inside it")
    target = directory.joinpath(*parts)
    path = f"{shown}/{'/'.join(parts)}"
    if target.is_dir():
        return _load(target, path)
    if not target.is_file():
        raise KustomizeError(f"{shown}: resource {resource!r} does not exist")
    documents = [doc for doc in yaml.safe_load_all(target.read_text()) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict) or not doc.get("kind") or not (doc.get("metadata") or {}).get("name"):
            raise KustomizeError(f"{path}: every document must be an object with a kind and a name")
    return documents


def _refuse_duplicates(objects: Sequence[Mapping[str, Any]]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        meta = obj.get("metadata") or {}
        identity = (_gvk_string(obj), str(meta.get("namespace") or ""), str(meta.get("name")))
        if identity in seen:
            raise KustomizeError(f"{identity[0]} {'/'.join(filter(None, identity[1:]))} is listed twice")
        seen.add(identity)


def _gvk_string(obj: Mapping[str, Any]) -> str:
    """As kustomize's Gvk.String(): group_version_kind, with ``~G``/``~V`` for an empty one."""
    api_version = str(obj.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    return f"{group or '~G'}_{version or '~V'}_{obj.get('kind') or '~K'}"
