"""Issue 5's acceptance story, one test per line, in headless Chromium against real gunicorn+gevent.

Each test is a new user in a new browser context. Operations are paced at ``STAGE_SECONDS`` a stage
(an EPM generation lasts about 6 s); demo countdowns set their own pace.
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from tests.browser.conftest import (
    expect_tracker_ended,
    percent_of,
    screenshot,
    set_hidden,
    tracker_job,
    use_page_shim,
    wait_ready,
)

# Records every value the operation's progress bar shows, in order (installed before the click).
RECORD_BAR = """(operation) => {
  window.__bar = [];
  const area = document.querySelector(`section.operation[data-operation="${operation}"] [data-job-progress]`);
  const record = () => {
    const bar = area.querySelector(".progress[role=progressbar]");
    const value = bar && bar.getAttribute("aria-valuenow");
    if (value !== null && value !== undefined && window.__bar[window.__bar.length - 1] !== value) {
      window.__bar.push(value);
    }
  };
  new MutationObserver(record).observe(area, { subtree: true, childList: true, attributes: true });
  record();
}"""

# A source that fails at run time and every time (the .invalid domain never resolves), so Retry cannot help.
UNREADABLE = "https://no-such-site.invalid/about"
UNREADABLE_FAILURE = re.compile(r"^Failed: None of the 1 sources could be read \(no-such-site\.invalid: .+\)\.$")
NOTE = "You can safely navigate anywhere — we'll tell you when it's ready"


def panel(page, operation: str):
    return page.locator(f'section.operation[data-operation="{operation}"]')


def running_job_id(page, operation: str) -> str:
    area = panel(page, operation).locator("[data-job-progress]")
    expect(area).to_have_attribute("data-job-id", re.compile(r"\w+"))
    return area.get_attribute("data-job-id")


# 1 -----------------------------------------------------------------------------------------------------
def test_1_generate_shows_a_progress_bar_at_once_moving_live_to_the_result(user, db_job):
    session = user.create_session()
    page = user.page
    page.goto(session["url"])
    wait_ready(page)
    epm = panel(page, "epm_generation")
    page.evaluate(RECORD_BAR, "epm_generation")

    clicked = time.monotonic()
    epm.get_by_role("button", name="Generate EPM program").click()
    bar = epm.locator("[data-job-progress] .progress[role=progressbar]")
    expect(bar).to_be_visible(timeout=2_000)
    appeared_after = time.monotonic() - clicked
    job_id = running_job_id(page, "epm_generation")
    expect(epm.locator("[data-job-progress] p.progress-text")).to_have_text(
        re.compile(r"^(Starting|Still running) \(\d+%\)"))
    expect(page.locator("html")).to_have_attribute("data-jobs-transport", "leader")  # live over SSE

    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^([2-9]\d)$"), timeout=10_000)
    screenshot(page, "session-page-mid-run")

    done = epm.locator("[data-job-progress] p.job-done")
    expect(done).to_have_text("Completed", timeout=20_000)
    expect(epm.get_by_role("link", name="View program")).to_have_count(1)  # one result link per card
    result = epm.locator("[data-latest-result]").get_by_role("link", name="View program")
    href = result.get_attribute("href")
    assert re.fullmatch(r"/programs/\d+", href), href

    shown = [int(value) for value in page.evaluate("window.__bar")]
    assert shown == sorted(shown), f"the bar went backwards: {shown}"
    assert len(set(shown)) >= 4, f"the bar should move through the stages live, it showed {shown}"
    assert appeared_after < 2.0

    row = db_job(job_id)
    assert row is not None and row["status"] == "completed" and row["job_type"] == "epm_generation"
    assert row["result"]["url"] == href

    result.click()
    expect(page).to_have_url(re.compile(rf"{re.escape(href)}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Meal kits 2027 — EPM program")


# 2 -----------------------------------------------------------------------------------------------------
def test_2_tracker_follows_the_job_on_every_page_and_dismiss_is_remembered(user):
    session = user.create_session()
    page = user.page
    page.goto(session["url"])
    wait_ready(page)
    panel(page, "epm_generation").get_by_role("button", name="Generate EPM program").click()
    job_id = running_job_id(page, "epm_generation")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Sessions").click()
    expect(page).to_have_url(re.compile(r"/sessions$"))
    tracker = page.get_by_role("region", name="Background jobs")
    expect(tracker).to_be_visible()
    entry = tracker_job(page, job_id)
    expect(entry.locator(".tracker-title")).to_have_text("EPM generation")
    expect(entry.locator(".progress[role=progressbar]")).to_have_attribute("aria-valuenow", re.compile(r"^\d+$"))
    expect(entry.locator(".tracker-message")).to_have_text(re.compile(r"\w"))
    expect(entry.locator(".tracker-percent")).to_have_text(re.compile(r"^\d+%$"))
    expect(entry.locator(".tracker-session")).to_have_text("Meal kits 2027")
    expect(tracker.locator(".tracker-note")).to_have_text(NOTE)
    link = entry.locator("a.tracker-link")
    expect(link).to_have_text("Details")
    expect(link).to_have_attribute("href", f"/jobs/{job_id}")
    expect(entry.get_by_role("button", name="Cancel")).to_be_enabled()
    expect(entry.get_by_role("button", name="Dismiss")).to_have_text("×")
    box = tracker.bounding_box()
    assert box["x"] > 1280 / 2, f"the tracker should sit in the right-hand corner, it is at {box}"
    screenshot(page, "tracker-on-sessions-page")
    seen = percent_of(entry.locator(".tracker-percent"))

    page.go_back()  # the browser's back button: the job goes on
    expect(page).to_have_url(re.compile(rf"{session['url']}$"))
    entry = tracker_job(page, job_id)
    page.wait_for_function("""([id, seen]) => {
        const pct = document.querySelector(`#job-tracker [data-job-id="${id}"] .tracker-percent`);
        return pct && parseInt(pct.textContent, 10) > seen;
    }""", arg=[job_id, seen], timeout=10_000)

    entry.get_by_role("button", name="Dismiss").click()
    expect(page.locator("#job-tracker")).to_be_hidden()
    page.goto("/programs")
    wait_ready(page)
    assert not user.job(job_id)["terminal"], "the job should still run for the dismissal to mean anything"
    badge = page.locator("[data-running-badge]")
    expect(badge).to_have_text("1")  # this page knows the job runs ...
    expect(page.locator("#job-tracker")).to_be_hidden()  # ... and remembers it was dismissed
    assert user.wait_terminal(job_id)["status"] == "completed"


def test_2_cancel_from_the_tracker(user, db_job):
    page = user.page
    page.goto("/sessions")
    wait_ready(page)
    job = user.start_demo(steps=40, step_seconds=0.5)
    entry = tracker_job(page, job["id"])
    expect(entry.locator(".tracker-title")).to_have_text("Demo countdown")
    page.evaluate("""() => {
        window.__cancel = [];
        new MutationObserver(() => {
          const button = document.querySelector("#job-tracker button.tracker-cancel");
          if (button) window.__cancel.push([button.disabled, button.textContent]);
        }).observe(document.getElementById("job-tracker"), { subtree: true, childList: true,
                                                              attributes: true, characterData: true });
    }""")
    entry.get_by_role("button", name="Cancel").focus()
    page.keyboard.press("Enter")  # from the keyboard
    expect_tracker_ended(page, job["id"], "Cancelled")
    assert [True, "Cancelling…"] in page.evaluate("window.__cancel"), "the button should say Cancelling… at once"
    assert user.wait_terminal(job["id"])["status"] == "cancelled"
    expect(page.locator("[data-running-badge]")).to_be_hidden()
    deadline = time.monotonic() + 10
    while (db_job(job["id"]) or {}).get("status") != "cancelled":
        assert time.monotonic() < deadline, f"the database row says {db_job(job['id'])}"
        time.sleep(0.2)


# 3 -----------------------------------------------------------------------------------------------------
def test_3_programs_link_carries_a_badge_with_the_number_of_running_jobs(user):
    session = user.create_session()
    page = user.page
    page.goto("/sessions")
    wait_ready(page)
    badge = page.get_by_role("navigation", name="Main").locator('a[data-nav="programs"] [data-running-badge]')
    expect(badge).to_be_hidden()
    first = user.start_demo(steps=40, step_seconds=0.5)
    second = user.start(session["id"], "epm_generation")
    expect(badge).to_be_visible()
    expect(badge).to_have_text("2")

    page.goto("/jobs")  # another page: the badge is there at once
    badge = page.locator('nav a[data-nav="programs"] [data-running-badge]')
    expect(badge).to_have_text("2")
    user.cancel(first["id"])
    expect(badge).to_have_text("1")
    user.cancel(second["id"])
    expect(badge).to_be_hidden()


# 4 -----------------------------------------------------------------------------------------------------
def test_4_progress_bar_comes_back_from_local_storage_before_the_network_answers(user):
    session = user.create_session()
    page = user.page
    page.goto(session["url"])
    wait_ready(page)
    epm = panel(page, "epm_generation")
    epm.get_by_role("button", name="Generate EPM program").click()
    job_id = running_job_id(page, "epm_generation")
    expect(epm.locator(".progress[role=progressbar]")).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]\d*$"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Programs").click()
    wait_ready(page)

    held = []
    page.route("**/api/background-jobs**", lambda route: held.append(route))  # no answer until released
    page.goto(session["url"])
    wait_ready(page)
    epm = panel(page, "epm_generation")
    expect(epm.locator("[data-job-progress] p.progress-text")).to_have_text(re.compile(r"^Still running \(\d+%\)"))
    # The tracker is empty in the server's HTML: only localStorage can have painted it.
    expect(tracker_job(page, job_id).locator(".tracker-percent")).to_have_text(re.compile(r"^\d+%$"))
    assert held, "the page should be waiting for the job API"
    screenshot(page, "session-page-restored-progress")
    restored = int(epm.locator(".progress[role=progressbar]").get_attribute("aria-valuenow"))

    for route in held:
        route.continue_()
    page.unroute("**/api/background-jobs**")
    page.wait_for_function("""([seen]) => {
        const bar = document.querySelector('section[data-operation="epm_generation"] .progress[role=progressbar]');
        return !bar || parseInt(bar.getAttribute("aria-valuenow"), 10) > seen;
    }""", arg=[restored], timeout=10_000)
    expect(epm.locator("p.job-done")).to_have_text("Completed", timeout=20_000)


def test_4_a_job_that_ended_while_away_shows_completed_or_failed_with_retry(user):
    session = user.create_session(source_urls=[UNREADABLE])  # web research fails: no source can be read
    page = user.page
    page.goto(session["url"])
    wait_ready(page)
    panel(page, "epm_generation").get_by_role("button", name="Generate EPM program").click()
    epm_id = running_job_id(page, "epm_generation")
    panel(page, "web_research").get_by_role("button", name="Run web research").click()
    research_id = running_job_id(page, "web_research")
    page.goto("about:blank")  # no page of the app is open while they end
    assert user.wait_terminal(epm_id)["status"] == "completed"
    assert user.wait_terminal(research_id)["status"] == "failed"

    page.goto(session["url"])
    epm = panel(page, "epm_generation")
    expect(epm.locator("p.job-done")).to_have_text("Completed")
    expect(epm.locator("[data-latest-result] a")).to_have_attribute("href", re.compile(r"^/programs/\d+$"))
    research = panel(page, "web_research")
    failed = research.locator("[data-job-progress] p.job-failed")
    expect(failed).to_have_text(UNREADABLE_FAILURE)
    expect(research.locator("[data-job-progress] a.job-edit")).to_have_text("Edit sources")
    retry = research.locator("[data-job-progress] button.job-retry")
    expect(retry).to_have_text("Retry")
    screenshot(page, "session-page-failed-with-retry")

    retry.click()
    expect(research.locator("[data-job-progress]")).not_to_have_attribute("data-job-id", research_id)
    expect(failed).to_have_text(UNREADABLE_FAILURE)
    jobs = user.api("GET", f"/api/background-jobs?session_id={session['id']}&job_type=web_research")["jobs"]
    assert len(jobs) == 2 and jobs[0]["retry_of"] == research_id, jobs


# 5 -----------------------------------------------------------------------------------------------------
def test_5_start_button_is_disabled_on_every_tab_while_its_operation_runs(user):
    session = user.create_session()
    first = user.page
    first.goto(session["url"])
    second = user.new_tab(session["url"])
    for tab in (first, second):
        wait_ready(tab)

    panel(first, "epm_generation").get_by_role("button", name="Generate EPM program").click()
    for tab in (first, second):
        button = panel(tab, "epm_generation").locator("button[data-start]")
        expect(button).to_be_disabled()
        expect(button).to_have_text("EPM generation in progress…")
    epm_id = running_job_id(second, "epm_generation")
    expect(panel(second, "bmc_analysis").locator("button[data-start]")).to_be_enabled()

    panel(second, "bmc_analysis").get_by_role("button", name="Build business model canvas").click()
    canvas_button = panel(first, "bmc_analysis").locator("button[data-start]")
    expect(canvas_button).to_be_disabled()
    expect(canvas_button).to_have_text("Business model canvas in progress…")

    tracker_job(second, epm_id).get_by_role("button", name="Cancel").click()  # a cancel in one tab ...
    for tab in (first, second):  # ... shows in all
        epm = panel(tab, "epm_generation")
        expect(epm.locator("button[data-start]")).to_be_enabled()
        expect(epm.locator("button[data-start]")).to_have_text("Generate EPM program")
        expect(epm.locator("p.job-cancelled")).to_have_text("Cancelled")
        expect(epm.locator("button.job-retry")).to_have_text("Retry")
    for tab in (first, second):
        canvas = panel(tab, "bmc_analysis")
        expect(canvas.locator("p.job-done")).to_have_text("Completed", timeout=20_000)
        expect(canvas.locator("button[data-start]")).to_have_text("Build business model canvas")
        expect(canvas.locator("button[data-start]")).to_be_enabled()


# 6 -----------------------------------------------------------------------------------------------------
def test_6_a_toast_says_the_program_is_ready_and_opens_it(user):
    session = user.create_session()
    page = user.page
    page.goto("/sessions")
    wait_ready(page)
    job = user.start(session["id"], "epm_generation")
    toast = page.locator(f'#toasts .toast[data-job-id="{job["id"]}"]')
    expect(toast).to_be_visible(timeout=20_000)
    expect(toast).to_have_class(re.compile(r"\btoast-success\b"))
    expect(toast.locator(".toast-text")).to_have_text("EPM program ready")
    link = toast.locator("a.toast-link")
    expect(link).to_have_text("View program")
    expect(link).to_have_attribute("href", re.compile(r"^/programs/\d+$"))
    expect(toast.get_by_role("button", name="Close")).to_be_visible()
    expect(page.locator("#toasts")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#toasts .toast")).to_have_count(1)
    screenshot(page, "toast-program-ready")
    href = link.get_attribute("href")
    link.click()
    expect(page).to_have_url(re.compile(rf"{href}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Meal kits 2027 — EPM program")


def test_6_a_failure_gets_a_toast_too(user):
    session = user.create_session(source_urls=[UNREADABLE])
    page = user.page
    page.goto("/programs")
    wait_ready(page)
    job = user.start(session["id"], "web_research")
    toast = page.locator(f'#toasts .toast[data-job-id="{job["id"]}"]')
    expect(toast).to_have_class(re.compile(r"\btoast-error\b"))
    expect(toast.locator(".toast-text")).to_have_text(
        re.compile(r"^Web research failed: None of the 1 sources could be read \(no-such-site\.invalid: .+\)\.$"))
    screenshot(page, "toast-failure")


def test_6_a_hidden_tab_shows_progress_in_its_title_and_notifies_once_allowed(user):
    use_page_shim(user.context)
    page = user.page
    page.goto("/sessions")
    wait_ready(page)
    plain = page.title()
    job = user.start_demo(steps=8, step_seconds=0.5)
    entry = tracker_job(page, job["id"])
    expect(entry).to_be_visible()
    ask = page.locator("#job-tracker button.notify-enable")
    expect(ask).to_have_text("Notify me when it's ready")
    ask.click()
    expect(ask).to_be_hidden()  # allowed: nothing more to ask

    set_hidden(page, True)
    expect(page).to_have_title(re.compile(rf"^\(\d+%\) {re.escape(plain)}$"))
    expect(page).to_have_title(f"✓ {plain}", timeout=15_000)
    page.wait_for_function("() => window.__epmNotifications.length > 0")  # a function: the CSP forbids eval
    assert page.evaluate("window.__epmNotifications") == [{"title": "Countdown finished", "body": "View job"}]
    set_hidden(page, False)
    expect(page).to_have_title(plain)
    expect(page.locator(f'#toasts .toast[data-job-id="{job["id"]}"] .toast-text')).to_have_text("Countdown finished")


def test_6_no_notification_without_permission(user):
    use_page_shim(user.context)
    page = user.page
    page.goto("/sessions")
    wait_ready(page)
    job = user.start_demo(steps=3, step_seconds=0.3)
    set_hidden(page, True)  # permission stays "default": the user was never asked
    expect(page).to_have_title(re.compile(r"^✓ "), timeout=15_000)
    expect(page.locator(f'#toasts .toast[data-job-id="{job["id"]}"]')).to_be_attached()
    assert page.evaluate("window.__epmNotifications") == []


# 7 -----------------------------------------------------------------------------------------------------
def test_7_jobs_dashboard_lists_filters_links_and_acts_live(user):
    session = user.create_session(source_urls=[UNREADABLE])
    failed = user.start(session["id"], "web_research")
    done = user.start_demo(steps=1, step_seconds=0)
    user.wait_terminal(failed["id"])
    user.wait_terminal(done["id"])
    page = user.page
    page.goto("/jobs")
    wait_ready(page)

    failed_row = page.locator(f'table.jobs-table tbody tr[data-job-id="{failed["id"]}"]')
    expect(failed_row.locator(".job-status")).to_have_attribute("data-status", "failed")
    expect(failed_row.get_by_role("button", name="Retry")).to_be_visible()
    done_row = page.locator(f'table.jobs-table tbody tr[data-job-id="{done["id"]}"]')
    expect(done_row.locator(".job-status")).to_have_attribute("data-status", "completed")
    expect(done_row.locator(".job-title a")).to_have_attribute("href", f"/jobs/{done['id']}")
    when = done_row.locator(".job-when time")
    expect(when).to_have_text("just now")
    expect(when).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    expect(when).to_have_attribute("title", re.compile(r"\d"))

    page.locator("form.job-filters select[name=status]").select_option("failed")
    page.locator("form.job-filters").get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=failed"))
    expect(page.locator("table.jobs-table tbody tr")).to_have_count(1)
    expect(page.locator("table.jobs-table tbody tr")).to_have_attribute("data-job-id", failed["id"])
    page.locator("form.job-filters select[name=status]").select_option("")
    page.locator("form.job-filters select[name=job_type]").select_option("demo_countdown")
    page.locator("form.job-filters").get_by_role("button", name="Filter").click()
    expect(page.locator("table.jobs-table tbody tr")).to_have_count(1)
    expect(page.locator("table.jobs-table tbody tr")).to_have_attribute("data-job-id", done["id"])

    page.goto("/jobs")
    wait_ready(page)
    live = user.start_demo(steps=40, step_seconds=0.5)  # appears live, at the top of Running
    row = page.locator(f'table.jobs-table tbody tr[data-job-id="{live["id"]}"]')
    expect(row.locator(".job-status")).to_have_attribute("data-status", "running")
    expect(row.locator(".job-status")).to_have_text(re.compile(r"running\s+\d+%"))
    expect(page.locator('[data-jobs-table="running"] tbody tr').first).to_have_attribute("data-job-id", live["id"])
    screenshot(page, "jobs-dashboard")
    row.get_by_role("button", name="Cancel").click()
    expect(row.locator(".job-status")).to_have_attribute("data-status", "cancelled")
    row.get_by_role("button", name="Retry").click()
    retried = page.locator('[data-jobs-table="running"] tbody tr').first
    expect(retried).not_to_have_attribute("data-job-id", live["id"])
    expect(retried.locator(".job-status")).to_have_attribute("data-status", "running")
    user.cancel(retried.get_attribute("data-job-id"))


def test_7_dashboard_times_are_relative_with_the_exact_time_on_hover(user):
    job = user.start_demo(steps=1, step_seconds=0)
    user.wait_terminal(job["id"])
    page = user.page
    page.clock.install()
    page.goto("/jobs")
    wait_ready(page)
    when = page.locator(f'tr[data-job-id="{job["id"]}"] .job-when time')
    expect(when).to_have_text("just now")
    page.clock.fast_forward("02:05")
    expect(when).to_have_text("2 minutes ago")
    exact = when.get_attribute("title")
    assert re.search(r"\d{1,2}:\d\d", exact), f"the hover text should be the exact time, it is {exact!r}"


def test_7_one_jobs_page_follows_its_job_live(user):
    job = user.start_demo(steps=6, step_seconds=0.4)
    page = user.page
    page.goto(f"/jobs/{job['id']}")
    wait_ready(page)
    live = page.locator(f'[data-live-job="{job["id"]}"]')
    expect(live.locator(".progress[role=progressbar]")).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]\d*$"))
    expect(live.locator(".job-state [data-status]")).to_have_text("completed", timeout=15_000)
    expect(live.locator(".job-state")).to_contain_text("Countdown finished")
    expect(live).to_contain_text("Counted 6 steps")


# 8 -----------------------------------------------------------------------------------------------------
def test_8_programs_page_in_progress_and_recent_update_live(user):
    session = user.create_session()
    page = user.page
    page.goto("/programs")
    wait_ready(page)
    job = user.start(session["id"], "epm_generation")
    item = page.locator(f'section[data-programs-in-progress] li.running-program[data-job-id="{job["id"]}"]')
    expect(item).to_be_visible()
    expect(item).to_contain_text("Meal kits 2027")
    expect(item.locator(".progress[role=progressbar]")).to_be_visible()
    screenshot(page, "programs-in-progress")
    expect(item).to_have_count(0, timeout=20_000)
    program = user.wait_terminal(job["id"])["result"]["url"]
    recent = page.locator(f'section[data-programs-recent] li a[href="{program}"]')
    expect(recent).to_have_text("Meal kits 2027 — EPM program")
