"""The browser tests' set-up: a missing Chromium or npm skips them with the reason, except under
CI=true, where it fails the run; axe-core is installed once into the cache and reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import browser


def test_a_missing_piece_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs npm"):
        browser.unavailable("the accessibility checks needs npm")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        browser.unavailable("the accessibility checks needs npm")


def test_without_npm_axe_cannot_be_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(browser, "AXE_SCRIPT", tmp_path / "axe.min.js")
    monkeypatch.setattr(browser, "AXE_CACHE", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="npm"):
        browser.axe_source()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="npm"):
        browser.axe_source()


def test_an_installed_axe_is_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = tmp_path / "axe.min.js"
    script.write_text("/* axe */")
    monkeypatch.setattr(browser, "AXE_SCRIPT", script)
    monkeypatch.setenv("PATH", str(tmp_path))  # npm is not asked again
    assert browser.axe_source() == "/* axe */"
