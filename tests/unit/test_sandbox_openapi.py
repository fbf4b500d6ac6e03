"""The sandbox's OpenAPI documents: what kubectl apply, validate and explain read in them."""

import json
import pathlib
from typing import Any

import yaml

from sluice_sandbox.builtin_resources import BUILTIN_RESOURCES
from sluice_sandbox.crds import CUSTOM_RESOURCE_DEFINITIONS, resources_from_crd
from sluice_sandbox.openapi import (
    OBJECT_META,
    OpenApiDocuments,
    definition_name,
    group_version_path,
    v2_document,
    v3_document,
)
from sluice_sandbox.resources import ResourceSpec

REPO = pathlib.Path(__file__).resolve().parents[2]
ROLLOUT_CRD = yaml.safe_load((REPO / "crds" / "rollout.yaml").read_text())
[ROLLOUTS] = resources_from_crd(ROLLOUT_CRD)


def builtin(kind: str) -> ResourceSpec:
    return next(spec for spec in BUILTIN_RESOURCES if spec.kind == kind)


def patch_operation(document: dict[str, Any], kind: str) -> dict[str, Any]:
    """The PATCH of the kind's object, found as kubectl finds it: by x-kubernetes-group-version-kind."""
    operation: dict[str, Any]
    [operation] = [
        item["patch"]
        for path, item in document["paths"].items()
        if "patch" in item
        and item["patch"]["x-kubernetes-group-version-kind"]["kind"] == kind
        and path.endswith("{name}")
    ]
    return operation


def test_definition_names() -> None:
    assert definition_name(builtin("Deployment")) == "io.k8s.api.apps.v1.Deployment"
    assert definition_name(builtin("Pod")) == "io.k8s.api.core.v1.Pod"
    assert definition_name(ROLLOUTS) == "dev.sluice.v1alpha1.Rollout"
    assert definition_name(ROLLOUTS, "RolloutList") == "dev.sluice.v1alpha1.RolloutList"


def test_the_crd_document_lets_kubectl_validate_on_the_server_with_merge_patches() -> None:
    document = v3_document([ROLLOUTS])
    patch = patch_operation(document, "Rollout")
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "sluice.dev",
        "version": "v1alpha1",
        "kind": "Rollout",
    }
    parameters = [(parameter["name"], parameter["in"]) for parameter in patch["parameters"]]
    assert ("fieldValidation", "query") in parameters
    assert set(patch["requestBody"]["content"]) == {
        "application/json-patch+json",
        "application/merge-patch+json",
    }
    paths = set(document["paths"])
    assert {
        "/apis/sluice.dev/v1alpha1/namespaces/{namespace}/rollouts",
        "/apis/sluice.dev/v1alpha1/namespaces/{namespace}/rollouts/{name}",
        "/apis/sluice.dev/v1alpha1/namespaces/{namespace}/rollouts/{name}/status",
        "/apis/sluice.dev/v1alpha1/namespaces/{namespace}/rollouts/{name}/scale",
        "/apis/sluice.dev/v1alpha1/rollouts",
    } == paths


def test_the_crd_schema_is_served_for_kubectl_explain() -> None:
    schemas = v3_document([ROLLOUTS])["components"]["schemas"]
    rollout = schemas["dev.sluice.v1alpha1.Rollout"]
    assert rollout["x-kubernetes-group-version-kind"] == [
        {"group": "sluice.dev", "version": "v1alpha1", "kind": "Rollout"}
    ]
    assert rollout["properties"]["metadata"] == {"$ref": f"#/components/schemas/{OBJECT_META}"}
    canary = rollout["properties"]["spec"]["properties"]["strategy"]["properties"]["canary"]
    assert canary["description"].startswith("The canary strategy")
    assert OBJECT_META in schemas and "dev.sluice.v1alpha1.RolloutList" in schemas
    assert ROLLOUTS.schema is not None and ROLLOUTS.schema["properties"]["metadata"] == {"type": "object"}


def test_builtins_do_not_offer_strategic_merge_from_their_open_schema() -> None:
    # kubectl would compute strategic merge patches from a schema without merge keys (and so
    # replace lists such as containers); without the offer, it uses its compiled-in types.
    patch = patch_operation(v3_document([builtin("Deployment")]), "Deployment")
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    paths = v3_document([builtin("Deployment")])["paths"]
    assert "patch" in paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert "delete" not in paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"]


def test_cluster_scoped_paths() -> None:
    paths = v3_document([CUSTOM_RESOURCE_DEFINITIONS])["paths"]
    assert set(paths) == {
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}/status",
    }
    assert [
        parameter["name"]
        for parameter in paths["/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"]["parameters"]
    ] == ["name", "pretty"]


def test_v2_has_no_openapi_3_keywords() -> None:
    document = v2_document([ROLLOUTS, builtin("Namespace")])
    text = json.dumps(document)
    assert document["swagger"] == "2.0" and '"oneOf"' not in text and '"nullable"' not in text
    patch = patch_operation(document, "Rollout")
    assert patch["consumes"] == ["application/json-patch+json", "application/merge-patch+json"]
    body = {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}
    assert patch["parameters"][0] == {"name": "body", "in": "body", "required": True, "schema": body}
    assert "io.k8s.api.core.v1.Namespace" in document["definitions"]


def test_documents_are_indexed_by_group_version_and_rebuilt_only_on_change() -> None:
    documents = OpenApiDocuments()
    documents.refresh(1, [ROLLOUTS, builtin("Pod"), builtin("Deployment")])
    index = documents.v3_index()["paths"]
    assert set(index) == {"api/v1", "apis/apps/v1", "apis/sluice.dev/v1alpha1"}
    url = index["apis/sluice.dev/v1alpha1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/sluice.dev/v1alpha1?hash=")
    document = documents.v3("apis/sluice.dev/v1alpha1")
    assert document is not None and json.loads(document)["openapi"] == "3.0.0"
    assert documents.v3("apis/nothing/v1") is None

    documents.refresh(1, [])  # the same key: the served resources did not change
    assert documents.v3_index()["paths"]["apis/sluice.dev/v1alpha1"]["serverRelativeURL"] == url
    documents.refresh(2, [builtin("Pod")])
    assert set(documents.v3_index()["paths"]) == {"api/v1"}
    assert json.loads(documents.v2())["paths"]


def test_group_version_path() -> None:
    assert group_version_path("", "v1") == "api/v1"
    assert group_version_path("apps", "v1") == "apis/apps/v1"
