"""What `sluice install` applies: the CRDs (crds/), then manifests/ as kustomize renders it.

Both directories ship inside the package as ``operators/cli/bundled/{crds,manifests}``: symbolic
links to the repository's own directories, which the wheel build follows (package data), so an
installed ``sluice`` carries the same files a checkout has and there is no second copy to keep in
step. Pure but for reading those files.
"""

from __future__ import annotations

import copy
import importlib.resources
from collections.abc import Mapping, Sequence
from importlib.resources.abc import Traversable
from typing import Any

import yaml

from operators.cli import kustomize

CRD_KIND = "CustomResourceDefinition"


def bundled(name: str) -> Traversable:
    """``crds`` or ``manifests``, as shipped with this package."""
    return importlib.resources.files("operators.cli") / "bundled" / name


def crd_objects(directory: Traversable | None = None) -> list[dict[str, Any]]:
    """The CRDs, one per file of crds/, in file name order."""
    directory = directory or bundled("crds")
    files = sorted(
        (item for item in directory.iterdir() if item.name.endswith(".yaml")), key=lambda f: f.name
    )
    return [doc for file in files for doc in yaml.safe_load_all(file.read_text()) if doc is not None]


def manifest_objects(directory: Traversable | None = None) -> list[dict[str, Any]]:
    """manifests/ as `kubectl kustomize manifests` renders it."""
    return kustomize.build(directory or bundled("manifests"))


def install_objects(image: str | None = None) -> list[dict[str, Any]]:
    """Everything `sluice install` applies, in order: the CRDs, then the manifests; ``image``
    replaces the operator's image (every container of the Deployments in manifests/)."""
    manifests = manifest_objects()
    if image is not None:
        manifests = with_operator_image(manifests, image)
    return [*crd_objects(), *manifests]


def with_operator_image(objects: Sequence[Mapping[str, Any]], image: str) -> list[dict[str, Any]]:
    """Copies of ``objects`` with ``image`` in every container of every Deployment (the operator's)."""
    result = [copy.deepcopy(dict(obj)) for obj in objects]
    for obj in result:
        if obj.get("kind") == "Deployment":
            for container in obj["spec"]["template"]["spec"].get("containers") or []:
                container["image"] = image
    return result


def to_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """One multi-document YAML stream, formatted as `kubectl kustomize` formats it (keys sorted,
    no line wrapping, double quotes where quotes are needed, block style for multi-line text)."""
    return "---\n".join(
        yaml.dump(dict(obj), Dumper=_KubectlStyleDumper, sort_keys=True, width=2**31, allow_unicode=True)
        for obj in objects
    )


class _KubectlStyleDumper(yaml.SafeDumper):
    def choose_scalar_style(self) -> str:
        style: str = super().choose_scalar_style()
        return '"' if style == "'" else style  # go-yaml, which kubectl uses, double-quotes


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_KubectlStyleDumper.add_representer(str, _represent_text)
