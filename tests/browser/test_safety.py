"""The pages without JavaScript, with bad input and with hostile text."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import inject_message, screenshot, tracker_job, wait_ready

PAYLOAD = "<img src=x onerror=alert(1)>"


def test_without_javascript_the_dashboard_lists_jobs_and_its_forms_filter_cancel_and_retry(make_user):
    user = make_user(java_script_enabled=False)  # signed up through the form, without JS
    job = user.start_demo(steps=60, step_seconds=0.5)
    page = user.page
    page.goto("/jobs")
    assert page.locator("html").get_attribute("data-jobs-ready") is None, "JS should be off"
    row = page.locator(f'table.jobs-table tbody tr[data-job-id="{job["id"]}"]')
    expect(row.locator(".job-status")).to_have_attribute("data-status", re.compile(r"^(pending|running)$"))
    expect(row.locator(".job-status")).to_contain_text("%")
    expect(row.locator(".job-when time")).to_have_text("just now")
    screenshot(page, "jobs-dashboard-without-js")

    row.get_by_role("button", name="Cancel").click()
    expect(page).to_have_url(re.compile(r"/jobs$"))
    expect(page.locator("p.flash")).to_contain_text("Cancelling Demo countdown")
    assert user.wait_terminal(job["id"])["status"] == "cancelled"
    page.reload()
    expect(row.locator(".job-status")).to_have_attribute("data-status", "cancelled")

    row.get_by_role("button", name="Retry").click()
    expect(page.locator("p.flash")).to_contain_text("Demo countdown started again")
    running = page.locator('[data-jobs-table="running"] tbody tr')
    expect(running).to_have_count(1)
    expect(running.locator(".job-title")).to_contain_text("(retry)")
    retried = running.get_attribute("data-job-id")
    assert retried != job["id"] and user.job(retried)["retry_of"] == job["id"]

    page.locator("form.job-filters select[name=status]").select_option("cancelled")
    page.locator("form.job-filters").get_by_role("button", name="Filter").click()
    expect(page.locator("table.jobs-table tbody tr")).to_have_count(1)
    expect(page.locator("table.jobs-table tbody tr")).to_have_attribute("data-job-id", job["id"])
    user.cancel(retried)


def test_bad_input_gets_a_readable_message_not_a_traceback(user):
    page = user.page
    cases = [("/jobs?status=bogus", 400, "There is no status “bogus”: choose one from the list."),
             ("/jobs?job_type=make_coffee", 400, "There is no job type “make_coffee”: choose one from the list."),
             ("/jobs/no-such-job", 404, None),
             ("/sessions/999999", 404, "There is no strategy session 999999.")]
    for path, status, message in cases:
        response = page.goto(path)
        assert response.status == status, path
        content = page.content()
        assert "Traceback" not in content and "Werkzeug" not in content, path
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        if message:
            expect(page.locator("main")).to_contain_text(message)
    page.goto("/jobs?status=bogus")
    screenshot(page, "jobs-dashboard-bad-filter")

    # A start that the server refuses: its message, in words, next to the button.
    session = user.create_session()
    page.goto(session["url"])
    wait_ready(page)
    user.api("DELETE", f"/api/sessions/{session['id']}", expect_status=204)
    page.get_by_role("button", name="Generate EPM program").click()
    error = page.locator('section[data-operation="epm_generation"] [role=alert]')
    expect(error).to_have_text(f"There is no strategy session {session['id']}.")
    expect(page.get_by_role("button", name="Generate EPM program")).to_be_enabled()


def test_server_text_is_shown_as_text_never_run_as_html(user, job_store):
    session = user.create_session(name=PAYLOAD)
    page = user.page
    page.goto("/programs")
    wait_ready(page)
    program_job = user.start(session["id"], "epm_generation")
    item = page.locator(f'li.running-program[data-job-id="{program_job["id"]}"]')
    expect(item.locator("strong")).to_have_text(PAYLOAD)

    demo = user.start_demo(steps=3, step_seconds=4)
    message = tracker_job(page, demo["id"]).locator(".tracker-message")
    expect(message).to_have_text("Step 1 of 3")
    inject_message(job_store, demo["id"], PAYLOAD)
    expect(message).to_have_text(PAYLOAD)
    screenshot(page, "hostile-text-as-text")

    page.goto("/jobs")  # the server's render, then the live rows
    wait_ready(page)
    expect(page.locator(f'tr[data-job-id="{demo["id"]}"] .job-detail')).to_have_text(PAYLOAD)
    assert page.locator("main img, #job-tracker img, #toasts img").count() == 0

    page.goto("/programs")
    program = user.wait_terminal(program_job["id"])["result"]["url"]
    expect(page.locator(f'a[href="{program}"]').first).to_have_text(f"{PAYLOAD} — EPM program")
    page.goto(session["url"])
    expect(page.get_by_role("heading", level=1)).to_have_text(PAYLOAD)
    assert page.locator("main img, #job-tracker img, #toasts img").count() == 0
    assert user.dialogs == [], f"a script ran: {user.dialogs}"
    user.cancel(demo["id"])
