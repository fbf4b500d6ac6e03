"""The upstream schemas are found relative to the checkout, and their absence is loud in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reference import HTTPROUTES, REFERENCE, REPO, reference_file


def test_reference_is_found_beside_the_repository() -> None:
    assert REPO.parent / "shared" / "reference" == REFERENCE
    assert reference_file(HTTPROUTES).name == "httproutes.yaml"


def test_a_missing_reference_skips_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="missing"):
        reference_file(HTTPROUTES, root=tmp_path)


def test_a_missing_reference_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=str(tmp_path)):
        reference_file(HTTPROUTES, root=tmp_path)
