"""What the browser tests share: Debian's Chromium driven by Playwright (`browser`, `page`),
a live uvicorn over a database (`live_server`), and screenshots (PLATEAU_SCREENSHOTS=DIR).

Each test module defines its own `site` fixture (a dict with at least "base", the server's
URL): `browser` and `page` take the one of the module that asks for them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from db.session import dispose_engines
from service.settings import Settings

CHROMIUM = os.environ.get("PLATEAU_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_WIDTH = 1440  # the README's screenshots: every page at this width


def browser_problem() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the `playwright` package is not installed (pip install playwright==1.65.2)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    return None


def require_browser() -> None:
    problem = browser_problem()
    if problem is None:
        return
    if os.environ.get("PLATEAU_REQUIRE_BROWSER") == "1":
        pytest.fail(f"a browser is required (PLATEAU_REQUIRE_BROWSER=1): {problem}")
    pytest.skip(problem)


@contextmanager
def live_server(url: str) -> Iterator[str]:
    """The app (no dispatcher) over the database at `url`, served on 127.0.0.1; its URL."""
    from service.api.main import create_app
    from tests.service import live

    try:
        with live.live_server(create_app(Settings(database_url=url), dispatch=False)) as base:
            yield base
    finally:
        dispose_engines()


@pytest.fixture(scope="module")
def browser(site: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, site: dict[str, Any]) -> Iterator[Any]:
    """A fresh page that may reach the test server only, and must log no errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    elsewhere: list[str] = []
    errors: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(site["base"]):
            route.continue_()
        else:  # a CDN, a font service, ...: the pages must work offline
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    tab = context.new_page()
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()
    assert not elsewhere, f"pages requested other hosts: {elsewhere}"
    assert not errors, f"errors in the page: {errors}"


def screenshot(tab: Any, name: str) -> None:
    """With PLATEAU_SCREENSHOTS=DIR, the whole page at SCREENSHOT_WIDTH px to DIR/name."""
    folder = os.environ.get("PLATEAU_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        height = tab.viewport_size["height"] if tab.viewport_size else 900
        tab.set_viewport_size({"width": SCREENSHOT_WIDTH, "height": height})
        tab.wait_for_timeout(300)  # vega-embed redraws at the container's new width
        tab.screenshot(path=str(Path(folder) / name), full_page=True)
