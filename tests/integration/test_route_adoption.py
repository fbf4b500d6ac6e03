"""Adopting an existing HTTPRoute: the real operator, the sandbox, a GitOps-like field manager.

The route is the user's, with two rules: the first sends everything to Service
`web`, the second (a header match and a filter) to another Service. A Rollout
named `web` adopts it: only the first rule's backendRefs change, the second is
the same at every version of the route the test sees. A GitOps tool re-applying
the user's copy mid-release is undone, with an Event; deleting the Rollout hands
the route back exactly as the user wrote it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from operators.rollout.inventory import rollout_key
from tests import scenarios
from tests.harness import POLL_SECONDS, Harness, httproute
from tests.integration.test_gitops_and_sluice import apply_as

GITOPS = "gitops"
ADOPTED_BY = "sluice.dev/adopted-by"


def users_route(ns: str) -> dict[str, Any]:
    """The route as the user keeps it in Git."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": ns, "labels": {"team": "shop"}},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "default"}],
            "hostnames": ["shop.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": "web", "port": 80}],
                },
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/api"},
                            "headers": [{"name": "x-beta", "value": "1"}],
                        }
                    ],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"add": [{"name": "x-from", "value": "gateway"}]},
                        }
                    ],
                    "backendRefs": [{"name": "api", "port": 8080, "weight": 3}],
                },
            ],
        },
    }


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def stable_rule_weights(route: dict[str, Any] | None) -> dict[str, int]:
    refs = ((route or {}).get("spec") or {}).get("rules", [{}])[0].get("backendRefs") or []
    return {ref["name"]: int(ref.get("weight", 1)) for ref in refs}


class RouteWatcher:
    """Reads the route over and over in a thread: every version of its second rule seen."""

    def __init__(self, h: Harness, ns: str) -> None:
        self.h, self.key = h, httproute(ns, "web")
        self.seen: dict[str, str] = {}  # resourceVersion -> the second rule, as canonical JSON
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RouteWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS / 2):  # the pace of the sampling, not a wait
            route = self.h.get(self.key)
            if route is not None:
                rules = route["spec"].get("rules") or []
                second = rules[1] if len(rules) > 1 else None
                self.seen[route["metadata"]["resourceVersion"]] = canonical(second)


@pytest.fixture
def watcher(scene: scenarios.Scene) -> Iterator[RouteWatcher]:
    with RouteWatcher(scene.harness, scene.namespace) as watching:
        yield watching


def reasons(h: Harness, ns: str) -> list[str]:
    return [event["reason"] for event in h.events(ns, "web")]


def test_an_existing_two_rule_route_is_adopted_released_through_and_handed_back(
    scene: scenarios.Scene, watcher: RouteWatcher
) -> None:
    h, ns = scene.harness, scene.namespace
    h.ensure_namespace(ns)
    apply_as(h, GITOPS, users_route(ns), force=True)
    original = h.read(httproute(ns, "web"))  # with the API server's defaults filled in
    second_rule = canonical(original["spec"]["rules"][1])

    stable = scenarios.deploy_stable(scene, scenarios.web_rollout())
    adopted = h.wait_object(
        httproute(ns, "web"),
        lambda r: stable_rule_weights(r) == {"web": 100, "web-canary": 0},
        scenarios.RELEASE_TIMEOUT,
        "the route to be adopted",
    )
    meta = adopted["metadata"]
    assert meta["annotations"][ADOPTED_BY] == "web"
    assert not meta.get("ownerReferences"), "an adopted route must never be garbage-collected"
    assert meta["labels"]["team"] == "shop"
    assert adopted["spec"]["parentRefs"] == original["spec"]["parentRefs"]
    assert adopted["spec"]["hostnames"] == original["spec"]["hostnames"]
    # Events are posted once the pass's writes are done: a moment after the route changed.
    h.wait(
        lambda: reasons(h, ns), lambda seen: "Adopted" in seen, scenarios.RELEASE_TIMEOUT, "the Adopted Event"
    )

    # A release, step by step; at its first weight, a GitOps tool re-applies the user's copy.
    h.set_image(ns, "web", scene.images[1])
    h.wait_object(
        httproute(ns, "web"),
        lambda r: stable_rule_weights(r).get("web-canary", 0) > 0,
        scenarios.RELEASE_TIMEOUT,
        "the canary to get traffic on the adopted route",
    )
    apply_as(h, GITOPS, users_route(ns), force=True)
    h.wait(
        lambda: reasons(h, ns),
        lambda seen: "AdoptedDriftRestored" in seen,
        scenarios.RELEASE_TIMEOUT,
        "the AdoptedDriftRestored Event",
    )
    h.wait_object(
        httproute(ns, "web"),
        lambda r: "web-canary" in stable_rule_weights(r),
        scenarios.RELEASE_TIMEOUT,
        "the canary backendRef to be restored",
    )
    h.wait_rollout(
        ns,
        "web",
        lambda r: scenarios.promoted(r.get("status") or {}, stable),
        scenarios.RELEASE_TIMEOUT,
        "the release to be promoted",
    )
    assert stable_rule_weights(h.read(httproute(ns, "web"))) == {"web": 100, "web-canary": 0}

    # Deleting the Rollout hands the route back as the user wrote it, and keeps it.
    h.cluster.delete(rollout_key(ns, "web"))
    h.wait(
        lambda: h.get(rollout_key(ns, "web")),
        lambda r: r is None,
        scenarios.RELEASE_TIMEOUT,
        "the Rollout gone",
    )
    handed = h.read(httproute(ns, "web"))
    assert canonical(handed["spec"]) == canonical(original["spec"])
    assert ADOPTED_BY not in (handed["metadata"].get("annotations") or {})
    assert handed["metadata"]["labels"] == {"team": "shop"}

    versions = dict(watcher.seen)
    assert len(versions) >= 4, f"too few versions of the route seen to tell: {sorted(versions)}"
    changed = {version: rule for version, rule in versions.items() if rule != second_rule}
    assert changed == {}, "the second rule changed"
