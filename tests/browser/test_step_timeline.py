"""Issue 16, item 2: the step timeline of an EPM generation, like a CI run page, as a person sees it at 1280 and
390 px — on the session card, in the tracker and on the job's page, while it runs and once it finished: each
step done (with its duration), current (turning, its time so far) or to come; the time left from earlier runs
with its basis; axe-core finds nothing on any of these states.

The module runs its own server pacing each stage at 2.5 s (an EPM generation lasts about 20 s), so a
running state lasts long enough to be looked at and audited at both widths. Its screenshots are
``steps-*.png`` and its axe totals ``axe-totals-steps.json`` in the screenshots directory.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import SCREENS, browser_server, screenshot, wait_ready, watched_user
from tests.browser.test_accessibility import WIDTHS, audit

STAGE_SECONDS = 2.5
STEPS = 8
CARD = 'section.operation[data-operation="epm_generation"]'


@pytest.fixture(scope="module")
def paced_server(browser_db):
    with browser_server(browser_db, f"epmsteps:{uuid.uuid4().hex[:8]}:", workers=1,
                        stage_seconds=STAGE_SECONDS) as server:
        yield server


def shoot(page, name: str) -> None:
    """Screenshots of ``page`` as it is now at both widths, ``steps-<name>-1280.png`` and ``-390.png``."""
    for viewport in WIDTHS.values():
        page.set_viewport_size(viewport)
        screenshot(page, f"steps-{name}-{viewport['width']}")
    page.set_viewport_size(WIDTHS["wide"])


def check_steps(steps, *, running: bool) -> int:
    """The list as it is at one moment: steps done, each with a duration of about one stage; then the current
    one (if ``running``), turning, with its whole seconds so far; the rest to come, without a time. Returns
    how many are done."""
    rows = steps.locator("li").evaluate_all("""(items) => items.map((li) => ({
        state: li.className.replace("step step-", ""), current: li.getAttribute("aria-current"),
        time: li.querySelector(".step-time")?.textContent ?? null }))""")
    assert len(rows) == STEPS, rows
    states = "".join(row["state"][0] for row in rows)  # d(one), c(urrent), t(odo)
    assert re.fullmatch(r"d+ct*" if running else "d" * STEPS, states), states
    for row in rows:
        if row["state"] == "done":
            assert STAGE_SECONDS - 0.2 <= float(row["time"].removesuffix(" s")) < STAGE_SECONDS + 3, row
        elif row["state"] == "current":
            assert row["current"] == "step" and re.fullmatch(r"\d s", row["time"]), row
        else:
            assert row["time"] is None, row
    return states.count("d")


@pytest.fixture
def person(browser, paced_server):
    """A user of the paced server (its pages' CSP violations collected)."""
    user = watched_user(browser, paced_server)
    try:
        yield user
    finally:
        user.context.close()


def test_a_running_and_a_finished_epm_generation_show_their_steps_with_durations(person):
    totals: dict[str, int] = {}
    found: list[str] = []
    page = person.page
    session = person.create_session(name="Timeline for the corner bakery")
    page.goto(session["url"])
    wait_ready(page)
    card = page.locator(CARD)

    # The first run: no earlier one, so no estimate — the elapsed time alone moves.
    card.get_by_role("button", name="Generate EPM program").click()
    expect(card.locator("ol.steps li.step-done")).to_have_count(1, timeout=15_000)
    elapsed = card.locator(".progress-elapsed")
    expect(elapsed).to_have_text(re.compile(r"^\d+:\d\d elapsed$"))
    expect(elapsed).not_to_have_text(elapsed.inner_text(), timeout=3_000)
    first = card.locator("[data-job-progress]").get_attribute("data-job-id")
    assert person.wait_terminal(first, timeout=90)["status"] == "completed"

    # The second run, while it runs: its estimate comes from the first run (not three of the user's own yet).
    card.get_by_role("button", name="Generate EPM program").click()
    expect(card.locator("ol.steps li.step-done")).to_have_count(1, timeout=15_000)
    second = card.locator("[data-job-progress]").get_attribute("data-job-id")
    assert second != first
    expect(elapsed).to_have_text(re.compile(
        r"^\d+:\d\d elapsed · (about \d+:\d\d left|longer than usual) \(based on 1 earlier run by all users\)$"))
    assert check_steps(card.locator("ol.steps"), running=True) >= 1
    ticking = card.locator("li[aria-current=step] .step-time")
    expect(ticking).not_to_have_text(ticking.inner_text(), timeout=3_000)  # the clock moves between updates
    shoot(page, "running-session-card")
    audit(page, "steps: session card, running", totals, found)

    page.goto(f"/jobs/{second}")
    wait_ready(page)
    steps = page.get_by_role("list", name="Steps")
    expect(steps.get_by_role("listitem")).to_have_count(STEPS)
    assert check_steps(steps, running=True) >= 1
    expect(page.locator("[data-job-left] dd")).to_have_text(
        re.compile(r"^(about \d+:\d\d left|longer than usual) \(based on 1 earlier run by all users\)$"))
    shoot(page, "running-job-page")
    audit(page, "steps: job page, running", totals, found)

    page.goto("/sessions")
    wait_ready(page)
    entry = page.locator(f'#job-tracker article[data-job-id="{second}"]')
    expect(entry.locator(".tracker-elapsed")).to_have_text(
        re.compile(r"^Step \d of 8 · \d+:\d\d elapsed · (about \d+:\d\d left|longer than usual)$"))
    expect(entry.locator(".tracker-elapsed")).to_have_attribute("title", re.compile(r"based on 1 earlier run"))
    entry.get_by_text("Steps", exact=True).click()
    tracked = entry.locator("ol.steps")
    expect(tracked).to_be_visible()
    assert check_steps(tracked, running=True) >= 1
    shoot(page, "running-tracker")
    audit(page, "steps: tracker, running", totals, found)
    assert person.job(second)["status"] == "running", "the states above were audited while the job ran"

    # Finished: the step log, from the job's end, on its page.
    finished = person.wait_terminal(second, timeout=90)
    assert finished["status"] == "completed"
    page.goto(f"/jobs/{second}")
    wait_ready(page)
    steps = page.get_by_role("list", name="Steps")
    expect(steps.locator("li.step-done")).to_have_count(STEPS)
    check_steps(steps, running=False)
    expect(steps.get_by_role("listitem").last).to_have_text(re.compile(r"^Saving the program \(done\)\d\.\d s$"))
    expect(page.locator("[data-job-left]")).to_have_count(0)
    shoot(page, "finished-job-page")
    audit(page, "steps: job page, finished", totals, found, dark=True)

    SCREENS.mkdir(parents=True, exist_ok=True)
    (SCREENS / "axe-totals-steps.json").write_text(json.dumps(totals, indent=1))
    assert not found, "\n".join(found)
    assert sum(totals.values()) == 0 and len(totals) == 10, totals
    assert person.csp.violations == []
