"""Requests as kube-apiserver's authorizer sees them, and RBAC rules evaluated over them."""

from typing import Any

import pytest

from sluice_sandbox.authz import (
    DISCOVERY,
    Attributes,
    Grant,
    Permission,
    PolicyRule,
    denied,
    record_attributes,
    request_attributes,
    rule_allows,
    service_account_grants,
    unused,
)
from sluice_sandbox.requestlog import RequestRecord

NS = "/api/v1/namespaces/shop"
ROLLOUTS = "/apis/sluice.dev/v1alpha1/namespaces/shop/rollouts"


def resource(
    verb: str, group: str, plural: str, namespace: str = "", name: str = "", subresource: str = ""
) -> tuple[str, str, str, str, str, str]:
    return (verb, group, plural, subresource, namespace, name)


def summary(attributes: Attributes) -> tuple[str, str, str, str, str, str]:
    assert attributes.resource_request
    return (
        attributes.verb,
        attributes.api_group,
        attributes.resource,
        attributes.subresource,
        attributes.namespace,
        attributes.name,
    )


# ----- the verb, and what the request is about -----


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        # An object: its verb is the method's.
        ("GET", f"{ROLLOUTS}/web", "", resource("get", "sluice.dev", "rollouts", "shop", "web")),
        ("HEAD", f"{ROLLOUTS}/web", "", resource("get", "sluice.dev", "rollouts", "shop", "web")),
        ("PUT", f"{ROLLOUTS}/web", "", resource("update", "sluice.dev", "rollouts", "shop", "web")),
        ("PATCH", f"{ROLLOUTS}/web", "", resource("patch", "sluice.dev", "rollouts", "shop", "web")),
        # Server-side apply is a PATCH like any other.
        (
            "PATCH",
            f"{ROLLOUTS}/web",
            "fieldManager=sluice&force=true",
            resource("patch", "sluice.dev", "rollouts", "shop", "web"),
        ),
        ("DELETE", f"{ROLLOUTS}/web", "", resource("delete", "sluice.dev", "rollouts", "shop", "web")),
        # A collection: GET lists or watches, POST creates, DELETE deletes the collection.
        ("GET", ROLLOUTS, "", resource("list", "sluice.dev", "rollouts", "shop")),
        (
            "GET",
            ROLLOUTS,
            "labelSelector=app%3Dweb&limit=5",
            resource("list", "sluice.dev", "rollouts", "shop"),
        ),
        ("GET", ROLLOUTS, "watch=true", resource("watch", "sluice.dev", "rollouts", "shop")),
        ("GET", ROLLOUTS, "watch=1&resourceVersion=7", resource("watch", "sluice.dev", "rollouts", "shop")),
        ("POST", ROLLOUTS, "", resource("create", "sluice.dev", "rollouts", "shop")),
        ("DELETE", ROLLOUTS, "", resource("deletecollection", "sluice.dev", "rollouts", "shop")),
        # Across namespaces, and a cluster-scoped kind: no namespace.
        (
            "GET",
            "/apis/sluice.dev/v1alpha1/rollouts",
            "watch=true",
            resource("watch", "sluice.dev", "rollouts"),
        ),
        ("GET", "/api/v1/pods", "labelSelector=x", resource("list", "", "pods")),
        (
            "PATCH",
            "/apis/sluice.dev/v1alpha1/sidecarsets/agent",
            "",
            resource("patch", "sluice.dev", "sidecarsets", name="agent"),
        ),
        # A subresource.
        (
            "PATCH",
            f"{ROLLOUTS}/web/status",
            "",
            resource("patch", "sluice.dev", "rollouts", "shop", "web", subresource="status"),
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/shop/deployments/web/scale",
            "",
            resource("update", "apps", "deployments", "shop", "web", subresource="scale"),
        ),
        # The core group: /api/v1, group "".
        ("POST", f"{NS}/events", "", resource("create", "", "events", "shop")),
        ("PUT", f"{NS.replace('shop', 'ops')}/leases/x", "", resource("update", "", "leases", "ops", "x")),
        # A namespace is in its own namespace; its status and finalize are its subresources.
        ("GET", NS, "", resource("get", "", "namespaces", "shop", "shop")),
        ("GET", "/api/v1/namespaces", "watch=true", resource("watch", "", "namespaces")),
        (
            "PUT",
            f"{NS}/status",
            "",
            resource("update", "", "namespaces", "shop", "shop", subresource="status"),
        ),
        (
            "PUT",
            f"{NS}/finalize",
            "",
            resource("update", "", "namespaces", "shop", "shop", subresource="finalize"),
        ),
        # The deprecated /watch/ path prefix names the verb, with or without an object name.
        ("GET", "/api/v1/watch/namespaces/shop/pods", "", resource("watch", "", "pods", "shop")),
        ("GET", "/api/v1/watch/namespaces/shop/pods/p", "", resource("watch", "", "pods", "shop", "p")),
        # A proxy's trailing path is the proxied one, never a subresource.
        (
            "GET",
            "/api/v1/proxy/namespaces/shop/pods/p/metrics",
            "",
            resource("proxy", "", "pods", "shop", "p"),
        ),
        # A method the API has no verb for.
        ("OPTIONS", f"{ROLLOUTS}/web", "", resource("", "sluice.dev", "rollouts", "shop", "web")),
    ],
)
def test_a_resource_request_has_the_attributes_kube_apiserver_gives_it(
    method: str, path: str, query: str, expected: tuple[str, ...]
) -> None:
    assert summary(request_attributes(method, path, query)) == expected


@pytest.mark.parametrize(
    ("query", "verb"),
    [
        # Any value but "0" and "false" (in any case) is true, as the API server converts query booleans.
        ("watch=true", "watch"),
        ("watch=1", "watch"),
        ("watch=True", "watch"),
        ("watch=", "watch"),
        ("watch", "watch"),
        ("watch=yes", "watch"),
        ("watch=false", "list"),
        ("watch=FALSE", "list"),
        ("watch=0", "list"),
        ("watch=0&watch=1", "list"),  # the first value counts
        ("allowWatchBookmarks=true", "list"),
        ("", "list"),
    ],
)
def test_a_collection_get_is_a_watch_only_when_asked_for_one(query: str, verb: str) -> None:
    assert request_attributes("GET", ROLLOUTS, query).verb == verb


@pytest.mark.parametrize(
    ("field_selector", "name"),
    [
        ("metadata.name%3Dweb", "web"),
        ("metadata.name%3D%3Dweb", "web"),
        ("spec.x%3Dy%2Cmetadata.name%3Dweb", "web"),
        ("metadata.name!%3Dweb", ""),
        ("metadata.namespace%3Dshop", ""),
        ("metadata.name%3D..", ""),  # not a valid path segment: no name
    ],
)
def test_a_list_narrowed_to_one_name_is_authorized_for_that_name(field_selector: str, name: str) -> None:
    # So that a rule with resourceNames can allow the list or watch of that one object.
    attributes = request_attributes("GET", ROLLOUTS, f"watch=1&fieldSelector={field_selector}")
    assert (attributes.verb, attributes.name) == ("watch", name)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/version"),
        ("GET", "/healthz"),
        ("GET", "/api"),
        ("GET", "/api/v1"),
        ("GET", "/apis"),
        ("GET", "/apis/sluice.dev"),
        ("GET", "/apis/sluice.dev/v1alpha1"),
        ("GET", "/openapi/v2"),
        ("POST", "/logs/x/y"),
        ("GET", "/api/v1/watch"),  # a special verb with nothing to apply it to
    ],
)
def test_other_paths_are_non_resource_requests_with_the_methods_verb(method: str, path: str) -> None:
    attributes = request_attributes(method, path)
    assert (attributes.resource_request, attributes.verb, attributes.path) == (False, method.lower(), path)


def test_a_recorded_request_is_read_from_its_method_path_and_query() -> None:
    record = RequestRecord(0.0, "GET", ROLLOUTS, "watch=1", "sluice-operator/0.1.0", 200)
    assert summary(record_attributes(record)) == resource("watch", "sluice.dev", "rollouts", "shop")


def test_describe_names_the_verb_resource_and_scope() -> None:
    assert request_attributes("PATCH", f"{ROLLOUTS}/web/status").describe() == (
        "patch sluice.dev rollouts/status 'web' in shop"
    )
    assert request_attributes("GET", "/api/v1/pods").describe() == "list core pods cluster-wide"
    assert request_attributes("GET", "/apis").describe() == "get /apis"


# ----- RBAC rules -----


def rule(**fields: Any) -> PolicyRule:
    return PolicyRule.of(fields)


def ours(*resources: str, verbs: tuple[str, ...], names: tuple[str, ...] = ()) -> PolicyRule:
    """A rule on sluice.dev resources."""
    return rule(
        apiGroups=["sluice.dev"], resources=list(resources), verbs=list(verbs), resourceNames=list(names)
    )


WEB = f"{ROLLOUTS}/w"
WEB_STATUS = f"{ROLLOUTS}/w/status"


@pytest.mark.parametrize(
    ("granted", "method", "path", "query", "allowed"),
    [
        (ours("rollouts", verbs=("get",)), "GET", WEB, "", True),
        (ours("rollouts", verbs=("get",)), "GET", ROLLOUTS, "", False),
        (ours("rollouts", verbs=("list",)), "GET", ROLLOUTS, "", True),
        (ours("rollouts", verbs=("list",)), "GET", ROLLOUTS, "watch=1", False),
        (rule(apiGroups=["apps"], resources=["rollouts"], verbs=["get"]), "GET", WEB, "", False),
        (rule(apiGroups=["*"], resources=["rollouts"], verbs=["*"]), "DELETE", WEB, "", True),
        # A resource does not grant its subresources, nor a subresource its resource.
        (ours("rollouts", verbs=("patch",)), "PATCH", WEB_STATUS, "", False),
        (ours("rollouts/status", verbs=("patch",)), "PATCH", WEB_STATUS, "", True),
        (ours("rollouts/status", verbs=("patch",)), "PATCH", WEB, "", False),
        (ours("*/status", verbs=("patch",)), "PATCH", WEB_STATUS, "", True),
        (ours("*/status", verbs=("patch",)), "PATCH", WEB, "", False),
        (ours("*", verbs=("patch",)), "PATCH", WEB_STATUS, "", True),
        # resourceNames: only requests that name one of them (a create or a plain list names none).
        (ours("rollouts", verbs=("get",), names=("w",)), "GET", WEB, "", True),
        (ours("rollouts", verbs=("get",), names=("w",)), "GET", f"{ROLLOUTS}/x", "", False),
        (ours("rollouts", verbs=("list",), names=("w",)), "GET", ROLLOUTS, "", False),
        (
            ours("rollouts", verbs=("list",), names=("w",)),
            "GET",
            ROLLOUTS,
            "fieldSelector=metadata.name%3Dw",
            True,
        ),
        (ours("rollouts", verbs=("create",), names=("w",)), "POST", ROLLOUTS, "", False),
        # Non-resource URLs: only by a nonResourceURLs rule; a trailing * is a prefix.
        (rule(nonResourceURLs=["/apis", "/apis/*"], verbs=["get"]), "GET", "/apis/sluice.dev/v1", "", True),
        (rule(nonResourceURLs=["/apis"], verbs=["get"]), "GET", "/apis/sluice.dev", "", False),
        (rule(nonResourceURLs=["/metrics"], verbs=["get"]), "POST", "/metrics", "", False),
        (rule(apiGroups=["*"], resources=["*"], verbs=["*"]), "GET", "/version", "", False),
        (rule(nonResourceURLs=["*"], verbs=["get"]), "GET", WEB, "", False),
    ],
)
def test_a_rule_allows_what_the_rbac_authorizer_would(
    granted: PolicyRule, method: str, path: str, query: str, allowed: bool
) -> None:
    assert rule_allows(granted, request_attributes(method, path, query)) is allowed


def test_a_role_binding_grants_in_its_namespace_only() -> None:
    leases = rule(apiGroups=["coordination.k8s.io"], resources=["leases"], verbs=["get"])
    in_ops = Grant("Role/ops/lease", leases, namespace="ops")
    everywhere = Grant("ClusterRole/lease", leases)
    ops = request_attributes("GET", "/apis/coordination.k8s.io/v1/namespaces/ops/leases/x")
    shop = request_attributes("GET", "/apis/coordination.k8s.io/v1/namespaces/shop/leases/x")
    across = request_attributes("GET", "/apis/coordination.k8s.io/v1/leases/x")
    assert [in_ops.allows(r) for r in (ops, shop, across)] == [True, False, False]
    assert [everywhere.allows(r) for r in (ops, shop, across)] == [True, True, True]


def test_discovery_is_every_clients() -> None:
    paths = ["/api", "/api/v1", "/apis", "/apis/apps/v1", "/version", "/healthz", "/openapi/v2"]
    assert all(DISCOVERY.allows(request_attributes("GET", path)) for path in paths)
    assert not DISCOVERY.allows(request_attributes("GET", "/metrics"))
    assert not DISCOVERY.allows(request_attributes("POST", "/apis"))
    assert not DISCOVERY.allows(request_attributes("GET", "/api/v1/pods"))


# ----- a ServiceAccount's grants, and comparing them with requests -----

ROLE_DOCS: list[dict[str, Any]] = [
    {
        "kind": "ClusterRole",
        "metadata": {"name": "op"},
        "rules": [
            {"apiGroups": ["sluice.dev"], "resources": ["rollouts"], "verbs": ["list", "watch", "patch"]},
            {"apiGroups": ["sluice.dev"], "resources": ["rollouts/status"], "verbs": ["patch", "update"]},
        ],
    },
    {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "op"},
        "roleRef": {"kind": "ClusterRole", "name": "op"},
        "subjects": [{"kind": "ServiceAccount", "name": "sluice", "namespace": "system"}],
    },
    {
        "kind": "Role",
        "metadata": {"name": "lease", "namespace": "system"},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create"]}
        ],
    },
    {
        "kind": "RoleBinding",
        "metadata": {"name": "lease", "namespace": "system"},
        "roleRef": {"kind": "Role", "name": "lease"},
        "subjects": [{"kind": "ServiceAccount", "name": "sluice"}],
    },  # its namespace: the binding's
    # Bound to someone else, or to a role that is not there: nothing for our account.
    {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "other"},
        "roleRef": {"kind": "ClusterRole", "name": "op"},
        "subjects": [{"kind": "ServiceAccount", "name": "sluice", "namespace": "elsewhere"}],
    },
    {
        "kind": "RoleBinding",
        "metadata": {"name": "gone", "namespace": "system"},
        "roleRef": {"kind": "Role", "name": "missing"},
        "subjects": [{"kind": "ServiceAccount", "name": "sluice"}],
    },
    # A ClusterRole bound by a RoleBinding: granted in that namespace only.
    {
        "kind": "ClusterRole",
        "metadata": {"name": "events"},
        "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}],
    },
    {
        "kind": "RoleBinding",
        "metadata": {"name": "events", "namespace": "shop"},
        "roleRef": {"kind": "ClusterRole", "name": "events"},
        "subjects": [{"kind": "ServiceAccount", "name": "sluice", "namespace": "system"}],
    },
]


def test_the_grants_of_a_service_account_are_its_bindings_roles_in_their_scope() -> None:
    grants = service_account_grants(ROLE_DOCS, "system", "sluice")
    assert [(g.role, g.namespace, g.rule.verbs) for g in grants] == [
        ("ClusterRole/op", None, ("list", "watch", "patch")),
        ("ClusterRole/op", None, ("patch", "update")),
        ("Role/system/lease", "system", ("get", "create")),
        ("ClusterRole/events", "shop", ("create",)),
    ]
    assert service_account_grants(ROLE_DOCS, "system", "someone") == []


def test_requests_are_compared_with_the_grants_both_ways() -> None:
    grants = service_account_grants(ROLE_DOCS, "system", "sluice")
    lease = "/apis/coordination.k8s.io/v1/namespaces/system/leases/op"
    requests = [
        request_attributes("GET", "/apis/sluice.dev/v1alpha1/rollouts", "watch=true"),
        request_attributes("GET", "/apis/sluice.dev/v1alpha1/rollouts"),
        request_attributes("PATCH", f"{ROLLOUTS}/web"),
        request_attributes("PATCH", f"{ROLLOUTS}/web/status"),
        request_attributes("GET", lease),
        request_attributes("POST", f"{NS}/events"),
        request_attributes("GET", "/apis"),
        # Refused: a verb not granted, a Role's resource outside its namespace, an Event elsewhere.
        request_attributes("PUT", f"{ROLLOUTS}/web"),
        request_attributes("PUT", f"{ROLLOUTS}/web"),  # reported once
        request_attributes("GET", lease.replace("/system/", "/shop/")),
        request_attributes("POST", "/api/v1/namespaces/other/events"),
    ]
    assert [r.describe() for r in denied(requests, [*grants, DISCOVERY])] == [
        "create core events in other",
        "get coordination.k8s.io leases 'op' in shop",
        "update sluice.dev rollouts 'web' in shop",
    ]
    assert unused(grants, requests) == [
        Permission("ClusterRole/op", "update", "sluice.dev", "rollouts/status"),
        Permission("Role/system/lease", "create", "coordination.k8s.io", "leases"),
    ]
    assert unused(grants, requests)[1].describe() == "Role/system/lease: create coordination.k8s.io leases"


def test_a_named_grant_is_used_only_by_requests_for_its_names() -> None:
    named = rule(
        apiGroups=["admissionregistration.k8s.io"],
        resources=["mutatingwebhookconfigurations"],
        resourceNames=["ours"],
        verbs=["get", "update"],
    )
    grants = [Grant("ClusterRole/op", named)]
    path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    requests = [request_attributes("GET", f"{path}/ours"), request_attributes("PUT", f"{path}/theirs")]
    assert [p.describe() for p in unused(grants, requests)] == [
        "ClusterRole/op: update admissionregistration.k8s.io mutatingwebhookconfigurations "
        "(resourceNames ['ours'])"
    ]
    assert [r.describe() for r in denied(requests, grants)] == [
        "update admissionregistration.k8s.io mutatingwebhookconfigurations 'theirs' cluster-wide"
    ]
