"""The Rollout state machine: a pure function from what is to what should be.

``reconcile(spec, status, observed, now)`` returns a :class:`Plan`: the objects
to apply, the status to write, the events to post and when to look again. It
reads nothing and writes nothing; the kopf handlers do both. Every decision is
made from ``status`` and the observed objects, never from memory, so an
operator restarted mid-release takes up the same step with the same weights.

The life of a release::

    new revision -> steps (setWeight / setHeaderRoute / setMirrorRoute / pause, gated by analysis)
                 -> promoting -> Healthy
                          \\-> analysis fails, deadline passes, or abort -> Degraded / Aborted

A release whose traffic object its traffic system explicitly refuses (an HTTPRoute its
Gateway did not accept, or whose backends it could not resolve) holds where it is, Paused
and Stalled, until the refusal is gone (see ``_hold_for_traffic``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from operators.api.base import parse_duration
from operators.api.hooks import HookKind, HookOutcome, HookRun
from operators.api.refs import RolloutRef
from operators.api.rollout import (
    TEMPLATE_OR_WORKLOAD,
    AdoptionPhase,
    AnalysisStatus,
    Check,
    HistoryEntry,
    Outcome,
    Phase,
    PostPromotionStatus,
    RolloutSpec,
    RolloutStatus,
    Step,
)
from operators.foundation.clock import format_time, parse_time, seconds_since
from operators.foundation.keys import ObjectKey, key_of
from operators.rollout import hooks, verdicts
from operators.rollout.adoption import Adoption, adopt
from operators.rollout.bluegreen_stages import analysing as blue_green_analysing
from operators.rollout.bluegreen_stages import analysis_of
from operators.rollout.commands import Command, PendingCommand, pending_commands
from operators.rollout.conditions import RELEASING, STUCK, rollout_conditions
from operators.rollout.inventory import (
    canary_deployment_key,
    managed_keys,
    stable_deployment_key,
    stable_service_key,
    workload_key,
)
from operators.rollout.ownership import conflict_message, is_owned_by
from operators.rollout.render import (
    RenderError,
    canary_replicas,
    name_problems,
    pod_selector,
    pod_template_revision,
    render_deployment,
    render_service,
    with_restart,
)
from operators.rollout.routing import routing_of
from operators.rollout.scale import pod_count, selector_text
from operators.rollout.workload import is_rolled_out, ready_replicas, revision_of, template_of
from operators.traffic.base import CannotAdopt, Refusal, Weights
from operators.traffic.routes import NO_ROUTES, Routes, with_header_route, with_mirror_route

HISTORY_LIMIT = 20
# With nothing timed to wait for, look again this often anyway: a safety net
# for missed watch events, not the way progress is normally noticed.
RESYNC_SECONDS = 30.0


@dataclass(frozen=True)
class Observed:
    """Everything the engine may know about the world, read by the shell just before."""

    ref: RolloutRef
    generation: int
    annotations: Mapping[str, str]
    # spec.template plus the sidecars of matching SidecarSets: what the pods will run.
    effective_template: Mapping[str, Any]
    # Every key of managed_keys(): the live object, or None when it does not exist.
    objects: Mapping[ObjectKey, Mapping[str, Any] | None]
    # The analysis check the shell ran this round because analysis_due() said so.
    check: Check | None = None
    # Problems the shell found in the spec that the schema cannot catch (query templates).
    problems: Sequence[str] = ()
    # The revision of effective_template when the shell knows better than hashing it: with sidecars,
    # the hash of what they were made from (operators/sidecarset/effective.py). None: hash the template.
    revision: str | None = None
    # When the stable Deployment is missing: the template recorded for status.stableRevision.
    stable_record: Mapping[str, Any] | None = None
    # While a promoted release is verified: the recorded template of status.postPromotion.previousRevision.
    previous_record: Mapping[str, Any] | None = None
    # The hooks the shell ran since the last pass (status.hooks' Pending ones), answered.
    hook_answers: Sequence[HookRun] = ()

    def template_revision(self) -> str:
        return self.revision or pod_template_revision(self.effective_template)


@dataclass(frozen=True)
class EventNote:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Plan:
    status: RolloutStatus
    objects: list[dict[str, Any]] = field(default_factory=list)
    events: list[EventNote] = field(default_factory=list)
    # Seconds until the engine wants to look again; 0 means "at once" (a step was taken).
    requeue_after: float = RESYNC_SECONDS
    # Revisions to keep in the history (revisions.py): revision -> its pod template.
    records: dict[str, Mapping[str, Any]] = field(default_factory=dict)


def reconcile(spec: RolloutSpec, status: RolloutStatus, observed: Observed, now: datetime) -> Plan:
    if spec.strategy.blue_green is not None:
        # Imported here: the blue-green pass is a subclass of this module's.
        from operators.rollout.bluegreen import BlueGreenReconciliation

        return BlueGreenReconciliation(spec, status, observed, now).run()
    return _Reconciliation(spec, status, observed, now).run()


def analysis_due(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    """Should the shell query the metrics before calling :func:`reconcile`?"""
    analysis = analysis_of(spec, status)
    if analysis is None or not _analysing(spec, status):
        return False
    due = verdicts.next_check_at(analysis, status.analysis, status.weight_changed_at)
    return due is None or now >= due


def _analysing(spec: RolloutSpec, status: RolloutStatus) -> bool:
    """Analysis runs from the first step that sends the canary requests until promotion: a non-zero
    weight, or a header or mirror route (a mirrored canary is analysed before it answers a user).
    Blue-green: while its stage analyses the preview or the switched version."""
    if spec.strategy.blue_green is not None:
        return status.phase in RELEASING and blue_green_analysing(status)
    if verifying_after_promotion(status):
        return True
    steps = spec.strategy.canary.effective_steps() if spec.strategy.canary is not None else []
    return (
        status.phase in RELEASING
        and status.canary_revision is not None
        and status.current_step_index is not None
        and status.current_step_index < len(steps)
        and _receives_requests(status)
    )


def verifying_after_promotion(status: RolloutStatus) -> bool:
    """A canary release promoted, its new stable under postPromotionAnalysis."""
    return (
        status.post_promotion is not None and status.canary_revision is not None and status.phase in RELEASING
    )


def _receives_requests(status: RolloutStatus) -> bool:
    """Whether the canary gets any requests: a weight, or a header or mirror route."""
    return status.canary_weight > 0 or bool(status.header_routes) or bool(status.mirror_routes)


def active_routes(status: RolloutStatus) -> Routes:
    """The header and mirror routes the status says are in force."""
    return Routes(headers=tuple(status.header_routes), mirrors=tuple(status.mirror_routes))


def blocked_status(
    status: RolloutStatus, generation: int, reason: str, message: str, now: datetime
) -> RolloutStatus:
    """Status for a Rollout that cannot be acted on (invalid spec, conflicts): say why, touch nothing."""
    result = status.model_copy(deep=True)
    result.observed_generation = generation
    result.message = message
    result.phase = result.phase or Phase.DEGRADED
    result.conditions = rollout_conditions(
        result.phase, reason, message, generation, status.conditions, now, stalled=True
    )
    return result


class _Reconciliation:
    """One pass of the state machine. Mutates only its own copy of the status."""

    def __init__(self, spec: RolloutSpec, status: RolloutStatus, observed: Observed, now: datetime) -> None:
        self.spec = spec
        self.before = status
        self.s = status.model_copy(deep=True)
        self.obs = observed
        self.now = now
        self.ref = observed.ref
        canary = spec.strategy.canary
        self.steps: list[Step] = canary.effective_steps() if canary is not None else []
        self.analysis = analysis_of(spec, status)
        # The traffic provider bound to this Rollout's Services; None without `traffic`.
        self.routing = routing_of(self.ref, spec)
        self.events: list[EventNote] = []
        self.took_step = False
        self.reason = "Reconciled"
        # Set when the release cannot go on without someone fixing something outside the Rollout.
        self.stalled = False
        pending = pending_commands(observed.annotations, status.handled_commands)
        self.commands = {p.command: p for p in pending}
        self.stable_obj = observed.objects.get(stable_deployment_key(self.ref, spec))
        self.canary_obj = observed.objects.get(canary_deployment_key(self.ref, spec))
        # The user's Deployment (workloadRef) and Service being adopted, and this pass's steps.
        self.adoption = Adoption()
        # What to render, set by the mode handlers below.
        self.stable_template: Mapping[str, Any] = observed.effective_template
        self.stable_revision = ""
        self.canary_count = 0
        self.wake_at: list[datetime] = []
        self.revision = ""
        # Set when this pass starts a release: a check the shell ran measured the previous canary.
        self.fresh_release = False
        self.records: dict[str, Mapping[str, Any]] = {}

    # ---- entry -------------------------------------------------------------------------------

    def run(self) -> Plan:
        if self.obs.problems or self._render_problems():
            return self._blocked("InvalidSpec", [*self.obs.problems, *self._render_problems()])
        if (self.spec.template is None) == (self.spec.workload_ref is None):
            return self._blocked("InvalidSpec", [TEMPLATE_OR_WORKLOAD])
        self.adoption = self._adopt()
        conflicts = self._conflicts()
        if self.adoption.problems or conflicts:
            reason = "ObjectConflict" if conflicts else self.adoption.reason
            return self._blocked(reason, [*self.adoption.problems, *conflicts])
        self.revision = self.obs.template_revision()
        stable_rev = revision_of(self.stable_obj) if self.stable_obj is not None else self._lost_stable()
        self.stable_revision = stable_rev or self.revision
        if self.stable_obj is not None:
            self.stable_template = template_of(self.stable_obj) or self.obs.effective_template
        self._take_hook_answers()
        self._take_restart()

        rolled_back = self.revision == self.s.canary_revision and self.s.phase in STUCK
        if stable_rev is not None and rolled_back:
            # Also when the stable still runs this revision: rolled back after promotion without the
            # previous template to go back to, it stays so until the template changes or a retry.
            self._rolled_back()
        elif stable_rev is None or (self.revision == stable_rev and not self._promoting()):
            self._steady()
        elif self.revision == self.s.canary_revision and self._promoting():
            self._promote()
        else:
            if self.revision != self.s.canary_revision or self.s.phase not in RELEASING:
                self._start_release(stable_rev)
            self._progress()
        try:
            return self._plan()
        except RenderError as error:
            # Only the live stable template can fail here (e.g. it lacks a selector label added
            # since): report it like any invalid spec instead of raising out of the engine.
            return self._blocked("InvalidSpec", [str(error)])
        except CannotAdopt as refused:
            # An adopted object that cannot take this step's header or mirror routes (an Istio route
            # mirroring already): routing.problems judged it without them. Hold the release, saying why.
            return self._blocked("ObjectConflict", [f"cannot adopt: {refused.message}"])

    # ---- guards ------------------------------------------------------------------------------

    def _render_problems(self) -> list[str]:
        try:
            pod_selector(self.ref, self.spec)
        except RenderError as error:
            return [*name_problems(self.ref), str(error)]
        return name_problems(self.ref)

    def _conflicts(self) -> list[str]:
        # The user's Deployment and stable Service are adopted, not owned: _adopt judges them.
        adopted = {workload_key(self.ref, self.spec), stable_service_key(self.ref, self.spec)}
        # So are traffic objects that are someone else's: the routing judges them (routing.py).
        traffic = self.routing.keys() if self.routing is not None else []
        return [
            conflict_message(key.kind, key.name, key.namespace)
            for key, obj in self.obs.objects.items()
            if obj is not None
            and key not in adopted
            and key not in traffic
            and not is_owned_by(obj, self.ref)
        ] + (self.routing.problems(self.obs.objects) if self.routing is not None else [])

    def _adopt(self) -> Adoption:
        """This pass's steps in taking over the user's Deployment and Service (adoption.py)."""
        workload = workload_key(self.ref, self.spec)
        service = stable_service_key(self.ref, self.spec)
        stable_selector: dict[str, str] = {}
        if self.spec.service is not None:
            stable_selector = self._stable_service()["spec"]["selector"]
        return adopt(
            self.ref,
            self.spec,
            self.before.adoption,
            (workload, self.obs.objects.get(workload)) if workload is not None else None,
            (service, self.obs.objects.get(service)) if service is not None else None,
            stable_selector,
            stable_ready=is_rolled_out(
                self.stable_obj, revision_of(self.stable_obj) or "", self.spec.replicas
            ),
        )

    def _blocked(self, reason: str, problems: list[str]) -> Plan:
        message = "; ".join(problems)
        status = blocked_status(self.before, self.obs.generation, reason, message, self.now)
        events = [] if self.before.message == message else [EventNote("Warning", reason, message)]
        return Plan(status=status, objects=[], events=events, requeue_after=RESYNC_SECONDS)

    def _lost_stable(self) -> str | None:
        """The stable Deployment is missing: the revision to recreate it with, or None (first deploy).

        Never the canary's template: a deleted stable Deployment must come back
        as the version that was serving, from the revision history, while the
        release (and its analysis) goes on where it was.
        """
        known = self.before.stable_revision
        if known is None:
            return None
        name = stable_deployment_key(self.ref, self.spec).name
        if self.obs.stable_record is not None:
            self.stable_template = self.obs.stable_record
        elif known == self.revision:
            self.stable_template = self.obs.effective_template
        else:
            self._event(
                "Warning",
                "StableTemplateUnknown",
                f"Deployment {name} was deleted and the template of stable revision {known} is not in "
                f"the revision history: deploying revision {self.revision} as stable",
            )
            return None
        self._event(
            "Warning", "StableRecreated", f"Deployment {name} was deleted: recreating stable revision {known}"
        )
        return known

    # ---- modes -------------------------------------------------------------------------------

    def _steady(self) -> None:
        """No release under way: the spec's revision is (or becomes) the stable one."""
        if self.s.canary_revision is not None and self.s.canary_revision != self.revision:
            self._record("release-cancelled", f"template is back to stable revision {self.revision}")
            self._event(
                "Normal",
                "ReleaseCancelled",
                f"release of {self.s.canary_revision} cancelled: "
                f"the template is back to stable revision {self.revision}",
            )
        self._drop_release()
        self.stable_template = self.obs.effective_template
        self.stable_revision = self.revision
        self._ignore_commands("no release in progress")
        ready = ready_replicas(self.stable_obj)
        if self.adoption.waiting is not None:
            # Not serving as Sluice's until the user's workload has handed over its traffic.
            self._set_phase(
                Phase.INITIALIZING,
                "Adopting",
                f"{self.adoption.waiting} (stable {ready}/{self.spec.replicas} ready)",
            )
        elif is_rolled_out(self.stable_obj, self.revision, self.spec.replicas):
            if self.s.phase != Phase.HEALTHY:
                self.records = {self.revision: self.obs.effective_template}
                self._record("healthy", f"revision {self.revision} serving with {ready} replica(s)")
                self._event("Normal", "Healthy", f"revision {self.revision} is serving")
            self._set_phase(
                Phase.HEALTHY, "Healthy", f"revision {self.revision}: {ready}/{self.spec.replicas} ready"
            )
        else:
            # Never served yet (possibly after being blocked): this is the first deployment.
            first = self.before.phase in (None, Phase.INITIALIZING) or self.before.stable_revision is None
            phase = Phase.INITIALIZING if first else Phase.PROGRESSING
            self._set_phase(
                phase,
                "Deploying",
                f"deploying revision {self.revision}: {ready}/{self.spec.replicas} replicas ready",
            )
        self.s.stable_revision = self.revision

    def _start_release(self, stable_rev: str | None) -> None:
        if self.s.canary_revision and self.s.phase in RELEASING:
            self._record("release-superseded", f"revision {self.revision} replaces {self.s.canary_revision}")
        self.s.canary_revision = self.revision
        self.s.stable_revision = stable_rev
        self.records = {
            self.stable_revision: self.stable_template,
            self.revision: self.obs.effective_template,
        }
        self.s.current_step_index = 0
        self.s.step_started_at = format_time(self.now)
        self._set_weight(0)
        self._clear_routes()  # a new release starts its steps, and its routes, from the first
        self.s.aborted_at = None
        self.s.analysis = AnalysisStatus()
        self.s.post_promotion = None
        # A release's hooks start afresh (a notification still unanswered for the last one is dropped);
        # its preRollout hooks are asked once its first canary pod is ready (_held_for_pre_rollout).
        self.s.hooks = []
        self.s.phase = Phase.PROGRESSING
        message = f"release of revision {self.revision} started (stable {stable_rev})"
        self._record("release-started", message)
        self._event("Normal", "ReleaseStarted", message)
        self.took_step = True
        self.fresh_release = True

    def _progress(self) -> None:
        """The step machine of a release under way."""
        if self._take(Command.ABORT):
            self._rollback("aborted by the sluice.dev/abort annotation", aborted=True)
            return
        if self._take(Command.PROMOTE_FULL):
            self._record("promote-full", "remaining steps and analysis skipped")
            self._event("Normal", "Promoting", f"sluice.dev/promote-full: promoting revision {self.revision}")
            self.s.current_step_index = len(self.steps)
            self.s.step_started_at = format_time(self.now)
            self.took_step = True
            self._promote()
            return
        if self._analyse():
            return
        self.canary_count = self._canary_pods(self.s.canary_weight)
        if self._held_for_pre_rollout():
            return
        if self._held_where_it_is(self.analysis.inconclusive_limit if self.analysis else 0):
            return
        index = self.s.current_step_index or 0
        step = self.steps[index]
        if step.set_weight is not None:
            self._weight_step(step.set_weight)
        elif step.sets_routes():
            self._route_step(step)
        else:
            self._pause_step(step)
        self._ignore_commands("nothing to do at this step")

    def _held_where_it_is(self, inconclusive_limit: int | None) -> bool:
        """Inconclusive checks past the limit (None: no limit), spec.paused or a refused route hold the
        release at its step (or stage); True when one does."""
        if inconclusive_limit is not None and self.s.analysis.inconclusive > inconclusive_limit:
            if self._take(Command.PROMOTE):
                self.s.analysis.inconclusive = 0
                self._record("promote", "inconclusive analysis accepted; release goes on")
            else:
                reason = verdicts.verdict_reason(self.analysis, self.s.analysis) if self.analysis else ""
                self._set_phase(Phase.PAUSED, "InconclusiveAnalysis", self._at_step(reason))
                return True
        if self.spec.paused:
            self._ignore_commands("spec.paused holds the release; set spec.paused to false to go on")
            self._set_phase(Phase.PAUSED, "Paused", self._at_step("paused by spec.paused"))
            return True
        refusals = self.routing.refusals(self.obs.objects) if self.routing is not None else []
        if refusals:
            self._hold_for_traffic(refusals)
            return True
        return False

    def _weight_step(self, target: int) -> None:
        needed = self._canary_pods(target)
        self.canary_count = needed
        if target != self.s.canary_weight:
            # Less traffic never waits; more traffic waits for pods to take it.
            ready = is_rolled_out(self.canary_obj, self.revision, needed)
            if target > self.s.canary_weight and not ready:
                self._await_canary(needed)
                return
            self._record("set-weight", f"canary weight {self.s.canary_weight}% -> {target}%")
            self._set_weight(target)
            self.took_step = True
        if self._gate_open():
            self._advance()
        else:
            self._set_phase(Phase.PROGRESSING, "Analysing", self._at_step("waiting for analysis"))

    def _route_step(self, step: Step) -> None:
        """Set or remove a header or mirror route: requests to the canary, so it needs ready pods first."""
        headers, mirrors = list(self.s.header_routes), list(self.s.mirror_routes)
        if step.set_header_route is not None:
            headers = with_header_route(headers, step.set_header_route)
        if step.set_mirror_route is not None:
            mirrors = with_mirror_route(mirrors, step.set_mirror_route)
        if (headers, mirrors) != (self.s.header_routes, self.s.mirror_routes):
            needed = max(1, self._canary_pods(self.s.canary_weight))
            self.canary_count = needed
            # Like more weight, a route set waits for the pods to take its requests; removing one never waits.
            if _sets_a_route(step) and not is_rolled_out(self.canary_obj, self.revision, needed):
                self._await_canary(needed)
                return
            self._record("set-route", _describe_route_step(step))
            self.s.header_routes, self.s.mirror_routes = headers, mirrors
            self._traffic_changed()
            self.canary_count = self._canary_pods(self.s.canary_weight)
            self.took_step = True
        if self._gate_open():
            self._advance()
        else:
            self._set_phase(Phase.PROGRESSING, "Analysing", self._at_step("waiting for analysis"))

    def _canary_pods(self, weight: int) -> int:
        """The canary's pods at `weight`: at least one while a header or mirror route sends it requests,
        and while preRollout hooks are to test it."""
        pods = canary_replicas(self.spec, weight)
        needs_one = self.s.header_routes or self.s.mirror_routes or not self._pre_rollout_gate().open
        return max(pods, 1) if needs_one else pods

    def _pre_rollout_gate(self) -> hooks.Gate:
        return hooks.gate(self.s.hooks, self.spec, HookKind.PRE_ROLLOUT, self.revision)

    def _held_for_pre_rollout(self) -> bool:
        """preRollout hooks test the new version before any user reaches it (smoke tests, as in
        Flagger): they are asked once the canary's first pod is ready, at weight 0."""
        gate = self._pre_rollout_gate()
        if gate.open:
            return False
        if gate.failed is None and not is_rolled_out(self.canary_obj, self.revision, self.canary_count):
            self._await_canary(self.canary_count)
            return True
        return self._held_by_hooks(HookKind.PRE_ROLLOUT)

    def _clear_routes(self) -> None:
        """Promotion and rollback end every header and mirror route."""
        if self.s.header_routes or self.s.mirror_routes:
            self.s.header_routes, self.s.mirror_routes = [], []
            self._traffic_changed()

    def _hold_for_traffic(self, refusals: Sequence[Refusal]) -> None:
        """The traffic system refuses the route (no such Gateway, a missing backend...): no step and no
        weight change until it accepts it, while the stable version serves as it did. Held as paused,
        so that the next weight step's progress deadline starts when the hold ends."""
        detail = "; ".join(refusal.message for refusal in refusals)
        self._ignore_commands(f"the release is held until its route is accepted ({detail})")
        self.stalled = True
        self._set_phase(Phase.PAUSED, refusals[0].reason, self._at_step(f"held: {detail}"))
        if detail not in (self.before.message or ""):  # told once, not at every pass of the hold
            self._event("Warning", refusals[0].reason, f"release of revision {self.revision} held: {detail}")

    def _await_canary(self, needed: int) -> None:
        self._await_pods(f"canary {self.ref.canary_name}", needed, "WaitingForCanary", "canary pods")

    def _await_pods(self, subject: str, needed: int, reason: str, pods: str) -> None:
        """Wait for `needed` ready pods of the new version's Deployment, at most
        progressDeadlineSeconds from the step's start; past it, roll back."""
        if self.before.phase == Phase.PAUSED:
            # Just resumed (spec.paused, inconclusive analysis): while held, the canary kept the
            # pods of its current weight only, so the deadline for this step's pods starts now;
            # like a Deployment's, it does not count time spent paused.
            self.s.step_started_at = format_time(self.now)
        waited = seconds_since(self.s.step_started_at, self.now)
        ready = ready_replicas(self.canary_obj)
        if waited > self.spec.progress_deadline_seconds:
            self._rollback(
                f"{subject} not ready within progressDeadlineSeconds "
                f"({self.spec.progress_deadline_seconds}s): {ready}/{needed} pods ready"
            )
            return
        deadline = parse_time(self.s.step_started_at or format_time(self.now))
        self.wake_at.append(deadline + timedelta(seconds=self.spec.progress_deadline_seconds + 1))
        self._set_phase(
            Phase.PROGRESSING, reason, self._at_step(f"waiting for {pods}: {ready}/{needed} ready")
        )

    def _pause_step(self, step: Step) -> None:
        assert step.pause is not None
        if Command.PROMOTE in self.commands and self._last_check_failed():
            last = self.s.analysis.last_check
            assert last is not None
            why = f"the last analysis check failed ({verdicts.describe_check(last)})"
            self._mark_ignored(self.commands.pop(Command.PROMOTE), why)
        elif self._take(Command.PROMOTE):
            self._record("promote", "pause ended by sluice.dev/promote")
            self._advance()
            return
        if step.pause.duration is None:
            self._set_phase(
                Phase.PAUSED,
                "PausedByStep",
                self._at_step(f"paused until promoted (kubectl sluice promote {self.ref.name})"),
            )
            return
        started = parse_time(self.s.step_started_at or format_time(self.now))
        ends = started + parse_duration(step.pause.duration)
        if self.now < ends:
            self.wake_at.append(ends)
            left = math.ceil((ends - self.now).total_seconds())
            self._set_phase(
                Phase.PAUSED, "PausedByStep", self._at_step(f"paused for {step.pause.duration}, {left}s left")
            )
        elif self._gate_open():
            self._advance()
        else:
            self._set_phase(Phase.PROGRESSING, "Analysing", self._at_step("pause over, waiting for analysis"))

    def _advance(self) -> None:
        index = (self.s.current_step_index or 0) + 1
        self._record("step", f"step {index}/{len(self.steps)} done")
        self.s.current_step_index = index
        self.s.step_started_at = format_time(self.now)
        self.took_step = True
        if index >= len(self.steps):
            self._event("Normal", "Promoting", f"all steps done; promoting revision {self.revision}")
            self._promote()
        else:
            self._set_phase(Phase.PROGRESSING, "Progressing", self._at_step("step started"))
            step = self.steps[index]
            if step.pause is not None:
                # A pause is decided as it is entered: one status write for the step, rather than
                # "step started" now and "paused" on the pass after. (A weight step keeps a pass of
                # its own, so that every weight is really routed before the next.)
                self._pause_step(step)

    def _promote(self) -> None:
        """Every step passed: the stable Deployment takes the canary's template, then traffic returns."""
        if self.s.post_promotion is not None:
            self._verify_after_promotion()
            return
        gate = hooks.gate(self.s.hooks, self.spec, HookKind.PRE_PROMOTION, self.revision)
        if not gate.open and self._take(Command.ABORT):
            # The stable has not changed yet: a prePromotion hook (an approval) may wait for hours.
            self._rollback("aborted by the sluice.dev/abort annotation", aborted=True)
            return
        if self._held_by_hooks(HookKind.PRE_PROMOTION):
            if self.s.phase not in STUCK:  # rolled back by a failed hook: its scale-down delay holds
                self.canary_count = self._canary_pods(self.s.canary_weight)
            return
        self.stable_template = self.obs.effective_template
        self.stable_revision = self.revision
        self.canary_count = canary_replicas(self.spec, self.s.canary_weight)
        self._ignore_commands(
            f"promotion is under way (the stable Deployment already runs revision {self.revision}); "
            "change the template to release another revision"
        )
        if not is_rolled_out(self.stable_obj, self.revision, self.spec.replicas):
            ready = ready_replicas(self.stable_obj) if revision_of(self.stable_obj) == self.revision else 0
            self._set_phase(
                Phase.PROGRESSING,
                "Promoting",
                f"promoting revision {self.revision}: stable {ready}/{self.spec.replicas} updated and ready",
            )
            return
        message = f"revision {self.revision} promoted to stable"
        self._record("promoted", message)
        self._event("Normal", "Promoted", message)
        self._set_weight(0)
        self._clear_routes()
        self.canary_count = 0
        previous = self.before.stable_revision
        self.s.stable_revision = self.revision
        self.took_step = True
        canary = self.spec.strategy.canary
        if (
            canary is not None
            and canary.post_promotion_analysis is not None
            and previous not in (None, self.revision)
        ):
            assert previous is not None
            self._start_verification(previous)
            return
        self._complete()

    def _complete(self) -> None:
        """The release is over and good: Healthy, and the postRollout hooks told."""
        self._drop_release()
        self.s.hooks = hooks.ask(self.s.hooks, self.spec, HookKind.POST_ROLLOUT, self.revision)
        self.took_step = True
        self._set_phase(
            Phase.HEALTHY,
            "Healthy",
            f"revision {self.revision}: {self.spec.replicas}/{self.spec.replicas} ready",
        )

    # ---- verification after promotion (canary postPromotionAnalysis) ---------------------------

    def _start_verification(self, previous: str) -> None:
        """The new stable serves everyone; its checks start now, the previous revision kept to go back to."""
        self.s.post_promotion = PostPromotionStatus(
            promoted_at=format_time(self.now), previous_revision=previous
        )
        self.s.weight_changed_at = format_time(self.now)  # checks measure the new stable from here
        self.s.analysis = AnalysisStatus()
        self._record("verifying", f"postPromotionAnalysis of revision {self.revision} started")
        self._verify_after_promotion()

    def _verify_after_promotion(self) -> None:
        """postPromotionAnalysis runs on the new stable for its duration; a failure rolls it back."""
        verification = self.s.post_promotion
        canary = self.spec.strategy.canary
        assert verification is not None and canary is not None
        post = canary.post_promotion_analysis
        self.canary_count = 0
        if post is None:  # removed from the spec meanwhile: nothing left to verify
            self._finish_verification("postPromotionAnalysis removed from the spec")
            return
        if self._take(Command.ABORT):
            self._roll_back_promotion("aborted by the sluice.dev/abort annotation", aborted=True)
            return
        if self._take(Command.PROMOTE_FULL):
            self._finish_verification("sluice.dev/promote-full: post-promotion analysis skipped")
            return
        check = self.obs.check
        if (
            check is not None
            and verifying_after_promotion(self.before)
            and not self._measured_another_weight(check)
        ):
            self._count(check)
        verdict = verdicts.verdict(post, self.s.analysis)
        if verdict == verdicts.Verdict.ROLLBACK:
            self._roll_back_promotion(
                f"postPromotionAnalysis: {verdicts.verdict_reason(post, self.s.analysis)}"
            )
            return
        if verdict == verdicts.Verdict.PAUSE:
            if self._take(Command.PROMOTE):
                self.s.analysis.inconclusive = 0
                self._record("promote", "inconclusive post-promotion analysis accepted")
            else:
                reason = verdicts.verdict_reason(post, self.s.analysis)
                self._set_phase(Phase.PAUSED, "InconclusiveAnalysis", self._verifying(reason))
                return
        ends = parse_time(verification.promoted_at) + parse_duration(post.duration)
        if self.now < ends:
            self.wake_at.append(ends)
            left = math.ceil((ends - self.now).total_seconds())
            self._set_phase(
                Phase.PROGRESSING,
                "VerifyingAfterPromotion",
                self._verifying(f"verifying after promotion, {left}s left"),
            )
            return
        if not verdicts.gate_open(post, self.s.analysis):
            self._set_phase(
                Phase.PROGRESSING,
                "Analysing",
                self._verifying("duration over, waiting for postPromotionAnalysis"),
            )
            return
        self._finish_verification(f"postPromotionAnalysis passed for {post.duration}")

    def _verifying(self, detail: str) -> str:
        """`revision abc promoted, 2 check(s) passed, last: ...; verifying after promotion, 40s left`."""
        return f"revision {self.revision} promoted{self._checks_so_far()}; {detail}"

    def _finish_verification(self, why: str) -> None:
        self._record("verified", f"revision {self.revision}: {why}")
        self._event("Normal", "Verified", f"revision {self.revision}: {why}")
        self._complete()

    def _roll_back_promotion(self, why: str, aborted: bool = False) -> None:
        """The stable Deployment goes back to the previous revision's template by a rolling update: it
        keeps serving all traffic meanwhile (there is no other version to send it to)."""
        verification = self.s.post_promotion
        assert verification is not None
        previous = verification.previous_revision
        self.s.post_promotion = None
        template = self.obs.previous_record
        if template is None:
            self._rollback(
                f"after promotion: {why}; the template of previous revision {previous} is not in the "
                f"revision history, so revision {self.revision} stays stable",
                aborted,
            )
            return
        self.stable_template = template
        self.stable_revision = previous
        self.s.stable_revision = previous
        self._rollback(f"after promotion: {why}; stable back to revision {previous}", aborted)

    def _rolled_back(self) -> None:
        """The release was rolled back; it stays so until retried or the template changes."""
        if self._take(Command.RETRY):
            self._record("retry", f"release of revision {self.revision} retried")
            self._start_release(revision_of(self.stable_obj))
            self._progress()
            return
        self._ignore_commands("the release was rolled back; retry it or change the template")
        self._hold_rolled_back()

    def _rollback(self, why: str, aborted: bool = False) -> None:
        self._set_weight(0)
        self._clear_routes()
        self.s.aborted_at = format_time(self.now)
        phase = Phase.ABORTED if aborted else Phase.DEGRADED
        message = f"rolled back revision {self.revision}: {why}"
        self._record("aborted" if aborted else "rolled-back", message)
        self._event("Warning", "Aborted" if aborted else "RolledBack", message)
        self.s.phase = phase
        self.s.message = message
        self.s.hooks = hooks.ask(self.s.hooks, self.spec, HookKind.ON_ROLLBACK, self.revision)
        self.took_step = True
        self._hold_rolled_back()

    # ---- lifecycle hooks -------------------------------------------------------------------------

    def _take_hook_answers(self) -> None:
        """The hooks the shell ran: recorded, told in the history and an Event (a failure as a Warning)."""
        self.s.hooks, taken = hooks.merge(self.s.hooks, self.obs.hook_answers)
        for run in taken:
            message = hooks.describe(run)
            self._record("hook", message)
            passed = run.outcome == HookOutcome.PASSED
            self._event("Normal" if passed else "Warning", "HookPassed" if passed else "HookFailed", message)
            self.took_step = True  # a gate may have opened: look again at once

    def _held_by_hooks(self, kind: HookKind) -> bool:
        """A gating hook of `kind` failed (the release is rolled back) or is not answered yet (it waits)."""
        # Asked when first due (again, harmlessly, on later passes: a hook added to the spec meanwhile).
        self.s.hooks = hooks.ask(self.s.hooks, self.spec, kind, self.revision)
        gate = hooks.gate(self.s.hooks, self.spec, kind, self.revision)
        if gate.failed is not None:
            self._rollback(hooks.describe(gate.failed))
            return True
        if gate.waiting:
            detail = f"waiting for {kind.value} hook(s): {', '.join(gate.waiting)}"
            if (self.s.current_step_index or 0) >= len(self.steps):  # prePromotion: past the last step
                detail = f"all steps done, weight {self.s.canary_weight}%; {detail}"
            else:
                detail = self._at_step(detail)
            self._set_phase(Phase.PROGRESSING, "WaitingForHooks", detail)
            return True
        return False

    def _hold_rolled_back(self) -> None:
        """Weight stays 0; the canary keeps its pods for abortScaleDownDelaySeconds, then none."""
        delay = self._scale_down_delay()
        aborted_at = parse_time(self.s.aborted_at) if self.s.aborted_at else self.now
        current = int((self.canary_obj or {}).get("spec", {}).get("replicas") or 0)
        if self.now < aborted_at + timedelta(seconds=delay) and current > 0:
            self.canary_count = current
            self.wake_at.append(aborted_at + timedelta(seconds=delay))
        else:
            self.canary_count = 0
        assert self.s.phase is not None
        reason = "Aborted" if self.s.phase == Phase.ABORTED else "RolledBack"
        self._set_phase(self.s.phase, reason, self.s.message or f"revision {self.revision} rolled back")

    # ---- analysis ------------------------------------------------------------------------------

    def _count(self, check: Check) -> None:
        """A check into the analysis' counts, and an Event per dry-run metric that would have acted."""
        self.s.analysis = verdicts.record_check(self.s.analysis, check)
        for note in verdicts.dry_run_notes(check):
            self._event("Warning", verdicts.DRY_RUN_REASON, note)

    def _analyse(self) -> bool:
        """Count this round's check; True when it ended the release."""
        check = self.obs.check
        if self.analysis is None or check is None or self.fresh_release:
            return False
        if not _analysing(self.spec, self.before) or self._measured_another_weight(check):
            return False
        self._count(check)
        if verdicts.verdict(self.analysis, self.s.analysis) == verdicts.Verdict.ROLLBACK:
            self._rollback(verdicts.verdict_reason(self.analysis, self.s.analysis))
            return True
        return False

    # ---- small helpers ---------------------------------------------------------------------------

    def _measured_another_weight(self, check: Check) -> bool:
        """A check that started before the weight last changed measured traffic at another weight."""
        changed = self.before.weight_changed_at
        return changed is not None and parse_time(check.time) < parse_time(changed).replace(microsecond=0)

    def _last_check_failed(self) -> bool:
        """A person may promote past an Error or an Inconclusive check, never past a Failed one."""
        last = self.s.analysis.last_check
        return _receives_requests(self.s) and last is not None and last.outcome == Outcome.FAILED

    def _gate_open(self) -> bool:
        """Analysis gates a step only where it runs: with no request to the canary no check ever comes."""
        return not _receives_requests(self.s) or verdicts.gate_open(self.analysis, self.s.analysis)

    def _promoting(self) -> bool:
        index = self.s.current_step_index
        return (
            self.s.canary_revision is not None
            and self.s.phase in RELEASING
            and index is not None
            and index >= len(self.steps)
        )

    def _drop_release(self) -> None:
        self.s.canary_revision = None
        self.s.post_promotion = None
        self.s.current_step_index = None
        self.s.step_started_at = None
        self.s.aborted_at = None
        self._set_weight(0)
        self._clear_routes()
        self.canary_count = 0

    def _set_weight(self, weight: int) -> None:
        if weight != self.s.canary_weight:
            self._traffic_changed()
        self.s.canary_weight = weight

    def _traffic_changed(self) -> None:
        """What the canary gets changed (weight or routes): checks from before measured other traffic."""
        self.s.weight_changed_at = format_time(self.now)
        self.s.analysis.passed_at_step = 0

    def _set_phase(self, phase: Phase, reason: str, message: str) -> None:
        self.s.phase = phase
        self.reason = reason
        self.s.message = message

    def _at_step(self, detail: str) -> str:
        index = (self.s.current_step_index or 0) + 1
        checks = self._checks_so_far() if self.analysis is not None and _receives_requests(self.s) else ""
        return f"step {index}/{len(self.steps)}: weight {self.s.canary_weight}%{checks}; {detail}"

    def _checks_so_far(self) -> str:
        """`, 2 check(s) passed, last: ...`: the analysis so far, for a status message."""
        checks = f", {self.s.analysis.passed} check(s) passed"
        if self.s.analysis.last_check is not None:
            checks += f", last: {verdicts.describe_check(self.s.analysis.last_check)}"
        return checks

    def _take_restart(self) -> None:
        """sluice.dev/restart: new pods for both tracks, same revision; the release (if any) goes on."""
        if self._take(Command.RESTART):
            self.s.restarted_at = format_time(self.now)
            self._record("restart", f"pods of revision {self.stable_revision} restarted")
            self._event("Normal", "Restarted", "pods are replaced by a rolling update (sluice.dev/restart)")

    def _take(self, command: Command) -> bool:
        pending = self.commands.pop(command, None)
        if pending is None:
            return False
        self.s.handled_commands[command.value] = pending.value
        return True

    def _ignore_commands(self, why: str) -> None:
        for pending in list(self.commands.values()):
            self._mark_ignored(pending, why)
        self.commands.clear()

    def _mark_ignored(self, pending: PendingCommand, why: str) -> None:
        """Recorded, and told in an Event: whoever annotated is waiting for something to happen."""
        self.s.handled_commands[pending.command.value] = pending.value
        self._record(pending.command.value, f"ignored: {why}")
        kind: Literal["Normal", "Warning"] = "Warning" if pending.command == Command.ABORT else "Normal"
        self._event(kind, "CommandIgnored", f"{pending.command.annotation}={pending.value} ignored: {why}")

    def _record(self, action: str, message: str) -> None:
        entry = HistoryEntry(
            time=format_time(self.now), action=action, revision=self.revision, message=message
        )
        self.s.history = [entry, *self.s.history][:HISTORY_LIMIT]

    def _event(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(EventNote(kind, reason, message))

    # ---- output ----------------------------------------------------------------------------------

    def _plan(self) -> Plan:
        self._ignore_commands("not applicable now")
        assert self.s.phase is not None
        self.s.observed_generation = self.obs.generation
        self.s.replicas.stable = ready_replicas(self.stable_obj)
        self.s.replicas.canary = self.canary_count
        self.s.replicas.canary_ready = ready_replicas(self.canary_obj)
        # What the /scale subresource reports; spec.replicas, which it writes, sizes the stable track
        # (and the canary's share of it) on every pass, so a scale mid-release keeps step and weight.
        self.s.replicas.total = pod_count(self.stable_obj, self.canary_obj)
        self.s.selector = selector_text(pod_selector(self.ref, self.spec))
        self.s.strategy = self.spec.strategy.name
        self.s.conditions = rollout_conditions(
            self.s.phase,
            self.reason,
            self.s.message,
            self.obs.generation,
            self.before.conditions,
            self.now,
            stalled=self.stalled,
        )
        routed = self._routed_weight()
        self.s.routed_canary_weight = None if routed == self.s.canary_weight else routed
        self._notice_drift()
        self._note_adoption()
        return Plan(
            status=self.s,
            objects=self._desired_objects(routed),
            events=self.events,
            requeue_after=self._requeue_after(),
            records=self.records,
        )

    def _routed_weight(self) -> int:
        """The canary's share on the route: its weight, but never a share for a track with no ready pod.

        A track whose pods vanished (its Deployment deleted, its pods crashing)
        loses its share in the same pass; it gets it back once it has ready pods
        again. With neither track ready there is nothing better to route to.
        """
        weight = self.s.canary_weight
        if self.routing is None:
            return weight  # no route: the canary's share is its replica count
        canary_ready = ready_replicas(self.canary_obj) > 0
        stable_ready = ready_replicas(self.stable_obj) > 0
        routed = weight
        if weight > 0 and not canary_ready and stable_ready:
            routed = 0
        elif weight < 100 and not stable_ready and canary_ready and self.s.canary_revision is not None:
            routed = 100
        before = self.before.routed_canary_weight
        if routed != weight and before != routed:
            track, other = ("canary", "stable") if routed == 0 else ("stable", "canary")
            self._event(
                "Warning",
                "TrafficRerouted",
                f"the {track} track has no ready pods: all traffic goes to the {other} track until it has",
            )
        return routed

    def _notice_drift(self) -> None:
        """Someone else changed the split: say so (the plan puts the route back in this pass).

        What the route should send is the weight before this pass or, if a pass
        wrote the route and stopped before its status, the weight it set.
        """
        routing = self.routing
        if routing is None:
            return
        live = routing.observed(self.obs.objects)
        expected = self._route_weights_written()
        if routing.adopted(self.obs.objects):
            # Someone else's object: a changed split is one of the changes to Sluice's part of it.
            weights = {weight for weight in expected if weight is not None}
            notes = routing.adoption_notes(
                self.obs.objects, weights, self._expected_weight(), active_routes(self.before)
            )
            for reason, message in notes:
                self._event("Normal", reason, message)
            return
        if live is not None and live.canary not in expected:
            (key, *_) = routing.keys()
            self._event(
                "Warning",
                "TrafficDrift",
                f"{key.kind} {key.namespace}/{key.name} was changed to send {live.canary}% to the canary "
                f"(expected {self._expected_weight()}%): restored",
            )

    def _note_adoption(self) -> None:
        adoption = self.adoption
        if adoption.status is None:
            return
        if adoption.status != self.before.adoption:
            self.took_step = True  # each adoption step waits on the one before: look again at once
            if self.before.adoption is None:
                taken = [
                    f"{kind} {self.ref.namespace}/{name}"
                    for kind, name in (
                        ("Deployment", adoption.status.deployment),
                        ("Service", adoption.status.service),
                    )
                    if name is not None
                ]
                self._event("Normal", "Adopting", f"adopting {' and '.join(taken)} with zero downtime")
            elif adoption.status.phase == AdoptionPhase.ADOPTED != self.before.adoption.phase:
                self._event(
                    "Normal",
                    "Adopted",
                    f"adopted with zero downtime: Deployment {self._stable_name()} serves the workload",
                )
        self.s.adoption = adoption.status
        for reason, message in adoption.notes:
            self._event("Normal", reason, message)

    def _route_weights_written(self) -> set[int | None]:
        """The canary weights the route may hold from this pass or the one before."""
        return {
            self.before.canary_weight,
            self.s.canary_weight,
            self.before.routed_canary_weight,
            self.s.routed_canary_weight,
        }

    def _stable_name(self) -> str:
        return stable_deployment_key(self.ref, self.spec).name

    def _expected_weight(self) -> int:
        routed = self.s.routed_canary_weight
        return self.s.canary_weight if routed is None else routed

    def _desired_objects(self, routed: int) -> list[dict[str, Any]]:
        routing = self.routing
        if not self.adoption.render_own:
            return list(self.adoption.objects.values())  # adoption step 1: mark before anything else
        by_key: dict[ObjectKey, dict[str, Any]] = {
            stable_deployment_key(self.ref, self.spec): render_deployment(
                self.ref, self.spec, "stable", self.stable_template, self.stable_revision, self.spec.replicas
            ),
            canary_deployment_key(self.ref, self.spec): render_deployment(
                self.ref, self.spec, "canary", self.obs.effective_template, self.revision, self.canary_count
            ),
        }
        for deployment in list(by_key.values()):
            with_restart(deployment, self.s.restarted_at)  # sluice.dev/restart: both tracks' pods
        if self.spec.service is not None:
            stable_service = self._stable_service()
            by_key[key_of(stable_service)] = stable_service
            canary_service = render_service(self.ref, self.spec, "canary")
            by_key[key_of(canary_service)] = canary_service
        if routing is not None and not self._route_to_nothing(routing.keys()):
            # Like its weight, a canary without ready pods loses its header and mirror routes until it has.
            routes = active_routes(self.s) if ready_replicas(self.canary_obj) > 0 else NO_ROUTES
            by_key.update(
                (key_of(obj), obj)
                for obj in routing.desired(Weights.to_canary(routed), self.obs.objects, routes)
            )
        # An adopted Service and Deployment get only the fields Sluice takes over.
        by_key.update(self.adoption.objects)
        return [by_key[key] for key in managed_keys(self.ref, self.spec) if key in by_key]

    def _stable_service(self) -> dict[str, Any]:
        return render_service(self.ref, self.spec, "stable", select_all_tracks=self.routing is None)

    def _scale_down_delay(self) -> int:
        """How long a rolled-back new version keeps its pods."""
        canary = self.spec.strategy.canary
        return canary.abort_scale_down_delay_seconds if canary is not None else 0

    def _route_to_nothing(self, keys: Sequence[ObjectKey]) -> bool:
        """A first deployment's route waits for the first ready pod: created earlier, it would send
        its users to a backend with nothing behind it (a route that exists is kept, never removed)."""
        no_pods = ready_replicas(self.stable_obj) == 0 and ready_replicas(self.canary_obj) == 0
        return no_pods and all(self.obs.objects.get(key) is None for key in keys)

    def _requeue_after(self) -> float:
        if self.took_step:
            return 0.0
        wake = list(self.wake_at)
        if self.analysis is not None and _analysing(self.spec, self.s):
            due = verdicts.next_check_at(self.analysis, self.s.analysis, self.s.weight_changed_at)
            wake.append(due or self.now)
        if not wake:
            return RESYNC_SECONDS
        seconds = (min(wake) - self.now).total_seconds()
        return max(0.0, min(seconds, RESYNC_SECONDS))


def _describe_route_step(step: Step) -> str:
    """`header route testers set`, `mirror route shadow (20%) removed`: for the history."""
    if step.set_header_route is not None:
        route = step.set_header_route
        return f"header route {route.name} {'set' if route.matches else 'removed'}"
    assert step.set_mirror_route is not None
    mirror = step.set_mirror_route
    if mirror.percent is None:
        return f"mirror route {mirror.name} removed"
    return f"mirror route {mirror.name} set: {mirror.percent}% of the requests mirrored"


def _sets_a_route(step: Step) -> bool:
    """Whether the step sets (rather than removes) a header or mirror route."""
    header, mirror = step.set_header_route, step.set_mirror_route
    return (header is not None and header.matches is not None) or (
        mirror is not None and mirror.percent is not None
    )
