"""Rendering an Application: built-in types, strategy overrides, users' types, and every kind of error."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from operators.api.application import AnalysisDefaults, ApplicationSpec, RolloutDefaults
from operators.api.refs import ApplicationRef
from operators.api.rollout import Analysis, Canary, RolloutSpec
from operators.application.render import (
    APPLICATION_LABEL,
    deep_merge,
    merge_strategy,
    render_application,
)
from operators.application.types import Catalog, ComponentType, ComponentTypeError, ComponentTypes

REF = ApplicationRef(name="shop", namespace="shop", uid="uid-shop")
ANALYSIS = {
    "interval": "30s",
    "metrics": [{"name": "error-rate", "template": "request-error-rate", "thresholdRange": {"max": 0.01}}],
}
WEB: dict[str, Any] = {
    "name": "web",
    "type": "webservice",
    "image": "ghcr.io/acme/web:1.4.2",
    "replicas": 3,
    "ports": [{"name": "http", "port": 8080, "expose": 80}, {"name": "metrics", "port": 9090}],
    "env": [{"name": "LOG_LEVEL", "value": "info"}],
    "resources": {"requests": {"cpu": "100m"}},
    "route": {"parentRefs": [{"name": "public", "namespace": "infra"}], "hostnames": ["shop.example.com"]},
}
WORKER: dict[str, Any] = {"name": "worker", "type": "worker", "image": "ghcr.io/acme/worker:1.0"}


def application(*components: dict[str, Any], rollout: dict[str, Any] | None = None) -> ApplicationSpec:
    body: dict[str, Any] = {"components": [copy.deepcopy(c) for c in components]}
    if rollout is not None:
        body["rollout"] = rollout
    return ApplicationSpec.model_validate(body)


def render(spec: ApplicationSpec, catalog: Catalog | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    rendered = render_application(REF, spec, catalog or ComponentTypes().catalog())
    return rendered.rollouts, rendered.errors


def rollout_of(component: dict[str, Any], rollout: dict[str, Any] | None = None) -> dict[str, Any]:
    rollouts, errors = render(application(component, rollout=rollout))
    assert errors == {}
    return rollouts[component["name"]]


def error_of(component: dict[str, Any], catalog: Catalog | None = None, **changes: Any) -> str:
    rollouts, errors = render(application({**component, **changes}), catalog)
    assert rollouts == {}
    return errors[component["name"]]


# ---- the built-in types ---------------------------------------------------------------------------


def test_webservice_renders_pods_services_and_route() -> None:
    rollout = rollout_of(WEB, {"steps": [{"setWeight": 10}, {"setWeight": 100}], "analysis": ANALYSIS})
    spec = rollout["spec"]
    [container] = spec["template"]["spec"]["containers"]
    assert container == {
        "name": "web",
        "image": "ghcr.io/acme/web:1.4.2",
        "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
        "env": [{"name": "LOG_LEVEL", "value": "info"}],  # no valueFrom: null
        "resources": {"requests": {"cpu": "100m"}},
    }
    assert spec["template"]["metadata"]["labels"] == {
        "app.kubernetes.io/name": "web",
        "app.kubernetes.io/part-of": "shop",
    }
    assert spec["replicas"] == 3
    assert spec["service"] == {"port": 80, "targetPort": "http"}
    assert spec["traffic"] == {
        "gatewayAPI": {
            "parentRefs": [{"name": "public", "namespace": "infra"}],
            "hostnames": ["shop.example.com"],
        }
    }
    RolloutSpec.model_validate(spec)


def test_the_rollout_is_named_labelled_and_owned() -> None:
    rollout = rollout_of(WEB)
    assert (rollout["apiVersion"], rollout["kind"]) == ("sluice.dev/v1alpha1", "Rollout")
    meta = rollout["metadata"]
    assert (meta["name"], meta["namespace"]) == ("web", "shop")
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "sluice", APPLICATION_LABEL: "shop"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Application",
            "name": "shop",
            "uid": "uid-shop",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_the_rollout_spec_is_complete_so_removed_fields_can_be_seen() -> None:
    spec = rollout_of(WEB)["spec"]
    assert spec["paused"] is False and spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"]["canary"]["canaryReplicas"] == "matchWeight"


def test_webservice_without_route_has_services_but_no_traffic() -> None:
    spec = rollout_of({**WEB, "route": None})["spec"]
    assert spec["service"] == {"port": 80, "targetPort": "http"}
    assert "traffic" not in spec


def test_webservice_without_expose_serves_its_first_port_on_its_own_number() -> None:
    spec = rollout_of({**WEB, "ports": [{"name": "web", "port": 8080}]})["spec"]
    assert spec["service"] == {"port": 8080, "targetPort": "web"}


def test_webservice_route_can_name_its_httproute() -> None:
    route = {"httpRoute": "storefront", "parentRefs": [{"name": "public"}]}
    spec = rollout_of({**WEB, "route": route})["spec"]
    assert spec["traffic"]["gatewayAPI"]["httpRoute"] == "storefront"


def test_worker_has_no_service_and_no_traffic() -> None:
    spec = rollout_of(WORKER)["spec"]
    assert "service" not in spec and "traffic" not in spec
    assert spec["template"]["spec"]["containers"] == [{"name": "worker", "image": "ghcr.io/acme/worker:1.0"}]
    RolloutSpec.model_validate(spec)


def test_worker_keeps_container_ports_for_metrics() -> None:
    spec = rollout_of({**WORKER, "ports": [{"name": "metrics", "port": 9090}]})["spec"]
    assert spec["template"]["spec"]["containers"][0]["ports"] == [{"name": "metrics", "containerPort": 9090}]


def test_values_are_quoted_so_yaml_cannot_be_injected() -> None:
    env = [{"name": "GREETING", "value": "a: b\n- c # d"}, {"name": "TRUE", "value": "yes"}]
    # "true" is a valid image name (a lowercase path component) that YAML would read as a boolean.
    spec = rollout_of({**WORKER, "image": "true", "env": env})["spec"]
    [container] = spec["template"]["spec"]["containers"]
    assert container["image"] == "true"
    assert container["env"] == env  # "yes" stays a string


# ---- the strategy: spec.rollout and a component's override ----------------------------------------


def test_without_any_steps_a_release_is_one_step() -> None:
    assert rollout_of(WEB)["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 100}]


def test_spec_rollout_is_every_components_strategy() -> None:
    defaults = {"steps": [{"setWeight": 20}, {"pause": {}}], "analysis": ANALYSIS, "paused": True}
    rollouts, _ = render(application(WEB, WORKER, rollout=defaults))
    for rollout in rollouts.values():
        spec = rollout["spec"]
        assert spec["paused"] is True
        assert spec["strategy"]["canary"]["steps"] == [{"setWeight": 20}, {"pause": {}}]
        assert spec["strategy"]["canary"]["analysis"]["interval"] == "30s"


def test_a_component_overrides_field_by_field() -> None:
    defaults = {"steps": [{"setWeight": 20}], "abortScaleDownDelaySeconds": 60, "analysis": ANALYSIS}
    override = {"analysis": {"interval": "10s", "failureLimit": 2}, "progressDeadlineSeconds": 120}
    spec = rollout_of({**WEB, "rollout": override}, defaults)["spec"]
    canary = spec["strategy"]["canary"]
    assert canary["steps"] == [{"setWeight": 20}]  # inherited
    assert canary["abortScaleDownDelaySeconds"] == 60  # inherited
    assert (canary["analysis"]["interval"], canary["analysis"]["failureLimit"]) == ("10s", 2)  # overridden
    assert canary["analysis"]["metrics"][0]["name"] == "error-rate"  # merged in from the defaults
    assert spec["progressDeadlineSeconds"] == 120


def test_lists_are_replaced_not_merged() -> None:
    defaults = {"steps": [{"setWeight": 20}, {"setWeight": 50}], "analysis": ANALYSIS}
    metrics = [{"name": "jobs-failed", "query": "vector(0)", "thresholdRange": {"max": 0}}]
    override = {"steps": [{"setWeight": 100}], "analysis": {"metrics": metrics}}
    canary = rollout_of({**WORKER, "rollout": override}, defaults)["spec"]["strategy"]["canary"]
    assert canary["steps"] == [{"setWeight": 100}]
    assert [m["name"] for m in canary["analysis"]["metrics"]] == ["jobs-failed"]


@pytest.mark.parametrize(
    ("defaults", "override", "expected"),
    [
        ({"steps": [{"setWeight": 20}]}, {"stepWeight": 25}, {"stepWeight": 25}),
        ({"stepWeight": 10, "maxWeight": 50}, {"steps": [{"setWeight": 5}]}, {"steps": [{"setWeight": 5}]}),
        ({"stepWeight": 10, "maxWeight": 50}, {"stepWeight": 25}, {"stepWeight": 25, "maxWeight": 50}),
    ],
    ids=["stepWeight-replaces-steps", "steps-replace-stepWeight", "stepWeight-keeps-maxWeight"],
)
def test_steps_and_step_weight_replace_each_other(
    defaults: dict[str, Any], override: dict[str, Any], expected: dict[str, Any]
) -> None:
    merged = merge_strategy(
        RolloutDefaults.model_validate(defaults), RolloutDefaults.model_validate(override)
    )
    assert merged == expected


def test_deep_merge() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert deep_merge(base, {"a": {"c": [3]}, "e": 2}) == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # untouched


def test_rollout_defaults_mirror_the_canary_strategy() -> None:
    # A field added to the Rollout's strategy must be settable from spec.rollout too.
    outside_the_strategy = {"progress_deadline_seconds", "paused"}
    assert set(RolloutDefaults.model_fields) == set(Canary.model_fields) | outside_the_strategy
    assert set(AnalysisDefaults.model_fields) == set(Analysis.model_fields)


# ---- errors, each naming the component --------------------------------------------------------------


@pytest.mark.parametrize(
    ("component", "changes", "expected"),
    [
        (
            WEB,
            {"type": "webservise"},
            "component \"web\": unknown component type 'webservise'; known types: webservice, worker",
        ),
        (WEB, {"ports": []}, 'component "web" (type webservice): a webservice needs a port'),
        (
            WEB,
            {"ports": [{"name": "a", "port": 1, "expose": 80}, {"name": "b", "port": 2, "expose": 81}]},
            "a webservice exposes one port, but expose is set on a, b",
        ),
        (WORKER, {"route": {"parentRefs": [{"name": "public"}]}}, "a worker serves no requests"),
        (
            WORKER,
            {"ports": [{"name": "http", "port": 8080, "expose": 80}]},
            "no Services to expose ports on (http)",
        ),
        (
            WEB,
            {"rollout": {"canaryReplicas": "half"}},
            'component "web": invalid Rollout: spec.strategy.canary: canaryReplicas must be "matchWeight"',
        ),
        (WEB, {"rollout": {"maxWeight": 50}}, "maxWeight goes with stepWeight"),
    ],
    ids=[
        "unknown-type",
        "webservice-no-port",
        "two-exposed",
        "worker-route",
        "worker-expose",
        "invalid-strategy",
        "maxWeight-alone",
    ],
)
def test_errors_name_the_component(component: dict[str, Any], changes: dict[str, Any], expected: str) -> None:
    assert expected in error_of(component, **changes)


def test_one_bad_component_does_not_stop_the_others() -> None:
    rollouts, errors = render(application({**WEB, "type": "nope"}, WORKER))
    assert list(rollouts) == ["worker"] and list(errors) == ["web"]


def catalog_with(source: str, name: str = "custom") -> Catalog:
    builtins = ComponentTypes().catalog().types
    return Catalog({**builtins, name: ComponentType(name, f"/types/{name}.yaml.j2", source)})


POD = "template: {spec: {containers: [{name: c, image: {{ component.image | tojson }}}]}}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("template: {{ component.imag }}", "template uses undefined variable 'component.imag' (known: "),
        (
            "{{ component.properties.queue }}",
            "undefined variable 'component.properties.queue' (known: no component.properties given)",
        ),
        ("{% if false %}{{ app.name }}{% endif %}" + POD, "template uses undefined variable 'app'"),
        ("template: {{ component.name ", "template has a syntax error on line 1"),
        ("{{ ''.__class__.__mro__ }}", "template is not allowed by the sandbox"),
        ("{{ 'a' * 10000000 }}", "exceeds the template size limit"),
        ("{{ 1 / 0 }}", "template failed: ZeroDivisionError"),
        ("{{ fail('queue is required') }}", 'component "web" (type custom): queue is required'),
        ("template: [unclosed", "template output is not valid YAML on line 1"),
        ("- a list", "template must render a mapping with the keys template, service, traffic"),
        (POD + "\nreplicas: 3", "template renders unknown key 'replicas'"),
        ("service: {port: 80}", "template renders no pod template"),
        (POD + "\nservice: {port: 0}", "invalid Rollout: spec.service.port: Input should be greater than"),
    ],
    ids=[
        "undefined",
        "no-properties",
        "undefined-in-dead-branch",
        "syntax",
        "sandbox",
        "size",
        "python-error",
        "fail",
        "bad-yaml",
        "not-a-mapping",
        "unknown-key",
        "no-template",
        "invalid-rollout",
    ],
)
def test_template_errors(source: str, expected: str) -> None:
    message = error_of({**WEB, "type": "custom"}, catalog_with(source))
    assert expected in message
    assert message.startswith('component "web"')


# ---- users' types, from a directory -----------------------------------------------------------------

CRON = """\
{#- cron: a worker that runs on a schedule, from properties.schedule -#}
template:
  metadata:
    annotations:
      example.com/schedule: {{ component.properties.schedule | tojson }}
  spec:
    containers:
    - name: {{ component.name | tojson }}
      image: {{ component.image | tojson }}
      args: {{ component.properties.get("args", []) | tojson }}
"""


def test_a_custom_type_from_the_directory(tmp_path: Path) -> None:
    (tmp_path / "cron.yaml.j2").write_text(CRON)
    catalog = ComponentTypes(tmp_path).catalog()
    assert sorted(catalog.types) == ["cron", "webservice", "worker"]
    component = {**WORKER, "type": "cron", "properties": {"schedule": "*/5 * * * *", "args": ["--once"]}}
    rollouts, errors = render(application(component), catalog)
    assert errors == {}
    template = rollouts["worker"]["spec"]["template"]
    assert template["metadata"]["annotations"] == {"example.com/schedule": "*/5 * * * *"}
    assert template["spec"]["containers"][0]["args"] == ["--once"]


def test_a_missing_property_is_named(tmp_path: Path) -> None:
    (tmp_path / "cron.yaml.j2").write_text(CRON)
    message = error_of({**WORKER, "type": "cron"}, ComponentTypes(tmp_path).catalog())
    assert "undefined variable 'component.properties.schedule'" in message


def test_the_directory_is_read_again_when_a_file_changes(tmp_path: Path) -> None:
    types = ComponentTypes(tmp_path)
    assert "cron" not in types.catalog().types
    path = tmp_path / "cron.yaml.j2"
    path.write_text(CRON)
    assert types.catalog().types["cron"].source == CRON
    path.write_text(CRON + "# v2\n")
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    assert types.catalog().types["cron"].source.endswith("# v2\n")
    path.unlink()
    assert "cron" not in types.catalog().types


def test_other_files_in_the_directory_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a type")
    (tmp_path / "..data").mkdir()  # how kubelet mounts a ConfigMap
    assert sorted(ComponentTypes(tmp_path).catalog().types) == ["webservice", "worker"]


def test_a_type_named_like_a_built_in_stops_the_operator_at_startup(tmp_path: Path) -> None:
    (tmp_path / "webservice.yaml.j2").write_text(POD)
    with pytest.raises(ComponentTypeError, match="defines the built-in type 'webservice' again"):
        ComponentTypes(tmp_path)


def test_a_type_named_like_a_built_in_later_is_reported_on_its_components(tmp_path: Path) -> None:
    types = ComponentTypes(tmp_path)
    (tmp_path / "worker.yaml.j2").write_text(POD)
    message = error_of(WORKER, types.catalog())
    assert "defines the built-in type 'worker' again" in message


def test_a_missing_directory_stops_the_operator_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ComponentTypeError, match="not a directory"):
        ComponentTypes(tmp_path / "absent")


def test_a_bad_type_name_stops_the_operator_at_startup(tmp_path: Path) -> None:
    (tmp_path / "My_Type.yaml.j2").write_text(POD)
    with pytest.raises(ComponentTypeError, match="'My_Type' is not a type name"):
        ComponentTypes(tmp_path)
