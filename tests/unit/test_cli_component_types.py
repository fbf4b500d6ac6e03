"""`sluice run --component-types DIR`: the flag reaches the operator, and a bad directory stops it early."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from operators.cli import build_parser, main
from operators.cli import run as run_command


def test_the_flag_reaches_the_operator_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_run_operator(options: Any) -> None:
        seen["options"] = options

    monkeypatch.setattr(run_command, "run_operator", fake_run_operator)
    assert main(["run", "--component-types", str(tmp_path), "--liveness", "off"]) == 0
    assert seen["options"].component_types == str(tmp_path)


def test_without_the_flag_only_built_in_types() -> None:
    assert build_parser().parse_args(["run"]).component_types is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent", "not a directory"),
        (lambda d: (d / "worker.yaml.j2").write_text("template: {}") and d, "built-in type 'worker' again"),
    ],
    ids=["missing", "shadows-a-built-in"],
)
def test_a_bad_directory_stops_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    directory = make(tmp_path)
    # No kubeconfig is needed: the directory is checked before any connection is made.
    code = main(["run", "--component-types", str(directory), "--kubeconfig", str(tmp_path / "none")])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("sluice run: error: --component-types") and message in error
