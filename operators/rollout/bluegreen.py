"""The blue-green release: the canary engine's pass, with stages instead of weight steps.

The new version runs at full size in the canary Deployment behind the preview Service while
the active (stable) Service keeps selecting the old pods. The active Service selects pods by
revision label, so the switch is one write of its selector: every request goes to all-old or
all-new pods, never to both. Switching back after a failed post-promotion check is the same
write, to the old pods, which are kept for `scaleDownDelaySeconds` after the switch. The
stages are described in :mod:`operators.rollout.bluegreen_stages`.

Analysis, commands, the progress deadline, traffic refusals, history and events are the
canary engine's (:mod:`operators.rollout.engine`); only the decisions that differ are here.
A route (traffic provider), if any, sends every request to the active Service.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from operators.api.base import parse_duration
from operators.api.rollout import AnalysisStatus, BlueGreen, Outcome, Phase
from operators.foundation.clock import format_time, parse_time
from operators.rollout import verdicts
from operators.rollout.bluegreen_stages import (
    POST_PROMOTION,
    PRE_PROMOTION,
    PREVIEW,
    PROMOTING,
    STAGE_NAMES,
    SWITCHED,
    analysing,
)
from operators.rollout.commands import Command
from operators.rollout.conditions import RELEASING
from operators.rollout.engine import Plan, _Reconciliation
from operators.rollout.inventory import canary_deployment_key
from operators.rollout.render import render_service, service_name
from operators.rollout.workload import is_rolled_out, revision_of

SERVICE_NAME_MAX = 63  # a DNS-1035 label


class BlueGreenReconciliation(_Reconciliation):
    """One pass of a blue-green Rollout (``spec.strategy.blueGreen``)."""

    @property
    def blue_green(self) -> BlueGreen:
        blue_green = self.spec.strategy.blue_green
        assert blue_green is not None  # engine.reconcile dispatches here only then
        return blue_green

    def run(self) -> Plan:
        # The active Service's selector names a revision, and adoption reads that selector before
        # the base pass works out the revisions: know them from the start.
        self.revision = self.obs.template_revision()
        self.stable_revision = revision_of(self.stable_obj) or self.before.stable_revision or self.revision
        return super().run()

    def _render_problems(self) -> list[str]:
        preview = self._preview_name()
        if len(preview) <= SERVICE_NAME_MAX:
            return super()._render_problems()
        return [
            *super()._render_problems(),
            f"the preview Service name {preview!r} is longer than {SERVICE_NAME_MAX} characters: "
            "set strategy.blueGreen.previewService",
        ]

    # ---- the stages ------------------------------------------------------------------------------

    def _progress(self) -> None:
        if self._take(Command.ABORT):
            self._rollback("aborted by the sluice.dev/abort annotation", aborted=True)
            return
        if self._analyse():
            return
        self.canary_count = self.spec.replicas
        if self._held_where_it_is(self.analysis.inconclusive_limit if self.analysis else None):
            return
        stage = self.s.current_step_index or PREVIEW
        if stage == PREVIEW:
            self._await_preview()
        elif stage == PRE_PROMOTION:
            self._await_promotion()
        else:
            self._await_completion()
        self._ignore_commands("nothing to do at this stage")

    def _await_preview(self) -> None:
        """The new version scales to full size behind the preview Service, within the deadline."""
        if is_rolled_out(self.canary_obj, self.revision, self.spec.replicas):
            self._enter(PRE_PROMOTION, f"preview {self._preview_name()} ready")
            # Checks measure the preview from now on, once all its pods serve.
            self.s.weight_changed_at = format_time(self.now)
            self.s.analysis = AnalysisStatus()
            self._await_promotion()
            return
        preview = f"preview {self._deployment_name()}"
        self._await_pods(preview, self.spec.replicas, "WaitingForPreview", "the preview's pods")

    def _await_promotion(self) -> None:
        """The switch waits for prePromotionAnalysis, then for autoPromotionSeconds or a person."""
        if self._take(Command.PROMOTE_FULL):
            self._switch("sluice.dev/promote-full: analysis skipped")
            self._finish("promote-full: post-promotion analysis skipped")
            return
        if not self._gate_open():
            if Command.PROMOTE in self.commands:
                self._mark_ignored(
                    self.commands.pop(Command.PROMOTE), "prePromotionAnalysis has not passed yet"
                )
            self._set_phase(Phase.PROGRESSING, "Analysing", self._at_step("waiting for prePromotionAnalysis"))
            return
        if self._take(Command.PROMOTE):
            self._switch("promoted by sluice.dev/promote")
            return
        auto = self.blue_green.auto_promotion_seconds
        if auto is None:
            self._set_phase(
                Phase.PAUSED,
                "AwaitingPromotion",
                self._at_step(f"preview ready; switch with kubectl sluice promote {self.ref.name}"),
            )
            return
        at = parse_time(self.s.step_started_at or format_time(self.now)) + timedelta(seconds=auto)
        if self.now >= at:
            self._switch(f"autoPromotionSeconds ({auto}s) passed")
            return
        self.wake_at.append(at)
        left = math.ceil((at - self.now).total_seconds())
        self._set_phase(Phase.PAUSED, "AwaitingPromotion", self._at_step(f"switching in {left}s"))

    def _await_completion(self) -> None:
        """Switched: postPromotionAnalysis runs, and the old pods wait to be switched back to."""
        if self._take(Command.PROMOTE_FULL):
            self._finish("promote-full: post-promotion analysis skipped")
            return
        switched_at = parse_time(self.s.weight_changed_at or format_time(self.now))
        ends = [switched_at + timedelta(seconds=self.blue_green.scale_down_delay_seconds)]
        post = self.blue_green.post_promotion_analysis
        if post is not None:
            ends.append(switched_at + timedelta(seconds=parse_duration(post.duration).total_seconds()))
        end = max(ends)
        if self.now < end:
            self.wake_at.append(end)
            left = math.ceil((end - self.now).total_seconds())
            what = "postPromotionAnalysis runs; " if post is not None else ""
            self._set_phase(
                Phase.PROGRESSING,
                "PostPromotion",
                self._at_step(f"switched; {what}old pods kept for {left}s"),
            )
            return
        if not self._gate_open():
            self._set_phase(
                Phase.PROGRESSING, "Analysing", self._at_step("waiting for postPromotionAnalysis")
            )
            return
        self._finish("postPromotionAnalysis passed" if post is not None else "scaleDownDelaySeconds passed")

    def _switch(self, why: str) -> None:
        """The one write: the active Service selects the new revision's pods instead of the old."""
        service = service_name(self.ref, self.spec, "stable")
        message = f"Service {service} switched to revision {self.revision}: {why}"
        self._record("switched", message)
        self._event("Normal", "Switched", message)
        self._set_weight(SWITCHED)
        self.s.analysis = AnalysisStatus()
        self._enter(POST_PROMOTION, "switched")

    def _finish(self, why: str) -> None:
        self._enter(PROMOTING, why)
        self._event("Normal", "Promoting", f"{why}; promoting revision {self.revision}")
        self._promote()

    def _enter(self, stage: int, why: str) -> None:
        self._record("stage", f"{STAGE_NAMES[stage]}: {why}")
        self.s.current_step_index = stage
        self.s.step_started_at = format_time(self.now)
        self.took_step = True
        self._set_phase(Phase.PROGRESSING, "Progressing", self._at_step(why))

    # ---- where blue-green differs from the canary engine ----------------------------------------

    def _promoting(self) -> bool:
        return (
            self.s.canary_revision is not None
            and self.s.phase in RELEASING
            and (self.s.current_step_index or 0) >= PROMOTING
        )

    def _gate_open(self) -> bool:
        # Unlike a canary at weight 0, the preview is analysed before it serves anyone.
        return verdicts.gate_open(self.analysis, self.s.analysis)

    def _last_check_failed(self) -> bool:
        last = self.s.analysis.last_check
        return last is not None and last.outcome == Outcome.FAILED

    def _scale_down_delay(self) -> int:
        return self.blue_green.scale_down_delay_seconds

    def _active_revision(self) -> str:
        """The revision the active Service selects: the new one from the switch on."""
        switched = self.s.canary_revision is not None and self.s.canary_weight == SWITCHED
        return self.revision if switched else self.stable_revision

    def _stable_service(self) -> dict[str, Any]:
        return render_service(self.ref, self.spec, "stable", active_revision=self._active_revision())

    def _routed_weight(self) -> int:
        return self.s.canary_weight  # the route never splits: the active Service is the whole switch

    def _desired_objects(self, routed: int) -> list[dict[str, Any]]:
        return super()._desired_objects(0)  # every request to the active Service

    def _route_weights_written(self) -> set[int | None]:
        return {0}

    def _expected_weight(self) -> int:
        return 0

    def _at_step(self, detail: str) -> str:
        stage = min(self.s.current_step_index or 0, PROMOTING)
        checks = self._checks_so_far() if self.analysis is not None and analysing(self.s) else ""
        return f"blue-green {STAGE_NAMES[stage]}{checks}; {detail}"

    def _preview_name(self) -> str:
        return service_name(self.ref, self.spec, "canary")

    def _deployment_name(self) -> str:
        return canary_deployment_key(self.ref, self.spec).name
