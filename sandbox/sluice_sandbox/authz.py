"""
What a request asks the Kubernetes authorizer, and whether RBAC rules allow it: as kube-apiserver does.

:func:`request_attributes` reads a request (method, path, query) the way kube-apiserver's
``RequestInfoFactory.NewRequestInfo`` (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go)
does before it asks the authorizer: the verb (``get``/``list``/``watch``/``create``/``update``/
``patch``/``delete``/``deletecollection``, or the lowercase HTTP method for a non-resource URL),
the API group, resource, subresource, namespace and name. :func:`rule_allows` is the RBAC
authorizer's ``RuleAllows`` (plugin/pkg/auth/authorizer/rbac and pkg/apis/rbac/v1's evaluation
helpers) over one PolicyRule; a :class:`Grant` is a rule as a binding grants it (cluster-wide
through a ClusterRoleBinding, in one namespace through a RoleBinding).

Tests use them to prove a client's RBAC is exactly what it does: every recorded request allowed
(:func:`denied`), every granted verb used (:func:`unused`). All of it is pure: no I/O.
"""

import dataclasses
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sluice_sandbox.requestlog import RequestRecord

# Path segments kube-apiserver reads as the verb rather than as part of the resource's path (the
# deprecated /api/v1/watch/... and /api/v1/proxy/...); a proxy's trailing segments are the proxied
# path, not a subresource.
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_SPECIAL_VERBS_WITHOUT_SUBRESOURCES = frozenset({"proxy"})
# /api/v1/namespaces/NAME/status addresses the namespace itself, not a resource named "status" in it.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_VERBS_BY_METHOD = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",  # server-side apply too: a PATCH with the apply content type
    "DELETE": "delete",
}


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Attributes:
    """One request as the authorizer sees it (k8s.io/apiserver's authorizer.Attributes)."""

    verb: str
    resource_request: bool
    api_group: str = ""  # "" for the core group
    resource: str = ""
    subresource: str = ""
    namespace: str = ""  # "" for a cluster-wide request (a cluster-scoped object, or all namespaces)
    name: str = ""  # "" for a collection
    path: str = ""  # the URL path: what a non-resource request is authorized by

    @property
    def combined_resource(self) -> str:
        """``resource/subresource`` (``rollouts/status``), as RBAC rules name subresources."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def describe(self) -> str:
        """``patch sluice.dev rollouts/status in shop``, ``get /apis`` (non-resource)."""
        if not self.resource_request:
            return f"{self.verb} {self.path}"
        where = f"in {self.namespace}" if self.namespace else "cluster-wide"
        named = f" {self.name!r}" if self.name else ""
        return f"{self.verb} {self.api_group or 'core'} {self.combined_resource}{named} {where}"


def request_attributes(method: str, path: str, query: str = "") -> Attributes:
    """A request's authorization attributes, exactly as kube-apiserver derives them."""
    parts = [part for part in path.strip("/").split("/") if part] if path.strip("/") else []
    non_resource = Attributes(verb=method.lower(), resource_request=False, path=path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource  # /version, /apis, /api/v1, /healthz, ...
    prefix, rest = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(rest) < 3:
            return non_resource  # /apis/GROUP/VERSION: discovery
        group, rest = rest[0], rest[1:]
    rest = rest[1:]  # the version: RBAC does not look at it
    if rest[0] in _SPECIAL_VERBS:
        if len(rest) < 2:
            # kube-apiserver answers this with an error before authorizing; it is no resource request.
            return non_resource
        verb, rest = rest[0], rest[1:]
    else:
        verb = _VERBS_BY_METHOD.get(method.upper(), "")
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]  # a resource in the namespace; else the namespace object itself
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 and verb not in _SPECIAL_VERBS_WITHOUT_SUBRESOURCES else ""
    if not name and verb == "get":
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        verb = "watch" if _query_bool(params.get("watch")) else "list"
        name = _exact_name(params.get("fieldSelector"))
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(
        verb=verb,
        resource_request=True,
        api_group=group,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        path=path,
    )


def record_attributes(record: RequestRecord) -> Attributes:
    """The authorization attributes of a request the sandbox answered."""
    return request_attributes(record.method, record.path, record.query)


def _query_bool(values: Sequence[str] | None) -> bool:
    """A boolean query parameter as the API server converts it: only absent, ``0`` and ``false`` are false
    (apimachinery's Convert_Slice_string_To_bool): ``?watch`` and ``?watch=yes`` are watches too."""
    if not values:
        return False
    return not (values[0] == "0" or values[0].lower() == "false")


def _exact_name(values: Sequence[str] | None) -> str:
    """The name a list or watch is narrowed to by ``fieldSelector=metadata.name=NAME``, if any (the
    authorizer then sees that name, so a rule with resourceNames can allow the request)."""
    if not values:
        return ""
    for term in values[0].split(","):
        for operator in ("==", "="):  # "!=" leaves "metadata.name!" on the left: no exact match
            key, found, value = term.partition(operator)
            if found and key == "metadata.name":
                # apimachinery's IsValidPathSegmentName: a name that could not be a path segment is ignored.
                valid = value not in ("", ".", "..") and "/" not in value and "%" not in value
                return value if valid else ""
    return ""


# ----- RBAC -----


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyRule:
    """One rule of a Role or ClusterRole (rbac.authorization.k8s.io/v1 PolicyRule)."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def of(cls, rule: Mapping[str, Any]) -> "PolicyRule":
        return cls(
            verbs=tuple(rule.get("verbs") or ()),
            api_groups=tuple(rule.get("apiGroups") or ()),
            resources=tuple(rule.get("resources") or ()),
            resource_names=tuple(rule.get("resourceNames") or ()),
            non_resource_urls=tuple(rule.get("nonResourceURLs") or ()),
        )


def rule_allows(rule: PolicyRule, request: Attributes) -> bool:
    """The RBAC authorizer's RuleAllows: whether this one rule allows the request."""
    if not ("*" in rule.verbs or request.verb in rule.verbs):
        return False
    if not request.resource_request:
        return any(_url_matches(pattern, request.path) for pattern in rule.non_resource_urls)
    return (
        ("*" in rule.api_groups or request.api_group in rule.api_groups)
        and any(_resource_matches(granted, request) for granted in rule.resources)
        and (not rule.resource_names or request.name in rule.resource_names)
    )


def _resource_matches(granted: str, request: Attributes) -> bool:
    # "pods" does not grant "pods/status"; "*/status" grants the status of every resource.
    if granted in ("*", request.combined_resource):
        return True
    return bool(request.subresource) and granted == f"*/{request.subresource}"


def _url_matches(pattern: str, path: str) -> bool:
    if pattern in ("*", path):
        return True
    return pattern.endswith("*") and path.startswith(pattern.rstrip("*"))


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """A role's rule as a binding grants it: everywhere (``namespace`` None), or in one namespace."""

    role: str  # "ClusterRole/NAME", or "Role/NAMESPACE/NAME"
    rule: PolicyRule
    namespace: str | None = None

    def allows(self, request: Attributes) -> bool:
        in_scope = self.namespace is None or (
            request.resource_request and request.namespace == self.namespace
        )
        return in_scope and rule_allows(self.rule, request)


# Discovery, health and version: every authenticated client may read them (the bootstrap ClusterRole
# system:discovery, bound to system:authenticated), so no role of an operator's needs to grant them.
DISCOVERY = Grant(
    role="ClusterRole/system:discovery",
    rule=PolicyRule(
        verbs=("get",),
        non_resource_urls=(
            "/livez",
            "/readyz",
            "/healthz",
            "/version",
            "/version/",
            "/openapi",
            "/openapi/*",
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
        ),
    ),
)


def service_account_grants(documents: Iterable[Mapping[str, Any]], namespace: str, name: str) -> list[Grant]:
    """Every rule the manifests' bindings grant the ServiceAccount ``namespace/name``, in its scope.

    A ClusterRoleBinding grants its ClusterRole everywhere; a RoleBinding grants its Role (or a
    ClusterRole) in the binding's namespace only. A binding to a role the documents lack grants nothing.
    """
    documents = list(documents)
    cluster_roles = {d["metadata"]["name"]: d for d in documents if d.get("kind") == "ClusterRole"}
    roles = {
        (d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
        for d in documents
        if d.get("kind") == "Role"
    }
    grants: list[Grant] = []
    for binding in documents:
        kind = binding.get("kind")
        if kind not in ("ClusterRoleBinding", "RoleBinding") or not _binds(binding, namespace, name):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace", "") if kind == "RoleBinding" else None
        if ref["kind"] == "ClusterRole":
            role, label = cluster_roles.get(ref["name"]), f"ClusterRole/{ref['name']}"
        else:
            role, label = roles.get((scope or "", ref["name"])), f"Role/{scope}/{ref['name']}"
        if role is not None:
            grants += [Grant(label, PolicyRule.of(rule), scope) for rule in role.get("rules") or []]
    return grants


def _binds(binding: Mapping[str, Any], namespace: str, name: str) -> bool:
    return any(
        subject.get("kind") == "ServiceAccount"
        and subject.get("name") == name
        and subject.get("namespace", binding["metadata"].get("namespace")) == namespace
        for subject in binding.get("subjects") or []
    )


def denied(requests: Iterable[Attributes], grants: Sequence[Grant]) -> list[Attributes]:
    """The requests no grant allows (sorted, each once): what RBAC would answer 403 Forbidden."""
    return sorted({request for request in requests if not any(g.allows(request) for g in grants)})


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Permission:
    """One verb on one resource that a grant gives: the unit of an RBAC rule one can add or remove."""

    role: str
    verb: str
    api_group: str
    resource: str
    resource_names: tuple[str, ...] = ()

    def describe(self) -> str:
        named = f" (resourceNames {list(self.resource_names)})" if self.resource_names else ""
        return f"{self.role}: {self.verb} {self.api_group or 'core'} {self.resource}{named}"


def unused(grants: Iterable[Grant], requests: Iterable[Attributes]) -> list[Permission]:
    """Each (verb, API group, resource) a grant gives that none of the requests used (resource rules only)."""
    requests = list(requests)
    found: set[Permission] = set()
    for grant in grants:
        rule = grant.rule
        for group in rule.api_groups:
            for resource in rule.resources:
                for verb in rule.verbs:
                    one = PolicyRule((verb,), (group,), (resource,), rule.resource_names)
                    narrowed = dataclasses.replace(grant, rule=one)
                    if not any(narrowed.allows(request) for request in requests):
                        found.add(Permission(grant.role, verb, group, resource, rule.resource_names))
    return sorted(found)
