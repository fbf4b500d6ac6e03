"""The operator's distribution carries neither the sandbox nor kmock, and works without them.

The sandbox is `sluice-sandbox` (sandbox/ in the repository), a distribution of its own that adds
`sluice sandbox` and `sluice demo` through the entry-point group `sluice.commands`.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]

# `sluice ARGV...` in a fresh interpreter where importing kmock or the sandbox fails, as when
# neither is installed (a module set to None in sys.modules cannot be imported).
WITHOUT_SANDBOX = (
    "import sys; sys.modules['kmock'] = None; sys.modules['sluice_sandbox'] = None; "
    "sys.argv = ['sluice', *sys.argv[1:]]; from operators.cli import main; sys.exit(main())"
)


def sluice_without_sandbox(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SANDBOX, *argv],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's wheel, as `pip install .` builds it (no build isolation: no network).

    Built from a copy of the checkout's project files, the sandbox's included, so that a stale
    build/ cannot leak into it and the build leaves nothing behind in the checkout.
    """
    source = tmp_path_factory.mktemp("source")
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(ROOT / name, source / name)
    for name in ["operators", "sandbox"]:
        shutil.copytree(
            ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = ["pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q"]
    build = subprocess.run(
        [sys.executable, "-m", *pip_wheel, "--disable-pip-version-check", "-w", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("sluice-*.whl")
    return path


def test_the_wheel_holds_the_operator_and_not_the_sandbox(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "operators/cli/__init__.py" in names
    assert "operators/cli/plugins.py" in names
    assert "operators/cli/sandbox.py" not in names
    sandbox = [n for n in names if n.startswith(("operators/sandbox", "sluice_sandbox"))]
    assert sandbox == []
    top_level = {n.split("/")[0] for n in names}
    assert {n for n in top_level if not n.endswith(".dist-info")} == {"operators"}


def test_the_wheel_holds_the_dashboards_page(wheel: Path) -> None:
    """`sluice dashboard` serves its page, script and style from package data: offline, no CDN."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for name in ["index.html", "app.js", "app.css"]:
        assert f"operators/cli/dashboard/static/{name}" in names


def test_the_wheel_does_not_require_kmock(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = email.parser.Parser().parsestr(archive.read(metadata).decode())
    requires = {Requirement(line).name.lower() for line in message.get_all("Requires-Dist") or []}
    assert "kopf" in requires, "the metadata was read"
    assert "kmock" not in requires
    assert "sluice-sandbox" not in requires


def test_sluice_run_needs_neither_the_sandbox_nor_kmock() -> None:
    result = sluice_without_sandbox("run", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sluice run")
    for option in ["--all-namespaces", "--prometheus-url", "--liveness"]:
        assert option in result.stdout


def test_without_the_sandbox_its_commands_are_listed_and_say_what_to_install() -> None:
    result = sluice_without_sandbox("--help")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["sandbox", "needs", "the", "sluice-sandbox", "package"] in lines
    assert ["demo", "needs", "the", "sluice-sandbox", "package"] in lines
    assert ["run", "run", "the", "operator"] in lines


@pytest.mark.parametrize("argv", [["demo"], ["sandbox", "--port", "8080"], ["demo", "--help"]])
def test_without_the_sandbox_its_commands_exit_2_with_the_install_hint(argv: list[str]) -> None:
    result = sluice_without_sandbox(*argv)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"sluice {argv[0]} needs the sluice-sandbox package")
    assert "pip install ./sandbox" in line
    assert "./scripts/demo" in line


def test_with_the_sandbox_installed_its_commands_are_there(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "sandbox", "--help")
    assert code == 0, err
    assert out.startswith("usage: sluice sandbox")
    assert "--no-operator" in out
    code, out, err = run_cli(capsys, "demo", "--help")
    assert code == 0, err
    assert "--manifests DIR" in out
