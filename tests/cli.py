"""Running the `sluice` command in-process, as the CLI tests do."""

from __future__ import annotations

import pytest

from operators.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`sluice ARGV...` in-process: (exit code, stdout, stderr); --help's SystemExit counts as a code."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
