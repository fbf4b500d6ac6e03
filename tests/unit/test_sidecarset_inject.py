"""The pure injection function: merging, ordering, collisions, records and revisions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from operators.sidecarset.inject import (
    INJECTED_ANNOTATION,
    inject,
    records_of,
    revisions_of,
    sidecar_from_template,
    without_record,
    without_sidecars,
)
from tests.unit.sidecar_world import pod_template, sidecar


def names(template: dict[str, Any], field: str = "containers") -> list[str]:
    return [item["name"] for item in template["spec"].get(field) or []]


BEFORE = sidecar("a-proxy", containers=[{"name": "proxy", "image": "envoy:1"}])
AFTER = sidecar(
    "b-logs",
    containers=[{"name": "logs", "image": "fluent-bit:3", "podInjectPolicy": "AfterAppContainer"}],
    initContainers=[{"name": "logs-init", "image": "busybox:1"}],
    volumes=[{"name": "log-buffer", "emptyDir": {}}],
)


@pytest.mark.parametrize(
    ("template", "sidecars", "containers", "init", "volumes", "injected", "conflicted"),
    [
        pytest.param(pod_template("app"), [], ["app"], [], [], [], [], id="nothing-to-inject"),
        pytest.param(pod_template("app"), [BEFORE], ["proxy", "app"], [], [], ["a-proxy"], [], id="before"),
        pytest.param(
            pod_template("app", volumes=("data",)),
            [AFTER],
            ["app", "logs"],
            ["logs-init"],
            ["data", "log-buffer"],
            ["b-logs"],
            [],
            id="after-with-init-and-volume",
        ),
        pytest.param(
            pod_template("app"),
            [AFTER, BEFORE],  # any order in, name order out
            ["proxy", "app", "logs"],
            ["logs-init"],
            ["log-buffer"],
            ["a-proxy", "b-logs"],
            [],
            id="two-in-name-order",
        ),
        pytest.param(
            pod_template("proxy"), [BEFORE], ["proxy"], [], [], [], ["a-proxy"], id="container-collision"
        ),
        pytest.param(
            pod_template("app", volumes=("log-buffer",)),
            [AFTER, BEFORE],
            ["proxy", "app"],
            [],
            ["log-buffer"],
            ["a-proxy"],
            ["b-logs"],
            id="volume-collision-skips-only-that-sidecarset",
        ),
        pytest.param(
            pod_template("logs-init"),
            [AFTER],
            ["logs-init"],
            [],
            [],
            [],
            ["b-logs"],
            id="init-container-name-collides-with-app-container",
        ),
        pytest.param(
            pod_template("app"),
            [BEFORE, sidecar("c-other", containers=[{"name": "proxy", "image": "x:1"}])],
            ["proxy", "app"],
            [],
            [],
            ["a-proxy"],
            ["c-other"],
            id="two-sidecarsets-same-name-first-wins",
        ),
    ],
)
def test_inject(
    template: dict[str, Any],
    sidecars: list[Any],
    containers: list[str],
    init: list[str],
    volumes: list[str],
    injected: list[str],
    conflicted: list[str],
) -> None:
    result = inject(template, sidecars)
    assert names(result.template) == containers
    assert names(result.template, "initContainers") == init
    assert names(result.template, "volumes") == volumes
    assert list(result.injected) == injected
    assert sorted(result.conflicts) == conflicted
    assert sorted(records_of(result.template)) == injected


def test_collision_never_overwrites_the_app() -> None:
    app = pod_template("proxy")
    result = inject(app, [BEFORE])
    assert result.template == app
    assert "container(s) proxy" in result.conflicts["a-proxy"]
    assert "never overwritten" in result.conflicts["a-proxy"]


def test_inject_does_not_touch_its_input() -> None:
    app = pod_template("app")
    before = json.dumps(app, sort_keys=True)
    inject(app, [BEFORE, AFTER])
    assert json.dumps(app, sort_keys=True) == before


def test_injecting_twice_changes_nothing() -> None:
    once = inject(pod_template("app"), [BEFORE, AFTER]).template
    twice = inject(once, [BEFORE, AFTER])
    assert twice.template == once and twice.injected == ()


def test_without_sidecars_gives_back_the_users_own_template() -> None:
    # `kubectl sluice undo` releases a recorded (effective) template: the sidecars must not become the
    # user's own containers, or the SidecarSet could never inject (nor upgrade) them again.
    own = pod_template("app", volumes=("data",))
    injected = inject(own, [BEFORE, AFTER]).template
    assert without_sidecars(injected) == own
    assert without_sidecars(own) == own


def test_the_record_names_what_each_sidecarset_added() -> None:
    result = inject(pod_template("app"), [BEFORE, AFTER]).template
    raw = json.loads(result["metadata"]["annotations"][INJECTED_ANNOTATION])
    assert raw["b-logs"] == {
        "revision": AFTER.revision,
        "imageFree": AFTER.image_free,
        "before": [],
        "after": ["logs"],
        "initContainers": ["logs-init"],
        "volumes": ["log-buffer"],
    }
    assert revisions_of(result) == {"a-proxy": BEFORE.revision, "b-logs": AFTER.revision}


def test_recipe_is_the_input_plus_the_record_only() -> None:
    result = inject(pod_template("app"), [BEFORE])
    assert names(result.recipe) == ["app"]
    assert result.recipe["metadata"]["annotations"] == result.template["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("change", "same_revision", "same_image_free"),
    [
        pytest.param({}, True, True, id="identical"),
        pytest.param({"image": "fluent-bit:3.2"}, False, True, id="image-only"),
        pytest.param({"env": [{"name": "X", "value": "1"}]}, False, False, id="env"),
        pytest.param({"podInjectPolicy": "AfterAppContainer"}, False, False, id="position"),
    ],
)
def test_revisions(change: dict[str, Any], same_revision: bool, same_image_free: bool) -> None:
    base = sidecar(containers=[{"name": "log-agent", "image": "fluent-bit:3.1"}])
    changed = sidecar(containers=[{"name": "log-agent", "image": "fluent-bit:3.1", **change}])
    assert (base.revision == changed.revision) is same_revision
    assert (base.image_free == changed.image_free) is same_image_free


def test_init_container_image_is_not_an_in_place_change() -> None:
    base = sidecar(initContainers=[{"name": "init", "image": "busybox:1"}])
    changed = sidecar(initContainers=[{"name": "init", "image": "busybox:2"}])
    assert base.image_free != changed.image_free


def test_old_parts_are_read_back_from_a_live_template_with_server_defaults() -> None:
    live = inject(pod_template("app"), [BEFORE, AFTER]).template
    for container in live["spec"]["containers"]:
        container["terminationMessagePath"] = "/dev/termination-log"  # as the API server fills in
    old = sidecar_from_template("b-logs", live)
    assert old is not None
    assert old.revision == AFTER.revision and old.record() == AFTER.record()
    assert [c["name"] for c in old.after] == ["logs"]
    assert old.after[0]["terminationMessagePath"] == "/dev/termination-log"
    assert sidecar_from_template("absent", live) is None
    del live["spec"]["volumes"]
    assert sidecar_from_template("b-logs", live) is None, "a part its record names is gone"


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"x": {"no-revision": 1}}'])
def test_an_unreadable_record_means_nothing_recorded(text: str) -> None:
    template = {"metadata": {"annotations": {INJECTED_ANNOTATION: text}}, "spec": {}}
    assert records_of(template) == {}


def test_without_record_drops_only_our_annotation() -> None:
    template = inject(pod_template("app"), [BEFORE]).template
    template["metadata"]["annotations"]["team"] = "shop"
    assert without_record(template)["metadata"]["annotations"] == {"team": "shop"}
    bare = inject(pod_template("app"), [BEFORE]).template
    assert "annotations" not in without_record(bare)["metadata"]
