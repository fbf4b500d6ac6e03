"""The watch cache: what the reconcilers read instead of asking the API server."""

from __future__ import annotations

from typing import Any

from operators.foundation.cache import WatchCache, Watched, parse_equality_selector
from operators.foundation.keys import ObjectKey

MANAGED = "app.kubernetes.io/managed-by=sluice"
DEPLOYMENTS = Watched("apps/v1", "Deployment", MANAGED)
NAMESPACES = Watched("v1", "Namespace", cluster_scoped=True)


def deployment(name: str, version: int, namespace: str = "shop", managed: bool = True) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "sluice"} if managed else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(version), "labels": labels},
        "spec": {"replicas": version},
    }


def key(name: str, namespace: str = "shop") -> ObjectKey:
    return ObjectKey("apps/v1", "Deployment", namespace, name)


def test_a_watch_event_is_served_until_the_next_one() -> None:
    cache = WatchCache([DEPLOYMENTS])
    cache.observe(deployment("web", 3))
    assert cache.lookup(key("web")) == (True, deployment("web", 3))
    cache.observe(deployment("web", 4))
    assert cache.lookup(key("web"))[1] == deployment("web", 4)
    cache.observe(deployment("web", 5), deleted=True)
    assert cache.lookup(key("web")) == (False, None)  # unknown again: the next read asks once


def test_readers_get_copies() -> None:
    cache = WatchCache([DEPLOYMENTS])
    cache.observe(deployment("web", 3))
    _, body = cache.lookup(key("web"))
    assert body is not None
    body["spec"]["replicas"] = 99
    assert cache.lookup(key("web"))[1] == deployment("web", 3)


def test_an_event_older_than_our_own_write_does_not_go_back_in_time() -> None:
    cache = WatchCache([DEPLOYMENTS])
    cache.remember(key("web"), deployment("web", 7), ours=True)
    cache.observe(deployment("web", 6))  # was already in flight when we wrote
    assert cache.lookup(key("web"))[1] == deployment("web", 7)
    cache.observe(deployment("web", 8))
    assert cache.lookup(key("web"))[1] == deployment("web", 8)


def test_a_read_never_overwrites_what_a_watch_delivered_meanwhile() -> None:
    cache = WatchCache([DEPLOYMENTS])
    cache.observe(deployment("web", 9))
    cache.remember(key("web"), deployment("web", 8))  # a GET answered before the event
    assert cache.lookup(key("web"))[1] == deployment("web", 9)
    cache.remember(key("gone"), None)
    assert cache.lookup(key("gone")) == (True, None)  # known absent: no request for it either


def test_only_what_a_watch_keeps_current_is_remembered() -> None:
    cache = WatchCache([DEPLOYMENTS], namespaces=["shop"])
    cache.remember(key("mine", "shop"), deployment("mine", 1, managed=False))  # the watch filters it out
    cache.remember(key("web", "other"), deployment("web", 1, namespace="other"))  # not a watched namespace
    cache.remember(ObjectKey("v1", "Pod", "shop", "p"), {"metadata": {"name": "p", "namespace": "shop"}})
    assert cache.lookup(key("mine")) == (False, None)
    assert cache.lookup(key("web", "other")) == (False, None)
    assert cache.lookup(ObjectKey("v1", "Pod", "shop", "p")) == (False, None)


def test_forgetting_makes_the_next_read_ask() -> None:
    cache = WatchCache([DEPLOYMENTS])
    cache.observe(deployment("web", 3))
    cache.forget(key("web"))
    assert cache.lookup(key("web")) == (False, None)


def test_a_listed_kind_is_selected_by_namespace_and_labels() -> None:
    cache = WatchCache([DEPLOYMENTS, NAMESPACES])
    assert not cache.listed(DEPLOYMENTS.key)
    cache.fill(DEPLOYMENTS, [deployment("b", 1), deployment("a", 2), deployment("c", 3, namespace="x")])
    assert cache.listed(DEPLOYMENTS.key)
    names = [b["metadata"]["name"] for b in cache.select(DEPLOYMENTS.key, "shop", {})]
    assert names == ["a", "b"]
    assert len(cache.select(DEPLOYMENTS.key, None, {})) == 3
    assert cache.select(DEPLOYMENTS.key, None, {"team": "red"}) == []
    cache.observe(deployment("a", 5), deleted=True)
    assert [b["metadata"]["name"] for b in cache.select(DEPLOYMENTS.key, "shop", {})] == ["b"]


def test_forgetting_an_object_of_a_listed_kind_makes_the_next_list_ask() -> None:
    cache = WatchCache([DEPLOYMENTS])
    cache.fill(DEPLOYMENTS, [deployment("a", 1), deployment("b", 1)])
    cache.forget(key("a"))
    assert not cache.listed(DEPLOYMENTS.key)  # a list from here would wrongly miss "a"


def test_our_own_delete_keeps_the_kind_listed() -> None:
    cache = WatchCache([DEPLOYMENTS])
    cache.fill(DEPLOYMENTS, [deployment("a", 1), deployment("b", 1)])
    cache.removed(key("a"))
    assert cache.listed(DEPLOYMENTS.key)  # pruning a revision must not make the next list ask
    assert [b["metadata"]["name"] for b in cache.select(DEPLOYMENTS.key, "shop", {})] == ["b"]


def test_a_fill_keeps_newer_copies() -> None:
    cache = WatchCache([DEPLOYMENTS])
    cache.observe(deployment("a", 9))
    cache.fill(DEPLOYMENTS, [deployment("a", 4)])
    assert cache.lookup(key("a"))[1] == deployment("a", 9)


def test_equality_selectors_only() -> None:
    assert parse_equality_selector("") == {}
    assert parse_equality_selector("a=b, c = d") == {"a": "b", "c": "d"}
    assert parse_equality_selector("a==b") is None
    assert parse_equality_selector("a!=b") is None
    assert parse_equality_selector("a in (b)") is None
    assert parse_equality_selector("a") is None


def owned(name: str, owner: str | None, version: int, namespace: str = "shop") -> dict[str, Any]:
    body = deployment(name, version, namespace)
    if owner is not None:
        body["metadata"]["labels"]["sluice.dev/rollout"] = owner
    return body


def test_lists_by_the_owner_label_follow_every_change() -> None:
    indexed = Watched("apps/v1", "Deployment", MANAGED, index_label="sluice.dev/rollout")
    cache = WatchCache([indexed])
    cache.fill(indexed, [owned("a", "web", 1), owned("b", "web", 1), owned("c", "api", 1)])
    cache.fill(indexed, [owned("a", "web", 1, namespace="other")])

    def names(owner: str, namespace: str = "shop") -> list[str]:
        return [
            b["metadata"]["name"] for b in cache.select(indexed.key, namespace, {"sluice.dev/rollout": owner})
        ]

    assert names("web") == ["a", "b"]
    assert names("web", "other") == ["a"]
    cache.observe(owned("b", "api", 2))  # moved to another owner
    cache.observe(owned("a", None, 2))  # lost the label
    cache.observe(owned("c", "api", 3), deleted=True)
    assert names("web") == []
    assert names("api") == ["b"]
    cache.remember(key("d"), owned("d", "web", 1), ours=True)
    assert names("web") == ["d"]
