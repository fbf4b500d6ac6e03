"""`sluice lint`: the shipped examples pass; each file of tests/fixtures/lint is reported at its line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from operators.api.rollout import RolloutSpec
from operators.cli import main
from operators.cli.lint.documents import Severity
from operators.cli.lint.sanity import sanity_issues

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "lint"


def lint(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["lint", *args])
    return code, capsys.readouterr().out.splitlines()


def test_every_shipped_example_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = lint(capsys, str(ROOT / "examples"))
    assert code == 0, lines
    assert not [line for line in lines if ": error: " in line]
    # the non-Sluice kinds among them are skipped, and said so
    assert any("skipped: Deployment is not a Sluice kind" in line for line in lines)


# fixture file -> (line, what the message says): one error kind each
BROKEN = {
    "schema-error.yaml": [
        (12, "spec.progresDeadlineSeconds: Extra inputs are not permitted"),
        (16, "setWeight"),
    ],
    "cel-rule.yaml": [(12, "strategy needs exactly one of canary and blueGreen")],
    "bad-name.yaml": [(5, "must be a DNS-1035 label")],
    "template-error.yaml": [(21, "undefined variable 'canary.servce'")],
    "promql-error.yaml": [(21, "not valid PromQL: unclosed left parenthesis")],
    "full-weight-first.yaml": [(17, "sets the weight to 100 before any analysis check could run")],
    "never-passes.yaml": [(21, "thresholdRange.max -0.01 is below 0")],
    "not-yaml.yaml": [(5, "invalid YAML")],
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_broken_file_is_reported_at_its_line(capsys: pytest.CaptureFixture[str], name: str) -> None:
    path = FIXTURES / name
    code, lines = lint(capsys, str(path))
    assert code == 1
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == len(BROKEN[name]), errors
    for (line, said), error in zip(BROKEN[name], errors, strict=True):
        assert error.startswith(f"{path}:{line}: error: "), error
        assert said in error


def test_several_problems_in_one_file_each_at_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "several.yaml"
    code, lines = lint(capsys, str(path))
    assert code == 1
    expected = [
        (10, "note", "skipped: Deployment is not a Sluice kind"),
        (26, "error", "the first step sets the weight to 100"),  # stepWeight: 100, minChecksPerStep 0
        (31, "error", 'metric "latency": the rendered query is not valid PromQL'),  # via its MetricTemplate
        (35, "error", "thresholdRange.min 2 is above 1"),
        (41, "error", "spec.query: Field required"),
        (42, "error", "spec.querry: Extra inputs are not permitted"),
    ]
    assert len(lines) == len(expected), lines
    for (line, severity, said), got in zip(expected, lines, strict=True):
        assert got.startswith(f"{path}:{line}: {severity}: "), got
        assert said in got


def test_warnings_alone_pass_unless_strict(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(FIXTURES / "timed-pause.yaml")
    code, lines = lint(capsys, path)
    assert code == 0
    assert lines == [
        f"{path}:16: warning: a timed pause with no analysis: the release advances on the clock alone and "
        "nothing can roll it back; add canary.analysis, or pause without a duration to promote by hand"
    ]
    assert lint(capsys, "--strict", path)[0] == 1


def test_the_installed_command_exits_2_on_a_missing_file_and_1_on_errors() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", "import sys; from operators.cli import main; sys.exit(main())", "lint"]
    missing = subprocess.run([*command, "no-such.yaml"], capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2
    assert "no-such.yaml: no such file or directory" in missing.stderr
    broken = subprocess.run(
        [
            *command,
            "-q",
            str(FIXTURES / "never-passes.yaml"),
            str(ROOT / "examples" / "rollout-analysis.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert broken.returncode == 1
    assert broken.stdout.startswith(f"{FIXTURES / 'never-passes.yaml'}:21: error: ")
    assert "2 files: 1 errors, 0 warnings" in broken.stderr


def canary(steps: object = None, **extra: object) -> RolloutSpec:
    body: dict[str, object] = {"steps": steps} if steps is not None else {}
    return RolloutSpec.model_validate(
        {
            "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}},
            "strategy": {"canary": {**body, **extra}},
        }
    )


ANALYSIS = {
    "metrics": [{"name": "errors", "template": "request-error-rate", "thresholdRange": {"max": 0.01}}]
}


def messages(spec: RolloutSpec, user_templates: frozenset[str] = frozenset()) -> list[tuple[Severity, str]]:
    return [(issue.severity, issue.message) for issue in sanity_issues(spec, user_templates)]


def test_full_weight_is_fine_after_a_step_that_waits_for_a_check() -> None:
    assert messages(canary([{"setWeight": 20}, {"setWeight": 100}], analysis=ANALYSIS)) == []
    # without minChecksPerStep nothing waits at 20%: only a pause gives a check its time
    lazy = {**ANALYSIS, "minChecksPerStep": 0}
    assert messages(canary([{"setWeight": 20}, {"setWeight": 100}], analysis=lazy))
    paused = [{"setWeight": 20}, {"pause": {"duration": "1m"}}, {"setWeight": 100}]
    assert messages(canary(paused, analysis=lazy)) == []
    # the shorthand climbing to 100 in one step, and by 50s (a check at 50% first)
    assert messages(canary(stepWeight=100, analysis=ANALYSIS))
    assert messages(canary(stepWeight=50, analysis=ANALYSIS)) == []


def test_timed_pauses_are_fine_with_analysis_or_hooks_and_untimed_ones_always() -> None:
    timed = [{"setWeight": 10}, {"pause": {"duration": "1m"}}]
    assert [severity for severity, _ in messages(canary(timed))] == [Severity.WARNING]
    assert messages(canary(timed, analysis=ANALYSIS)) == []
    assert messages(canary([{"setWeight": 10}, {"pause": {}}])) == []


def test_thresholds_are_judged_by_what_the_metric_can_be() -> None:
    def metric(**fields: object) -> RolloutSpec:
        return canary([{"setWeight": 10}, {"pause": {}}], analysis={"metrics": [{"name": "m", **fields}]})

    assert messages(metric(template="request-duration-p99", thresholdRange={"max": -1}))
    assert messages(metric(template="request-duration-p99", thresholdRange={"min": 5})) == []  # unbounded
    assert messages(metric(template="request-error-rate", thresholdRange={"min": 0, "max": 1})) == []
    pod = {"restartPolicy": "Never", "containers": [{"name": "test", "image": "test:1"}]}
    assert messages(metric(job={"spec": {"template": {"spec": pod}}}, thresholdRange={"min": 2}))
    # a query's values are unknown; a MetricTemplate named like a built-in is not the built-in
    assert messages(metric(query="up", thresholdRange={"max": -1})) == []
    shadowed = metric(template="request-error-rate", thresholdRange={"max": -1})
    assert messages(shadowed, frozenset({"request-error-rate"})) == []
