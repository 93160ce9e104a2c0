"""A schedule's page in a real browser (issue 14): nights as columns and configurations as
rows, the flagged cell and the alert, the history of edits, and the trend plot drawn by
the pages' charting library from every (configuration, night)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

import pytest

from db.migrate import upgrade
from db.session import session_scope
from tests.service.test_nightwatch import CONFIGS, SPEC, T0, analyse_all, night
from tests.service.test_schedules import schedule_at
from tests.web.conftest import live_server, require_browser, screenshot
from tests.web.test_pages import marks

pytestmark = pytest.mark.slow
NIGHTS = 6


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Six nights of a 12-configuration watch; night 5 slows grid point 4 down 1.5x."""
    require_browser()
    url = f"sqlite:///{tmp_path_factory.mktemp('schedule') / 'plateau.db'}"
    upgrade(url)
    sid = schedule_at(url, T0 - dt.timedelta(days=1), spec=SPEC, compare_nights=5)
    rng = random.Random(14)
    firings = [night(url, sid, k, rng) for k in range(NIGHTS - 1)]
    firings.append(night(url, sid, NIGHTS - 1, rng, slow={4: 1.5}, plugin="1.1"))
    analyse_all(url, firings)
    with session_scope(url) as s:  # an edit, as the API records it
        from db.models import ScheduleEvent

        s.add(ScheduleEvent(schedule_id=sid, actor="ada", kind="paused", at=T0))
    with live_server(url) as base:
        yield {"base": base, "url": url, "schedule_id": sid}


def test_the_page_shows_every_night_and_configuration_and_flags_the_slowdown(page, site):
    page.goto(f"{site['base']}/schedules/{site['schedule_id']}")
    page.wait_for_selector("body[data-plots=ready]")
    heads = page.eval_on_selector_all(
        "#nights thead th[data-night]", "t => t.map(h => h.dataset.night)"
    )
    assert heads == [str(n) for n in range(NIGHTS)]
    rows = page.locator("#nights tbody tr")
    assert rows.count() == CONFIGS
    for i in range(CONFIGS):
        cells = rows.nth(i).locator("td")
        assert cells.count() == NIGHTS
        assert all(t.strip() != "—" for t in cells.all_text_contents())
    assert "loss" in rows.first.inner_text() and "plateau" in rows.first.inner_text()
    # the software of each night, the plugin release marked where it changed
    changed = page.locator("#night-software small.changed")
    assert changed.count() == 1 and changed.inner_text() == "plugins 1.1"
    assert page.locator(f'#night-software td[data-night="{NIGHTS - 1}"] small.changed').count()
    flagged = page.locator("#nights td.alert")
    assert flagged.count() == 1
    assert flagged.get_attribute("data-night") == str(NIGHTS - 1)
    assert "steps_to_target regression" in (flagged.get_attribute("title") or "")
    alert_rows = page.locator("#alerts tbody tr")
    assert alert_rows.count() == 1
    text = alert_rows.first.inner_text()
    assert "steps_to_target" in text and "regression" in text and "plugins 1.0 → 1.1" in text
    assert "created" in page.inner_text("#events") and "paused" in page.inner_text("#events")
    # The trend plot: one point per (configuration, night), the alert ringed.
    spreads = marks(page, "trend", "spread")  # a bar per (configuration, night)
    points = {(m["datum"]["configuration"], m["datum"]["night"]) for m in spreads}
    assert len(points) == len(spreads) == CONFIGS * NIGHTS
    assert all(m["height"] > 0 for m in spreads)  # each bar spans its seeds' range
    (ring,) = marks(page, "trend", "alert")
    assert ring["datum"]["night"] == NIGHTS - 1 and "regression" in ring["datum"]["alert"]
    titles = page.locator("#plot-trend g.role-title-text text").all_text_contents()
    assert titles and "steps to target" in titles[0]
    screenshot(page, "schedule.png")
