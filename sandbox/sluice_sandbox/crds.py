"""
CustomResourceDefinitions: the CRD resource itself, and the resources a CRD makes served.

Writing a CRD is validated as the API server validates it (names, scope, a structural schema for
every version), and the CRD is reported ``Established`` at once. Each served version becomes a
:class:`ResourceSpec` whose admission step prunes, defaults and validates custom objects against
that version's schema (see :mod:`sluice_sandbox.validation`), so a Rollout with
``setWeight: 101`` is refused with a 422 that names the field, as a real cluster refuses it.
Its CEL rules are compiled when the CRD is written: one that does not compile refuses the CRD
(see :mod:`sluice_sandbox.celrules`), and the served resource evaluates them on every write.
"""

import functools
from collections.abc import Mapping
from typing import Any

from operators.api.structural import structural_problems
from sluice_sandbox.celcheck import rule_problems
from sluice_sandbox.errors import ApiError, FieldError
from sluice_sandbox.resources import Admission, FieldValidation, JsonObject, ResourceSpec, ScaleSpec, now
from sluice_sandbox.validation import Part, StructuralSchema


def resources_from_crd(crd: Mapping[str, Any]) -> list[ResourceSpec]:
    """The served resources of a CRD: one per served version, all sharing the same storage."""
    spec = crd["spec"]
    names = spec["names"]
    result: list[ResourceSpec] = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        admit = None if schema is None else functools.partial(admit_custom_object, StructuralSchema(schema))
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        result.append(
            ResourceSpec(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                singular=names.get("singular", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames", [])),
                categories=tuple(names.get("categories", [])),
                status="status" in subresources,
                builtin=False,
                scale=None
                if scale is None
                else ScaleSpec(
                    spec_replicas_path=scale["specReplicasPath"],
                    status_replicas_path=scale["statusReplicasPath"],
                    label_selector_path=scale.get("labelSelectorPath"),
                ),
                schema=schema,
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                prepare=admit,
            )
        )
    return result


def admit_custom_object(
    schema: StructuralSchema, spec: ResourceSpec, obj: JsonObject, admission: Admission
) -> None:
    """Prune, default and validate a custom object, as the API server does before storing it."""
    part = Part.STATUS if admission.subresource == "status" else Part.MAIN if spec.status else Part.WHOLE
    unknown = schema.prune(obj, part)
    if unknown and admission.field_validation is FieldValidation.STRICT:
        fields = ", ".join(f'unknown field "{path}"' for path in unknown)
        raise ApiError.bad_request(
            f'{spec.kind} in version "{spec.version}" cannot be handled as a '
            f"{spec.kind}: strict decoding error: {fields}"
        )
    if admission.field_validation is FieldValidation.WARN:
        admission.warnings.extend(f'unknown field "{path}"' for path in unknown)
    schema.default(obj, part)
    problems = schema.validate(obj, part, old=admission.old)
    if problems:
        raise ApiError.invalid(spec, obj["metadata"].get("name"), problems)


def _prepare_crd(spec: ResourceSpec, crd: JsonObject, admission: Admission) -> None:
    """Validate a CRD and report it as accepted & established, as the real server does."""
    name = crd["metadata"]["name"]
    problems = _crd_problems(crd)
    if problems:
        raise ApiError.invalid(spec, name, problems)

    crd_spec = crd["spec"]
    names = crd_spec["names"]
    status = crd.setdefault("status", {})
    accepted = dict(names)
    accepted.setdefault("singular", names["kind"].lower())
    accepted.setdefault("listKind", f"{names['kind']}List")
    status["acceptedNames"] = accepted
    versions = crd_spec["versions"]
    storage = [version["name"] for version in versions if version.get("storage")] or [versions[0]["name"]]
    status["storedVersions"] = sorted(set(status.get("storedVersions", [])) | set(storage))
    existing = {condition.get("type"): condition for condition in status.get("conditions", [])}
    status["conditions"] = [
        existing.get(kind)
        or {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now()}
        for kind, reason, message in [
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ]
    ]


def _crd_problems(crd: JsonObject) -> list[FieldError]:
    name = crd["metadata"]["name"]
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = spec.get("versions") or []
    required = [
        ("spec.group", spec.get("group")),
        ("spec.names.plural", names.get("plural")),
        ("spec.names.kind", names.get("kind")),
        ("spec.versions", versions),
    ]
    missing = [FieldError.required(field) for field, value in required if not value]
    if missing:
        return missing
    problems: list[FieldError] = []
    if name != f"{names['plural']}.{spec['group']}":
        problems.append(FieldError.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if spec.get("scope", "Namespaced") not in ("Namespaced", "Cluster"):
        problems.append(FieldError.not_supported("spec.scope", spec.get("scope"), ["Cluster", "Namespaced"]))
    for index, version in enumerate(versions):
        problems.extend(_schema_problems(f"spec.versions[{index}].schema.openAPIV3Schema", version))
        scale = (version.get("subresources") or {}).get("scale")
        if isinstance(scale, Mapping):
            problems.extend(_scale_problems(f"spec.versions[{index}].subresources.scale", scale))
    return problems


# Where each of subresources.scale's paths may point, as the API server's CRD validation says it.
_SCALE_PATHS: tuple[tuple[str, bool, tuple[str, ...], str], ...] = (
    ("specReplicasPath", True, (".spec.",), "should be a json path under .spec"),
    ("statusReplicasPath", True, (".status.",), "should be a json path under .status"),
    (
        "labelSelectorPath",
        False,
        (".spec.", ".status."),
        "should be a json path under either .spec or .status",
    ),
)


def _scale_problems(field: str, scale: Mapping[str, Any]) -> list[FieldError]:
    """subresources.scale: simple JSON paths (dot notation, no arrays) under .spec or .status."""
    problems: list[FieldError] = []
    for key, required, prefixes, where in _SCALE_PATHS:
        path = scale.get(key)
        if not path:
            if required:
                problems.append(FieldError.required(f"{field}.{key}"))
            continue
        if not isinstance(path, str) or not path.startswith("."):
            problems.append(
                FieldError.invalid(f"{field}.{key}", path, "must be a simple json path starting with .")
            )
        elif "[" in path or not path.startswith(prefixes):
            problems.append(FieldError.invalid(f"{field}.{key}", path, where))
    return problems


def _schema_problems(field: str, version: Mapping[str, Any]) -> list[FieldError]:
    schema = (version.get("schema") or {}).get("openAPIV3Schema")
    if not isinstance(schema, Mapping):
        return [FieldError.required(field, "schemas are required")]
    # The checker also reports `required` names missing from `properties`, which the API server
    # accepts (such objects can never be valid, but the CRD is): that one is left to unit tests.
    problems = [
        FieldError.invalid(field, "object", problem)
        for problem in structural_problems(schema)
        if "is not in properties" not in problem
    ]
    # CEL rules are compiled only in a structural schema, as the API server does.
    return problems or rule_problems(schema, field)


CUSTOM_RESOURCE_DEFINITIONS = ResourceSpec(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    namespaced=False,
    short_names=("crd", "crds"),
    categories=("api-extensions",),
    status=True,
    prepare=_prepare_crd,
)
