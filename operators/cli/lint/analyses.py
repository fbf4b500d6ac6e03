"""Where a Rollout's analyses are: each with the path of its field, for findings to point at."""

from __future__ import annotations

from collections.abc import Iterator

from operators.api.rollout import Analysis, RolloutSpec
from operators.cli.lint.documents import FieldPath

STRATEGY: FieldPath = ("spec", "strategy")
CANARY: FieldPath = (*STRATEGY, "canary")
BLUE_GREEN: FieldPath = (*STRATEGY, "blueGreen")


def analyses(spec: RolloutSpec) -> Iterator[tuple[FieldPath, Analysis]]:
    """Every analysis the Rollout configures, with its path in the document."""
    canary, blue_green = spec.strategy.canary, spec.strategy.blue_green
    if canary is not None:
        if canary.analysis is not None:
            yield (*CANARY, "analysis"), canary.analysis
        if canary.post_promotion_analysis is not None:
            yield (*CANARY, "postPromotionAnalysis"), canary.post_promotion_analysis
    if blue_green is not None:
        if blue_green.pre_promotion_analysis is not None:
            yield (*BLUE_GREEN, "prePromotionAnalysis"), blue_green.pre_promotion_analysis
        if blue_green.post_promotion_analysis is not None:
            yield (*BLUE_GREEN, "postPromotionAnalysis"), blue_green.post_promotion_analysis
