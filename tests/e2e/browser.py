"""What every browser test shares: Debian's Chromium driven by Playwright, axe-core from the npm
registry run on every page a test opens (a serious or critical violation fails the test), and a
screenshot of each page under tests/e2e/screenshots/ for a person to look at.

Without Chromium or npm the browser tests are skipped with the reason; under CI=true that is a
failure instead, so CI never passes without having run them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, ViewportSize, expect

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
WIDE: ViewportSize = {"width": 1440, "height": 900}
PHONE: ViewportSize = {"width": 360, "height": 740}
WAIT_MS = 15_000

SCREENSHOTS = Path(__file__).parent / "screenshots"
# axe-core is installed once from the npm registry into a cache outside the checkout.
AXE_CACHE = Path(os.environ.get("CAAS_E2E_CACHE", Path.home() / ".cache" / "caas-e2e"))
AXE_PACKAGE = "axe-core@4"
AXE_SCRIPT = AXE_CACHE / "node_modules" / "axe-core" / "axe.min.js"
FAILING_IMPACTS = ("serious", "critical")
_UNSAFE = re.compile(r"[^\w.-]+")


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip with `reason`; under CI=true a missing piece fails the run instead."""
    if under_ci():
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


def chromium_or_skip() -> Path:
    if not CHROMIUM.exists():
        unavailable(f"the browser tests need Debian's Chromium at {CHROMIUM} (`make browser`)")
    return CHROMIUM


def axe_source() -> str:
    """axe-core's script, installed with npm into the cache the first time."""
    if not AXE_SCRIPT.exists():
        npm = shutil.which("npm")
        if npm is None:
            unavailable(
                "the accessibility checks need npm to install axe-core (apt-get install npm)"
            )
        AXE_CACHE.mkdir(parents=True, exist_ok=True)
        installed = subprocess.run(
            [npm, "install", "--prefix", str(AXE_CACHE), "--no-audit", "--no-fund", AXE_PACKAGE],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if installed.returncode != 0 or not AXE_SCRIPT.exists():
            unavailable(f"npm could not install {AXE_PACKAGE}: {installed.stderr.strip()[-300:]}")
    return AXE_SCRIPT.read_text()


def axe_violations(page: Page, source: str) -> list[dict[str, Any]]:
    """The serious and critical violations axe finds on the page as it is now.

    Injected through the DevTools protocol, which the page's Content-Security-Policy does not
    govern (the policy stays on for the page's own scripts)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source)
    found: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const results = await axe.run(document, {resultTypes: ['violations']});
            return results.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.slice(0, 5).map(n => n.target.join(' ')),
            }));
        }"""
    )
    return [violation for violation in found if violation["impact"] in FAILING_IMPACTS]


@dataclass
class Faces:
    """Opens browser windows and checks each page it is told about: axe, then a screenshot."""

    browser: Browser
    base_url: str
    axe: str
    prefix: str
    complaints: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def window(self, viewport: ViewportSize = DESKTOP, **options: Any) -> Page:
        context = self.browser.new_context(viewport=viewport, base_url=self.base_url, **options)
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        page.on("console", self._listen)
        return page

    def logged_in(self, email: str, password: str, viewport: ViewportSize = DESKTOP) -> Page:
        page = self.window(viewport)
        page.goto("/login")
        self.check(page, "login")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        expect(page.locator("header .who")).to_be_visible()
        return page

    def visit(self, page: Page, path: str, name: str) -> None:
        response = page.goto(path)
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        self.check(page, name)

    def check(self, page: Page, name: str) -> None:
        """Axe finds nothing serious on the page; its screenshot is saved."""
        SCREENSHOTS.mkdir(exist_ok=True)
        shot = SCREENSHOTS / f"{self.prefix}-{_UNSAFE.sub('-', name)}.png"
        page.screenshot(path=shot, full_page=True)
        violations = axe_violations(page, self.axe)
        assert not violations, f"axe on {page.url}: {violations}"
        self.checked.append(name)

    def _listen(self, message: ConsoleMessage) -> None:
        if "status of 422" in message.text:
            return  # a form sent back with its fields' messages, which the test looks at
        if message.type in ("error", "warning") or message.text.startswith("[DOM]"):
            self.complaints.append(f"{message.type}: {message.text} ({message.location['url']})")
