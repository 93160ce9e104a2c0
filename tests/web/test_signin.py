"""Team mode in a real browser (Debian's Chromium through Playwright) against a live server
on 127.0.0.1: sign in with a member's key, cancel one's own sweep from its page, be refused
another member's (a 403 page), see a cross-site form post change nothing, sign out.

The sweeps only need to be queued: nothing trains here.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from db.migrate import upgrade
from db.models import Run
from db.session import dispose_engines, session_scope
from service import auth
from service.settings import Settings
from tests.service.conftest import QUICK_SPEC
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, require_browser, screenshot

pytestmark = pytest.mark.slow


def statuses(url: str, sweep_id: int) -> set[str]:
    with session_scope(url) as s:
        return set(s.scalars(select(Run.status).where(Run.sweep_id == sweep_id)))


@pytest.fixture(scope="module")
def team_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_browser()
    import uvicorn

    from service.api.main import create_app
    from service.spec import SweepSpec
    from service.sweeps import submit_sweep

    url = f"sqlite:///{tmp_path_factory.mktemp('team') / 'plateau.db'}"
    upgrade(url)
    keys, sweeps = {}, {}
    with session_scope(url) as s:
        for name in ("mia", "max"):
            user = auth.create_user(session=s, name=name, role="member", actor="test")
            keys[name] = auth.create_key(session=s, user=user, name="web", actor="test")[1]
            sweeps[name] = [
                submit_sweep(
                    session=s,
                    spec=SweepSpec.model_validate(QUICK_SPEC | {"name": f"{name}-{i}"}),
                    source="api",
                    max_attempts=1,
                    owner=user,
                ).id
                for i in range(2)
            ]
    app = create_app(Settings(database_url=url), dispatch=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    site: dict[str, Any] = {"base": f"http://127.0.0.1:{port}", "url": url, "keys": keys}
    site["sweeps"] = sweeps

    # Another site: a page served from 127.0.0.1 too but named `localhost`, which is a
    # different site to the browser (cookies, SameSite) on the same loopback network (so
    # Chrome's Local Network Access checks, which would block a public page's post to
    # 127.0.0.1 by themselves, let it through: the test sees what our cookie does).
    class Evil(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = site["evil_page"].encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    evil = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    site["evil"] = f"http://localhost:{evil.server_address[1]}"
    yield site
    evil.shutdown()
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
    dispose_engines()


@pytest.fixture
def tab(team_site: dict[str, Any]) -> Iterator[Any]:
    """A browser tab that reaches the test server and the other site, nothing else,
    and logs no errors but the expected refusals."""
    from playwright.sync_api import sync_playwright

    base = team_site["base"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        elsewhere: list[str] = []
        errors: list[str] = []

        def route(r: Any) -> None:
            if r.request.url.startswith((base, team_site["evil"])):
                r.continue_()
            else:
                elsewhere.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))

        def console(m: Any) -> None:
            expected = "the server responded with a status of 40"  # the refusals we test
            if m.type == "error" and expected not in m.text:
                errors.append(m.text)

        page.on("console", console)
        yield page
        context.close()
        browser.close()
        assert not elsewhere, f"pages requested other hosts: {elsewhere}"
        assert not errors, f"errors in the page: {errors}"


def test_a_member_signs_in_cancels_their_sweep_is_refused_anothers_and_signs_out(tab, team_site):
    base, url, keys = team_site["base"], team_site["url"], team_site["keys"]
    mine, mine_too = team_site["sweeps"]["mia"]
    theirs = team_site["sweeps"]["max"][0]

    # not signed in: a page sends the browser to the sign-in form, which brings it back
    tab.goto(f"{base}/sweeps/{mine}")
    tab.wait_for_url("**/signin?next=*")
    screenshot(tab, "signin.png")
    tab.fill("input[name=key]", keys["mia"][:-2] + "xx")
    tab.click("form#signin button[type=submit]")
    assert "that key is not valid" in tab.inner_text("#signin-error")
    tab.fill("input[name=key]", keys["mia"])
    tab.click("form#signin button[type=submit]")
    tab.wait_for_url(f"**/sweeps/{mine}")
    assert tab.inner_text("#signed-in-as") == "mia (member)"
    cookie = next(c for c in tab.context.cookies() if c["name"] == "plateau_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert tab.evaluate("document.cookie").find("plateau_session") == -1  # scripts can't read it

    # her own sweep: the cancel button works
    assert tab.inner_text("#sweep-status") == "queued"
    tab.click("form#cancel-sweep button[type=submit]")
    tab.wait_for_url(f"**/sweeps/{mine}")
    assert tab.inner_text("#sweep-status") == "cancelled"
    assert statuses(url, mine) == {"cancelled"}
    assert tab.locator("form#cancel-sweep").count() == 0

    # another member's: no button, and a post anyway (with a valid token) is a 403 page
    tab.goto(f"{base}/sweeps/{theirs}")
    assert "max" in tab.inner_text("dl.facts")
    assert tab.locator("form#cancel-sweep").count() == 0
    token = tab.get_attribute("form#signout input[name=csrf_token]", "value")
    with tab.expect_navigation():
        tab.evaluate(
            """([action, token]) => {
                const f = document.createElement('form');
                f.method = 'post'; f.action = action;
                const i = document.createElement('input');
                i.type = 'hidden'; i.name = 'csrf_token'; i.value = token;
                f.appendChild(i); document.body.appendChild(f); f.submit();
            }""",
            [f"/sweeps/{theirs}/cancel", token],
        )
    assert tab.inner_text("h1") == "403 not allowed"
    assert f"sweep {theirs} belongs to max" in tab.inner_text("#error-message")
    assert statuses(url, theirs) == {"queued"}

    # another site posts at her own sweep, to the API (a script) and the page (a form):
    # the same-origin guard refuses both (the browser says Sec-Fetch-Site: cross-site), and
    # the session cookie would not go with either anyway (SameSite=Lax): nothing changes
    evil = team_site["evil"]
    team_site["evil_page"] = f"""<!doctype html><body>
      <form id="page" method="post" action="{base}/sweeps/{mine_too}/cancel">
        <input name="csrf_token" value="guess"></form>
      <script>
        fetch("{base}/api/v1/sweeps/{mine_too}/cancel", {{method: "POST", mode: "no-cors",
              credentials: "include", body: "x=1", headers: {{"content-type": "text/plain"}}}})
          .finally(() => document.getElementById("page").submit());
      </script></body>"""
    with (
        tab.expect_response(f"{base}/sweeps/{mine_too}/cancel") as form,
        tab.expect_response(f"{base}/api/v1/sweeps/{mine_too}/cancel") as api,
    ):
        tab.goto(f"{evil}/")
    tab.wait_for_url(f"{base}/sweeps/{mine_too}/cancel")  # the form's 403 page, shown
    assert api.value.status == 403 and form.value.status == 403
    assert statuses(url, mine_too) == {"queued"}

    # signing out ends the session
    tab.goto(f"{base}/sweeps/{mine_too}")
    assert tab.inner_text("#sweep-status") == "queued"
    tab.click("form#signout button[type=submit]")
    tab.wait_for_url("**/signin")
    tab.goto(f"{base}/sweeps/{mine_too}")
    tab.wait_for_url("**/signin?next=*")
    assert statuses(url, mine_too) == {"queued"}
