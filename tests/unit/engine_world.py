"""A tiny in-memory cluster for driving the real Rollout engine in unit tests.

``World`` is a test double of the *cluster* (and of Prometheus), never of the
engine: every pass calls the real :func:`operators.rollout.engine.reconcile`
with what the world holds, then does what the operator's shell does with the
plan — writes the objects that differ (judged with ``covers``), keeps the new
status, collects the events — and finally plays the Deployment controller,
which rolls a Deployment out when the test lets it.

    world = World(make_spec([{"setWeight": 10}, {"pause": {}}]))
    world.settle()                       # initial deploy: Healthy
    world.set_image("web:2")             # a release
    world.settle()                       # weight 10, then paused until promoted
    world.annotate("promote", "1")
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)

Stored objects get the fields an API server would add (``api_defaults``), so
"nothing changed" is judged as the shell judges it, never by equality.
Deployments become ready as soon as they are written, unless the test holds
them with :meth:`World.hold` (then :meth:`World.set_ready` sets how many pods
of the current template are ready). Analysis follows the shell too: a check
runs only when :func:`engine.analysis_due` says so, with the outcome the test
put in :attr:`World.metrics`; ``reconcile(check=...)`` forces one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from operators.api.refs import RolloutRef
from operators.api.rollout import Check, MetricResult, Outcome, RolloutSpec, RolloutStatus
from operators.foundation.clock import format_time
from operators.foundation.diff import covers
from operators.foundation.keys import ObjectKey, key_of
from operators.rollout import engine
from operators.rollout.commands import Command
from operators.rollout.inventory import deployment_key, managed_keys, service_key
from operators.rollout.workload import revision_of

REF = RolloutRef(name="web", namespace="shop", uid="uid-web-1")
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
ROUTE_KEY = ObjectKey("gateway.networking.k8s.io/v1", "HTTPRoute", "shop", "web")


def template(image: str = "ghcr.io/acme/web:1", labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"labels": dict(labels) if labels is not None else {"app": "web"}},
        "spec": {
            "containers": [
                {"name": "web", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}
            ]
        },
    }


def make_spec(
    steps: list[dict[str, Any]] | None = None,
    *,
    analysis: Mapping[str, Any] | None = None,
    traffic: bool = True,
    replicas: int = 4,
    image: str = "ghcr.io/acme/web:1",
    canary: Mapping[str, Any] | None = None,
    **fields: Any,
) -> RolloutSpec:
    """A Rollout spec as a user would write it; ``canary`` adds fields under strategy.canary."""
    canary_body: dict[str, Any] = {} if steps is None else {"steps": steps}
    if steps is None and not (canary and "stepWeight" in canary):
        canary_body["steps"] = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]
    canary_body.update(canary or {})
    if analysis is not None:
        canary_body["analysis"] = {"interval": "30s", "metrics": [METRIC], **analysis}
    body: dict[str, Any] = {
        "replicas": replicas,
        "template": template(image),
        "strategy": {"canary": canary_body},
        "service": {"port": 80, "targetPort": "http"},
        **fields,
    }
    if traffic:
        body["traffic"] = {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "infra"}]}}
    return RolloutSpec.model_validate(body)


METRIC = {"name": "error-rate", "query": "errors", "thresholdRange": {"max": 0.01}}
# The value each outcome reports in a check, so messages can be asserted.
OUTCOME_VALUES: dict[Outcome, float | None] = {
    Outcome.PASSED: 0.002,
    Outcome.FAILED: 0.31,
    Outcome.INCONCLUSIVE: None,
    Outcome.ERROR: None,
}
OUTCOME_MESSAGES = {
    Outcome.PASSED: "",
    Outcome.FAILED: "0.31 > max 0.01",
    Outcome.INCONCLUSIVE: "no data",
    Outcome.ERROR: "connection refused",
}


def make_check(outcome: Outcome, when: datetime, metric: str = "error-rate") -> Check:
    """A check of one metric, as ``run_check`` would produce it (noData already evaluated)."""
    result = MetricResult(
        name=metric, outcome=outcome, value=OUTCOME_VALUES[outcome], message=OUTCOME_MESSAGES[outcome]
    )
    return Check(time=format_time(when), outcome=outcome, metrics=[result])


@dataclass
class Pass:
    """One reconcile: what the engine saw and decided, and what the world wrote."""

    plan: engine.Plan
    before: RolloutStatus
    check: Check | None
    # Keys of the objects the plan changed (created or replaced); empty when nothing differed.
    writes: list[ObjectKey] = field(default_factory=list)


def api_defaults(obj: dict[str, Any]) -> None:
    """Fields a real API server (and the Deployment controller) add to what we write.

    Live objects never equal the desired ones; the engine must still see them
    as unchanged (``covers``), and must not trip over them when it reads a live
    template back.
    """
    meta = obj["metadata"]
    meta.setdefault("uid", f"uid-{meta['name']}-{obj['kind'].lower()}")
    meta.setdefault("creationTimestamp", format_time(T0))
    spec = obj.setdefault("spec", {})
    if obj["kind"] == "Deployment":
        meta.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = str(meta["generation"])
        spec.setdefault("progressDeadlineSeconds", 600)
        pod = spec.get("template", {})
        pod.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        pod_spec = pod.setdefault("spec", {})
        pod_spec.setdefault("restartPolicy", "Always")
        pod_spec.setdefault("dnsPolicy", "ClusterFirst")
        for container in pod_spec.get("containers", []):
            container.setdefault("imagePullPolicy", "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
    elif obj["kind"] == "Service":
        spec.setdefault("clusterIP", "10.96.0.10")
        spec.setdefault("sessionAffinity", "None")
    elif obj["kind"] == "HTTPRoute":
        for rule in spec.get("rules", []):
            rule.setdefault("matches", [{"path": {"type": "PathPrefix", "value": "/"}}])
            for backend in rule.get("backendRefs", []):
                backend.setdefault("group", "")
                backend.setdefault("kind", "Service")


class World:
    def __init__(
        self, spec: RolloutSpec, *, ref: RolloutRef = REF, now: datetime = T0, defaults: bool = True
    ) -> None:
        self.spec = spec
        self.ref = ref
        self.now = now
        # Whether stored objects get the fields an API server adds (see api_defaults).
        self.defaults = defaults
        self.generation = 1
        self.status = RolloutStatus()
        self.annotations: dict[str, str] = {}
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        self.problems: list[str] = []
        # What Prometheus says when the shell runs a check; None runs no check at all.
        self.metrics: Outcome | None = Outcome.PASSED
        self.passes: list[Pass] = []
        self._held: set[str] = set()
        # The revision history the shell keeps (ControllerRevisions): revision -> pod template.
        self.history: dict[str, dict[str, Any]] = {}

    # ---- the user ---------------------------------------------------------------------------

    def set_spec(self, spec: RolloutSpec) -> None:
        """A `kubectl apply` of a changed spec: the generation goes up."""
        self.spec = spec
        self.generation += 1

    def set_image(self, image: str) -> None:
        spec = self.spec.model_copy(deep=True)
        spec.template["spec"]["containers"][0]["image"] = image
        self.set_spec(spec)

    def update(self, **fields: Any) -> None:
        """Change top-level spec fields (``paused=True``...) by their wire names."""
        body = self.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
        body.update(fields)
        self.set_spec(RolloutSpec.model_validate(body))

    def annotate(self, command: Command | str, value: str) -> None:
        name = command.annotation if isinstance(command, Command) else f"sluice.dev/{command}"
        self.annotations[name] = value

    # ---- the cluster ------------------------------------------------------------------------

    def key(self, name: str, kind: str = "Deployment") -> ObjectKey:
        if kind == "Deployment":
            return deployment_key(self.ref, name)
        if kind == "Service":
            return service_key(self.ref, name)
        return ObjectKey("gateway.networking.k8s.io/v1", kind, self.ref.namespace, name)

    def deployment(self, name: str) -> dict[str, Any]:
        return self.objects[deployment_key(self.ref, name)]

    @property
    def stable(self) -> dict[str, Any]:
        return self.deployment(self.ref.name)

    @property
    def canary(self) -> dict[str, Any]:
        return self.deployment(self.ref.canary_name)

    def replicas(self, name: str) -> int:
        return int(self.deployment(name)["spec"]["replicas"])

    def image(self, name: str) -> str:
        return str(self.deployment(name)["spec"]["template"]["spec"]["containers"][0]["image"])

    def revision(self, name: str) -> str | None:
        return revision_of(self.deployment(name))

    def route_weights(self) -> tuple[int, int] | None:
        """(stable, canary) backendRef weights of the HTTPRoute, or None without one."""
        route = self.objects.get(ROUTE_KEY)
        if route is None:
            return None
        refs = route["spec"]["rules"][0]["backendRefs"]
        weights = {ref["name"]: ref["weight"] for ref in refs}
        return weights[self.ref.name], weights[self.ref.canary_name]

    def put(self, obj: Mapping[str, Any]) -> None:
        """An object created by someone else (or anything the test wants live)."""
        self.objects[key_of(obj)] = copy.deepcopy(dict(obj))

    def hold(self, *names: str) -> None:
        """Stop Deployments from becoming ready by themselves; they report no ready pod now."""
        for name in names:
            self._held.add(name)
            if deployment_key(self.ref, name) in self.objects:
                self.set_ready(name, 0)

    def release(self, *names: str) -> None:
        """Let held Deployments roll out again (at once)."""
        for name in names:
            self._held.discard(name)
            self._roll_out(name)

    def set_ready(self, name: str, ready: int | None = None, *, updated: int | None = None) -> None:
        """The Deployment controller's view: ``ready`` pods of the current template (default all)."""
        obj = self.deployment(name)
        wanted = int(obj.get("spec", {}).get("replicas", 1))
        ready = wanted if ready is None else ready
        obj["status"] = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": max(wanted, ready),
            "updatedReplicas": ready if updated is None else updated,
            "readyReplicas": ready,
        }

    def _roll_out(self, name: str) -> None:
        if deployment_key(self.ref, name) in self.objects:
            self.set_ready(name)

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> list[ObjectKey]:
        """What the shell does with a plan: create what is missing, replace what differs."""
        writes = []
        for obj in objects:
            key = key_of(obj)
            live = self.objects.get(key)
            if live is not None and covers(live, obj):
                continue
            stored = copy.deepcopy(dict(obj))
            generation = int((live or {}).get("metadata", {}).get("generation") or 0) + 1
            stored["metadata"]["generation"] = generation
            if self.defaults:
                api_defaults(stored)
            if key.kind == "Deployment":
                old = (live or {}).get("status")
                # The controller has not seen the new spec yet.
                stored["status"] = copy.deepcopy(old) if old else {"observedGeneration": generation - 1}
            self.objects[key] = stored
            writes.append(key)
        for name in (self.ref.name, self.ref.canary_name):
            if name not in self._held:
                self._roll_out(name)
        return writes

    # ---- the operator -------------------------------------------------------------------------

    def delete(self, name: str) -> None:
        """Someone deletes a Deployment (and its pods go with it)."""
        del self.objects[deployment_key(self.ref, name)]

    def observed(self, check: Check | None = None) -> engine.Observed:
        stable_missing = deployment_key(self.ref, self.ref.name) not in self.objects
        known = self.status.stable_revision
        return engine.Observed(
            ref=self.ref,
            generation=self.generation,
            annotations=dict(self.annotations),
            effective_template=copy.deepcopy(self.spec.template),
            objects={key: copy.deepcopy(self.objects.get(key)) for key in managed_keys(self.ref, self.spec)},
            check=check,
            problems=tuple(self.problems),
            stable_record=copy.deepcopy(self.history.get(known or "")) if stable_missing else None,
        )

    def plan(self, check: Check | None = None) -> engine.Plan:
        """The engine's decision on the current world, without applying it."""
        return engine.reconcile(self.spec, self.status, self.observed(check), self.now)

    def analysis_due(self) -> bool:
        return engine.analysis_due(self.spec, self.status, self.now)

    def reconcile(self, check: Check | None = None, *, outcome: Outcome | None = None) -> engine.Plan:
        """One pass of the operator. A check runs when due (``outcome`` overrides metrics for it)."""
        if check is None and self.analysis_due():
            result = outcome or self.metrics
            if result is not None:
                check = make_check(result, self.now)
        before = self.status
        plan = self.plan(check)
        writes = self.apply(plan.objects)
        for revision, recorded in plan.records.items():
            self.history.setdefault(revision, copy.deepcopy(dict(recorded)))
        self.status = plan.status
        self.passes.append(Pass(plan=plan, before=before, check=check, writes=writes))
        return plan

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def run_until(
        self, done: Callable[[World], bool], *, max_passes: int = 60, follow_requeue: bool = True
    ) -> engine.Plan:
        """Reconcile until ``done``; between passes the clock moves by the plan's requeue_after."""
        for _ in range(max_passes):
            plan = self.reconcile()
            if done(self):
                return plan
            if follow_requeue:
                self.advance(plan.requeue_after)
        raise AssertionError(f"not done after {max_passes} passes: {self.status.phase} {self.status.message}")

    def settle(self, max_passes: int = 30) -> engine.Plan:
        """Reconcile until a pass takes no step, writes nothing and leaves status as it was.

        The clock does not move: timed pauses and analysis intervals do not pass.
        """
        for _ in range(max_passes):
            plan = self.reconcile()
            if plan.requeue_after > 0 and not self.last.writes and plan.status == self.last.before:
                return plan
        raise AssertionError(f"not settled after {max_passes} passes: {self.status.message}")

    # ---- what happened ------------------------------------------------------------------------

    @property
    def last(self) -> Pass:
        return self.passes[-1]

    def events(self, since: int = 0) -> list[engine.EventNote]:
        return [note for p in self.passes[since:] for note in p.plan.events]

    def reasons(self, since: int = 0) -> list[str]:
        return [note.reason for note in self.events(since)]

    def actions(self) -> list[str]:
        """History actions, oldest first (status.history is newest first)."""
        return [entry.action for entry in reversed(self.status.history)]
