"""When lifecycle hooks are due and what their answers mean for a release: pure, on status.hooks.

The engine asks for a hook by recording it Pending for the release's revision; the shell runs
every Pending hook (operators/rollout/hook_runner.py) and hands the answers back; the engine
merges them into the status. So a hook that passed is never run again for the same revision, not
even by an operator restarted meanwhile; one still Pending then is run again (a notification may
thus arrive twice, never not at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from operators.api.hooks import Hook, HookKind, HookOutcome, HookRun, Hooks
from operators.api.rollout import RolloutSpec


def hooks_of(spec: RolloutSpec) -> Hooks | None:
    """The canary's hooks (blue-green has none)."""
    canary = spec.strategy.canary
    return canary.hooks if canary is not None else None


def hooks_of_kind(spec: RolloutSpec, kind: HookKind) -> list[Hook]:
    hooks = hooks_of(spec)
    return hooks.by_kind()[kind] if hooks is not None else []


def find_hook(spec: RolloutSpec, kind: HookKind, name: str) -> Hook | None:
    return next((hook for hook in hooks_of_kind(spec, kind) if hook.name == name), None)


def ask(runs: Sequence[HookRun], spec: RolloutSpec, kind: HookKind, revision: str) -> list[HookRun]:
    """`runs` with a Pending run for each hook of `kind` not yet asked for `revision`."""
    asked = {(run.kind, run.name) for run in runs if run.revision == revision}
    new = [
        HookRun(kind=kind, name=hook.name, revision=revision)
        for hook in hooks_of_kind(spec, kind)
        if (kind, hook.name) not in asked
    ]
    return [*runs, *new]


def merge(runs: Sequence[HookRun], answers: Sequence[HookRun]) -> tuple[list[HookRun], list[HookRun]]:
    """The runs with the answers in place of their Pending runs, and the answers that were taken.

    An answer for a run that is no longer Pending (answered before, or dropped by a new release)
    is not taken: its release is over, or it was told already.
    """
    merged = list(runs)
    taken: list[HookRun] = []
    for answer in answers:
        for index, run in enumerate(merged):
            same = (run.kind, run.name, run.revision) == (answer.kind, answer.name, answer.revision)
            if same and run.outcome == HookOutcome.PENDING and answer.outcome != HookOutcome.PENDING:
                merged[index] = answer
                taken.append(answer)
                break
    return merged, taken


def pending(runs: Sequence[HookRun]) -> list[HookRun]:
    """The runs the shell is to run."""
    return [run for run in runs if run.outcome == HookOutcome.PENDING]


@dataclass(frozen=True)
class Gate:
    """Where the gating hooks of one kind stand for one revision."""

    failed: HookRun | None = None
    waiting: tuple[str, ...] = ()

    @property
    def open(self) -> bool:
        return self.failed is None and not self.waiting


def gate(runs: Sequence[HookRun], spec: RolloutSpec, kind: HookKind, revision: str) -> Gate:
    """The hooks of `kind` in the spec, as answered for `revision`: the first failure, or those not
    answered yet (a hook not asked yet counts as waiting: the engine asks for it in the same pass)."""
    by_name = {run.name: run for run in runs if run.kind == kind and run.revision == revision}
    waiting: list[str] = []
    for hook in hooks_of_kind(spec, kind):
        run = by_name.get(hook.name)
        if run is not None and run.outcome == HookOutcome.FAILED:
            return Gate(failed=run)
        if run is None or run.outcome == HookOutcome.PENDING:
            waiting.append(hook.name)
    return Gate(waiting=tuple(waiting))


def describe(run: HookRun) -> str:
    """`preRollout hook "smoke" failed: HTTP 500 from http://...`."""
    verb = {HookOutcome.PASSED: "passed", HookOutcome.FAILED: "failed"}.get(run.outcome, "is pending")
    text = f'{run.kind.value} hook "{run.name}" {verb}'
    return f"{text}: {run.message}" if run.message else text
