"""The upstream schemas in ``../shared/reference`` (beside the repository, locally and in CI).

Found relative to this checkout, never by an absolute path. Where they are
missing a test skips and says where it looked; with ``CI=true`` it fails
instead, since CI always has them and a skip there would hide that the
generated objects went unchecked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference"
HTTPROUTES = "gateway-api/httproutes.yaml"
ISTIO_NETWORKING = "istio/networking.yaml"


def reference_file(relative: str, root: Path = REFERENCE) -> Path:
    """The reference file, or a skip (a failure with CI=true) naming where it was looked for."""
    path = root / relative
    if path.is_file():
        return path
    message = f"upstream reference {path} is missing: check out shared/ beside the repository"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def upstream_crd(relative: str = HTTPROUTES) -> dict[str, Any]:
    """The first document of a reference file: the upstream CustomResourceDefinition."""
    return dict(yaml.safe_load(reference_file(relative).read_text()))


def upstream_crd_of(kind: str, relative: str) -> dict[str, Any]:
    """The upstream CustomResourceDefinition of `kind` in a reference file holding several."""
    for document in yaml.safe_load_all(reference_file(relative).read_text()):
        if document and document.get("spec", {}).get("names", {}).get("kind") == kind:
            return dict(document)
    raise LookupError(f"no CustomResourceDefinition of kind {kind} in {reference_file(relative)}")


def upstream_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The openAPIV3Schema of one version of an upstream CRD."""
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema
