"""Where a blue-green release stands, read from the status: pure, and shared by the engine and its shell.

A blue-green release reuses the canary's status fields. `currentStepIndex` is the stage:

    0 PREVIEW         the new version scales to full size behind the preview Service
    1 PRE_PROMOTION   prePromotionAnalysis checks the preview; then auto-promotion or sluice.dev/promote
    2 POST_PROMOTION  switched: the active Service selects the new pods; postPromotionAnalysis runs
                      while the old pods are kept (scaleDownDelaySeconds) to switch back to
    3 PROMOTING       the stable Deployment takes the new template; the preview scales down after

and `canaryWeight` is 0 before the switch and 100 after it: the share of requests the new
version serves, which is always all or nothing.
"""

from __future__ import annotations

from operators.api.rollout import Analysis, RolloutSpec, RolloutStatus

PREVIEW = 0
PRE_PROMOTION = 1
POST_PROMOTION = 2
PROMOTING = 3
STAGE_COUNT = 4
STAGE_NAMES = ("preview", "pre-promotion", "post-promotion", "promoting")
SWITCHED = 100  # canaryWeight once the active Service selects the new version


def analyses_of(spec: RolloutSpec) -> list[Analysis]:
    """Every analysis the spec holds, in force now or later (checked together before a release)."""
    canary, blue_green = spec.strategy.canary, spec.strategy.blue_green
    held = (
        [canary.analysis, canary.post_promotion_analysis]
        if canary is not None
        else [blue_green.pre_promotion_analysis, blue_green.post_promotion_analysis]
        if blue_green is not None
        else []
    )
    return [analysis for analysis in held if analysis is not None]


def analysis_of(spec: RolloutSpec, status: RolloutStatus) -> Analysis | None:
    """The analysis that applies now: the canary's, or blue-green's before or after the switch."""
    blue_green = spec.strategy.blue_green
    canary = spec.strategy.canary
    if blue_green is None and canary is not None:
        # A promoted canary under verification: its postPromotionAnalysis.
        if status.post_promotion is not None and canary.post_promotion_analysis is not None:
            return canary.post_promotion_analysis
        return canary.analysis
    if blue_green is None:
        return None
    if status.current_step_index == POST_PROMOTION:
        return blue_green.post_promotion_analysis
    return blue_green.pre_promotion_analysis


def analysing(status: RolloutStatus) -> bool:
    """Blue-green analysis runs on a ready preview before the switch, and after it until promotion."""
    return status.canary_revision is not None and status.current_step_index in (PRE_PROMOTION, POST_PROMOTION)
