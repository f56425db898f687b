"""Issue 16: every job says what it belongs to, failures are prevented or come with the right action.

One user (one browser context) for the module.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import new_user, screenshot, wait_ready

UNREADABLE = "https://no-such-site.invalid/about"


@pytest.fixture(scope="module")
def person(browser, live_server):
    user = new_user(browser, live_server)
    yield user
    user.context.close()


def test_research_cannot_start_without_sources_and_says_why(person):
    session = person.create_session(name="No sources yet", source_urls=[])
    page = person.page
    page.goto(session["url"])
    wait_ready(page)
    button = page.get_by_role("button", name="Run web research")
    expect(button).to_be_disabled()
    expect(button).to_have_accessible_description(re.compile(r"^Add at least one source URL first"))
    refused = person.api("POST", f"/api/sessions/{session['id']}/web_research", {}, expect_status=422)
    assert refused["error"]["code"] == "session_incomplete", refused
    expect(button).to_be_disabled()  # the live widgets keep it so
    screenshot(page, "research-blocked-without-sources")


def test_source_urls_are_checked_on_save_and_every_bad_line_is_named(person):
    session = person.create_session(name="Checked sources")
    page = person.page
    page.goto(f"/sessions/{session['id']}/edit")
    page.get_by_label("Source URLs").fill("http://127.0.0.1/admin\nhttps://example.com/about\nftp://example.com/x\n"
                                          "http://localhost:8080/\nhttp://10.1.2.3/")
    page.get_by_role("button", name="Save session").click()
    error = page.locator("#source_urls-error")
    expect(error).to_contain_text("Line 1: 'http://127.0.0.1/admin': 127.0.0.1 is a loopback address")
    expect(error).to_contain_text("Line 3: 'ftp://example.com/x' is not an http:// or https:// address.")
    expect(error).to_contain_text("Line 4: 'http://localhost:8080/': localhost is a loopback address")
    expect(error).to_contain_text("Line 5: 'http://10.1.2.3/': 10.1.2.3 is a private address")
    expect(error).not_to_contain_text("Line 2")
    expect(page.get_by_label("Source URLs")).to_have_attribute("aria-invalid", "true")
    screenshot(page, "sources-checked-on-save")


def test_a_past_deadline_is_refused_and_the_budget_shows_in_its_currency(person):
    page = person.page
    page.goto("/sessions/new")
    expect(page.get_by_text("Year-month-day, from today on.")).to_be_visible()  # the rule, before any attempt
    page.get_by_label("Name").fill("Priced in euros")
    page.get_by_label("Budget").fill("4500000")
    page.get_by_label("Currency").select_option("EUR")
    page.get_by_label("Deadline").fill("2020-01-01")
    page.get_by_role("button", name="Create session").click()
    expect(page.locator("#deadline-error")).to_contain_text("The deadline 2020-01-01 has passed")
    page.get_by_label("Deadline").fill("2030-12-15")
    page.get_by_role("button", name="Create session").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Priced in euros")
    budget = page.locator(".facts data[data-currency='EUR']")
    expect(budget).to_have_text(re.compile(r"^€\s?4,500,000$"))  # the reader's locale, no cents on a large sum
    page.goto("/sessions")
    expect(page.locator("td time[datetime='2030-12-15']")).to_have_text("2030-12-15")


def test_a_failed_job_names_its_session_and_offers_to_edit_the_sources(person):
    session = person.create_session(name="Unreadable sources", source_urls=[UNREADABLE])
    job = person.start(session["id"], "web_research")
    assert person.wait_terminal(job["id"])["status"] == "failed"
    page = person.page

    page.goto(session["url"])
    research = page.locator('section.operation[data-operation="web_research"]')
    edit = research.get_by_role("link", name="Edit sources")
    expect(edit).to_have_attribute("href", f"/sessions/{session['id']}/edit#source_urls")

    page.goto("/jobs")
    wait_ready(page)
    row = page.locator(f'tr[data-job-id="{job["id"]}"]')
    expect(row.locator(".job-session")).to_have_text("Unreadable sources")
    expect(row.get_by_role("link", name="Edit sources")).to_be_visible()

    page.goto(f"/jobs/{job['id']}")
    expect(page.get_by_role("navigation", name="Breadcrumb")).to_have_text(
        re.compile(r"Jobs\s*›?\s*Unreadable sources\s*›?\s*Web research"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Web research for Unreadable sources")
    expect(page.locator(".page-head").get_by_role("link", name="Edit sources")).to_be_visible()
    for node in page.locator("main time[data-relative]").all():
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", node.get_attribute("title"))
    screenshot(page, "job-page-failed-edit-sources")


def test_tracker_entries_and_toasts_name_the_session_and_link_their_own_result(person):
    session = person.create_session(name="Canvas for the bakery")
    page = person.page
    page.goto("/sessions")
    wait_ready(page)
    job = person.start(session["id"], "bmc_analysis")
    entry = page.locator(f'#job-tracker article[data-job-id="{job["id"]}"]')
    expect(entry.locator(".tracker-session")).to_have_text("Canvas for the bakery")
    expect(entry.get_by_role("link", name="Details")).to_have_attribute("href", f"/jobs/{job['id']}")
    toast = page.locator(f'#toasts .toast[data-job-id="{job["id"]}"]')
    expect(toast.locator(".toast-context")).to_have_text("Canvas for the bakery", timeout=20_000)
    expect(toast.get_by_role("link", name="View canvas")).to_have_attribute(
        "href", f"/sessions/{session['id']}/canvas")
    expect(entry).to_have_count(0, timeout=15_000)  # the finished entry clears itself; the toast stays
    expect(toast).to_be_visible()


def test_the_step_timeline_follows_a_generation_and_stays_on_its_job_page(person):
    session = person.create_session(name="Step by step")
    page = person.page
    page.goto(session["url"])
    wait_ready(page)
    card = page.locator('section.operation[data-operation="epm_generation"]')
    card.get_by_role("button", name="Generate EPM program").click()
    current = card.locator("ol.steps li[aria-current=step]")
    expect(current).to_have_count(1)
    first = current.inner_text()
    expect(current).not_to_have_text(first, timeout=10_000)  # the next step starts; the first is done
    expect(card.locator("ol.steps li.step-done").first).to_have_text(re.compile(r"^Reading the session"))
    expect(card.locator(".progress-elapsed")).to_have_text(re.compile(r"^\d+:\d\d elapsed"))
    screenshot(page, "session-card-steps")
    job_id = card.locator("[data-job-progress]").get_attribute("data-job-id")
    assert person.wait_terminal(job_id)["status"] == "completed"
    page.goto(f"/jobs/{job_id}")
    steps = page.get_by_role("list", name="Steps").get_by_role("listitem")
    expect(steps).to_have_count(8)
    expect(page.locator("ol.steps li.step-done")).to_have_count(8)
    expect(steps.last).to_have_text(re.compile(r"^Saving the program \(done\)\d+\.\d s$"))
    screenshot(page, "job-page-steps-finished")

    page.goto(session["url"])  # a second run: the first one's duration gives an estimate of the time left
    wait_ready(page)
    card.get_by_role("button", name="Generate EPM program").click()
    expect(card.locator(".progress-elapsed")).to_have_text(
        re.compile(r"^\d+:\d\d elapsed · (about \d+:\d\d left|longer than usual) \(based on .+\)$"))
    person.cancel(card.locator("[data-job-progress]").get_attribute("data-job-id"))
