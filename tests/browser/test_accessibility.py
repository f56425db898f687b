"""Issue 16: axe-core finds nothing on any page state of the live experience, at 1280 and 390 px; the main
story works with the keyboard alone; no Content-Security-Policy violation is reported on the way.

One user for the module. The totals per page state are written to ``screenshots/axe-totals.json``.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import SCREENS, axe_violations, screenshot, wait_ready, watched_user

WIDTHS = {"wide": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
UNREADABLE = "https://no-such-site.invalid/about"


@pytest.fixture(scope="module")
def person(browser, live_server):
    user = watched_user(browser, live_server)
    yield user
    user.context.close()


def audit(page, name: str, totals: dict[str, int], found: list[str], dark: bool = False) -> None:
    """Run axe on ``page`` at both widths (and in dark mode when asked); record the count per state."""
    schemes = ["light", "dark"] if dark else ["light"]
    for scheme in schemes:
        page.emulate_media(color_scheme=scheme)
        for width_name, viewport in WIDTHS.items():
            page.set_viewport_size(viewport)
            state = f"{name} @{width_name}" + (" dark" if scheme == "dark" else "")
            violations = axe_violations(page)
            totals[state] = sum(len(v["nodes"]) for v in violations)
            found += [f"{state}: {v['id']} ({v['impact']}) {v['help']} at {v['nodes']}" for v in violations]
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(WIDTHS["wide"])


def test_axe_finds_no_violation_on_any_page_state_at_either_width(browser, live_server, person):
    totals: dict[str, int] = {}
    found: list[str] = []
    visitor = browser.new_context(base_url=live_server.url)
    anonymous = visitor.new_page()
    try:
        anonymous.goto("/login")
        audit(anonymous, "sign in", totals, found)
        anonymous.goto("/signup")
        audit(anonymous, "sign up", totals, found)
        anonymous.get_by_label("Username").fill(f"a{uuid.uuid4().hex[:8]}")
        anonymous.get_by_role("button", name="Create account").click()
        expect(anonymous.locator("#password-error")).to_be_visible()
        audit(anonymous, "sign up with errors", totals, found)
    finally:
        visitor.close()

    page = person.page
    page.goto("/sessions")
    wait_ready(page)
    audit(page, "sessions, none yet", totals, found)
    page.goto("/sessions/new")
    page.get_by_role("button", name="Create session").click()
    expect(page.locator("#name-error")).to_be_visible()
    audit(page, "new session with errors", totals, found)

    blocked = person.create_session(name="Without sources", source_urls=[])
    failing = person.create_session(name="Unreadable sources", source_urls=[UNREADABLE])
    failed = person.start(failing["id"], "web_research")
    done = person.start(blocked["id"], "bmc_analysis")
    person.wait_terminal(failed["id"])
    person.wait_terminal(done["id"])
    demo = person.start_demo(steps=100, step_seconds=30)
    try:
        for name, path in [("sessions with a running job", "/sessions"),
                           ("session page, research blocked", blocked["url"]),
                           ("session page, research failed", failing["url"]),
                           ("jobs dashboard", "/jobs"), ("running job page", f"/jobs/{demo['id']}"),
                           ("failed job page", f"/jobs/{failed['id']}"), ("completed job page", f"/jobs/{done['id']}"),
                           ("edit session", f"/sessions/{blocked['id']}/edit"), ("not found", "/jobs/nope")]:
            page.goto(path)
            wait_ready(page)
            expect(page.locator("#job-tracker")).to_be_visible()
            audit(page, name, totals, found, dark=name in ("session page, research failed", "jobs dashboard"))
    finally:
        person.cancel(demo["id"])
    SCREENS.mkdir(parents=True, exist_ok=True)
    (SCREENS / "axe-totals.json").write_text(json.dumps(totals, indent=1))
    assert not found, "\n".join(found)
    assert person.csp.violations == []


def test_the_main_story_works_with_the_keyboard_alone(person):
    page = person.page
    page.goto("/sessions")
    wait_ready(page)

    def tab_to(target, limit: int = 60):
        """Press Tab until ``target`` (a locator) has the focus; fail if it never gets it."""
        for _ in range(limit):
            page.keyboard.press("Tab")
            if target.evaluate("(node) => node === document.activeElement"):
                return
        raise AssertionError(f"{target} never got the focus by Tab")

    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    tab_to(page.get_by_role("link", name=re.compile(r"^Create your first strategy session$|^New session$")).first)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/sessions/new$"))
    tab_to(page.get_by_label("Name"))
    page.keyboard.type("Keyboard only")
    tab_to(page.get_by_role("button", name="Create session"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Keyboard only")
    wait_ready(page)
    tab_to(page.get_by_role("button", name="Generate EPM program"))
    page.keyboard.press("Enter")
    expect(page.locator('section[data-operation="epm_generation"] .progress')).to_be_visible()
    toast = page.locator("#toasts .toast")
    expect(toast).to_be_visible(timeout=20_000)
    tab_to(toast.get_by_role("link", name="View program"))  # the live corner comes after the page
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"EPM program$"))
    screenshot(page, "keyboard-only-program")
    assert person.csp.violations == []
