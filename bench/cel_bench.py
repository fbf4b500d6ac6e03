"""Benchmark: what CEL validation rules add to the sandbox's admission of a custom object.

Admits Rollouts (Sluice's CRD) and HTTPRoutes (the upstream Gateway API CRD from
../shared/reference) through the sandbox's admission step (pruning, defaulting, schema and CEL
validation), once with the CRDs as they are and once with their rules stripped, and prints the
CPU time per create and per update (an update changes one field, as the operator does: a
route's weights, a Rollout's image). Two cases:

- **unseen**: every write carries a value never written before, so no rule outcome is cached:
  the cost of evaluating the rules;
- **repeated**: the same writes again: the outcomes come from the cache.

It prints figures; it asserts nothing. Usage: python bench/cel_bench.py [--writes 200]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import pathlib
import time
from collections.abc import Callable
from typing import Any

import yaml

from operators.api.crdgen import render_crds
from sluice_sandbox.crds import resources_from_crd
from sluice_sandbox.resources import Admission, ResourceSpec

REPO = pathlib.Path(__file__).resolve().parents[1]
HTTPROUTES = REPO.parent / "shared" / "reference" / "gateway-api" / "httproutes.yaml"


def without_rules(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: without_rules(value) for key, value in node.items() if key != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [without_rules(item) for item in node]
    return node


def admit(spec: ResourceSpec, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    assert spec.prepare is not None
    spec.prepare(spec, obj, Admission("update" if old else "create", old=old))
    return obj


def rollout(serial: int) -> dict[str, Any]:
    body = dict(yaml.safe_load((REPO / "examples" / "rollout-minimal.yaml").read_text()))
    body["metadata"] = {"name": f"web-{serial}", "namespace": "bench"}
    return body


def rollout_changed(obj: dict[str, Any], serial: int) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = f"ghcr.io/acme/web:{serial}"
    return changed


def route(serial: int) -> dict[str, Any]:
    backends = [
        {"name": f"web-{serial}", "port": 80, "weight": 90},
        {"name": f"web-{serial}-canary", "port": 80},
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": f"web-{serial}", "namespace": "bench"},
        "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": backends}]},
    }


def route_changed(obj: dict[str, Any], serial: int) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    backends = changed["spec"]["rules"][0]["backendRefs"]
    backends[0]["weight"], backends[1]["weight"] = 100 - serial % 100, serial % 100
    return changed


def measure(
    spec: ResourceSpec,
    make: Callable[[int], dict[str, Any]],
    change: Callable[[dict[str, Any], int], dict[str, Any]],
    serials: range,
) -> tuple[float, float]:
    """CPU milliseconds per create and per update."""
    bodies = [make(serial) for serial in serials]
    started = time.process_time()
    stored = [admit(spec, copy.deepcopy(body)) for body in bodies]
    create = time.process_time() - started
    updates = [(change(old, serial), old) for old, serial in zip(stored, serials, strict=True)]
    started = time.process_time()
    for new, old in updates:
        admit(spec, new, old)
    update = time.process_time() - started
    return create / len(bodies) * 1000, update / len(bodies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--writes", type=int, default=200, help="objects per measurement")
    args = parser.parse_args()
    rollouts = next(yaml.safe_load(text) for text in render_crds().values() if "kind: Rollout" in text)
    cases = [("Rollout", rollouts, rollout, rollout_changed)]
    if HTTPROUTES.is_file():
        cases.append(("HTTPRoute", yaml.safe_load(HTTPROUTES.read_text()), route, route_changed))
    else:
        print(f"(no {HTTPROUTES}: HTTPRoute skipped)")
    serials = itertools.count(step=args.writes)
    print(f"CPU ms per write, {args.writes} writes each (update: one field changed)")
    for kind, crd, make, change in cases:
        with_cel, plain = resources_from_crd(crd)[0], resources_from_crd(without_rules(crd))[0]
        measure(with_cel, make, change, range(next(serials), next(serials)))  # warm-up: compile, caches
        unseen = range(next(serials), next(serials))
        rules_unseen = measure(with_cel, make, change, unseen)
        rules_repeated = measure(with_cel, make, change, unseen)
        no_rules = measure(plain, make, change, unseen)
        print(f"{kind}:")
        print(f"  without rules     create {no_rules[0]:6.2f}  update {no_rules[1]:6.2f}")
        print(f"  rules, unseen     create {rules_unseen[0]:6.2f}  update {rules_unseen[1]:6.2f}")
        print(f"  rules, repeated   create {rules_repeated[0]:6.2f}  update {rules_repeated[1]:6.2f}")


if __name__ == "__main__":
    main()
