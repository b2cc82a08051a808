"""Browser tests: Debian's chromium driven by Playwright (which downloads no browser of its own),
against a live daphne sharing the test database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ManagedProcess, start_daphne, subprocess_environment

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1360, "height": 900}
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(
        reason=f"needs Debian's chromium at {CHROMIUM}: apt-get install -y chromium "
        "(.ci/run installs it)"
    )
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread while it is open, so
    # Django takes the tests' (synchronous) ORM calls for calls from async code. Allowed for
    # this module's tests only; never passed on to the servers they start.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv(ASYNC_UNSAFE, "true")
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# Every page a browser test opens is watched for Content-Security-Policy violations: Chromium
# logs each to the console, and the listener reports the DOM's securitypolicyviolation events.
CSP_LISTENER = """document.addEventListener("securitypolicyviolation", (event) =>
    console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}`));"""


def is_csp_violation(text: str) -> bool:
    return text.startswith("CSP violation") or "Content Security Policy" in text


def watch_content_security_policy(page) -> list[str]:
    """Collect ``page``'s CSP violations (from its next navigation on) in the list returned."""
    violations: list[str] = []
    page.context.add_init_script(CSP_LISTENER)
    page.on(
        "console",
        lambda message: violations.append(message.text) if is_csp_violation(message.text) else None,
    )
    return violations


@pytest.fixture
def page(browser):
    """A page whose CSP violations collect in ``page.csp_violations``; a test that leaves any
    there fails."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.csp_violations = watch_content_security_policy(page)
    try:
        yield page
    finally:
        context.close()
    assert page.csp_violations == [], "the pages broke their Content-Security-Policy"


def server_environment(**overrides: str) -> dict[str, str]:
    env = subprocess_environment(EIDOLON_LOG_LEVEL="WARNING", **overrides)
    env.pop(ASYNC_UNSAFE, None)
    return env


def start_web(**env: str) -> tuple[ManagedProcess, str]:
    return start_daphne(server_environment(**env))


@pytest.fixture(scope="module")
def web(django_db_setup) -> Iterator[str]:
    """A live daphne on the test database (for this module's tests); its base URL."""
    server, base = start_web()
    try:
        yield base
    finally:
        server.stop()


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("main button[type=submit]")
